"""Bench: the Ray backend's scale-out - OOD features of N prompts with 1 vs 2 Ray actors, and Ray's overhead.

    python -m bench.scale                    # 2,000 prompts on gpt2-world-base, a few minutes on 2 cores
    python -m bench.scale --prompts 200      # a quick run

What runs: ``analysis.ood.features.extract_features`` (the OOD page's features: every layer's last-token and
mean-pooled residual, head input, lens and final logit summaries, mean log-likelihood; batch 32, no BLOOD) of N
prompts from the demo world (bench.ood.synthetic_sets: ID and OOD texts, mixed lengths), three ways:

  process: this process, torch on --threads threads (default: every CPU);
  ray x1:  ``use_backend(RayBackend('local:1'))`` - one actor with every CPU;
  ray x1 (1 CPU): the same actor held to one CPU - the resources of each actor of ray x2;
  ray x2:  ``use_backend(RayBackend('local:2'))`` - two actors with half the CPUs each.

Ray runs on a local instance this script starts (``ray.init(num_cpus=CPUs)``). Each pool is started and warmed
(actors started, model loaded, one small shard run) before it is timed: the timed run is what a second run in
the app or the CLI costs; the pool's start-up is printed apart. Rounds are interleaved and the best of each is
kept (the CPU may be shared). Every backend's features are checked to be bit-identical to the process's. The CPU
seconds (this process and the workers, from /proc) show the work apart from how the machine shared its cores: on
a machine whose cores other processes already keep busy, more workers cannot get more CPU time than one process.

Last line: ``ratios: ray x2 / ray x1 prompts/s X (expect close to 2), ray x1 / process time Y (goal <= 1.15)``.
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import load_average, pin_threads_from_argv  # noqa: E402  (imports neither numpy nor torch)

if __name__ == "__main__":  # thread pools are sized when the libraries load: set them first
    pin_threads_from_argv(sys.argv[1:], default=str(os.cpu_count() or 1))

import time  # noqa: E402

import numpy as np  # noqa: E402


def _same(a, b) -> bool:
    """All arrays of two OODFeatures equal bit for bit."""
    names = ("last", "mean", "head_in", "lens_top", "lens_lse", "final_top", "final_lse", "mean_loglik",
             "n_predicted")
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names) and a.prompts == b.prompts


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process (all threads) and of the processes ``pids`` (Linux /proc)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-world-base")
    ap.add_argument("--prompts", type=int, default=2000, help="how many prompts (default 2000)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of this process")
    args = ap.parse_args(argv)

    import ray
    import torch

    from analysis.compute.backend import use_backend
    from analysis.compute.ray_pool import RayBackend
    from analysis.core.loading import ModelSpec, load_model
    from analysis.ood import extract_features
    from bench.ood import synthetic_sets

    torch.set_num_threads(args.threads)
    cpus = os.cpu_count() or 1
    lm = load_model(ModelSpec(args.model))
    _, ids, ood = synthetic_sets(lm, max(3, (args.prompts + 1) // 2))
    prompts = (ids + [p for ps in ood.values() for p in ps])[: args.prompts]
    n = len(prompts)
    print(f"# {args.model}, {n} prompts, batch {args.batch_size}, {cpus} CPUs, load {load_average():.1f}", flush=True)

    t0 = time.perf_counter()
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 starves the workers on a shared machine
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
    print(f"ray.init: {time.perf_counter() - t0:.1f} s", flush=True)
    backends = {"ray x1": RayBackend("local:1"), "ray x1 (1 CPU)": RayBackend("local:1"), "ray x2": RayBackend("local:2")}
    # the same resources per actor as in "ray x2": one actor on one CPU (its torch runs one thread), so that
    # "ray x2 / ray x1 (1 CPU)" measures scale-out, not two threads against one
    backends["ray x1 (1 CPU)"]._layout = (1, 1.0, 0.0)

    def run(name: str):
        if name == "process":
            return extract_features(lm, prompts, batch_size=args.batch_size)
        with use_backend(backends[name]):
            return extract_features(lm, prompts, batch_size=args.batch_size)

    best: dict[str, float] = {}
    ref = None
    for r in range(args.rounds):
        for name in ("process", "ray x1", "ray x1 (1 CPU)", "ray x2"):
            t0 = time.perf_counter()  # warm up (kernels; for Ray, start or reuse the pool): reported, not timed
            with use_backend(backends.get(name)):
                extract_features(lm, prompts[: 2 * args.batch_size], batch_size=args.batch_size)
            if r == 0 and name != "process":
                print(f"{name}: pool start-up and warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            pids = [] if name == "process" else ray.get([a.ping.remote() for a in backends[name].pool(lm.spec)])
            t0, c0 = time.perf_counter(), _cpu_seconds(pids)
            got = run(name)
            dt, cpu = time.perf_counter() - t0, _cpu_seconds(pids) - c0
            best[name] = min(best.get(name, float("inf")), dt)
            ref = got if name == "process" else ref
            same = "" if name == "process" else f", identical to process: {'yes' if _same(ref, got) else 'NO'}"
            print(f"{name}: {dt:.2f} s, {n / dt:.1f} prompts/s, {cpu:.1f} CPU s (driver + workers){same}",
                  flush=True)
    ray.shutdown()
    speedup = best["ray x1 (1 CPU)"] / best["ray x2"]
    overhead = best["ray x1"] / best["process"]
    print(f"ratios: ray x2 / ray x1 (1 CPU each) prompts/s {speedup:.2f} (expect close to 2), ray x1 / process time "
          f"{overhead:.2f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
