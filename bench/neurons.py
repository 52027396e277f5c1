"""Bench: the confidence-neurons page's defaults end to end on a demo model (scan, then the ablation with its random
baseline), against bare forward passes over the same prompts.

What the page runs with its defaults (pages/confidence_neurons.py, components/reports/neurons.py NeuronsSettings):
  reference set: the built-in corpus_sample, non-empty lines, the first 128 (max_reference);
  scan tab:      scan_entropy of the last block (paper processing, k = 1% of d_model), the reference set's
                 unigram distribution and scan_frequency over every block (weights only: no forward pass);
  ablate tab:    the top 3 neurons of the scan by rho (default_neurons), mean ablation, each alone, the three as
                 a set and 10 seeded random neurons of the same block (U = 14 ablated configurations):
                 build_units (the mean activations over the reference set: one forward pass over it) and
                 ablate on the first 16 prompts of corpus_sample (max_prompts; TE and DE per unit).
Floors: the model's bare forward pass (logits, nothing kept) over the reference set and over the evaluation
prompts, in the same length-bucketed batches of 8 as the engine. Goals: the scan within 1.5x the forward pass
over the reference set (it needs none), and the ablation within (U + 1) forward passes over the evaluation
prompts plus one over the reference set (the clean pass, one pass per unit, the reference means).
Rounds are interleaved and the best of each kept (the CPU may be shared); a warm-up round is not timed.
Threads: 1 by default for torch, BLAS and OpenMP alike (``--threads``).

Last line: the ratios. Not part of the test suite.

    python -m bench.neurons [--model gpt2-world-base] [--rounds 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import load_average, pin_threads_from_argv  # noqa: E402  (imports neither numpy nor torch)

if __name__ == "__main__":  # thread pools are sized when the libraries load: set them first
    pin_threads_from_argv(sys.argv[1:])

import time  # noqa: E402

import torch  # noqa: E402

import analysis.neurons as abl
import analysis.neurons as ns
from analysis.core.batching import bucketed  # noqa: E402
from analysis.core.forward import run  # noqa: E402
from analysis.core.loading import ModelSpec, load_model  # noqa: E402
from analysis.neurons import DEFAULT_REFERENCE, unigram_distribution
from analysis.prompts import load_builtin  # noqa: E402
from components.reports import neurons as R  # noqa: E402

D = R.NeuronsSettings()  # the declared defaults
BATCH = 8  # the engine's default batch for the reference means and the ablation (the page does not change it)


def page_prompts() -> tuple[list[str], list[str]]:
    """(reference prompts, evaluation prompts) as the page takes them from its default sets."""
    ref_set = load_builtin(DEFAULT_REFERENCE)
    reference = [p for p in ref_set.prompts if p.strip()][: D.max_reference]
    evaluation = list(load_builtin(DEFAULT_REFERENCE).prompts[: D.max_prompts])
    return reference, evaluation


def bare_forward(lm, prompts: list[str], batch_size: int = BATCH) -> None:
    """The model's forward pass over the prompts in the engine's bucketed batches; nothing kept."""
    for _, batch in bucketed(lm.tokenizer, [p for p in prompts if p and p.strip()], batch_size,
                             max_length=lm.context_length):
        run(lm, batch)


def scan(lm, reference: list[str]):
    """The scan tab: entropy scan of the last block, the reference unigram, the frequency scan."""
    s = ns.scan_entropy(lm.adapter, k=D.k, processing=D.processing)
    uni = unigram_distribution(lm.tokenizer, reference, lm.adapter.vocab_size)
    ns.scan_frequency(lm.adapter, uni, processing=D.processing)
    return s, uni


def ablation(lm, neurons, reference: list[str], evaluation: list[str], uni) -> tuple[float, float, int]:
    """The ablate tab's Run: (seconds for build_units, seconds for ablate, number of units)."""
    t0 = time.perf_counter()
    units = abl.build_units(lm, list(neurons), mode=D.mode, reference=reference, as_set=D.as_set,
                            n_random=D.n_random, seed=D.seed)
    t1 = time.perf_counter()
    abl.ablate(lm, evaluation, units, mode=D.mode, log_p_freq=uni.log_p, min_position=D.skip_first)
    return t1 - t0, time.perf_counter() - t1, len(units)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-world-base")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds; the best of each is kept")
    ap.add_argument("--threads", type=int, default=1, help="torch, BLAS and OpenMP threads (default 1)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = load_model(ModelSpec(args.model, device=args.device))
    reference, evaluation = page_prompts()
    tok = lambda ps: sum(len(lm.tokenizer(p)["input_ids"]) for p in ps if p.strip())  # noqa: E731
    load = load_average()
    print(f"model {args.model} ({lm.adapter.n_layers} layers, d {lm.adapter.d_model}, V {lm.adapter.vocab_size}), "
          f"reference {len(reference)} prompts ({tok(reference):,} tokens), evaluation {len(evaluation)} prompts "
          f"({tok(evaluation):,} tokens), batch {BATCH}, device {lm.device}, {args.threads} thread(s), "
          f"load average {load:.1f} on {os.cpu_count()} CPUs", flush=True)

    s, uni = scan(lm, reference)  # warm-up round
    neurons = ns.parse_neuron_ids(R.default_neurons(s), lm.adapter)
    bare_forward(lm, reference)
    bare_forward(lm, evaluation)
    ablation(lm, neurons, reference, evaluation, uni)
    best = {k: float("inf") for k in ("ref", "eval", "scan", "means", "ablate")}
    U = 0
    for r in range(max(1, args.rounds)):
        t0 = time.perf_counter()
        bare_forward(lm, reference)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        bare_forward(lm, evaluation)
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        scan(lm, reference)
        t_scan = time.perf_counter() - t0
        t_means, t_abl, U = ablation(lm, neurons, reference, evaluation, uni)
        for k, v in (("ref", t_ref), ("eval", t_eval), ("scan", t_scan), ("means", t_means), ("ablate", t_abl)):
            best[k] = min(best[k], v)
        print(f"round {r + 1}: forward over the reference {t_ref:.3f} s, over the evaluation prompts {t_eval:.3f} s; "
              f"scan {t_scan:.3f} s; ablation: reference means {t_means:.3f} s + ablate {t_abl:.3f} s", flush=True)
    print(f"neurons ablated: {', '.join(ns.neuron_label(b, i) for b, i in neurons)} (+ the set + {D.n_random} "
          f"random): U = {U}")
    passes = best["ablate"] / best["eval"]
    budget = (U + 1) * best["eval"] + best["ref"]
    print(f"best of {max(1, args.rounds)} rounds: ablate = {passes:.1f} forward passes over the evaluation prompts "
          f"(goal <= U + 1 = {U + 1}); reference means = {best['means'] / best['ref']:.2f} forward passes over the "
          f"reference set (goal <= 1)")
    print(f"ratios: scan / bare forward (reference) {best['scan'] / best['ref']:.2f} (goal <= 1.5), "
          f"ablation / ((U + 1) bare forwards (evaluation) + 1 (reference)) "
          f"{(best['means'] + best['ablate']) / budget:.2f} (goal <= 1, U = {U})")


if __name__ == "__main__":
    main()
