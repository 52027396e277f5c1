"""The OOD separability study: which layers and scores tell familiar (ID) input from unfamiliar (OOD) input.

The ID set is split (seeded) into a fit part and a held-out part. Every scorer is fitted on the fit
part only and scores the held-out ID prompts and the OOD sets - never the points it was fitted on
(``_split`` asserts the two parts are disjoint and ``_evaluate`` only ever receives held-out and OOD
rows). Feature scores (Mahalanobis and KNN per pooling; ViM and NECO on the head input with the
logit-lens logits of the same layer, which at the last layer are the model's logits) are computed per
layer; logit scores (MSP, MaxLogit, Energy, GEN, LogitGap, mean log-likelihood) once, on the final
logits; BLOOD, when the features carry it (optional: it needs gradients), is global too: minus the mean
over blocks of ||d h_{l+1} / d h_l||_F^2 at the last token. Metrics (analysis.ood.metrics) per OOD set and for all OOD sets pooled ("all OOD"); the best
pick is the highest AUROC on "all OOD" (one OOD set: that set); ties - common when several scores separate
perfectly - go to the lower FPR@95 (ID+), then the lower AUTC (the wider margin), then the earlier score
in the table and the lower layer.

Small sets: an OOD set needs at least 2 prompts and the ID set at least 4 distinct prompts (2 to fit,
2 held out), otherwise InputError. KNN's k, ViM's dim and NECO's k are lowered to what the fit size
allows, with a note in ``OODStudy.notes`` (the fallback is documented, never silent). Duplicate ID
prompts are dropped before the split (else a copy in the fit part would score its twin), with a note.

Rank-deficient layers (e.g. layer 0, where many prompts end on the same token): per layer, ViM's dim is
lowered below and NECO's k to the numerical rank of the fit features (analysis.ood.scores: singular values
above S.max() * max(n, d) * eps with the eps of the features' dtype - float32 here -, of the head inputs
around ViM's origin, resp. of the standardised head inputs), with a note naming the layers;
``settings["vim_dim_by_layer"]`` / ``["neco_k_by_layer"]`` keep what was used (None where not defined).
A score that has no meaning at a layer (ViM: rank < 2; NECO: rank 0; Mahalanobis: all fit rows identical
or a singular shrunk covariance) is "not defined" there: NaN scores and metrics, a ``note`` on its
metric rows, ``OODStudy.not_defined[score][layer]`` = the reason, a study note; the best pick skips it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from analysis.core.errors import InputError, NumericalError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.wording import plural, verb
from analysis.ood.features import OODFeatures, extract_features
from analysis.ood.metrics import HIGHER_IS_BETTER, all_metrics, roc_points
from analysis.ood.scores import (
    GEN,
    KNN,
    MSP,
    NECO,
    Energy,
    FeatureScorer,
    LogitGap,
    LogitScorer,
    LogitStats,
    Mahalanobis,
    MaxLogit,
    MeanLogLikelihood,
    NotDefinedError,
    ViM,
    default_vim_dim,
)

ID_KEY = "ID (held-out)"
ALL_OOD = "all OOD"
MIN_OOD = 2
MIN_ID = 4
LOGIT_SCORES = ("MSP", "MaxLogit", "Energy", "GEN", "LogitGap", "MeanLogLik")


@dataclass(frozen=True)
class OODSettings:
    """Study settings (plain values, hashable: usable as a cache key)."""

    seed: int = 0
    fit_fraction: float = 0.5
    poolings: tuple[str, ...] = ("last", "mean")
    knn_k: int = 5
    shrinkage: str = "ledoit-wolf"
    vim_dim: int | None = None  # None: the official rule, capped below the fit size
    neco_k: int | None = None  # None: half of min(fit size, d)
    gen_gamma: float = 0.1
    gen_m: int = 100
    logitgap_n: int = 10

    def as_dict(self) -> dict:
        """Plain dict for export metadata."""
        return asdict(self)


@dataclass(frozen=True)
class MetricRow:
    """One line of the metrics table; layer is None for logit scores (computed on the final logits).

    note: "" normally; "not defined: <reason>" (and NaN metrics) where the score has no meaning at that layer.
    """

    score: str
    kind: str  # "feature" or "logit"
    layer: int | None
    ood_set: str
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95_id: float
    fpr95_ood: float
    autc: float
    note: str = ""


NOT_DEFINED = "not defined"


@dataclass(frozen=True)
class OODStudy:
    """Result of a study.

    scores[score][set] -> [n_l, n_set] for feature scores (one row per entry of ``layers``) or [1, n_set]
    for logit scores; sets are ID_KEY (held-out ID) and each OOD set name. prompts[set] -> the prompts in
    the same order. fit_index / heldout_index: positions in the (deduplicated) ID prompts ``id_prompts``.
    not_defined[score][layer] -> why the score has no meaning at that layer (its scores there are NaN).
    """

    id_name: str
    ood_names: tuple[str, ...]
    layers: tuple[int, ...]
    feature_scores: tuple[str, ...]
    logit_scores: tuple[str, ...]
    scores: Mapping[str, Mapping[str, np.ndarray]]
    prompts: Mapping[str, tuple[str, ...]]
    id_prompts: tuple[str, ...]
    fit_index: np.ndarray
    heldout_index: np.ndarray
    metrics: tuple[MetricRow, ...]
    best_score: str
    best_layer: int | None
    best_auroc: float
    best_layer_by_score: Mapping[str, int]
    settings: Mapping[str, object]
    notes: tuple[str, ...] = field(default=())
    not_defined: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    def not_defined_reason(self, score: str, layer: int | None) -> str | None:
        """Why ``score`` is not defined at ``layer`` (None when it is defined there, or for logit scores)."""
        return None if layer is None else self.not_defined.get(score, {}).get(layer)

    @property
    def sets(self) -> tuple[str, ...]:
        """Scored sets: held-out ID first, then the OOD sets."""
        return (ID_KEY,) + self.ood_names

    def score_values(self, score: str, layer: int | None, set_name: str) -> np.ndarray:
        """Scores [n_set] of ``score`` at ``layer`` (ignored for logit/global scores) on ``set_name`` (or ALL_OOD)."""
        if score not in self.scores:
            raise InputError(f"Unknown score {score!r}; known: {', '.join(self.scores)}.")
        row = 0 if score in self.logit_scores else self.layer_pos(layer)
        if set_name == ALL_OOD:
            return np.concatenate([self.scores[score][s][row] for s in self.ood_names])
        return self.scores[score][set_name][row]

    def layer_pos(self, layer: int | None) -> int:
        """Index of ``layer`` in ``layers``."""
        if layer not in self.layers:
            raise InputError(f"Layer {layer} was not part of this study (layers {self.layers[0]}..{self.layers[-1]}).")
        return self.layers.index(layer)


# ----------------------------------------------------------------------------------------- helpers
def _split(n: int, fit_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint seeded (fit, held-out) index arrays covering range(n); both have at least 2 entries."""
    if not 0.0 < fit_fraction < 1.0:
        raise InputError(f"The fit fraction must be between 0 and 1, got {fit_fraction}.")
    perm = np.random.default_rng(seed).permutation(n)
    n_fit = int(np.clip(round(fit_fraction * n), 2, n - 2))
    fit, held = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
    assert np.intersect1d(fit, held).size == 0 and fit.size + held.size == n, "fit and held-out must be disjoint"
    return fit, held


def _dedupe(prompts: Sequence[str]) -> np.ndarray:
    """Positions of the first occurrence of each distinct prompt, in order."""
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        seen.setdefault(p, i)
    return np.array(sorted(seen.values()), dtype=int)


def _take(f: OODFeatures, idx: np.ndarray) -> OODFeatures:
    """The rows ``idx`` of a feature set."""
    return OODFeatures(tuple(f.prompts[i] for i in idx), f.layers, f.last[:, idx], f.mean[:, idx], f.head_in[:, idx],
                       f.lens_top[:, idx], f.lens_lse[:, idx], f.final_top[idx], f.final_lse[idx], f.mean_loglik[idx],
                       f.n_predicted[idx], f.vim_origin, f.vocab_size, None if f.blood is None else f.blood[idx])


def _evaluate(make: Callable[[], FeatureScorer], fit_X, fit_logits, eval_sets: Mapping[str, tuple]
              ) -> tuple[dict[str, np.ndarray] | None, FeatureScorer | NotDefinedError]:
    """Fit a fresh scorer on (fit_X, fit_logits) and score each eval set (X, logits); the fit rows are never scored.

    Returns (scores per set, the fitted scorer), or (None, the NotDefinedError) when the score has no meaning on
    these fit features. Every score is row-wise, so the sets are scored in ONE call on their rows stacked (the
    library calls' fixed cost dominates at these sizes) and split again; if that raises a NumericalError, the sets
    are scored one by one so that the error names the set.
    """
    scorer = make()
    try:
        scorer.fit(fit_X, fit_logits)
    except NotDefinedError as err:
        return None, err
    except NumericalError as err:
        raise NumericalError(f"In the ID fit prompts: {err}") from err
    names = list(eval_sets)
    try:
        X = np.concatenate([eval_sets[n][0] for n in names])
        stacked = scorer.score(X, LogitStats.concat([eval_sets[n][1] for n in names]))
    except NumericalError:
        for name, (X, lg) in eval_sets.items():
            try:
                scorer.score(X, lg)
            except NumericalError as err:
                raise NumericalError(f"In the set '{name}': {err}") from err
        raise
    bounds = np.cumsum([0] + [len(eval_sets[n][0]) for n in names])
    return {n: stacked[bounds[i]:bounds[i + 1]] for i, n in enumerate(names)}, scorer


def _layer_list(layers: Sequence[int]) -> str:
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(l) for l in layers)


def check_sets(n_id: int, ood: Mapping[str, int]) -> None:
    """Raise InputError for sets too small to study (ID < MIN_ID distinct prompts, an OOD set < MIN_OOD, none)."""
    if not ood:
        raise InputError("Add at least one OOD set to compare the ID set with.")
    if n_id < MIN_ID:
        raise InputError(f"The ID set has {plural(n_id, 'distinct prompt')}; at least {MIN_ID} are needed "
                         f"({MIN_ID // 2} to fit the scores on and {MIN_ID // 2} held out to evaluate them).")
    for name, n in ood.items():
        if n < MIN_OOD:
            raise InputError(f"The OOD set '{name}' has {plural(n, 'prompt')}; at least {MIN_OOD} are needed for the "
                             "metrics (AUROC, FPR@95) to mean anything.")


# ----------------------------------------------------------------------------------------- the study
def _checked_inputs(id_feats: OODFeatures, ood_feats: Mapping[str, OODFeatures], settings: OODSettings
                    ) -> tuple[OODFeatures, list[str]]:
    """The ID features without duplicate prompts, and notes; InputError when the sets cannot be studied together."""
    notes: list[str] = []
    keep = _dedupe(id_feats.prompts)
    if keep.size < len(id_feats):
        notes.append(f"{plural(len(id_feats) - keep.size, 'duplicate ID prompt')} {verb(len(id_feats) - keep.size, 'was', 'were')} dropped before the split.")
        id_feats = _take(id_feats, keep)
    check_sets(len(id_feats), {k: len(v) for k, v in ood_feats.items()})
    for name, f in ood_feats.items():
        if f.layers != id_feats.layers:
            raise InputError(f"The OOD set '{name}' was computed on other layers than the ID set.")
        if f.vocab_size != id_feats.vocab_size:
            raise InputError(f"The OOD set '{name}' was computed with another model than the ID set.")
        overlap = len(set(f.prompts) & set(id_feats.prompts))
        if overlap:
            notes.append(f"{plural(overlap, 'prompt')} of the OOD set '{name}' {verb(overlap, 'also appears', 'also appear')} in the ID set.")
    for p in settings.poolings:
        if p not in ("last", "mean"):
            raise InputError(f"Pooling must be 'last' or 'mean', got {p!r}.")
    return id_feats, notes


def _fit_sizes(settings: OODSettings, n_fit: int, d: int, notes: list[str]) -> tuple[int, int, int]:
    """(KNN's k, ViM's dim, NECO's k) lowered to what the fit size allows, each lowering noted."""
    knn_k = settings.knn_k
    if knn_k >= n_fit:
        knn_k = n_fit - 1
        notes.append(f"KNN's k was lowered from {settings.knn_k} to {knn_k} (it must be below the {n_fit} ID fit prompts).")
    vim_dim = settings.vim_dim if settings.vim_dim is not None else default_vim_dim(d)
    if vim_dim >= min(d, n_fit):
        new = max(1, min(d, n_fit) - 1)
        notes.append(f"ViM's dim was lowered from {vim_dim} to {new} (it must be below min(d = {d}, "
                     f"ID fit prompts = {n_fit})).")
        vim_dim = new
    neco_k = settings.neco_k if settings.neco_k is not None else max(1, min(n_fit, d) // 2)
    if neco_k > min(n_fit, d):
        notes.append(f"NECO's k was lowered from {neco_k} to {min(n_fit, d)} (at most min(fit prompts, d)).")
        neco_k = min(n_fit, d)
    return knn_k, vim_dim, neco_k


@dataclass
class _FeatureScores:
    """What the per-layer feature scores produced: scores[score][set] [n_l, n_set], where they are not defined,
    the effective ViM dim / NECO k per layer and the layers where the numerical rank capped them."""

    scores: dict[str, dict[str, np.ndarray]]
    not_defined: dict[str, dict[int, str]]
    used: dict[str, list[int | None]]
    capped: dict[str, dict[tuple[int, int], list[int]]]


def _feature_scores(feature_defs: Sequence[tuple[str, Callable[[], FeatureScorer], str]], layers: tuple[int, ...],
                    fit_f: OODFeatures, sets: Mapping[str, OODFeatures], asked: Mapping[str, int],
                    progress: Progress) -> _FeatureScores:
    """Fit and evaluate every feature score at every layer (``asked``: the requested ViM dim and NECO k)."""
    nl = len(layers)
    out_all = _FeatureScores({}, {}, {"ViM": [None] * nl, "NECO": [None] * nl}, {"ViM": {}, "NECO": {}})
    total = len(feature_defs) * nl + 1
    step = 0
    for name, make, src in feature_defs:
        per_set = {s: np.full((nl, len(f)), np.nan, np.float64) for s, f in sets.items()}
        for li in range(nl):
            layer = layers[li]

            def arr(f: OODFeatures, li: int = li, src: str = src) -> np.ndarray:
                return f.head_in[li] if src == "head" else f.pooled(src)[li]
            out, scorer = _evaluate(make, arr(fit_f), fit_f.lens_logits(li),
                                    {s: (arr(f), f.lens_logits(li)) for s, f in sets.items()})
            if out is None:
                out_all.not_defined.setdefault(name, {})[layer] = cast(NotDefinedError, scorer).reason  # see _evaluate
            else:
                for s, v in out.items():
                    per_set[s][li] = v
                if name in out_all.used:
                    capped = cast("ViM | NECO", scorer)  # `used` holds ViM and NECO only
                    eff = cast(ViM, capped).dim_ if name == "ViM" else cast(NECO, capped).k_
                    out_all.used[name][li] = int(eff)
                    if eff < asked[name]:
                        out_all.capped[name].setdefault((int(eff), int(capped.rank_)), []).append(layer)
            step += 1
            if progress is not None:
                progress(step / total, f"{name} at layer {layer}")
        out_all.scores[name] = per_set
    return out_all


def _feature_notes(fs: _FeatureScores, vim_dim: int, neco_k: int) -> list[str]:
    """Notes on the layers where the rank capped ViM's dim or NECO's k, and where a score is not defined."""
    notes = []
    for (eff, rank), ls in fs.capped["ViM"].items():
        notes.append(f"ViM's dim was lowered from {vim_dim} to {eff} at {_layer_list(ls)}: the fit head inputs there "
                     f"have numerical rank {rank} around ViM's origin (singular values above S.max() * max(n, d) * "
                     "eps, eps of the features' dtype), and dim must be below it.")
    for (eff, rank), ls in fs.capped["NECO"].items():
        notes.append(f"NECO's k was lowered from {neco_k} to {eff} at {_layer_list(ls)}: the standardised fit head "
                     f"inputs there have numerical rank {rank} (singular values above S.max() * max(n, d) * eps, "
                     "eps of the features' dtype).")
    for name, per_layer in fs.not_defined.items():
        by_reason: dict[str, list[int]] = {}
        for layer, why in per_layer.items():
            by_reason.setdefault(why, []).append(layer)
        for why, ls in by_reason.items():
            notes.append(f"{name} is not defined at {_layer_list(ls)}: {why}. Its scores and metrics there are left "
                         "empty (NaN).")
    return notes


def _global_scores(settings: OODSettings, sets: Mapping[str, OODFeatures], scores: dict, notes: list[str]
                   ) -> tuple[str, ...]:
    """Add the logit scores (and BLOOD when every set has it) to ``scores``; returns their names."""
    logit_defs: dict[str, LogitScorer] = {"MSP": MSP(), "MaxLogit": MaxLogit(), "Energy": Energy(),
                                     "GEN": GEN(settings.gen_gamma, settings.gen_m), "LogitGap": LogitGap(settings.logitgap_n),
                                     "MeanLogLik": MeanLogLikelihood()}
    for name, sc in logit_defs.items():
        scores[name] = {}
        for s, f in sets.items():
            try:
                v = sc.score(f.mean_loglik) if name == "MeanLogLik" else sc.score(f.final_logits())
            except NumericalError as err:
                raise NumericalError(f"In the set '{s}': {err}") from err
            scores[name][s] = v[None, :]
    global_names: tuple[str, ...] = LOGIT_SCORES
    if all(f.blood is not None for f in sets.values()):
        global_names = LOGIT_SCORES + ("BLOOD",)
        scores["BLOOD"] = {s: -cast(np.ndarray, f.blood).mean(axis=1)[None, :] for s, f in sets.items()}  # all set
    elif any(f.blood is not None for f in sets.values()):
        notes.append("BLOOD was computed for some sets only, so it is left out.")
    return global_names


def _metric_rows(scores: Mapping[str, Mapping[str, np.ndarray]], feature_names: tuple[str, ...],
                 global_names: tuple[str, ...], layers: tuple[int, ...], not_defined: Mapping[str, Mapping[int, str]],
                 ood_names: tuple[str, ...]) -> list[MetricRow]:
    """One metric row per (score, layer, OOD set) and per score and layer for all OOD sets pooled."""
    rows: list[MetricRow] = []
    nan_metrics: dict[str, Any] = dict.fromkeys(("auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood", "autc"),
                                                float("nan"))
    for name in feature_names + global_names:
        is_logit = name in global_names
        for li in range(1 if is_logit else len(layers)):
            layer = None if is_logit else layers[li]
            why = None if layer is None else not_defined.get(name, {}).get(layer)  # layer is None for logit scores
            s_id = scores[name][ID_KEY][li]
            for o in ood_names + ((ALL_OOD,) if len(ood_names) > 1 else ()):
                if why is not None:
                    rows.append(MetricRow(name, "feature", layer, o, **nan_metrics, note=f"{NOT_DEFINED}: {why}"))
                    continue
                s_ood = (np.concatenate([scores[name][x][li] for x in ood_names]) if o == ALL_OOD
                         else scores[name][o][li])
                m: dict[str, Any] = all_metrics(s_id, s_ood).as_dict()
                rows.append(MetricRow(name, "logit" if is_logit else "feature", layer, o, **m))
    return rows


def study_from_features(id_feats: OODFeatures, ood_feats: Mapping[str, OODFeatures], settings: OODSettings = OODSettings(),
                        *, id_name: str = "ID", progress: Progress = None) -> OODStudy:
    """Fit every score on the ID fit split and evaluate it on held-out ID vs each OOD set (pure numpy)."""
    id_feats, notes = _checked_inputs(id_feats, ood_feats, settings)
    fit, held = _split(len(id_feats), settings.fit_fraction, settings.seed)
    n_fit, d = fit.size, id_feats.last.shape[2]
    knn_k, vim_dim, neco_k = _fit_sizes(settings, n_fit, d, notes)

    sets = {ID_KEY: _take(id_feats, held), **dict(ood_feats)}
    fit_f = _take(id_feats, fit)
    feature_defs: list[tuple[str, Callable[[], FeatureScorer], str]] = []
    for p in settings.poolings:
        feature_defs.append((f"Mahalanobis·{p}", lambda: Mahalanobis(settings.shrinkage), p))
        feature_defs.append((f"KNN·{p}", lambda: KNN(knn_k), p))
    feature_defs.append(("ViM", lambda: ViM(vim_dim, id_feats.vim_origin, cap_to_rank=True), "head"))
    feature_defs.append(("NECO", lambda: NECO(neco_k, cap_to_rank=True), "head"))
    fs = _feature_scores(feature_defs, id_feats.layers, fit_f, sets, {"ViM": vim_dim, "NECO": neco_k}, progress)
    notes += _feature_notes(fs, vim_dim, neco_k)
    scores = fs.scores
    global_names = _global_scores(settings, sets, scores, notes)
    if progress is not None:
        progress(1.0, "metrics")
    feature_names = tuple(n for n, _, _ in feature_defs)
    ood_names = tuple(ood_feats)
    rows = _metric_rows(scores, feature_names, global_names, id_feats.layers, fs.not_defined, ood_names)
    target = ALL_OOD if len(ood_names) > 1 else ood_names[0]
    target_rows = [r for r in rows if r.ood_set == target and not r.note]  # not-defined cells are never picked
    best_row = min(target_rows, key=_rank)
    best = (best_row.score, best_row.layer, best_row.auroc)
    best_by_score = {name: min((r for r in target_rows if r.score == name), key=_rank).layer for name in feature_names
                     if any(r.score == name for r in target_rows)}  # feature rows: the layer is an int
    settings_d = settings.as_dict()
    settings_d.update(effective_knn_k=knn_k, effective_vim_dim=vim_dim, effective_neco_k=neco_k,
                      vim_dim_by_layer=fs.used["ViM"], neco_k_by_layer=fs.used["NECO"],
                      n_fit=int(n_fit), n_heldout=int(held.size))
    return OODStudy(id_name, ood_names, id_feats.layers, feature_names, global_names, scores,
                    {s: f.prompts for s, f in sets.items()}, id_feats.prompts, fit, held, tuple(rows),
                    best[0], best[1], float(best[2]), cast("dict[str, int]", best_by_score), settings_d, tuple(notes),
                    {k: dict(v) for k, v in fs.not_defined.items()})


def _rank(r: MetricRow) -> tuple[float, float, float]:
    """Sort key of the best pick: highest AUROC, then lowest FPR@95 (ID+), then lowest AUTC (larger margin)."""
    return (-round(r.auroc, 12), round(r.fpr95_id, 12), round(r.autc, 12))


def run_study(lm: LoadedModel, id_prompts: Sequence[str], ood_prompts: Mapping[str, Sequence[str]],
              settings: OODSettings = OODSettings(), *, id_name: str = "ID", batch_size: int = 16,
              layers: Sequence[int] | None = None, blood_draws: int = 0, progress: Progress = None
              ) -> OODStudy:
    """Features for every set (one chunked pass each) and the study on them."""
    check_sets(len(set(id_prompts)), {k: len(v) for k, v in ood_prompts.items()})
    all_sets = {id_name: id_prompts, **ood_prompts}
    feats: dict[str, OODFeatures] = {}
    n_total = sum(len(v) for v in all_sets.values())
    done = 0
    for name, ps in all_sets.items():
        size = len(ps)

        def sub(frac: float, msg: str, _d=done, _n=size, _name=name) -> None:
            if progress is not None:
                progress(0.9 * (_d + frac * _n) / n_total, f"{_name}: {msg}")
        feats[name] = extract_features(lm, ps, layers=layers, batch_size=batch_size, blood_draws=blood_draws,
                                       progress=sub)
        done += len(ps)
    id_f = feats.pop(id_name)
    return study_from_features(id_f, feats, settings, id_name=id_name,
                               progress=None if progress is None else (lambda f, m: progress(0.9 + 0.1 * f, m)))


# ----------------------------------------------------------------------------------------- tables
def metrics_frame(study: OODStudy) -> pd.DataFrame:
    """Every metric row as a DataFrame (layer is empty for logit scores)."""
    df = pd.DataFrame([asdict(r) for r in study.metrics])
    df["layer"] = df["layer"].astype("Int64")
    return df


def auroc_table(study: OODStudy, ood_set: str | None = None, metric: str = "auroc") -> pd.DataFrame:
    """``metric`` as scores (rows) x layers (columns) plus a 'final logits' column for logit scores."""
    ood_set = ood_set or (ALL_OOD if len(study.ood_names) > 1 else study.ood_names[0])
    cols = [f"layer {l}" for l in study.layers] + ["final logits"]
    table = pd.DataFrame(np.nan, index=list(study.feature_scores + study.logit_scores), columns=cols)
    for r in study.metrics:
        if r.ood_set == ood_set:
            table.loc[r.score, "final logits" if r.layer is None else f"layer {r.layer}"] = getattr(r, metric)
    table.index.name = "score"
    return table


def best_from_table(table: pd.DataFrame, metric: str = "auroc") -> tuple[str, str]:
    """(score, column) of the best cell of an auroc_table (max, or min for lower-is-better metrics)."""
    stacked = table.stack().dropna()
    key = stacked.idxmax() if HIGHER_IS_BETTER[metric] else stacked.idxmin()
    return str(key[0]), str(key[1])


def roc_curve_points(study: OODStudy, score: str, layer: int | None, ood_set: str) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of ``score`` at ``layer`` for held-out ID vs ``ood_set`` (ID positive)."""
    why = None if score in study.logit_scores else study.not_defined_reason(score, layer)
    if why is not None:
        raise InputError(f"{score} is not defined at layer {layer}: {why}.")
    return roc_points(study.score_values(score, layer, ID_KEY), study.score_values(score, layer, ood_set))
