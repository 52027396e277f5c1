"""Compute backends: where the engine's per-prompt work runs ("this process", the default, or a pool of Ray actors).

The seam: the engine's prompt-heavy entry points (``lens.lens_trace``, ``ood_features.extract_features``,
``steering_activations.pooled_residuals``, ``neuron_means.mean_activations``) ask ``current_backend()``
whether to shard. The default backend (``PROCESS``) never shards, so nothing changes for the app or the tests.
A sharding backend (``analysis.compute.ray_pool.RayBackend``) receives shards - consecutive whole batches of the run
the single process would make - and runs the SAME engine function on each of them elsewhere;
``analysis.compute.sharding`` merges the shard results into exactly the single-process result (per-prompt rows
concatenated in input order, sums and counts added in the single-process batch order).

``use_backend(backend)`` sets the backend of a block of code (a contextvar: per thread / per Streamlit script
run); ``parse_backend("local:2")`` turns the CLI's ``--ray`` value or the sidebar's address into a backend.
Ray itself is only imported when a Ray backend is made.
"""
from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from analysis.core.errors import BackendError
from analysis.core.progress import Progress

Shard = tuple[tuple, dict]  # (positional arguments after lm, keyword arguments) of one call of the engine function
LOCAL_RE = re.compile(r"^local:(\d+)$")
CLIENT_RE = re.compile(r"^ray://([A-Za-z0-9_.\-\[\]:]+):(\d{1,5})$")


class Backend:
    """This process: engine functions run here as they always did; nothing is sharded."""

    label = "process"

    def shards_for(self, lm: Any, n_batches: int) -> int:
        """How many shards to split a run of ``n_batches`` batches into (0 or 1 = run in this process)."""
        return 0

    def map_shards(self, lm: Any, fn: str, shards: Sequence[Shard], weights: Sequence[float] | None = None,
                   progress: Progress = None) -> list:
        """Results of ``fn(lm, *args, **kwargs)`` ("module:function") for each shard, in shard order."""
        func = resolve(fn)
        out, total = [], float(sum(weights)) if weights else float(len(shards))
        done = 0.0
        for i, (args, kwargs) in enumerate(shards):
            w = (weights[i] if weights else 1.0) / max(total, 1e-12)
            rep = (lambda f, m, d=done, w=w: progress(d + w * f, m)) if progress else None
            out.append(func(lm, *args, progress=rep, **kwargs))
            done += w
        return out

    def close(self) -> None:
        """Release what the backend holds (nothing here)."""


PROCESS = Backend()
_CURRENT: contextvars.ContextVar[Backend] = contextvars.ContextVar("logitscope_backend", default=PROCESS)


def current_backend() -> Backend:
    """The backend of the running code (PROCESS unless inside ``use_backend``)."""
    return _CURRENT.get()


@contextmanager
def use_backend(backend: Backend | None) -> Iterator[Backend]:
    """Run the block with ``backend`` (None = this process) as the current backend."""
    token = _CURRENT.set(backend or PROCESS)
    try:
        yield backend or PROCESS
    finally:
        _CURRENT.reset(token)


def resolve(path: str) -> Callable:
    """The function named "package.module:function"."""
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def check_address(text: str) -> str:
    """The --ray value normalised ('auto', 'ray://HOST:PORT' or 'local:N'); BackendError naming the forms if not."""
    t = (text or "").strip()
    m = LOCAL_RE.match(t)
    c = CLIENT_RE.match(t)
    if t == "auto" or c or (m and 1 <= int(m.group(1)) <= 256):
        if c and not 1 <= int(c.group(2)) <= 65535:
            raise BackendError(f"Ray address {t!r} has no valid port (1..65535).")
        return t
    raise BackendError(f"Ray address {t!r} is not valid: use 'auto' (a running cluster on this machine), "
                       "'ray://HOST:PORT' (a remote cluster's client port, usually 10001) or 'local:N' "
                       "(start Ray here with N workers, N >= 1).")


def group_batches(n_batches: int, n_shards: int) -> list[slice]:
    """Split batches 0..n_batches-1 into at most n_shards consecutive, near-equal groups (slices of batches)."""
    n_shards = max(1, min(int(n_shards), n_batches))
    base, extra = divmod(n_batches, n_shards)
    out, start = [], 0
    for i in range(n_shards):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out
