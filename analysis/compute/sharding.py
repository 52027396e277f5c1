"""Shard plans for the engine's prompt-heavy functions on a backend (analysis.compute.backend), generic over methods.

Every plan cuts the run into the SAME batches the single process would make (``chunks`` in input order, or
``length_batches`` for the length-bucketed functions) and gives each shard whole consecutive batches, which it runs
with bucketing off so that it forms exactly those batches again. Each row is therefore computed in the same
padded batch as in the single-process run, and the merge is exact: per-prompt rows go back to their input
positions; sums are added batch by batch in the single-process order (never means of means). Each method merges its
own results beside the function it shards (lens/sharded.py, ood/features.py, steering/activations.py, neurons/means.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from analysis.compute.backend import Backend, group_batches
from analysis.core.batching import chunks


def shard_plan(backend: Backend, lm: Any, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Input indices of each shard: the concatenation of a group of consecutive batches."""
    groups = group_batches(len(batches), backend.shards_for(lm, len(batches)))
    return [np.concatenate(batches[g]) for g in groups]


def consecutive_batches(n: int, size: int) -> list[np.ndarray]:
    """Input indices of the batches ``chunks(n, size)`` makes: consecutive rows, in order."""
    return [np.arange(s.start, s.stop) for s in chunks(n, size)]


