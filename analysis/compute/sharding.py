"""Sharded runs of the engine's prompt-heavy functions on a backend (analysis.compute.backend), merged exactly.

Every plan cuts the run into the SAME batches the single process would make (``chunks`` in input order, or
``length_batches`` for the length-bucketed functions) and gives each shard whole consecutive batches, which it runs
with bucketing off so that it forms exactly those batches again. Each row is therefore computed in the same
padded batch as in the single-process run, and the merge is exact: per-prompt rows go back to their input
positions; sums are added batch by batch in the single-process order (never means of means).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from analysis.compute.backend import Backend, Progress, group_batches
from analysis.core.batching import chunks, length_batches, token_rows
from analysis.core.errors import InputError
from analysis.core.wording import plural, verb


def _plan(backend: Backend, lm: Any, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Input indices of each shard: the concatenation of a group of consecutive batches."""
    groups = group_batches(len(batches), backend.shards_for(lm, len(batches)))
    return [np.concatenate(batches[g]) for g in groups]


def _consecutive(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s.start, s.stop) for s in chunks(n, size)]


# ------------------------------------------------------------------------------------------ logit lens
def lens_trace_sharded(backend: Backend, lm: Any, prompts: Sequence[str], rows: list[list[int]], text_targets: list[int],
                       notes: list[str], *, k: int, target_mode: str, batch_size: int, chunk_rows: int | None,
                       block_rows: int | None, padding_side: str, progress: Progress = None) -> Any:
    """lens_trace of ``prompts`` (token ``rows``, resolved text targets, the run's notes) on the backend's shards."""
    from analysis.lens.logit_lens import TARGET_NONE, TARGET_TEXT, LensTrace

    shards, plan = [], _plan(backend, lm, _consecutive(len(rows), batch_size))
    for idx in plan:
        mode, tg = target_mode, None
        if target_mode == TARGET_TEXT:  # resolved ids, no notes; a shard without any target runs as 'none' (same rows)
            tg = [int(text_targets[i]) if text_targets[i] >= 0 else None for i in idx]
            if all(t is None for t in tg):
                mode, tg = TARGET_NONE, None
        shards.append((([prompts[i] for i in idx],),
                       dict(k=k, target_mode=mode, targets=tg, batch_size=batch_size, chunk_rows=chunk_rows,
                            block_rows=block_rows, padding_side=padding_side, token_ids=[rows[i] for i in idx])))
    parts = backend.map_shards(lm, "analysis.lens.logit_lens:lens_trace", shards, [len(i) for i in plan], progress)
    N, T, L = len(rows), max(len(r) for r in rows), lm.adapter.n_layers
    fills = {"input_ids": -1, "mask": False, "top_ids": -1, "top_probs": np.nan, "entropy": np.nan, "kl": np.nan,
             "target_ids": -1, "target_prob": np.nan, "target_rank": 0, "xent": np.nan, "decision_depth": -1}
    out: dict[str, np.ndarray] = {}
    for name, fill in fills.items():  # [N, T], [N, L+1, T] or [N, L+1, T, k]: each shard pads only to its own T
        ref = getattr(parts[0], name)
        t_axis = 2 if ref.ndim == 4 else ref.ndim - 1
        shape = list(ref.shape)
        shape[0], shape[t_axis] = N, T
        arr = np.full(shape, fill, ref.dtype)
        for idx, part in zip(plan, parts):
            a = getattr(part, name)
            where: list[Any] = [idx] + [slice(None)] * (a.ndim - 1)
            where[t_axis] = slice(0, a.shape[t_axis])
            arr[tuple(where)] = a
        out[name] = arr
    strings: dict[int, str] = {}
    for part in parts:
        strings.update(part.strings)
    if progress:
        progress(1.0, "done")
    return LensTrace(model_name=lm.name, prompts=tuple(prompts), n_layers=L, vocab_size=lm.adapter.vocab_size, k=k,
                     target_mode=target_mode, strings=dict(sorted(strings.items())), notes=tuple(notes), **out)


# ------------------------------------------------------------------------------------------ OOD features
def short_prompts_error(prompts: Sequence[str], lengths: Sequence[int]) -> InputError | None:
    """extract_features' error for prompts of a single token (nothing predicted), or None."""
    short = np.flatnonzero(np.asarray(lengths) < 2)
    if not short.size:
        return None
    return InputError(f"{plural(short.size, 'prompt')} {verb(short.size)} a single token, so no token is predicted and "
                      f"the mean log-likelihood is undefined (prompt {int(short[0]) + 1}: {prompts[short[0]]!r}). "
                      "Use prompts of at least one word.")


def extract_features_sharded(backend: Backend, lm: Any, prompts: tuple[str, ...], *, layers: tuple[int, ...],
                             batch_size: int, top_k: int, lens_top_k: int, padding_side: str, bucket: bool,
                             progress: Progress = None) -> Any:
    """extract_features (without BLOOD) on the backend's shards, rows back at their input positions."""
    from analysis.ood.features import OODFeatures

    lengths = [len(r) for r in token_rows(lm.tokenizer, prompts, max_length=lm.context_length)]
    err = short_prompts_error(prompts, lengths)
    if err is not None:
        raise err
    plan = _plan(backend, lm, length_batches(lengths, batch_size, sort=bucket))
    shards = [(([prompts[i] for i in idx],), dict(layers=layers, batch_size=batch_size, top_k=top_k,
                                                 lens_top_k=lens_top_k, padding_side=padding_side, bucket=False))
              for idx in plan]
    parts = backend.map_shards(lm, "analysis.ood.features:extract_features", shards, [len(i) for i in plan], progress)
    n, p0 = len(prompts), parts[0]
    merged = {}
    for name, axis in (("last", 1), ("mean", 1), ("head_in", 1), ("lens_top", 1), ("lens_lse", 1), ("final_top", 0),
                       ("final_lse", 0), ("mean_loglik", 0), ("n_predicted", 0)):
        ref = getattr(p0, name)
        shape = list(ref.shape)
        shape[axis] = n
        arr = np.zeros(shape, ref.dtype)
        for idx, part in zip(plan, parts):
            if axis:
                arr[:, idx] = getattr(part, name)
            else:
                arr[idx] = getattr(part, name)
        merged[name] = arr
    return OODFeatures(tuple(prompts), tuple(layers), vim_origin=p0.vim_origin, vocab_size=p0.vocab_size, blood=None,
                       **merged)


# ------------------------------------------------------------------------------------------ steering activations
def pooled_residuals_sharded(backend: Backend, lm: Any, encoded: Sequence, layers: Sequence[int], *, batch_size: int,
                             progress: Progress = None) -> np.ndarray:
    """pooled_residuals [N, len(layers), d] on the backend's shards, concatenated in input order."""
    plan = _plan(backend, lm, _consecutive(len(encoded), batch_size))
    shards = [(([encoded[i] for i in idx], list(layers)), dict(batch_size=batch_size)) for idx in plan]
    parts = backend.map_shards(lm, "analysis.steering.activations:pooled_residuals", shards, [len(i) for i in plan],
                               progress)
    return np.concatenate(parts, axis=0)


# ------------------------------------------------------------------------------------------ neuron reference means
def activation_sums_sharded(backend: Backend, lm: Any, prompts: Sequence[str], neurons: Sequence, *, batch_size: int,
                            bucket: bool, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """activation_sums' per-batch sums [n_batches, n] and token counts [n_batches], in the single-process order."""
    lengths = [len(r) for r in token_rows(lm.tokenizer, prompts, max_length=lm.context_length)]
    plan = _plan(backend, lm, length_batches(lengths, batch_size, sort=bucket))
    shards = [(([prompts[i] for i in idx], list(neurons)), dict(batch_size=batch_size, bucket=False)) for idx in plan]
    parts = backend.map_shards(lm, "analysis.neurons.means:activation_sums", shards, [len(i) for i in plan],
                               progress)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
