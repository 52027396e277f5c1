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
Where the parts live: the contrast split in analysis.steering.contrast, token ids and pooled activations in
analysis.steering.activations, direction fitting and AUROC in analysis.steering.fit, the default layer rule in
analysis.steering.layer and the trait tokens in analysis.steering.traits; this module keeps the SteeringVectors
result, extraction, monitoring and save/load, and re-exports the moved names.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.prompts import PromptSet
from analysis.steering.activations import encode_rows, pooled_residuals
from analysis.steering.contrast import split_contrast
from analysis.steering.fit import METHODS, fit_direction, held_out_auroc, split_train_test, unit_vector
from analysis.steering.layer import LayerChoice, choose_default_layer, cohens_d

METHOD_LABELS = {"mean_diff": "difference of means", "pca": "PCA of paired differences",
                 "logistic": "logistic regression"}
READ_RULE_LABELS = {"last": "last prompt token", "response": "mean over response tokens"}
FORMAT_VERSION = "1"


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
        return unit_vector(self.vector(layer).astype(np.float64)).astype(np.float32)

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
        pos_tr, pos_te, neg_tr, neg_te = split_train_test(contrast, test_fraction, seed)
        pos_tr_idx = {int(i): k for k, i in enumerate(pos_tr)}
        neg_tr_idx = {int(j): k for k, j in enumerate(neg_tr)}
        tr_pairs = [(pos_tr_idx[i], neg_tr_idx[j]) for i, j in contrast.pairs if i in pos_tr_idx and j in neg_tr_idx]
    vectors = np.zeros((len(layers), lm.adapter.d_model), dtype=np.float32)
    auroc = np.full(len(layers), np.nan)
    for k, l in enumerate(layers):
        vectors[k] = fit_direction(A_pos[:, k], A_neg[:, k], method, contrast.pairs)
        if can_split and (method != "pca" or tr_pairs):
            u = unit_vector(fit_direction(A_pos[pos_tr, k], A_neg[neg_tr, k], method, tr_pairs).astype(np.float64))
            auroc[k] = held_out_auroc(A_pos[pos_te, k] @ u, A_neg[neg_te, k] @ u)
        if progress is not None:
            progress(0.9 + 0.1 * (k + 1) / len(layers), f"layer {l}")
    units = np.stack([unit_vector(v.astype(np.float64)) for v in vectors])
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
