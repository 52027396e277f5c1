"""The Ray backend: a pool of Ray actors, each holding one copy of the model, runs the engine on shards of prompts.

Addresses (the CLI's ``--ray``, the sidebar's "Ray address"): ``local:N`` starts Ray on this machine (or uses the
Ray instance this process already started) with N actors; ``auto`` joins a cluster already running on this machine
(``ray start --head``); ``ray://HOST:PORT`` connects as a Ray client to a remote cluster's head. Each actor loads the
model once by its ``ModelSpec`` (``analysis.core.loading.load_model``) with one GPU when the cluster has GPUs (a share of
one when there are more actors than GPUs), else an equal share of the CPUs (Ray sets the actor's torch threads to
it). Pools are kept per model (at most ``MAX_POOLS``), so later runs on the same model start at once.

Faults: an actor that dies is restarted by Ray (``max_restarts``) and the shard it held is sent again, first to
another idle actor; after ``max_retries`` failures of one shard the run raises BackendError - a partial result is
never returned. An engine error on a worker (InputError, NumericalError, ...) is raised here unchanged.
Test hook: ``fail_once_on_shard=k`` makes the actor that first receives shard k exit (os._exit) before running it.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from analysis.compute.backend import CLIENT_RE, LOCAL_RE, Backend, Shard, check_address, resolve
from analysis.core.errors import BackendError, LogitscopeError
from analysis.core.loading import HUB_ID, load_model
from analysis.core.paths import real_models, zoo_models
from analysis.core.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_POOLS = 1  # actor pools kept alive between runs, over all backends: each actor holds its CPUs or GPU
PROGRESS_EVERY_S = 0.2  # how often a worker reports its shard's progress (and the driver polls it)
CONNECT_TIMEOUT_S = 5.0


class _Worker:
    """One Ray actor: the model loaded once, then any engine function run on the shards it is given."""

    def __init__(self, spec: Any, threads: int = 0) -> None:
        normal_priority()
        if threads > 0:  # torch would start a thread per machine CPU in every actor: N actors oversubscribe N-fold
            torch.set_num_threads(threads)
        self.lm = load_model(spec)

    def ping(self) -> int:
        """The worker's process id (the model is loaded once this answers)."""
        return os.getpid()

    def run(self, fn: str, shard: int, args: tuple, kwargs: dict, board: Any, run_id: int, die: bool) -> Any:
        """fn(lm, *args, **kwargs, progress=...) on this worker; ``die`` (test hook) exits the process first."""
        if die:
            os._exit(1)
        last = [0.0]

        def progress(fraction: float, message: str = "") -> None:
            now = time.monotonic()
            if board is not None and (now - last[0] >= PROGRESS_EVERY_S or fraction >= 1.0):
                last[0] = now
                board.report.remote(run_id, shard, float(fraction), str(message))

        return resolve(fn)(self.lm, *args, progress=progress, **kwargs)


class _Board:
    """A tiny actor (one per pool) where workers post their shard's progress and the driver reads it."""

    def __init__(self) -> None:
        self.state: dict[int, tuple[float, str]]
        self.run, self.state = -1, {}

    def report(self, run: int, shard: int, fraction: float, message: str) -> None:
        """Record shard ``shard`` of run ``run`` at ``fraction`` (an older run's late reports are dropped)."""
        if run > self.run:
            self.run, self.state = run, {}
        if run == self.run:
            self.state[shard] = (fraction, message)

    def read(self, run: int) -> dict[int, tuple[float, str]]:
        """Every shard's latest (fraction, message) in run ``run``."""
        return dict(self.state) if run == self.run else {}


def normal_priority() -> None:
    """Undo Ray's niceness 15 for workers (they would lose the CPU to every other process), where allowed."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except (OSError, AttributeError):  # not permitted (no CAP_SYS_NICE) or not POSIX: keep Ray's
        pass


def _import_ray() -> Any:
    try:
        import ray  # lazy: Ray is an optional dependency (requirements-scale.txt)
    except ImportError:
        raise BackendError("Ray is not installed: run `pip install -r requirements-scale.txt` (or choose 'this "
                           "process' as the compute backend).") from None
    return ray


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


class RayBackend(Backend):
    """Shards of prompts on a pool of Ray actors (see the module docstring)."""

    def __init__(self, address: str, *, actors: int | None = None, max_retries: int = 2, shards_per_actor: int = 4,
                 fail_once_on_shard: int | None = None) -> None:
        self.address = check_address(address)
        m = LOCAL_RE.match(self.address)
        self.requested = int(m.group(1)) if m else actors
        self.max_retries = int(max_retries)
        self.shards_per_actor = max(1, int(shards_per_actor))
        self.fail_once_on_shard = fail_once_on_shard
        self.label = f"ray {self.address}"
        self._layout: tuple[int, float, float] | None = None  # (actors, cpus per actor, gpus per actor)
        self.retried: list[int] = []  # shards sent again after their actor died (for tests and notes)

    # ------------------------------------------------------------------------------------------ connecting
    def connect(self) -> Any:
        """The ray module, connected to this backend's cluster (BackendError, one line, if that fails).

        A Ray instance this process already runs (e.g. a test's ray.init) serves 'local:N'; another address
        disconnects from it (a process talks to one cluster) once the new one answers."""
        global _CONNECTED
        ray = _import_ray()
        cluster = "local" if LOCAL_RE.match(self.address) else self.address  # every local:N shares one instance
        if ray.is_initialized() and (cluster == _CONNECTED or (_CONNECTED is None and cluster == "local")):
            return ray
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                                          if p)}}
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                                "runtime_env": env}
        m = CLIENT_RE.match(self.address)
        if m:
            host, port = m.group(1).strip("[]"), int(m.group(2))
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            except OSError as err:
                raise BackendError(f"Cannot reach the Ray cluster at {self.address} "
                                   f"({err.strerror or type(err).__name__}); check the address and that "
                                   "`ray start --head` runs there.") from None
            opts = {"address": self.address, "logging_level": logging.WARNING, "runtime_env": env}
        elif self.address == "auto":
            opts["address"] = "auto"
        if ray.is_initialized():
            _drop_pools(ray)
            ray.shutdown()
        os.environ.setdefault("RAY_worker_niceness", "0")  # a Ray started here: workers at normal priority
        try:
            ray.init(**opts)
        except Exception as err:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: one line for the user
            raise BackendError(f"Could not connect to Ray at {self.address}: {_first_line(err)}") from None
        _CONNECTED = cluster
        for backend in _BACKENDS.values():
            backend._layout = None
        return ray

    def layout(self) -> tuple[int, float, float]:
        """(number of actors, CPUs per actor, GPUs per actor) for this cluster."""
        if self._layout is None:
            ray = self.connect()
            res = ray.cluster_resources()
            cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
            n = self.requested or (gpus if gpus else max(1, cpus // 2))
            if gpus:  # one GPU per actor, or a share of one when there are more actors than GPUs
                self._layout = (n, float(max(1, cpus // n)) if n <= cpus else 0.0, min(1.0, gpus / n))
            else:
                n = max(1, min(n, cpus))  # more actors than CPUs would wait forever for a CPU
                self._layout = (n, float(max(1, cpus // n)), 0.0)
        return self._layout

    @property
    def n_actors(self) -> int:
        """How many actors a pool has."""
        return self.layout()[0]

    # ------------------------------------------------------------------------------------------ the pool
    def accepts(self, lm: Any) -> bool:
        """Whether a worker can load ``lm`` again from its spec (zoo, real model, folder or hub id; not tiny models)."""
        src = lm.spec.source
        return src in zoo_models() or src in real_models() or Path(src).exists() or ("/" in src and
                                                                                      bool(HUB_ID.match(src)))

    def shards_for(self, lm: Any, n_batches: int) -> int:
        """n_actors x shards_per_actor shards (at most one per batch); 0 for a model the workers cannot load."""
        if n_batches < 1 or not self.accepts(lm):
            return 0
        return min(n_batches, self.n_actors * self.shards_per_actor)

    def pool(self, spec: Any) -> list:
        """The actors holding ``spec``'s model (started and loaded on first use; older pools are killed first)."""
        ray = self.connect()
        n, cpus, gpus = self.layout()
        key = (spec, n, cpus, gpus)
        if key in _POOLS:
            _POOLS.move_to_end(key)
            return _POOLS[key]
        while len(_POOLS) >= MAX_POOLS:  # free their CPUs/GPUs, or the new actors would wait for them
            old = _POOLS.popitem(last=False)[1]
            for a in old + [_BOARDS.pop(id(old), None)]:
                if a is not None:
                    ray.kill(a)
        cls = ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=max(1, self.max_retries),
                                          max_task_retries=0)
        actors = [cls.remote(spec, max(1, int(cpus))) for _ in range(n)]  # torch threads = its CPU share
        try:
            ray.get([a.ping.remote() for a in actors])
        except Exception as err:  # noqa: BLE001 - the creation error, as one line
            for a in actors:
                ray.kill(a)
            cause = getattr(err, "cause", None) or err
            if isinstance(cause, LogitscopeError):
                raise cause from None
            raise BackendError(f"The Ray workers could not load {spec.label}: {_first_line(cause)}") from None
        _POOLS[key] = actors
        _BOARDS[id(actors)] = ray.remote(_Board).options(num_cpus=0).remote()
        return actors

    def close(self) -> None:
        """Kill every actor pool (they are shared by all Ray backends of this process)."""
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            _drop_pools(sys.modules["ray"])

    # ------------------------------------------------------------------------------------------ running shards
    def map_shards(self, lm: Any, fn: str, shards: Sequence[Shard], weights: Sequence[float] | None = None,
                   progress: Progress = None) -> list:
        """fn(lm, *args, **kwargs) for each shard on the actors; results in shard order (see the module doc)."""
        ray = self.connect()
        actors = self.pool(lm.spec)
        run = _Run(ray, actors, len(shards), self.max_retries)
        w = [float(x) for x in (weights or [1.0] * len(shards))]
        total = sum(w) or 1.0
        board = _BOARDS.get(id(actors)) if progress else None
        run_id = next(_RUN_IDS)
        if progress:
            progress(0.0, f"{len(shards)} shards on {len(actors)} Ray workers")
        try:
            while not run.complete():
                while run.todo and run.idle:
                    s, a = run.todo.popleft(), run.idle.popleft()
                    die = self.fail_once_on_shard == s
                    if die:
                        self.fail_once_on_shard = None  # once per backend
                    args, kwargs = shards[s]
                    run.pending[actors[a].run.remote(fn, s, args, kwargs, board, run_id, die)] = (s, a)
                run.step()
                if progress:
                    if board is not None:
                        running = {s for s, _ in run.pending.values()}
                        for s, (f, _m) in ray.get(board.read.remote(run_id)).items():
                            if s in running:
                                run.frac[s] = max(run.frac[s], min(f, 1.0))
                    progress(sum(wi * fi for wi, fi in zip(w, run.frac, strict=True)) / total,
                             f"{run.done()}/{len(shards)} shards done on {len(actors)} Ray workers")
        finally:
            run.cancel()
            if run.lost or run.reviving:  # a worker is gone for good, or not back yet: next run on a fresh pool
                _drop_pools(ray)
        self.retried.extend(run.retried)
        return run.results


class _Run:
    """The driver's book-keeping of one map_shards: shards to do, running, done; idle, reviving and lost actors."""

    def __init__(self, ray: Any, actors: list, n: int, max_retries: int) -> None:
        self.ray, self.actors, self.n, self.max_retries = ray, actors, n, max_retries
        self.todo, self.idle = deque(range(n)), deque(range(len(actors)))
        self.pending: dict[Any, tuple[int, int]] = {}  # shard call -> (shard, actor)
        self.reviving: dict[Any, tuple[int, float]] = {}  # ping of a restarting actor -> (actor, since)
        self.attempts, self.results, self.frac = [0] * n, [None] * n, [0.0] * n
        self.retried: list[int]
        self.lost: set[int]
        self.deaths, self.retried, self.lost = [0] * len(actors), [], set()
        self.got = [False] * n

    def complete(self) -> bool:
        """Every shard has its result."""
        return all(self.got)

    def done(self) -> int:
        """How many shards have their result."""
        return sum(self.got)

    def step(self) -> None:
        """Wait a moment for a shard or a revived actor and book what came back."""
        ray = self.ray
        if not self.pending and not self.reviving:
            raise BackendError(f"Every Ray worker died ({len(self.actors)} of them, restarts spent); no result was "
                               "returned.")
        ready, _ = ray.wait(list(self.pending) + list(self.reviving), num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in ready:
            if ref in self.reviving:
                self._revived(ref)
                continue
            s, a = self.pending.pop(ref)
            try:
                self.results[s] = ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, LogitscopeError):
                    raise cause from None
                raise BackendError(f"Shard {s + 1} of {self.n} failed on a Ray worker: "
                                   f"{type(cause or err).__name__}: {_first_line(cause or err)}") from None
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as err:
                self.attempts[s] += 1
                self.deaths[a] += 1
                if self.attempts[s] > self.max_retries:
                    raise BackendError(f"Shard {s + 1} of {self.n} failed {self.attempts[s]} times (its Ray worker "
                                       f"died each time: {_first_line(err)}); no partial result is returned.") from None
                self.retried.append(s)
                self.frac[s] = 0.0
                self.todo.appendleft(s)  # the next idle actor takes it: another one, or this one once restarted
                self.reviving[self.actors[a].ping.remote()] = (a, time.monotonic())
                continue
            self.got[s], self.frac[s] = True, 1.0
            self.idle.append(a)

    def _revived(self, ref: Any) -> None:
        ray = self.ray
        a, since = self.reviving.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.ActorUnavailableError:  # still restarting: ask again (model loading takes a while)
            if time.monotonic() - since < 600:
                time.sleep(PROGRESS_EVERY_S)
                self.reviving[self.actors[a].ping.remote()] = (a, since)
            else:
                self.lost.add(a)
            return
        except Exception:  # noqa: BLE001 - restarts spent, or it cannot load the model again: lost
            self.lost.add(a)
            return
        self.idle.append(a)

    def cancel(self) -> None:
        """Cancel the shard calls still running (after an error)."""
        for ref in self.pending:
            with contextlib.suppress(Exception):  # finished or gone meanwhile
                self.ray.cancel(ref, force=False)


_BACKENDS: dict[tuple, RayBackend] = {}
_POOLS: OrderedDict[tuple, list] = OrderedDict()  # (spec, actors, cpus, gpus) -> actor handles
_BOARDS: dict[int, Any] = {}  # id(pool's actor list) -> its progress board
_RUN_IDS = itertools.count()
_CONNECTED: str | None = None  # the address this module connected Ray to (None: not connected, or by someone else)


def _drop_pools(ray: Any) -> None:
    """Kill every pooled actor."""
    while _POOLS:
        actors = _POOLS.popitem()[1]
        for a in actors + [_BOARDS.pop(id(actors), None)]:
            try:
                if a is not None:
                    ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass


def ray_backend(address: str, **options: Any) -> RayBackend:
    """The shared RayBackend of ``address`` (and options): the app and repeated CLI calls reuse its actor pools."""
    key = (check_address(address), tuple(sorted(options.items())))
    if key not in _BACKENDS:
        _BACKENDS[key] = RayBackend(address, **options)
    return _BACKENDS[key]
