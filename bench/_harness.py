"""What every benchmark shares: thread pinning, peak-memory measurement and fresh-subprocess workers.

Imports nothing heavy (no numpy, no torch): ``pin_threads_from_argv`` must run before those libraries load,
since their thread pools are sized on import.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def threads_from_argv(argv: list[str], default: str = "1") -> str:
    """--threads N (or --threads=N) from the command line, read before numpy/torch are imported."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return default


def pin_threads_from_argv(argv: list[str], default: str = "1") -> None:
    """Size torch's, BLAS's, OpenMP's and numba's thread pools from --threads (call before they are imported)."""
    n = threads_from_argv(argv, default)
    for var in THREAD_VARS:
        os.environ[var] = n
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def timed_peak(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run ``fn`` once; its result and {seconds, cpu_seconds, peak_delta_mb, rss_before_mb, peak_reset}.

    Peak memory = the process's peak resident set size during the run (VmHWM, reset just before it) minus its
    resident size right before it: it sees torch's allocations, which tracemalloc would not.
    """
    gc.collect()
    rss0 = status_kb("VmRSS")
    reset = reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = status_kb("VmHWM")
    return result, {"seconds": seconds, "cpu_seconds": cpu, "peak_delta_mb": (peak - rss0) / 1024,
                    "rss_before_mb": rss0 / 1024, "peak_reset": reset}


SMOLLM2_VOCAB = 49152


def smollm2_shaped_model(seed: int = 0, attn: str = "eager"):
    """A random-weight Llama model shaped like SmolLM2-135M (30 layers, hidden 576, intermediate 1536, 9 query / 3
    key-value heads, vocabulary 49,152, tied embeddings): the real model's shape, nothing downloaded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=SMOLLM2_VOCAB, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def run_worker(module: str, method: str, args: list[str], threads: int) -> dict:
    """Run ``python -m module --worker method *args`` in a fresh, offline subprocess; its last JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", module, "--worker", method, "--threads", str(threads), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])
