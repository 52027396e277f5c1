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
# The result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteeringVectors:
    """Steering vectors for a set of layers, with how they were made.

    vectors [k, d] fp32 for ``layers`` (k entries, usually 0..L); auroc [k] held-out separability (NaN when
    not measured, e.g. for a loaded file); projections [N, k] of every contrast row on the unit vector, with
    is_positive [N] and the row texts in ``prompts``.
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

    def best_layer(self) -> int:
        """The layer with the highest held-out AUROC (ties: the earliest; the middle layer if none measured)."""
        a = np.asarray(self.auroc, dtype=float)
        if a.size == 0 or not np.isfinite(a).any():
            return self.layers[len(self.layers) // 2]
        return self.layers[int(np.nanargmax(a))]

    def metadata(self) -> dict[str, str]:
        """String metadata written into the safetensors header."""
        return {
            "format": "logitscope-steering-vectors", "format_version": FORMAT_VERSION,
            "model_name": self.model_name, "layers": json.dumps(list(self.layers)), "method": self.method,
            "position_rule": self.position_rule, "prompt_set_name": self.prompt_set_name,
            "prompt_set_sha256": self.prompt_set_sha256, "positive": self.positive, "negative": self.negative,
            "auroc": json.dumps([None if not math.isfinite(float(x)) else float(x) for x in self.auroc]),
            "d_model": str(self.d_model), "seed": str(self.seed),
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
        prompts=tuple(r.prompt for r in rows))


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
                          auroc=np.asarray(sv.auroc)[idx], seed=sv.seed)
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
    return SteeringVectors(vectors=vectors, layers=layers, model_name=meta.get("model_name", "?"),
                           method=meta.get("method", "?"), position_rule=meta.get("position_rule", "?"),
                           prompt_set_name=meta.get("prompt_set_name", "?"),
                           prompt_set_sha256=meta.get("prompt_set_sha256", ""), positive=meta.get("positive", "?"),
                           negative=meta.get("negative", "?"), auroc=auroc, seed=int(meta.get("seed", 0) or 0))
