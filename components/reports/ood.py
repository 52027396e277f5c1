"""The OOD separability method, declared once: its settings, its computation (``compute``), its report (``report``).

The page draws its widgets from ``OODSeparabilitySettings``, caches the features and the study that ``compute``
asks for and shows ``report``; ``python -m logitscope ood`` derives its flags from the same declaration and calls
``run``; metadata.json records ``settings_metadata``. The study's own settings (analysis.ood.study.OODSettings) are built
from the declaration by ``to_study_settings``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

import analysis.ood as O
from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.models.pair import ModelPair, stage
from analysis.ood import METRIC_LABELS
from analysis.prompts import PromptSet, check_context
from components.charts import ood as charts
from components.reports import Input, Inputs, Memo, Report, direct, sets_of
from components.settings import as_metadata, setting

PAGE = "OOD separability"
BUNDLE = "ood_separability"
KEY = "ood"
# The page's default OOD sets: three easy ones and a hard one (held-out two-hop questions about the same world),
# so the default study is not saturated: scores and layers differ (tests/ood/test_ood_defaults.py).
DEFAULT_OOD = ("ood_scrambled", "ood_random_chars", "ood_arithmetic", "two_hop")
INPUTS = (Input("--prompts", "facts", "the in-distribution (ID) set: part fits the scores, the rest is held out"),
          Input("--ood-prompts", DEFAULT_OOD, "OOD sets, comma separated built-in names or files", many=True))
NEEDS_B = False
SHARDS = ("features",)  # each set's features (analysis.ood.features)
LAYER_CONVENTION = "0 = embeddings, L = last block output before final norm"
POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class OODSeparabilitySettings:
    """Every setting of the OOD separability page and command (display-only ones never refit the study)."""

    seed: int = setting(0, "seed of the split of the ID set into a fit part and a held-out part",
                        label="Split seed", lo=0, hi=2**31 - 1)
    fit_fraction: float = setting(0.5, "fraction of the ID set the scores are fitted on (the rest is held out)",
                                  label="ID fraction used to fit", lo=0.2, hi=0.8, widget="slider")
    knn_k: int = setting(5, "KNN's k (lowered, with a note, below the ID fit size)", label="KNN k", lo=1, hi=200)
    shrinkage: str = setting("ledoit-wolf", "covariance shrinkage of the Mahalanobis score",
                             label="Mahalanobis shrinkage", choices=("ledoit-wolf", "oas"))
    vim_dim: int = setting(0, "ViM's principal subspace dimension (0 = auto)", label="ViM dim (0 = auto)", lo=0,
                           hi=8192)
    neco_k: int = setting(0, "NECO's k (0 = auto)", label="NECO k (0 = auto)", lo=0, hi=8192)
    gap_n: int = setting(10, "LogitGap's N: the top logit minus the mean of the next N", label="LogitGap N", lo=1, hi=100)
    batch_size: int = setting(32, "prompts per forward pass", label="Batch size", lo=1, hi=256)
    poolings: tuple[str, ...] = setting(POOLINGS, "poolings of the Mahalanobis and KNN scores, comma separated "
                                        "('mean' averages the prompt's real tokens, BOS left out; empty = last)",
                                        label="Pooling for Mahalanobis and KNN", choices=POOLINGS)
    blood: bool = setting(False, "also the BLOOD score (needs gradients: one backward pass per draw and batch; "
                          "slower)", label="BLOOD (needs gradients: one backward pass per draw and batch; slower)")
    blood_draws: int = setting(20, "BLOOD's random draws (used with blood)", label="BLOOD random draws", lo=1,
                               hi=500)
    view: str | None = setting(None, "OOD set of the metrics views; none = 'all OOD' with several sets, else the only "
                               "one", label="OOD set for the metrics", display=True)
    metric: str = setting(next(iter(METRIC_LABELS)), "metric of the heatmap and the by-layer lines", label="Metric",
                          choices=METRIC_LABELS, display=True)
    score: str | None = setting(None, "score of the histograms and ROC; none = the study's best",
                                label="Score for histograms and ROC", display=True)
    layer: str = setting("best", "layer of the histograms, ROC and map: a layer number, or best (the score's best "
                         "layer)", label="Layer (histograms, ROC, map)", display=True)
    projection: str = setting("pca", "method of the 2-D map", label="2-D map", choices={"pca": "PCA", "umap": "UMAP"},
                              widget="radio", display=True)
    fit_on: str = setting("id", "points the 2-D map's projection is fitted on", label="Projection fitted on",
                          choices={"id": "ID only", "all": "all points"}, widget="radio", display=True)
    map_pooling: str = setting("last", "pooling of the 2-D map's features", label="Map pooling", choices=POOLINGS,
                               widget="radio", display=True)
    random_state: int = setting(0, "random_state of the 2-D map's projection", label="random_state", lo=0, hi=10_000,
                                display=True)

    def __post_init__(self) -> None:
        if not self.poolings:  # no pooling chosen: 'last', as the page's multiselect always did
            object.__setattr__(self, "poolings", ("last",))

    @property
    def draws(self) -> int:
        """BLOOD's draws as the features compute them: 0 when BLOOD is off."""
        return self.blood_draws if self.blood else 0

    def to_study_settings(self) -> O.OODSettings:
        """The study's settings (0 = auto for ViM's dim and NECO's k; the GEN constants at the engine's defaults)."""
        return O.OODSettings(seed=self.seed, fit_fraction=self.fit_fraction, poolings=self.poolings, knn_k=self.knn_k,
                             shrinkage=self.shrinkage, vim_dim=self.vim_dim or None, neco_k=self.neco_k or None,
                             logitgap_n=self.gap_n)


@dataclass(frozen=True)
class OODSeparabilityResults:
    """What ``compute`` returns, per checkpoint ("A: name"): the study and the features it was fitted on (the 2-D
    map projects them with the display settings)."""

    studies: Mapping[str, O.OODStudy]
    id_features: Mapping[str, O.OODFeatures]
    ood_features: Mapping[str, Mapping[str, O.OODFeatures]]
    id_name: str


def features(lm: LoadedModel, ps: PromptSet, batch_size: int, blood_draws: int,
             progress: Progress = None) -> O.OODFeatures:
    """The features of one prompt set (every layer, BLOOD's norms when blood_draws > 0)."""
    return O.extract_features(lm, list(ps.prompts), batch_size=batch_size, blood_draws=blood_draws,
                               progress=progress)


def study(lm: LoadedModel, id_set: PromptSet, ood_sets: Mapping[str, PromptSet], settings: O.OODSettings,
          batch_size: int, blood_draws: int, id_f: O.OODFeatures, ood_f: Mapping[str, O.OODFeatures],
          progress: Progress = None) -> O.OODStudy:
    """The study on the features of the ID set and of each OOD set. The computation reads only the features and
    the names; the model, the sets, the batch size and the draws say which features they are (a cache key)."""
    return O.study_from_features(id_f, ood_f, settings, id_name=id_set.name, progress=progress)


def split_sets(id_set: PromptSet, ood_sets: Mapping[str, PromptSet], id_group: str | None
               ) -> tuple[PromptSet, dict[str, PromptSet]]:
    """(ID set, OOD sets): the given ones, or with ``id_group`` the ID set's rows of that group and one OOD set per
    other group (InputError when the set has no such group)."""
    if id_group is None:
        return id_set, dict(ood_sets)
    groups = id_set.groups()
    if id_group not in groups:
        raise InputError(f"The ID group '{id_group}' is not a group of {id_set.name} "
                         f"(groups: {', '.join(groups) or 'none'}).")
    # each OOD set is named by its group, as the views and metadata name it
    return id_set.by_group(id_group), {g: replace(id_set.by_group(g), name=g) for g in groups if g != id_group}


def check_inputs(models: ModelPair, id_set: PromptSet, ood_sets: Mapping[str, PromptSet]) -> None:
    """InputError for sets too small to study or prompts longer than a checkpoint's context."""
    O.check_sets(len(set(id_set.prompts)), {n: len(ps) for n, ps in ood_sets.items()})
    for _, lm, _card in models.items():
        for ps in [id_set, *ood_sets.values()]:
            check_context(ps, lm.tokenizer, lm.context_length)


def split_inputs(inputs: Inputs, id_group: str | None) -> dict[str, Any]:
    """The inputs studied: as given, or with ``id_group`` the main set's rows of that group as ID (--prompts) and one
    OOD set per other group (--ood-prompts), as the CLI's --id-group and the API's id_group split them."""
    id_set, ood_sets = split_sets(inputs["--prompts"], ood_sets_of(inputs) if id_group is None else {}, id_group)
    return {"--prompts": id_set, "--ood-prompts": tuple(ood_sets.values())}


def ood_sets_of(inputs: Inputs) -> dict[str, PromptSet]:
    """{name: set} of the OOD sets of the inputs (--ood-prompts)."""
    return {ps.name: ps for ps in sets_of(inputs.get("--ood-prompts"))}


def compute(models: ModelPair, inputs: Inputs, s: OODSeparabilitySettings, progress: Progress = None,
            memo: Memo = direct) -> OODSeparabilityResults:
    """The features of the ID set (--prompts) and of every OOD set (--ood-prompts) on each checkpoint, and the study
    on them. Each set's features and each checkpoint's study are parts of their own (``memo``, keyed on what they
    read: a study setting never re-extracts features)."""
    prompt_set, ood_sets = inputs["--prompts"], ood_sets_of(inputs)
    items = models.items()
    named = [(prompt_set.name, prompt_set), *ood_sets.items()]
    n = max(sum(len(ps) for _, ps in named), 1)
    study_settings = s.to_study_settings()
    studies, id_feats, ood_feats = {}, {}, {}
    for i, (which, lm, card) in enumerate(items):
        part = stage(progress, i / len(items), (i + 1) / len(items), which)
        got: dict[str, O.OODFeatures] = {}  # by content: a set given twice is extracted once
        done = 0
        for name, ps in named:
            if ps.sha256 not in got:
                got[ps.sha256] = memo("ood.features", (lm.spec, ps.sha256, s.batch_size, s.draws), features, lm, ps,
                                      s.batch_size, s.draws,
                                      progress=stage(part, 0.95 * done / n, 0.95 * (done + len(ps)) / n, name))
            done += len(ps)
        label = f"{which}: {card.name}"
        id_feats[label] = got[prompt_set.sha256]
        ood_feats[label] = {name: got[ps.sha256] for name, ps in ood_sets.items()}
        fit = stage(part, 0.95, 1.0, "fitting and scoring")
        if fit is not None:
            fit(0.0, "")
        key = (lm.spec, (prompt_set.name, prompt_set.sha256), tuple((nm, ps.sha256) for nm, ps in ood_sets.items()),
               study_settings, s.batch_size, s.draws)
        studies[label] = memo("ood.study", key, study, lm, prompt_set, ood_sets, study_settings, s.batch_size,
                              s.draws, id_feats[label], ood_feats[label], progress=fit)
    return OODSeparabilityResults(studies, id_feats, ood_feats, prompt_set.name)


def resolve_view(results: OODSeparabilityResults, s: OODSeparabilitySettings) -> tuple[str, str, str]:
    """(OOD set of the metrics, score, layer) the views show: the settings, or the first study's defaults ('all
    OOD' with several sets, the best score); InputError naming the setting when the study has no such value."""
    first = next(iter(results.studies.values()))
    view = s.view if s.view is not None else metric_sets(first)[0]
    if view not in metric_sets(first):
        raise InputError(f"Setting 'view': '{view}' is not one of the OOD sets ({', '.join(metric_sets(first))}).")
    score = s.score if s.score is not None else first.best_score
    if score not in scores(first):
        raise InputError(f"Setting 'score': '{score}' is not one of the study's scores ({', '.join(scores(first))}).")
    return view, score, check_layer(s)


def check_layer(s: OODSeparabilitySettings) -> str:
    """The layer setting ("best" or a layer number; a number past the last layer means the last), else InputError."""
    layer = s.layer.strip()
    if layer != "best" and not layer.isdigit():
        raise InputError(f"Setting 'layer' must be a layer number or 'best'; got {s.layer!r}.")
    return layer


def report(results: OODSeparabilityResults, s: OODSeparabilitySettings) -> Report:
    """The page's figures and tables for these results and display settings: the study's views and the 2-D maps
    (projected here: analysis.ood.study.project_2d keeps its fitted maps in a bounded cache)."""
    view, score, layer = resolve_view(results, s)
    projections = {}
    for label, one in results.studies.items():
        projections[label] = O.project_2d(results.id_features[label], results.ood_features[label],
                                          map_layer(one, score, layer), pooling=s.map_pooling, method=s.projection,
                                          fit_on=s.fit_on, random_state=s.random_state, id_name=results.id_name)
    return ood_report(results.studies, projections, ood_view=view, metric=s.metric, score=score, layer_opt=layer)


def settings_metadata(s: OODSeparabilitySettings, results: OODSeparabilityResults, ood_sets: Mapping[str, PromptSet],
                      id_group: str | None = None) -> dict:
    """metadata.json's settings: every declared setting (view and score as shown: the defaults resolved), the sets,
    and what the study derived (GEN's constants, the effective KNN k / ViM dim / NECO k, the fit and held-out
    sizes), the AUPR estimator and the layer convention."""
    meta = as_metadata(s)
    meta["view"], meta["score"], _ = resolve_view(results, s)
    meta.update(id_set=results.id_name, id_group=id_group,
                ood_sets={n: {"sha256": ps.sha256, "n_prompts": len(ps)} for n, ps in ood_sets.items()})
    first = next(iter(results.studies.values()))
    meta.update({k: v for k, v in first.settings.items() if k not in meta and k != "logitgap_n"})  # = gap_n
    meta.update(aupr_estimator="sklearn average_precision_score", layer_convention=LAYER_CONVENTION)
    return meta


def run(models: ModelPair, inputs: Inputs, s: OODSeparabilitySettings, progress: Progress = None,
        memo: Memo = direct, *, id_group: str | None = None) -> tuple[Report, dict]:
    """check + compute + report, as the CLI runs it: (report, metadata settings). The inputs are the sets studied
    (split_sets first for a group column; ``id_group`` is recorded)."""
    ood_sets = ood_sets_of(inputs)
    check_inputs(models, inputs["--prompts"], ood_sets)
    check_layer(s)
    results = compute(models, inputs, s, progress, memo)
    return report(results, s), settings_metadata(s, results, ood_sets, id_group)


# ----------------------------------------------------------------------------------------- views of a study
def metric_sets(study: O.OODStudy) -> list[str]:
    """The OOD sets the metrics can be shown for: "all OOD" first when there are several."""
    return ([O.ALL_OOD] if len(study.ood_names) > 1 else []) + list(study.ood_names)


def scores(study: O.OODStudy) -> list[str]:
    """Every score of the study (feature scores, then logit scores)."""
    return list(study.feature_scores + study.logit_scores)


def view_for(study: O.OODStudy, ood_view: str) -> str | None:
    """ood_view if this study has it, else None (the study's default)."""
    return ood_view if ood_view in (O.ALL_OOD, *study.ood_names) else None


def score_layer(study: O.OODStudy, score: str, layer_opt: str | int) -> int | None:
    """The layer of the histograms and ROC: None for logit scores, the score's best layer for "best"."""
    if score in study.logit_scores:
        return None
    if layer_opt == "best":
        return study.best_layer_by_score.get(score, study.layers[-1])
    return min(int(layer_opt), study.layers[-1])


def map_layer(study: O.OODStudy, score: str, layer_opt: str | int) -> int:
    """The layer of the 2-D map: the histogram layer, or the study's best (else last) layer for logit scores."""
    layer = score_layer(study, score, layer_opt)
    if layer is None:
        return study.best_layer if study.best_layer is not None else study.layers[-1]
    return layer


def scores_frame(study: O.OODStudy) -> pd.DataFrame:
    """Every score of every scored prompt (long format: set, prompt, score, layer, value)."""
    rows = []
    for score, per_set in study.scores.items():
        is_logit = score in study.logit_scores
        for s, arr in per_set.items():
            for li in range(arr.shape[0]):
                layer = None if is_logit else study.layers[li]
                rows.append(pd.DataFrame({"set": s, "prompt": study.prompts[s], "score": score, "layer": layer,
                                          "value": arr[li]}))
    df = pd.concat(rows, ignore_index=True)
    df["layer"] = df["layer"].astype("Int64")
    return df


def projection_frame(proj: O.Projection2D) -> pd.DataFrame:
    """The 2-D map's points: set, prompt, x, y."""
    return pd.DataFrame({"set": proj.set_names, "prompt": proj.prompts, "x": proj.coords[:, 0], "y": proj.coords[:, 1]})


def ood_report(studies: Mapping[str, O.OODStudy], projections: Mapping[str, O.Projection2D], *,
               ood_view: str | None = None, metric: str = OODSeparabilitySettings.metric, score: str | None = None,
               layer_opt: str | int = OODSeparabilitySettings.layer) -> Report:
    """Bundle figures/tables for studies keyed "A: name" (and "B: name") with their 2-D maps: metrics heatmap and
    tables, metric by layer, score histograms and ROC, the map, and A vs B by layer when both are given."""
    first = next(iter(studies.values()))
    ood_view = ood_view or metric_sets(first)[0]
    score = score or first.best_score
    rep = Report()
    for label, study in studies.items():
        which = label.split(":")[0]
        view = view_for(study, ood_view)
        data = O.auroc_table(study, view, metric).reset_index()
        rep.add(f"metrics_{which}", charts.metrics_heatmap(study, metric, view), data)
        rep.tables[f"metrics_all_{which}"] = O.metrics_frame(study)
        rep.add(f"by_layer_{which}", charts.auroc_by_layer(study, view, metric))
        layer = score_layer(study, score, layer_opt)
        rep.add(f"histograms_{which}", charts.score_histograms(study, score, layer), scores_frame(study))
        rep.tables[f"scores_{which}"] = rep.tables.pop(f"histograms_{which}")
        rep.add(f"roc_{which}", charts.roc_curves(study, score, layer))
        proj = projections[label]
        rep.add(f"map_{which}", charts.projection_map(proj), projection_frame(proj))
        rep.notes.extend(f"{which}: {note}" for note in study.notes)
    if len(studies) == 2:
        (la, sa), (lb, sb) = studies.items()
        ta = O.auroc_table(sa, ood_view, metric).reset_index().assign(checkpoint="A")
        tb = O.auroc_table(sb, view_for(sb, ood_view), metric).reset_index()
        rep.add("a_vs_b", charts.compare_auroc_by_layer(sa, sb, la, lb, ood_view, metric),
                pd.concat([ta, tb.assign(checkpoint="B")], ignore_index=True))
    return rep


# Settings whose page default comes from the data rather than the declaration (tests/test_declarations).
PAGE_DEFAULT_EXEMPT = {"view": "the study's OOD sets: 'all OOD' with several, else the only one",
                       "score": "the study's best score"}
