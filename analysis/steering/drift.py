"""Persona drift between two checkpoints along a steering vector, and flagging training rows that push the trait.

Drift (Persona Vectors, "finetuning shift"): per layer l, mean over prompts of (h_l^B - h_l^A) at the last
prompt token, projected on the unit vector v_l/||v_l||. As a baseline the same is measured along random
directions of the same norm (seeded): one direction (``random_drift``) and the spread over several
(``random_abs_mean``, the mean |drift| over ``n_random`` directions).

Data flagging (projection difference): per row with a response, a(x, y) = mean of h_l over the response
tokens; y' = the model's own greedy response; dP = (a(x, y) - a(x, y')) . v_l/||v_l||. Rows are ranked by dP,
highest first (those push the model toward the trait the most). dP = 0 when y = y'.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.prompts import PromptSet
from analysis.steering.activations import encode_rows, pooled_residuals, token_ids
from analysis.steering.steer import generate_ids
from analysis.steering.vectors import SteeringVectors, check_compatible


@dataclass(frozen=True)
class Drift:
    """Drift of checkpoint B relative to A along the vectors, per layer [k]; per_prompt [N, k]; baselines [k]."""

    layers: tuple[int, ...]
    drift: np.ndarray
    random_drift: np.ndarray
    random_abs_mean: np.ndarray
    per_prompt: np.ndarray
    prompts: tuple[str, ...]
    model_a: str
    model_b: str
    seed: int
    n_random: int


def random_directions(d: int, norms: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n seeded Gaussian directions per layer, each scaled to that layer's norm: [n, k, d] fp64."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n, len(norms), d))
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    return r * np.asarray(norms, dtype=np.float64)[None, :, None]


def persona_drift(lm_a: LoadedModel, lm_b: LoadedModel, ps: PromptSet, sv: SteeringVectors,
                  layers: Sequence[int] | None = None, *, seed: int = 0, n_random: int = 16,
                  progress: Progress = None) -> Drift:
    """Mean last-prompt-token shift h^B - h^A per layer, projected on the unit vector and on random directions."""
    check_compatible(sv, lm_a)
    check_compatible(sv, lm_b)
    if lm_a.adapter.n_layers != lm_b.adapter.n_layers or lm_a.adapter.d_model != lm_b.adapter.d_model:
        raise IncompatibleModelsError(
            f"Drift needs two checkpoints of the same shape: '{lm_a.name}' has {lm_a.adapter.n_layers} layers of width "
            f"{lm_a.adapter.d_model}, '{lm_b.name}' has {lm_b.adapter.n_layers} of width {lm_b.adapter.d_model}.")
    if len(ps) == 0:
        raise InputError("The drift prompt set is empty.")
    layers = [int(l) for l in (sv.layers if layers is None else layers)]
    for l in layers:
        lm_a.check_layer(l)
        sv.vector(l)
    enc_a = encode_rows(lm_a, ps.rows, "last")
    enc_b = encode_rows(lm_b, ps.rows, "last")
    if [e[0] for e in enc_a] != [e[0] for e in enc_b]:
        raise IncompatibleModelsError(
            f"'{lm_a.name}' and '{lm_b.name}' tokenize these prompts differently, so their residual streams cannot be "
            "compared position by position. Drift needs two checkpoints of the same model (same tokenizer).")
    half = (lambda f0: (lambda f, m: progress(f0 + 0.5 * f, m))) if progress else (lambda f0: None)
    h_a = pooled_residuals(lm_a, enc_a, layers, progress=half(0.0)).astype(np.float64)
    h_b = pooled_residuals(lm_b, enc_b, layers, progress=half(0.5)).astype(np.float64)
    delta = h_b - h_a  # [N, k, d]
    units = np.stack([sv.unit(l) for l in layers]).astype(np.float64)
    per_prompt = np.einsum("nkd,kd->nk", delta, units)
    norms = np.array([np.linalg.norm(sv.vector(l)) for l in layers])
    rand = random_directions(delta.shape[-1], np.where(norms > 0, norms, 1.0), max(1, n_random), seed)
    rand_units = rand / np.linalg.norm(rand, axis=-1, keepdims=True)
    mean_delta = delta.mean(axis=0)  # [k, d]
    rand_drift = np.einsum("kd,rkd->rk", mean_delta, rand_units)  # [n_random, k]
    return Drift(layers=tuple(layers), drift=per_prompt.mean(axis=0), random_drift=rand_drift[0],
                 random_abs_mean=np.abs(rand_drift).mean(axis=0), per_prompt=per_prompt.astype(np.float32),
                 prompts=tuple(ps.prompts), model_a=lm_a.name, model_b=lm_b.name, seed=seed, n_random=max(1, n_random))


@dataclass(frozen=True)
class Flagged:
    """Projection difference per row with a response [M]: dp, proj_data, proj_own; rows' prompts and responses."""

    layer: int
    dp: np.ndarray
    proj_data: np.ndarray
    proj_own: np.ndarray
    prompts: tuple[str, ...]
    responses: tuple[str, ...]
    own_responses: tuple[str, ...]
    lines: tuple[int, ...]

    def ranking(self) -> np.ndarray:
        """Row indices by dP, highest first: [M]."""
        return np.argsort(-self.dp, kind="stable")


def flag_data(lm: LoadedModel, ps: PromptSet, sv: SteeringVectors, layer: int, *, max_new_tokens: int = 24,
              progress: Progress = None) -> Flagged:
    """Rank rows with responses by (a(x, y) - a(x, y_own)) . v_hat: how much the dataset response pushes the trait."""
    check_compatible(sv, lm)
    lm.check_layer(layer)
    u = sv.unit(layer).astype(np.float64)
    rows = [r for r in ps.rows if r.response]
    if not rows:
        raise InputError(f"Data flagging needs rows with a `response`; the prompt set '{ps.name}' has none.")
    enc_data = encode_rows(lm, rows, "response")
    enc_own, own_texts = [], []
    for k, r in enumerate(rows):
        p_ids = token_ids(lm.tokenizer, r.prompt)
        new, _ = generate_ids(lm, p_ids, None, max_new_tokens, temperature=0.0)
        eos = lm.tokenizer.eos_token_id
        if eos is not None and new and new[-1] == eos and len(new) > 1:
            new = new[:-1]
        enc_own.append((p_ids + new, list(range(len(p_ids), len(p_ids) + len(new)))))
        try:
            own_texts.append(lm.tokenizer.decode(new, clean_up_tokenization_spaces=False))
        except TypeError:
            own_texts.append(lm.tokenizer.decode(new))
        if progress is not None:
            progress(0.8 * (k + 1) / len(rows), f"own response {k + 1}/{len(rows)}")
    a_data = pooled_residuals(lm, enc_data, [layer])[:, 0].astype(np.float64)
    a_own = pooled_residuals(lm, enc_own, [layer])[:, 0].astype(np.float64)
    if progress is not None:
        progress(1.0, "done")
    p_data, p_own = a_data @ u, a_own @ u
    return Flagged(layer, p_data - p_own, p_data, p_own, tuple(r.prompt for r in rows),
                   tuple(r.response or "" for r in rows), tuple(own_texts), tuple(r.row for r in rows))
