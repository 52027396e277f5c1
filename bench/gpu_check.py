"""One-shot GPU check: every page's CLI, the identities, device_map="auto" and the lens benchmark on CUDA.

    bench/gpu_check.sh                      # on a CUDA machine: well under 8 minutes on one GPU
    python -m bench.gpu_check --budget 60   # any machine; GPU-only parts say why they are skipped

Checks, cheapest and most telling first, one printed row each as it finishes (so a run stopped early - Ctrl-C,
SIGTERM, the wrapper's timeout - has already shown its rows, and prints the summary of what it has):

  env       torch, CUDA, the GPUs;
  identity  analysis.models.selfcheck on every model (demo gpt2-world-base and llama-world-base, the real
            smollm2-135m-instruct when `make setup` converted it) in fp32 and bf16: lens at L = logits, the
            decomposition, DLA sums to the logit; max relative error against the dtype's tolerance;
  lens-gpu  the logit-lens benchmark (bench.lens: GPT-2-small-shaped random model, 32 x 128 tokens) on the GPU
            in fp32 and bf16: our full lens_trace vs the floor (forward + per-layer unembedding), ratio and peak;
  devmap    with more than one GPU visible: the real model loaded with device_map="auto" over them, its identities
            and a lens run (skipped, saying so, with one GPU);
  cli       `python -m logitscope <command>` (in this process, the page defaults) for lens, flow, steer, neurons,
            shift and ood on every model and dtype; the ratio is the command's bf16 time over its fp32 time.

Without CUDA the identities and the CLI runs still run, on the CPU in fp32 only (bf16, lens-gpu and devmap are
GPU-only and skipped with that reason). ``--budget`` seconds (default 450): a check that would start after it is
skipped. Columns: seconds, ratio, error (max relative error / tolerance, or the error message), peak GPU memory
(MiB; torch.cuda.max_memory_allocated; '-' on the CPU), status.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEMO = ("gpt2-world-base", "llama-world-base")
PARTNER = {"gpt2-world-base": ["--model-b", "gpt2-world-tuned"], "llama-world-base": ["--model-b", "llama-world-tuned"],
           "smollm2-135m-instruct": ["--model-b", "smollm2-grumpy-lora"]}
COMMANDS = ("lens", "flow", "steer", "neurons", "shift", "ood")


@dataclass
class Row:
    """One check's outcome."""

    check: str
    model: str
    dtype: str
    seconds: float | None = None
    ratio: float | None = None
    error: str = ""
    peak_mib: float | None = None
    status: str = "ok"

    def line(self) -> str:
        """The row as a fixed-width line."""
        s = "-" if self.seconds is None else f"{self.seconds:.1f}"
        r = "-" if self.ratio is None else f"{self.ratio:.2f}"
        p = "-" if self.peak_mib is None else f"{self.peak_mib:.0f}"
        return f"{self.check:<9} {self.model:<22} {self.dtype:<8} {s:>7} {r:>6} {p:>9}  {self.status:<7} {self.error}"


HEADER = f"{'check':<9} {'model':<22} {'dtype':<8} {'seconds':>7} {'ratio':>6} {'peak MiB':>9}  {'status':<7} error"


class Checker:
    """Runs checks within a time budget, printing each row as it finishes."""

    def __init__(self, budget: float) -> None:
        import torch

        self.torch, self.t0, self.budget, self.rows = torch, time.monotonic(), budget, []
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.cli_times: dict[tuple[str, str, str], float] = {}

    def add(self, row: Row) -> None:
        """Keep and print a row."""
        self.rows.append(row)
        print(row.line(), flush=True)

    def skip(self, check: str, model: str, dtype: str, why: str) -> None:
        """A skipped check, with the reason."""
        self.add(Row(check, model, dtype, status="skipped", error=why))

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.budget - (time.monotonic() - self.t0)

    def measure(self, check: str, model: str, dtype: str, fn) -> Row:
        """Run fn() -> (ratio, error text, failed?) timed, with the peak GPU memory; a failure is a row, not a crash."""
        if self.left() <= 0:
            self.skip(check, model, dtype, "time budget spent")
            return self.rows[-1]
        torch = self.torch
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = time.monotonic()
        try:
            ratio, error, failed = fn()
            status = "FAILED" if failed else "ok"
        except KeyboardInterrupt:  # stopped (Ctrl-C, the wrapper's timeout): say where, then the partial summary
            self.add(Row(check, model, dtype, time.monotonic() - t, status="stopped", error="stopped early"))
            raise
        except Exception as err:  # noqa: BLE001 - report and carry on
            ratio, error, status = None, f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}", \
                "FAILED"
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        row = Row(check, model, dtype, time.monotonic() - t, ratio, error, peak, status)
        self.add(row)
        import gc

        gc.collect()
        return row


def _models() -> list[str]:
    from analysis.core.paths import real_models
    from analysis.models.real import REAL_MODEL

    return list(DEMO) + ([REAL_MODEL] if REAL_MODEL in real_models() else [])


def identity(c: Checker, model: str, dtype: str):
    """analysis.models.selfcheck on one model and dtype: (worst error / tolerance, text, failed?)."""
    from analysis.core.loading import ModelSpec, load_model
    from analysis.models.selfcheck import self_check

    lm = load_model(ModelSpec(model, dtype=dtype, device=c.device))
    sc = self_check(lm)
    worst = max(sc.lens_err, sc.decomposition_err, sc.dla_err)
    return None, f"max rel err {worst:.1e} (tol {sc.tolerance:.0e})", not sc.passed


def lens_gpu(c: Checker, dtype: str):
    """bench.lens's ours vs floor on the GPU: (ours / floor time, text, failed?)."""
    torch = c.torch
    from analysis.core.loading import model_from_pretrained_object
    from bench.lens import IdTokenizer, build_model, random_inputs, run_floor, run_ours

    model = build_model().to(device="cuda", dtype=getattr(torch, dtype))
    lm = model_from_pretrained_object(model, IdTokenizer(), name="gpt2-small-random")
    ids, targets = random_inputs(32, 128)
    times = {}
    for name, fn in (("floor", run_floor), ("ours", run_ours)):
        fn(lm, ids[:2, :16], targets[:2], 10)  # warm-up
        best = float("inf")
        for _ in range(2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn(lm, ids, targets, 10)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        times[name] = best
    return times["ours"] / times["floor"], f"ours {times['ours']:.2f} s, floor {times['floor']:.2f} s", False


def devmap(c: Checker, model: str):
    """The real model spread over every GPU (device_map='auto'): identities and a lens run."""
    from analysis.core.loading import ModelSpec, load_model
    from analysis.lens import lens_trace
    from analysis.models.selfcheck import self_check

    lm = load_model(ModelSpec(model, dtype="bfloat16", device="auto"))
    devices = sorted({str(d) for d in getattr(lm.model, "hf_device_map", {}).values()})
    sc = self_check(lm)
    lens_trace(lm, ["The capital of France is", "One, two, three,"], k=5)
    return None, f"devices {','.join(devices) or '?'}; self-check {'ok' if sc.passed else sc.message[:80]}", \
        not sc.passed or len(devices) < 2


def cli(c: Checker, model: str, dtype: str, command: str):
    """`python -m logitscope <command>` with the page defaults, in this process: (bf16 / fp32 time of this command
    and model, once both ran; text; failed?)."""
    import contextlib
    import io

    from logitscope.cli import main

    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        argv = [command, "--model", model, "--dtype", dtype, "--device", c.device, "--out", tmp, "--force",
                "--formats", "html", "--quiet"] + (PARTNER.get(model, []) if command == "shift" else [])
        rc = main(argv)
        if rc == 130:  # the command caught the interrupt itself
            raise KeyboardInterrupt
        n = len(list(Path(tmp).glob("data/*.csv")))
    c.cli_times[(model, command, dtype)] = time.monotonic() - t
    fp32 = c.cli_times.get((model, command, "float32"))
    ratio = c.cli_times[(model, command, dtype)] / fp32 if dtype == "bfloat16" and fp32 and rc == 0 else None
    return ratio, f"exit {rc}, {n} tables", rc != 0


def summary(c: Checker, stopped: bool) -> None:
    """The summary table: every row, the CLI's bf16/fp32 time ratio, the largest peak GPU memory, the counts."""
    print("\n=== summary" + (" (stopped early: partial)" if stopped else "") + f" - {time.monotonic() - c.t0:.0f} s, "
          f"device {c.device}", flush=True)
    print(HEADER)
    for r in c.rows:
        print(r.line())
    ratios = [r.ratio for r in c.rows if r.check.startswith("cli") and r.ratio]
    if ratios:
        print(f"cli bf16 / fp32 time: median {sorted(ratios)[len(ratios) // 2]:.2f} over {len(ratios)} runs")
    peaks = [r for r in c.rows if r.peak_mib is not None]
    if peaks:
        top = max(peaks, key=lambda r: r.peak_mib)
        print(f"peak GPU memory: {top.peak_mib:.0f} MiB ({top.check} {top.model} {top.dtype})")
    bad = [r for r in c.rows if r.status == "FAILED"]
    skipped = sum(r.status in ("skipped", "stopped") for r in c.rows)
    print(f"checks: {len(c.rows) - len(bad) - skipped} ok, {len(bad)} failed, {skipped} skipped or stopped"
          + (f"; failed: {', '.join(f'{r.check} {r.model} {r.dtype}' for r in bad)}" if bad else ""), flush=True)


def run_checks(c: Checker, models: list[str], commands: list[str]) -> None:
    """Every check in order (see the module docstring)."""
    torch = c.torch
    gpus = torch.cuda.device_count() if c.cuda else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)) if gpus else "none"
    c.add(Row("env", f"torch {torch.__version__}", "-", status="ok", error=f"CUDA {torch.version.cuda}; GPUs: {names}"))
    dtypes = ["float32", "bfloat16"] if c.cuda else ["float32"]
    if not c.cuda:
        c.skip("bf16", "all", "bfloat16", "no CUDA: bf16 runs are GPU-only here")
    for m in models:
        for d in dtypes:
            c.measure("identity", m, d, lambda m=m, d=d: identity(c, m, d))
    for d in ("float32", "bfloat16"):
        if c.cuda:
            c.measure("lens-gpu", "gpt2-small-random", d, lambda d=d: lens_gpu(c, d))
        else:
            c.skip("lens-gpu", "gpt2-small-random", d, "no CUDA (the CPU lens benchmark is python -m bench.lens)")
    real = [m for m in models if m not in DEMO]
    if gpus > 1 and real:
        c.measure("devmap", real[0], "bfloat16", lambda: devmap(c, real[0]))
    else:
        c.skip("devmap", real[0] if real else "real model", "bfloat16",
               f"{gpus} GPU(s) visible: device_map='auto' needs more than one" if real or gpus > 1 else
               "no real model in this run (smollm2-135m-instruct: converted by make setup)")
    for m in models:
        for cmd in commands:
            for d in dtypes:
                c.measure("cli " + cmd, m, d, lambda m=m, d=d, cmd=cmd: cli(c, m, d, cmd))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: run the checks, print rows as they finish, then the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=450.0, help="seconds; checks that would start later are skipped")
    ap.add_argument("--models", default=None, help="comma separated (default: demo models and the real model)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="CLI commands to run (default: all six)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def on_term(signum, frame):  # a timeout's SIGTERM: stop like Ctrl-C, with the partial summary
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    c = Checker(args.budget)
    print(HEADER, flush=True)
    stopped = False
    try:
        models = [m.strip() for m in args.models.split(",")] if args.models else _models()
        run_checks(c, models, [x.strip() for x in args.commands.split(",") if x.strip()])
    except KeyboardInterrupt:
        stopped = True
    summary(c, stopped)
    return 1 if any(r.status == "FAILED" for r in c.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
