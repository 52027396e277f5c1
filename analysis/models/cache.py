"""The model cache: loaded models shared by every session, bounded by a memory budget per device.

A thread-safe LRU keyed by ModelSpec. Each entry is accounted by its loaded weights' bytes (parameters + buffers,
per device). Before a load the model's size is estimated without reading its weights (safetensors headers, the
GGUF tensor table, or the config on the meta device); a model larger than the whole budget is refused with a
ModelBudgetError, and one that does not fit beside the cached models evicts the least recently used ones that are
not in use. Evicting really frees: the cache drops its reference, then gc.collect() and (on a GPU)
torch.cuda.empty_cache().

"In use" means any of: a lease (``with cache.lease(spec) as lm:``), a hold by a live thread (``hold=True``: the
app's script thread holds the models of its run; a hold ends with the thread or at ``release_thread()``), or the
model's lock held by another thread (a forward pass with hooks attached). Models in use are never evicted: the
load waits for them (up to ``wait_s``), or fails with a clear message when only the loading thread itself uses them.

Sizes, estimates and the budget per device (LOGITSCOPE_MODEL_BUDGET, else a fraction of the available memory) are
computed in analysis.models.memory; ``set_budget`` changes the budget at run time (the app's sidebar).
"""
from __future__ import annotations

import ctypes
import gc
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch

from analysis.core.errors import ModelBudgetError
from analysis.core.loading import LoadedModel, ModelSpec, load_model
from analysis.models.memory import ENV_BUDGET, Budget, SizeEstimate, estimate_bytes, format_bytes, weight_bytes

DEFAULT_WAIT_S = 60.0
_POLL_S = 0.05  # how often a waiting load re-checks holds (a thread's end is not signalled)

Loader = Callable[[ModelSpec], LoadedModel]


# ------------------------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class Eviction:
    """A model the cache freed: its label, spec, bytes and device, and the model it made room for."""

    label: str
    spec: ModelSpec
    nbytes: int
    device: str
    for_label: str | None = None

    def message(self) -> str:
        """A sentence for the person using the app."""
        why = f" to make room for {self.for_label}" if self.for_label else " to stay within the budget"
        return f"Freed {self.label} ({format_bytes(self.nbytes)} on {self.device}) from the model cache{why}."


@dataclass
class _Entry:
    lm: LoadedModel | None
    nbytes: dict[str, int]
    leases: dict[int, int] = field(default_factory=dict)  # thread ident -> open leases
    holds: dict[int, Any] = field(default_factory=dict)  # thread ident -> weakref to the holding thread
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceUse:
    """The cache's use of one device's budget."""

    device: str
    models: tuple[str, ...]
    used: int
    budget: int

    def text(self) -> str:
        """'2 models, 8.6 MB of the 13.5 GB budget on cpu'."""
        n = len(self.models)
        return (f"{n} model{'s' if n != 1 else ''}, {format_bytes(self.used)} of the {format_bytes(self.budget)} "
                f"budget on {self.device}")


class ModelCache:
    """Loaded models for all sessions, LRU-evicted to stay within a per-device byte budget (thread-safe)."""

    def __init__(self, budget: Budget | None = None, *, wait_s: float = DEFAULT_WAIT_S,
                 estimator: Callable[[ModelSpec], SizeEstimate] = estimate_bytes):
        self.budget = budget if budget is not None else Budget()
        self.wait_s = wait_s
        self.estimator = estimator
        self._entries: OrderedDict[ModelSpec, _Entry] = OrderedDict()  # least recently used first
        self._loading: set[ModelSpec] = set()
        self._reserved: dict[str, int] = {}
        self._cond = threading.Condition(threading.RLock())

    # ----------------------------------------------------------------------------------------------- queries
    def __contains__(self, spec: ModelSpec) -> bool:
        with self._cond:
            return spec in self._entries

    def specs(self) -> list[ModelSpec]:
        """Cached specs, least recently used first."""
        with self._cond:
            return list(self._entries)

    def used(self, key: str) -> int:
        """Bytes the cached models (and loads under way) take on a device key."""
        with self._cond:
            return sum(e.nbytes.get(key, 0) for e in self._entries.values()) + self._reserved.get(key, 0)

    def budget_for(self, key: str) -> int:
        """The budget of a device key in bytes (InputError when LOGITSCOPE_MODEL_BUDGET is malformed)."""
        with self._cond:
            return self.budget.for_device(key)

    def usage(self, key: str) -> DeviceUse:
        """The models cached on a device, their bytes and the budget."""
        with self._cond:
            names = tuple(s.label for s, e in self._entries.items() if e.nbytes.get(key))
            return DeviceUse(key, names, self.used(key), self.budget.for_device(key))

    def devices(self) -> list[str]:
        """Device keys that hold cached models."""
        with self._cond:
            return sorted({k for e in self._entries.values() for k in e.nbytes})

    def nbytes(self, spec: ModelSpec) -> int | None:
        """Total bytes of a cached model (None when it is not cached)."""
        with self._cond:
            e = self._entries.get(spec)
            return None if e is None else sum(e.nbytes.values())

    def in_use(self, spec: ModelSpec) -> bool:
        """Whether a cached model is leased, held by a live thread, or has its lock taken by another thread."""
        with self._cond:
            e = self._entries.get(spec)
            return e is not None and bool(self._users(e))

    # ----------------------------------------------------------------------------------------------- loading
    def get_or_load(self, spec: ModelSpec, loader: Loader = load_model, *, hold: bool = False,
                    on_evict: Callable[[Eviction], None] | None = None) -> LoadedModel:
        """The cached model for ``spec``, loading it (and evicting LRU models not in use) when absent.

        ``hold``: the calling thread holds the model until it ends or calls release_thread(). Raises
        ModelBudgetError when the model is larger than the budget or cannot be made room for."""
        return self._acquire(spec, loader, "hold" if hold else None, on_evict)

    @contextmanager
    def lease(self, spec: ModelSpec, loader: Loader = load_model, *,
              on_evict: Callable[[Eviction], None] | None = None) -> Iterator[LoadedModel]:
        """``with cache.lease(spec) as lm:`` the model, never evicted until the block ends."""
        lm = self._acquire(spec, loader, "lease", on_evict)
        me = threading.get_ident()
        try:
            yield lm
        finally:
            with self._cond:
                e = self._entries.get(spec)
                if e is not None and e.leases.get(me):
                    e.leases[me] -= 1
                    if not e.leases[me]:
                        del e.leases[me]
                self._cond.notify_all()

    def release_thread(self) -> None:
        """Drop every hold of the calling thread (the app calls this at the start of each script run)."""
        me = threading.get_ident()
        with self._cond:
            for e in self._entries.values():
                e.holds.pop(me, None)
            self._cond.notify_all()

    def _claim(self, spec: ModelSpec, e: _Entry, mode: str | None) -> LoadedModel:
        me = threading.get_ident()
        self._entries.move_to_end(spec)
        if mode == "hold":
            e.holds[me] = weakref.ref(threading.current_thread())
        elif mode == "lease":
            e.leases[me] = e.leases.get(me, 0) + 1
        assert e.lm is not None
        return e.lm

    def _acquire(self, spec: ModelSpec, loader: Loader, mode: str | None,
                 on_evict: Callable[[Eviction], None] | None) -> LoadedModel:
        with self._cond:
            while spec in self._loading:  # one load per spec at a time; the others wait for its result
                self._cond.wait(_POLL_S * 4)
            if spec in self._entries:
                return self._claim(spec, self._entries[spec], mode)
            self._loading.add(spec)
        reserved: SizeEstimate | None = None  # the estimate held against the budget while loading
        try:
            est = self.estimator(spec)
            if est.nbytes is not None and est.device is not None:
                with self._cond:
                    budget = self.budget.for_device(est.device)
                    if est.nbytes > budget:
                        raise ModelBudgetError(_too_big(spec, est.nbytes, est.device, budget))
                    self._make_room(est.device, est.nbytes, spec, on_evict)
                    self._reserved[est.device] = self._reserved.get(est.device, 0) + est.nbytes
                    reserved = est
            lm = loader(spec)
            actual = weight_bytes(lm.model)
            with self._cond:
                self._unreserve(reserved)
                reserved = None
                try:
                    for key, n in actual.items():
                        budget = self.budget.for_device(key)
                        if n > budget:
                            raise ModelBudgetError(_too_big(spec, n, key, budget))
                        self._make_room(key, n, spec, on_evict)
                except BaseException:
                    del lm
                    _collect(actual)
                    raise
                e = _Entry(lm=lm, nbytes=actual)
                self._entries[spec] = e
                return self._claim(spec, e, mode)
        finally:
            with self._cond:
                self._unreserve(reserved)
                self._loading.discard(spec)
                self._cond.notify_all()

    def _unreserve(self, est: SizeEstimate | None) -> None:
        if est is not None and est.nbytes is not None and est.device is not None:
            self._reserved[est.device] = self._reserved.get(est.device, 0) - est.nbytes

    # ----------------------------------------------------------------------------------------------- eviction
    def _users(self, e: _Entry) -> set[int | None]:
        """Thread idents using an entry (None: a thread that holds the model's lock, identity unknown)."""
        users: set[int | None] = {t for t, n in e.leases.items() if n > 0}
        for t, ref in list(e.holds.items()):
            th = ref()
            if th is None or not th.is_alive():
                del e.holds[t]
            else:
                users.add(t)
        lock = getattr(e.lm, "lock", None)
        if lock is not None and lock.acquire(blocking=False):
            lock.release()
        elif lock is not None:
            users.add(None)
        return users

    def _make_room(self, key: str, need: int, for_spec: ModelSpec,
                   on_evict: Callable[[Eviction], None] | None) -> list[Eviction]:
        """Evict (and free) LRU entries not in use until ``need`` more bytes fit on ``key``, waiting up to wait_s for
        entries that other threads use; ModelBudgetError when that cannot be done. Called with the lock held."""
        deadline = time.monotonic() + self.wait_s
        notes: list[Eviction] = []
        me = threading.get_ident()
        while True:
            budget = self.budget.for_device(key)
            evicted = []
            for spec, e in list(self._entries.items()):
                if self.used(key) + need <= budget:
                    break
                if spec != for_spec and e.nbytes.get(key) and not self._users(e):
                    del self._entries[spec]
                    evicted.append((spec, e))
            notes += self._free(evicted, on_evict, for_spec.label)
            if self.used(key) + need <= budget:
                return notes
            busy = {s: self._users(e) for s, e in self._entries.items() if e.nbytes.get(key) and s != for_spec}
            others = [s for s, u in busy.items() if u - {me}]
            loading = self._reserved.get(key, 0) > 0  # another thread's load under way: it ends soon
            if not (others or loading) or time.monotonic() >= deadline:
                in_use = ", ".join(f"{s.label} ({format_bytes(sum(self._entries[s].nbytes.values()))})"
                                   for s in busy) or "models being loaded"
                whose = ("other sessions' running analyses" if others or loading
                         else "this session's own analysis (its checkpoints)")
                raise ModelBudgetError(
                    f"{for_spec.label} needs {format_bytes(need)}, but only "
                    f"{format_bytes(max(0, budget - self.used(key)))} of the model budget on {key} "
                    f"({format_bytes(budget)}) is free: the rest is in use by {whose}: {in_use}. "
                    f"{'Try again when they finish, or r' if others or loading else 'R'}aise the budget in the "
                    f"sidebar's Memory options or with {ENV_BUDGET}.")
            self._cond.wait(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def _free(self, evicted: list[tuple[ModelSpec, _Entry]], on_evict: Callable[[Eviction], None] | None,
              for_label: str | None = None) -> list[Eviction]:
        """Drop the evicted entries' models for real (references, gc, the GPU allocator's cache); report each."""
        if not evicted:
            return []
        notes = []
        devices: dict[str, int] = {}
        for spec, e in evicted:
            devices.update(e.nbytes)
            e.lm = None
            e.meta.clear()
            for key, n in e.nbytes.items():
                notes.append(Eviction(spec.label, spec, n, key, for_label))
        evicted.clear()
        _collect(devices)
        for note in notes:
            if on_evict is not None:
                on_evict(note)
        return notes

    def evict(self, spec: ModelSpec) -> bool:
        """Free one cached model now unless it is in use; True when it was freed."""
        with self._cond:
            e = self._entries.get(spec)
            if e is None or self._users(e):
                return False
            del self._entries[spec]
            self._free([(spec, e)], None)
            return True

    def clear(self) -> list[Eviction]:
        """Free every cached model not in use."""
        with self._cond:
            out = [(s, e) for s, e in self._entries.items() if not self._users(e)]
            for s, _ in out:
                del self._entries[s]
            return self._free(out, None)

    def set_budget(self, key: str, nbytes: int) -> list[Eviction]:
        """Change a device's budget, freeing LRU models not in use until the cache fits in it."""
        with self._cond:
            self.budget.set(key, nbytes)
            out = []
            for spec, e in list(self._entries.items()):
                if self.used(key) <= nbytes:
                    break
                if e.nbytes.get(key) and not self._users(e):
                    del self._entries[spec]
                    out.append((spec, e))
            notes = self._free(out, None)
            self._cond.notify_all()
            return notes

    # ----------------------------------------------------------------------------------------------- attachments
    def attach(self, spec: ModelSpec, name: str, factory: Callable[[], Any]) -> Any:
        """A value computed once per cached model (e.g. its card) and dropped with it; computed outside the lock."""
        with self._cond:
            e = self._entries.get(spec)
            if e is not None and name in e.meta:
                return e.meta[name]
        value = factory()
        with self._cond:
            e = self._entries.get(spec)
            if e is not None:
                value = e.meta.setdefault(name, value)
        return value


def _too_big(spec: ModelSpec, nbytes: int, key: str, budget: int) -> str:
    return (f"{spec.label} needs {format_bytes(nbytes)} but the model budget on {key} is {format_bytes(budget)}; "
            f"raise it in the sidebar's Memory options or with {ENV_BUDGET}.")


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise); a no-op elsewhere."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _collect(devices: dict[str, int]) -> None:
    """Collect garbage and return freed memory: the CUDA/MPS allocator caches, the C heap."""
    gc.collect()
    if any(k.startswith("cuda") for k in devices) and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if "mps" in devices and getattr(torch, "mps", None) is not None and hasattr(torch.mps, "empty_cache"):
        torch.mps.empty_cache()
    if "cpu" in devices:
        _trim_heap()


_SHARED: ModelCache | None = None
_SHARED_LOCK = threading.Lock()


def shared_cache() -> ModelCache:
    """The process-wide cache every browser session shares (created on first use, budget from the environment)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ModelCache()
        return _SHARED
