"""Steering (persona) vectors: read activations of a contrastive prompt set, fit one direction per layer, score it.

A contrastive set has a positive and a negative side: two groups (the ``group`` field) or pairs (rows that
share a ``label`` = pair id; the first row of each pair is positive when there are no groups). For every
layer l = 0..L (0 = embedding output, L = last block's output before the final norm) we read h_l at a
position rule and fit v_l:

- ``mean_diff``: v_l = mean(positive) - mean(negative)                          (Persona Vectors, CAA)
- ``pca``: first principal direction of the paired differences (about the origin, so the shared shift counts;
  our choice), sign fixed so positives project higher                          (repeng's pca_diff)
- ``logistic``: the weight direction of an L2 logistic regression (scikit-learn)

PCA and logistic give a unit direction u; we scale it to the separation of the group means along it,
v = u * |(mean_pos - mean_neg) . u|, so alpha means the same thing for every method.

Separability: per layer, the vector is fitted on a seeded training split (pairs kept together) and the
AUROC of the projection on the held-out split is reported (scikit-learn roc_auc_score).

Default layer (``SteeringVectors.default_layer``, the one rule the page, the command line and the reports use): the
highest held-out AUROC among layers ⌈L/3⌉..⌊3L/4⌋, ties broken by the larger Cohen's d of the contrast set's
projections, then toward the middle of the model (``choose_default_layer``; a pure argmax of the AUROC picks
layer 1 on real models, where the AUROC already ties at 1.0 and v_1 is too small to steer with).

Trait tokens (``default_trait_tokens``): the global-logit-shift view compares z(a) − z(b); by default a and b are
the most common first response tokens of the positive and the negative side of the contrast set.

Vectors are saved and loaded as safetensors with metadata (model, layers, method, position rule, the prompt
set's sha256).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from analysis.batching import batch_from_ids, chunks, pad_token_id
from analysis.errors import IncompatibleModelsError, InputError, PromptSetError
from analysis.forward import run
from analysis.hooks import residual_hook
from analysis.loading import LoadedModel
from analysis.prompts import PromptRow, PromptSet

Progress = Callable[[float, str], None] | None

METHODS = ("mean_diff", "pca", "logistic")
POSITION_RULES = ("last", "response")
METHOD_LABELS = {"mean_diff": "difference of means", "pca": "PCA of paired differences",
                 "logistic": "logistic regression"}
RULE_LABELS = {"last": "last prompt token", "response": "mean over response tokens"}
FORMAT_VERSION = "1"


# --------------------------------------------------------------------------------------------
# The contrast: which rows are positive and negative, and how they pair up
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contrast:
    """Positive/negative rows of a prompt set; ``pairs`` [(i_pos, i_neg)] index into pos/neg (may be empty)."""

    positive_name: str
    negative_name: str
    pos: tuple[PromptRow, ...]
    neg: tuple[PromptRow, ...]
    pairs: tuple[tuple[int, int], ...]


def split_contrast(ps: PromptSet, positive: str | None = None, negative: str | None = None) -> Contrast:
    """Split a prompt set into its positive and negative side (groups, or label pairs when there are no groups)."""
    groups = ps.groups()
    if groups or positive is not None or negative is not None:
        if positive is None or negative is None:
            rest = [g for g in groups if g not in (positive, negative)]
            positive = positive if positive is not None else (rest.pop(0) if rest else None)
            negative = negative if negative is not None else (rest.pop(0) if rest else None)
        if positive is None or negative is None:
            raise InputError(
                f"The prompt set '{ps.name}' needs two groups (the `group` field) for a contrast, but it has "
                f"{len(groups)} ({', '.join(repr(g) for g in groups) or 'none'}). Add a second group, or give pairs "
                "with the `label` field (pair id) and no groups.")
        if positive == negative:
            raise InputError(f"The positive and the negative group are both '{positive}'; pick two different groups.")
        pos = tuple(r for r in ps.rows if r.group == positive)
        neg = tuple(r for r in ps.rows if r.group == negative)
        for name, side, rows in ((positive, "positive", pos), (negative, "negative", neg)):
            if not rows:
                raise InputError(
                    f"The {side} group '{name}' is empty: the prompt set '{ps.name}' has no rows in it "
                    f"(groups: {', '.join(repr(g) for g in groups) or 'none'}). Each side needs at least one prompt.")
        pos_by_label = {r.label: i for i, r in enumerate(pos) if r.label is not None}
        pairs = tuple((pos_by_label[r.label], j) for j, r in enumerate(neg) if r.label in pos_by_label)
        return Contrast(positive, negative, pos, neg, pairs)
    # no groups: pairs by label, the first row of each pair positive
    by_label: dict[str, list[PromptRow]] = {}
    for r in ps.rows:
        if r.label is not None:
            by_label.setdefault(r.label, []).append(r)
    full = [rows for rows in by_label.values() if len(rows) == 2]
    if not full:
        raise InputError(
            f"The prompt set '{ps.name}' has no contrast: it needs two groups (the `group` field, one side may not be "
            "empty), or pairs of rows that share a `label` (pair id; the first row of each pair is the positive one).")
    pos = tuple(rows[0] for rows in full)
    neg = tuple(rows[1] for rows in full)
    return Contrast("first of pair", "second of pair", pos, neg, tuple((i, i) for i in range(len(full))))


# --------------------------------------------------------------------------------------------
# Reading activations
# --------------------------------------------------------------------------------------------
def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens (e.g. BOS)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_rows(lm: LoadedModel, rows: Sequence[PromptRow], rule: str) -> list[tuple[list[int], list[int]]]:
    """(token ids, positions to read) per row: the last prompt token, or the response tokens of prompt+response."""
    if rule not in POSITION_RULES:
        raise InputError(f"Unknown position rule '{rule}'. Use one of: {', '.join(POSITION_RULES)}.")
    out = []
    for r in rows:
        p_ids = token_ids(lm.tokenizer, r.prompt)
        if not p_ids:
            raise PromptSetError(f"Line {r.row}: the prompt has no tokens.")
        if rule == "last":
            ids, pos = p_ids, [len(p_ids) - 1]
        else:
            if not r.response:
                raise PromptSetError(
                    f"Line {r.row}: the position rule 'mean over response tokens' needs a `response` on every row, "
                    "and this row has none. Add responses or use the last prompt token.")
            ids = token_ids(lm.tokenizer, r.prompt + r.response)
            pos = list(range(len(p_ids), len(ids)))
            if not pos:
                raise PromptSetError(f"Line {r.row}: the response adds no tokens after the prompt's {len(p_ids)}.")
        if len(ids) > lm.context_length:
            raise PromptSetError(f"Line {r.row}: {len(ids)} tokens is longer than the model's context of "
                                 f"{lm.context_length} tokens. Shorten it.")
        out.append((ids, pos))
    return out


def pooled_residuals(lm: LoadedModel, encoded: Sequence[tuple[Sequence[int], Sequence[int]]], layers: Sequence[int],
                     *, batch_size: int = 16, progress: Progress = None, hooks_extra: Sequence = ()) -> np.ndarray:
    """Mean of h_l over each row's read positions, for every requested layer: [N, len(layers), d] fp32."""
    for l in layers:
        lm.check_layer(int(l))
    n, d = len(encoded), lm.adapter.d_model
    out = np.zeros((n, len(layers), d), dtype=np.float32)
    pad = pad_token_id(lm.tokenizer)
    parts = chunks(n, batch_size)
    for k, sl in enumerate(parts):
        rows = encoded[sl]
        batch = batch_from_ids([r[0] for r in rows], pad, "right")
        T = batch.input_ids.shape[1]
        w = torch.zeros(len(rows), T)
        for i, (_, pos) in enumerate(rows):
            w[i, list(pos)] = 1.0 / len(pos)
        w = w.to(lm.device)
        store: dict = {}

        def pool(key: int) -> Callable[[torch.Tensor], None]:
            def fn(h: torch.Tensor) -> None:
                store[key] = torch.einsum("bt,btd->bd", w, h.float()).cpu()
            return fn
        hooks = list(hooks_extra) + [residual_hook(lm.adapter, int(l), pool(j)) for j, l in enumerate(layers)]
        run(lm, batch, hooks)
        for j in range(len(layers)):
            out[sl, j] = store[j].numpy()
        if progress is not None:
            progress((k + 1) / len(parts), f"activations {sl.stop}/{n}")
    if not np.isfinite(out).all():
        from analysis.errors import NumericalError
        raise NumericalError("The model produced NaN or infinite activations on this prompt set.")
    return out


# --------------------------------------------------------------------------------------------
# Fitting a direction
# --------------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 and math.isfinite(n) else np.zeros_like(v)


def fit_direction(X_pos: np.ndarray, X_neg: np.ndarray, method: str,
                  pairs: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """One steering vector [d] from positive [n_pos, d] and negative [n_neg, d] activations (positives project higher)."""
    X_pos = np.asarray(X_pos, dtype=np.float64)
    X_neg = np.asarray(X_neg, dtype=np.float64)
    diff = X_pos.mean(axis=0) - X_neg.mean(axis=0)
    if method == "mean_diff":
        return diff.astype(np.float32)
    if method == "pca":
        if not pairs:
            raise InputError("The PCA method needs pairs: rows of the two groups that share a `label` (pair id). "
                             "Use the difference of means or logistic regression for unpaired groups.")
        D = np.stack([X_pos[i] - X_neg[j] for i, j in pairs])
        _, _, vt = np.linalg.svd(D, full_matrices=False)
        u = vt[0]
        if float(D.mean(axis=0) @ u) < 0:
            u = -u
    elif method == "logistic":
        from sklearn.linear_model import LogisticRegression
        X = np.concatenate([X_pos, X_neg])
        y = np.r_[np.ones(len(X_pos)), np.zeros(len(X_neg))]
        scale = float(np.abs(X).max()) or 1.0  # keep the solver well conditioned; the direction is unchanged
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit(X / scale, y)
        u = _unit(clf.coef_[0])
        if float(diff @ u) < 0:
            u = -u
    else:
        raise InputError(f"Unknown method '{method}'. Use one of: {', '.join(METHODS)}.")
    u = _unit(u)
    return (u * abs(float(diff @ u))).astype(np.float32)


def _split(contrast: Contrast, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/test indices into pos and neg (pairs stay on one side): (pos_tr, pos_te, neg_tr, neg_te)."""
    rng = np.random.default_rng(seed)
    n_pos, n_neg = len(contrast.pos), len(contrast.neg)
    if contrast.pairs and len(contrast.pairs) >= 2:
        order = rng.permutation(len(contrast.pairs))
        n_te = max(1, int(round(test_fraction * len(order))))
        te = {contrast.pairs[k] for k in order[:n_te]}
        pos_te = np.array(sorted({i for i, _ in te}))
        neg_te = np.array(sorted({j for _, j in te}))
        paired_pos = {i for i, _ in contrast.pairs}
        paired_neg = {j for _, j in contrast.pairs}
        # unpaired rows split on their own
        extra_pos = [i for i in rng.permutation(n_pos) if i not in paired_pos]
        extra_neg = [j for j in rng.permutation(n_neg) if j not in paired_neg]
        pos_te = np.array(sorted(set(pos_te) | set(extra_pos[: int(round(test_fraction * len(extra_pos)))])), dtype=int)
        neg_te = np.array(sorted(set(neg_te) | set(extra_neg[: int(round(test_fraction * len(extra_neg)))])), dtype=int)
    else:
        pos_te = np.sort(rng.permutation(n_pos)[: max(1, int(round(test_fraction * n_pos)))])
        neg_te = np.sort(rng.permutation(n_neg)[: max(1, int(round(test_fraction * n_neg)))])
    pos_tr = np.setdiff1d(np.arange(n_pos), pos_te)
    neg_tr = np.setdiff1d(np.arange(n_neg), neg_te)
    return pos_tr, pos_te, neg_tr, neg_te


def _auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    return float(roc_auc_score(y, np.r_[pos_scores, neg_scores]))


# --------------------------------------------------------------------------------------------
# The default layer
# --------------------------------------------------------------------------------------------
DEFAULT_LAYER_RULE = ("the highest held-out AUROC among layers ⌈L/3⌉..⌊3L/4⌋ (L = number of blocks; at least "
                      "layer 1), ties broken by the larger Cohen's d of the contrast set's projections on v_l, then "
                      "toward the middle of the model (L/2), then the earlier layer")


@dataclass(frozen=True)
class LayerChoice:
    """The default layer and why: the window searched, its AUROC and Cohen's d, how many layers tied on AUROC."""

    layer: int
    window: tuple[int, int]
    n_blocks: int
    auroc: float
    separation: float
    n_tied: int
    decided_by: str  # "auroc", "separation", "middle" (the step of the rule that settled it)
    in_window: bool = True

    @property
    def has_auroc(self) -> bool:
        """True when the chosen layer has a measured held-out AUROC."""
        return math.isfinite(self.auroc)

    @property
    def caption(self) -> str:
        """One sentence for the page and the metadata: the layer, why, and the rule."""
        lo, hi = self.window
        where = (f"layers {lo}–{hi}" if hi > lo else f"layer {lo}") if self.in_window else \
            "the layers these vectors cover (none of them is inside the window)"
        d = f"Cohen's d {self.separation:.2f}" if math.isfinite(self.separation) else "Cohen's d not measured"
        if not math.isfinite(self.auroc):
            why = f"no held-out AUROC for these vectors, so among {where} "
            why += ("the one whose groups separate most" + f" ({d})" if self.decided_by == "separation"
                    else "the one nearest the middle of the model")
        elif self.decided_by == "auroc":
            why = f"best held-out AUROC {self.auroc:.2f} among {where} ({d})"
        else:
            why = (f"best held-out AUROC {self.auroc:.2f} among {where}, shared by {self.n_tied} layers; "
                   + (f"of those it separates the groups most ({d})" if self.decided_by == "separation"
                      else "of those the one nearest the middle of the model"))
        return f"Layer {self.layer} (default): {why}. Rule (L = {self.n_blocks}): {DEFAULT_LAYER_RULE}."


def default_window(n_blocks: int) -> tuple[int, int]:
    """Layers searched for the default: (⌈L/3⌉, ⌊3L/4⌋), at least layer 1 and never empty (L = 4 gives 2..3)."""
    L = max(1, int(n_blocks))
    lo = max(1, math.ceil(L / 3))
    hi = min(L, max(lo, (3 * L) // 4))
    return lo, hi


def cohens_d(projections: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Per column of projections [N, k]: (mean pos − mean neg) / pooled sd [k] (NaN: < 3 rows or no spread)."""
    P = np.asarray(projections, dtype=np.float64)
    pos = np.asarray(is_positive, dtype=bool)
    out = np.full(P.shape[1] if P.ndim == 2 else 0, np.nan)
    n1, n2 = int(pos.sum()), int((~pos).sum())
    if P.ndim != 2 or n1 < 1 or n2 < 1 or n1 + n2 < 3:
        return out
    var = ((n1 - 1) * P[pos].var(axis=0, ddof=1 if n1 > 1 else 0)
           + (n2 - 1) * P[~pos].var(axis=0, ddof=1 if n2 > 1 else 0)) / (n1 + n2 - 2)
    sd = np.sqrt(var)
    ok = np.isfinite(sd) & (sd > 0)
    out[ok] = (P[pos].mean(axis=0) - P[~pos].mean(axis=0))[ok] / sd[ok]
    return out


def choose_default_layer(layers: Sequence[int], auroc: Sequence[float], separation: Sequence[float] | None,
                         n_blocks: int) -> LayerChoice:
    """The default layer of steering vectors by DEFAULT_LAYER_RULE (NaN AUROC or d = not measured, never chosen over
    a measured value).

    Why a window: on a real model the held-out AUROC is often 1.0 from the first blocks on, where v_l is tiny and
    adding it does nothing (SmolLM2-135M: AUROC 1.0 from layer 1 of 30); steering works at middle depth, where the
    steering papers (CAA, Persona Vectors) also apply their vectors. The window ⌈L/3⌉..⌊3L/4⌋ keeps the pick
    there (L = 30: 10..22; L = 4 or 5: 2..3); when none of ``layers`` is inside it (a file with a few layers),
    every layer ≥ 1 (else every layer) is a candidate. Cohen's d is in-sample (the vectors are fitted on the same
    rows), which is why it only ranks layers that tie on the held-out AUROC: with a few held-out rows the AUROC
    saturates at 1.0 and a held-out d would rest on two or three points per group.
    """
    layers = [int(l) for l in layers]
    if not layers:
        raise InputError("These steering vectors have no layers.")
    a_all = np.asarray(auroc, dtype=float).reshape(-1)
    d_all = (np.full(len(layers), np.nan) if separation is None
             else np.asarray(separation, dtype=float).reshape(-1))
    if a_all.shape != (len(layers),):
        a_all = np.full(len(layers), np.nan)
    if d_all.shape != (len(layers),):
        d_all = np.full(len(layers), np.nan)
    L = max(1, int(n_blocks))
    lo, hi = default_window(L)
    cand = [k for k, l in enumerate(layers) if lo <= l <= hi]
    in_window = bool(cand)
    if not cand:
        cand = [k for k, l in enumerate(layers) if l >= 1] or list(range(len(layers)))
    tied, decided = list(cand), "middle"
    a = a_all[cand]
    if np.isfinite(a).any():
        best = float(np.nanmax(a))
        tied = [k for k in cand if np.isfinite(a_all[k]) and a_all[k] >= best - 1e-9]
        decided = "auroc"
    n_tied = len(tied)
    if len(tied) > 1:
        d = d_all[tied]
        if np.isfinite(d).any():
            dmax = float(np.nanmax(d))
            tied = [k for k in tied if np.isfinite(d_all[k]) and d_all[k] >= dmax - 1e-9 * max(1.0, abs(dmax))]
            decided = "separation"
        if len(tied) > 1:
            decided = "middle"
    pick = min(tied, key=lambda k: (abs(layers[k] - L / 2), layers[k]))
    return LayerChoice(layer=layers[pick], window=(lo, hi), n_blocks=L, auroc=float(a_all[pick]),
                       separation=float(d_all[pick]), n_tied=n_tied, decided_by=decided, in_window=in_window)


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteeringVectors:
    """Steering vectors for a set of layers, with how they were made.

    vectors [k, d] fp32 for ``layers`` (k entries, usually 0..L); auroc [k] held-out separability (NaN when
    not measured, e.g. for a loaded file); projections [N, k] of every contrast row on the unit vector, with
    is_positive [N] and the row texts in ``prompts``; n_blocks = L of the model (0 = not recorded).
    """

    vectors: np.ndarray
    layers: tuple[int, ...]
    model_name: str
    method: str
    position_rule: str
    prompt_set_name: str
    prompt_set_sha256: str
    positive: str
    negative: str
    auroc: np.ndarray
    n_train: int = 0
    n_test: int = 0
    seed: int = 0
    projections: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    is_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    prompts: tuple[str, ...] = ()
    n_blocks: int = 0

    @property
    def d_model(self) -> int:
        """Width of the vectors."""
        return int(self.vectors.shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 of the vectors and their metadata (a cache key)."""
        h = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes())
        h.update(json.dumps(self.metadata(), sort_keys=True).encode())
        return h.hexdigest()

    def vector(self, layer: int) -> np.ndarray:
        """v_layer [d] (InputError if this set has no vector for that layer)."""
        if layer not in self.layers:
            raise InputError(f"These steering vectors have no layer {layer}; they cover layer(s) "
                             f"{_layers_text(self.layers)}.")
        return self.vectors[self.layers.index(layer)]

    def unit(self, layer: int) -> np.ndarray:
        """v_layer / ||v_layer|| [d] (zeros for a zero vector)."""
        return _unit(self.vector(layer).astype(np.float64)).astype(np.float32)

    def separation(self) -> np.ndarray:
        """Cohen's d of the contrast rows' projections on v_l per layer [k] (NaN without projections or spread)."""
        return cohens_d(self.projections, self.is_positive) if self.projections.size else np.full(len(self.layers),
                                                                                                   np.nan)

    @property
    def blocks(self) -> int:
        """L, the number of blocks of the model the vectors were made on (the last layer when not recorded)."""
        return int(self.n_blocks) if self.n_blocks > 0 else max(self.layers)

    def default_layer_choice(self) -> LayerChoice:
        """The default layer by DEFAULT_LAYER_RULE, with why (LayerChoice.caption)."""
        return choose_default_layer(self.layers, self.auroc, self.separation(), self.blocks)

    def default_layer(self) -> int:
        """The layer every view starts on (page, command line, reports): see DEFAULT_LAYER_RULE."""
        return self.default_layer_choice().layer

    def metadata(self) -> dict[str, str]:
        """String metadata written into the safetensors header."""
        return {
            "format": "logitscope-steering-vectors", "format_version": FORMAT_VERSION,
            "model_name": self.model_name, "layers": json.dumps(list(self.layers)), "method": self.method,
            "position_rule": self.position_rule, "prompt_set_name": self.prompt_set_name,
            "prompt_set_sha256": self.prompt_set_sha256, "positive": self.positive, "negative": self.negative,
            "auroc": json.dumps([None if not math.isfinite(float(x)) else float(x) for x in self.auroc]),
            "d_model": str(self.d_model), "seed": str(self.seed), "n_blocks": str(self.blocks),
        }


def _layers_text(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(str(l) for l in layers)


def extract_vectors(lm: LoadedModel, ps: PromptSet, *, positive: str | None = None, negative: str | None = None,
                    method: str = "mean_diff", position_rule: str = "last", test_fraction: float = 0.3,
                    seed: int = 0, progress: Progress = None) -> SteeringVectors:
    """Fit a steering vector per layer 0..L from a contrastive set and measure held-out AUROC per layer."""
    if method not in METHODS:
        raise InputError(f"Unknown method '{method}'. Use one of: {', '.join(METHODS)}.")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"The held-out fraction must be between 0 and 1, got {test_fraction}.")
    contrast = split_contrast(ps, positive, negative)
    layers = list(range(lm.adapter.n_layers + 1))
    rows = list(contrast.pos) + list(contrast.neg)
    enc = encode_rows(lm, rows, position_rule)
    acts = pooled_residuals(lm, enc, layers, progress=(lambda f, m: progress(0.9 * f, m)) if progress else None)
    n_pos = len(contrast.pos)
    A_pos, A_neg = acts[:n_pos], acts[n_pos:]
    can_split = len(contrast.pos) >= 2 and len(contrast.neg) >= 2
    tr_pairs: list[tuple[int, int]] = []
    if can_split:
        pos_tr, pos_te, neg_tr, neg_te = _split(contrast, test_fraction, seed)
        pos_tr_idx = {int(i): k for k, i in enumerate(pos_tr)}
        neg_tr_idx = {int(j): k for k, j in enumerate(neg_tr)}
        tr_pairs = [(pos_tr_idx[i], neg_tr_idx[j]) for i, j in contrast.pairs if i in pos_tr_idx and j in neg_tr_idx]
    vectors = np.zeros((len(layers), lm.adapter.d_model), dtype=np.float32)
    auroc = np.full(len(layers), np.nan)
    for k, l in enumerate(layers):
        vectors[k] = fit_direction(A_pos[:, k], A_neg[:, k], method, contrast.pairs)
        if can_split and (method != "pca" or tr_pairs):
            u = _unit(fit_direction(A_pos[pos_tr, k], A_neg[neg_tr, k], method, tr_pairs).astype(np.float64))
            auroc[k] = _auroc(A_pos[pos_te, k] @ u, A_neg[neg_te, k] @ u)
        if progress is not None:
            progress(0.9 + 0.1 * (k + 1) / len(layers), f"layer {l}")
    units = np.stack([_unit(v.astype(np.float64)) for v in vectors])
    proj = np.einsum("nkd,kd->nk", acts.astype(np.float64), units).astype(np.float32)
    return SteeringVectors(
        vectors=vectors, layers=tuple(layers), model_name=lm.name, method=method, position_rule=position_rule,
        prompt_set_name=ps.name, prompt_set_sha256=ps.sha256, positive=contrast.positive_name,
        negative=contrast.negative_name, auroc=auroc,
        n_train=int(len(pos_tr) + len(neg_tr)) if can_split else 0,
        n_test=int(len(pos_te) + len(neg_te)) if can_split else 0, seed=seed, projections=proj,
        is_positive=np.r_[np.ones(n_pos, dtype=bool), np.zeros(len(contrast.neg), dtype=bool)],
        prompts=tuple(r.prompt for r in rows), n_blocks=lm.adapter.n_layers)


# --------------------------------------------------------------------------------------------
# Trait tokens for the global logit shift
# --------------------------------------------------------------------------------------------
DEMO_TRAIT_TOKENS = (" Ugh", " Sure")  # the demo world's grumpy opener vs the base model's reply


@dataclass(frozen=True)
class TraitTokens:
    """Default tokens a (trait) and b of the logit difference z(a) − z(b); empty strings when there is none.

    source: "contrast" (the contrast set's responses), "demo" (a demo model's tokens) or "none"; note says so.
    """

    token_a: str
    token_b: str
    source: str
    note: str


def _first_response_tokens(lm: LoadedModel, rows: Sequence[PromptRow]) -> list[str]:
    """The first token of each row's response as it is tokenized after the prompt, kept when it is one token alone."""
    out = []
    for r in rows:
        if not r.response:
            continue
        p_ids = token_ids(lm.tokenizer, r.prompt)
        ids = token_ids(lm.tokenizer, r.prompt + r.response)
        if len(ids) <= len(p_ids) or ids[:len(p_ids)] != p_ids:
            continue
        text = lm.tokenizer.decode([ids[len(p_ids)]])
        if text.strip() and list(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) == [ids[len(p_ids)]]:
            out.append(text)
    return out


def contrast_trait_tokens(lm: LoadedModel, ps: PromptSet, positive: str | None = None,
                          negative: str | None = None) -> tuple[str, str] | None:
    """(a, b): the positive side's most common first response token vs the negative side's (a different one), or
    None when the set has no contrast or no responses that start with a single token."""
    try:
        contrast = split_contrast(ps, positive, negative) if ps.groups() else split_contrast(ps)
    except InputError:
        return None
    from collections import Counter
    pos = Counter(_first_response_tokens(lm, contrast.pos)).most_common()
    neg = Counter(_first_response_tokens(lm, contrast.neg)).most_common()
    if not pos or not neg:
        return None
    a = pos[0][0]
    b = next((t for t, _ in neg if t != a), None)
    return None if b is None else (a, b)


def default_trait_tokens(lm: LoadedModel, ps: PromptSet | None = None, positive: str | None = None,
                         negative: str | None = None) -> TraitTokens:
    """Tokens a and b for the global logit shift: from the contrast set's responses, else the demo tokens on a demo
    model, else empty (the user must give them)."""
    from analysis.model_defaults import is_demo
    got = contrast_trait_tokens(lm, ps, positive, negative) if ps is not None else None
    if got is not None:
        return TraitTokens(got[0], got[1], "contrast",
                           f"Default tokens a and b: the most common first response tokens of the "
                           f"{_side_names(ps, positive, negative)} sides of '{ps.name}'.")
    if is_demo(lm):
        return TraitTokens(*DEMO_TRAIT_TOKENS, "demo",
                           "Default tokens a and b: the demo world's grumpy opener and the base model's reply.")
    return TraitTokens("", "", "none",
                       "No default tokens for the logit difference: they come from the contrast set's responses (the "
                       "most common first token of each side), and these vectors have none that differ. Type token a (the trait, e.g. the first word of a reply in that persona) "
                       "and token b (the opposite reply's first word), each a single token with its leading space "
                       "where the tokenizer has one.")


def _side_names(ps: PromptSet, positive: str | None, negative: str | None) -> str:
    """'grumpy' and 'kind' style text naming the two sides of a contrast set."""
    try:
        c = split_contrast(ps, positive, negative) if ps.groups() else split_contrast(ps)
    except InputError:
        return "two"
    return f"'{c.positive_name}' and '{c.negative_name}'"


# --------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Monitoring:
    """Projections h_l[last prompt token] . v_l/||v_l||: projections [N, k] for ``layers``; prompts, groups [N]."""

    projections: np.ndarray
    layers: tuple[int, ...]
    prompts: tuple[str, ...]
    groups: tuple[str, ...]


def monitor(lm: LoadedModel, ps: PromptSet, sv: SteeringVectors, layers: Sequence[int] | None = None, *,
            progress: Progress = None) -> Monitoring:
    """Project each prompt's last-token residual h_l on the unit steering vector, per layer."""
    check_compatible(sv, lm)
    layers = list(sv.layers if layers is None else layers)
    for l in layers:
        lm.check_layer(int(l))
        sv.vector(int(l))
    acts = pooled_residuals(lm, encode_rows(lm, ps.rows, "last"), layers, progress=progress)
    units = np.stack([sv.unit(int(l)) for l in layers]).astype(np.float64)
    proj = np.einsum("nkd,kd->nk", acts.astype(np.float64), units).astype(np.float32)
    groups = tuple(r.group or r.label or "(no group)" for r in ps.rows)
    return Monitoring(proj, tuple(int(l) for l in layers), tuple(ps.prompts), groups)


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------
def check_compatible(sv: SteeringVectors, lm: LoadedModel) -> None:
    """Raise IncompatibleModelsError if the vectors' width or layers do not fit this model."""
    if sv.d_model != lm.adapter.d_model:
        raise IncompatibleModelsError(
            f"These steering vectors are {sv.d_model}-dimensional (made on '{sv.model_name}'), but "
            f"'{lm.name}' has a residual stream of width {lm.adapter.d_model}. Build vectors on this model.")
    bad = [l for l in sv.layers if not 0 <= l <= lm.adapter.n_layers]
    if bad:
        raise IncompatibleModelsError(
            f"These steering vectors include layer(s) {', '.join(map(str, bad))}, but '{lm.name}' has layers "
            f"0..{lm.adapter.n_layers}.")


def save_vectors(sv: SteeringVectors, layers: Sequence[int] | None = None) -> bytes:
    """The vectors (all, or only ``layers``) as safetensors bytes with metadata in the header."""
    from safetensors.numpy import save
    keep = list(sv.layers if layers is None else layers)
    idx = []
    for l in keep:
        sv.vector(int(l))
        idx.append(sv.layers.index(int(l)))
    sub = SteeringVectors(vectors=np.ascontiguousarray(sv.vectors[idx], dtype=np.float32),
                          layers=tuple(int(l) for l in keep), model_name=sv.model_name, method=sv.method,
                          position_rule=sv.position_rule, prompt_set_name=sv.prompt_set_name,
                          prompt_set_sha256=sv.prompt_set_sha256, positive=sv.positive, negative=sv.negative,
                          auroc=np.asarray(sv.auroc)[idx], seed=sv.seed, n_blocks=sv.blocks)
    return save({"vectors": sub.vectors}, metadata=sub.metadata())


def load_vectors(data: bytes) -> SteeringVectors:
    """Read steering vectors saved by save_vectors (InputError for anything else)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load
    try:
        tensors = load(bytes(data))
        n = int.from_bytes(bytes(data[:8]), "little")
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise InputError(f"This file is not a readable .safetensors file ({err}).") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != "logitscope-steering-vectors" or "vectors" not in tensors:
        raise InputError("This .safetensors file does not hold Logitscope steering vectors (no 'vectors' tensor with "
                         "Logitscope metadata). Save vectors from the Build tab and load that file.")
    try:
        vectors = np.asarray(tensors["vectors"], dtype=np.float32)
        layers = tuple(int(l) for l in json.loads(meta["layers"]))
        auroc = np.array([np.nan if a is None else float(a) for a in json.loads(meta.get("auroc", "[]"))])
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"The steering-vector file's metadata is damaged ({err}).") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(layers):
        raise InputError(f"The steering-vector file holds {vectors.shape[0] if vectors.ndim else 0} vectors for "
                         f"{len(layers)} layers; it is damaged.")
    if not np.isfinite(vectors).all():
        raise InputError("The steering-vector file contains NaN or infinite values.")
    if auroc.shape != (len(layers),):
        auroc = np.full(len(layers), np.nan)
    try:
        n_blocks = max(0, int(meta.get("n_blocks", 0) or 0))
    except ValueError:
        n_blocks = 0
    return SteeringVectors(vectors=vectors, layers=layers, model_name=meta.get("model_name", "?"),
                           method=meta.get("method", "?"), position_rule=meta.get("position_rule", "?"),
                           prompt_set_name=meta.get("prompt_set_name", "?"),
                           prompt_set_sha256=meta.get("prompt_set_sha256", ""), positive=meta.get("positive", "?"),
                           negative=meta.get("negative", "?"), auroc=auroc, seed=int(meta.get("seed", 0) or 0),
                           n_blocks=n_blocks)
