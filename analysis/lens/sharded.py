"""The logit lens on a sharding backend (analysis.compute.sharding): whole batches per shard, each shard's LensTrace
merged into exactly the single-process trace (rows back at their input positions, each padded to the run's length)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.compute.backend import Backend
from analysis.compute.sharding import consecutive_batches, shard_plan
from analysis.core.progress import Progress
from analysis.lens.inputs import TARGET_NONE, TARGET_TEXT
from analysis.lens.results import LensTrace


# ------------------------------------------------------------------------------------------ logit lens
def lens_trace_sharded(backend: Backend, lm: Any, prompts: Sequence[str], rows: list[list[int]], text_targets: list[int],
                       notes: list[str], *, k: int, target_mode: str, batch_size: int, chunk_rows: int | None,
                       block_rows: int | None, padding_side: str, progress: Progress = None) -> Any:
    """lens_trace of ``prompts`` (token ``rows``, resolved text targets, the run's notes) on the backend's shards."""
    shards, plan = [], shard_plan(backend, lm, consecutive_batches(len(rows), batch_size))
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
        for idx, part in zip(plan, parts, strict=True):
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
