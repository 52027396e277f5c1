"""Bench: the OOD study on 2,000 ID + 2,000 OOD prompts on a demo model, against a bare forward pass.

ID prompts are training-style text from the synthetic world (fact and two-hop sentences, neutral
dialogues, induction sequences); OOD prompts are fresh draws of the scrambled / random-character /
arithmetic generators. Both timings use the same prompts, chunking and padding, measured in this run (the bare pass before
and after the study; their mean is the reference, since the CPU may be shared).
Prints progress, time per 1,000 prompts for each, peak memory, and the ratio (OOD study / bare
forward) on the last line. Not part of the test suite.

    python -m bench.ood [--model gpt2-world-base] [--n 2000] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from analysis.batching import chunks, encode  # noqa: E402
from analysis.demo import prompts as DP  # noqa: E402
from analysis.demo import world as W  # noqa: E402
from analysis.forward import run  # noqa: E402
from analysis.loading import ModelSpec, load_model  # noqa: E402
from analysis.ood import OODSettings, study_from_features  # noqa: E402
from analysis.ood_features import extract_features  # noqa: E402


def _fits(lm, texts: list[str]) -> list[str]:
    """Distinct texts that fit the model's context, in order."""
    out, seen = [], set()
    for t in texts:
        if t and t not in seen and len(lm.tokenizer(t)["input_ids"]) <= lm.context_length:
            seen.add(t)
            out.append(t)
    return out


def make_sets(lm, n: int) -> tuple[list[str], dict[str, list[str]]]:
    """n distinct ID prompts and n OOD prompts (three sets) from the demo world's generators."""
    world = W.make_world()
    id_texts = W.fact_sentences(world) + W.two_hop_sentences(world)
    id_texts += W.dialogues(world, "neutral", 3 * n, seed=500, tagged=False)
    id_texts += W.induction_texts(n, seed=501)
    ids = _fits(lm, id_texts)[:n]
    if len(ids) < n:
        raise SystemExit(f"only {len(ids)} distinct ID prompts could be generated")
    k = n // 3
    scr: list[str] = []
    seed = 600
    while len(scr) < k:
        scr = _fits(lm, scr + [r["prompt"] for r in DP.ood_scrambled(world, n=100, seed=seed)])
        seed += 1
    ood = {"ood_scrambled": scr[:k],
           "ood_random_chars": _fits(lm, [r["prompt"] for r in DP.ood_random_chars(2 * k, seed=700)])[:k],
           "ood_arithmetic": _fits(lm, [r["prompt"] for r in DP.ood_arithmetic(3 * (n - 2 * k), seed=800)])[:n - 2 * k]}
    return ids, ood


def bare_forward(lm, prompts: list[str], batch_size: int) -> None:
    """The model's forward pass over the prompts, same chunks and padding, nothing kept."""
    for sl in chunks(len(prompts), batch_size):
        run(lm, encode(lm.tokenizer, prompts[sl], max_length=lm.context_length))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-world-base")
    ap.add_argument("--n", type=int, default=2000, help="ID prompts; as many OOD prompts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    lm = load_model(ModelSpec(args.model, device=args.device))
    ids, ood = make_sets(lm, args.n)
    all_prompts = ids + [p for ps in ood.values() for p in ps]
    n_total = len(all_prompts)
    print(f"model {args.model} ({lm.adapter.n_layers} layers, d {lm.adapter.d_model}, V {lm.adapter.vocab_size}), "
          f"{len(ids)} ID + {n_total - len(ids)} OOD prompts, batch {args.batch_size}, device {lm.device}", flush=True)
    bare_forward(lm, all_prompts[: args.batch_size], args.batch_size)  # warm-up

    t0 = time.perf_counter()
    bare_forward(lm, all_prompts, args.batch_size)
    t_bare1 = time.perf_counter() - t0
    print(f"bare forward (before): {t_bare1:.2f} s", flush=True)

    last = [0.0]

    def progress(f: float, msg: str) -> None:
        if f - last[0] >= 0.25 or f >= 1.0:
            last[0] = f
            print(f"  {f:4.0%} {msg}", flush=True)

    t0 = time.perf_counter()
    feats = {}
    for name, ps in {"ID": ids, **ood}.items():
        print(f"features {name}", flush=True)
        last[0] = 0.0
        feats[name] = extract_features(lm, ps, batch_size=args.batch_size, progress=progress)
    t_feat = time.perf_counter() - t0
    id_f = feats.pop("ID")
    study = study_from_features(id_f, feats, OODSettings(), id_name="world")
    t_ood = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_forward(lm, all_prompts, args.batch_size)
    t_bare2 = time.perf_counter() - t0
    t_bare = 0.5 * (t_bare1 + t_bare2)
    print(f"bare forward (after): {t_bare2:.2f} s; the ratio uses their mean (the CPU may be shared)", flush=True)
    mb = sum(a.nbytes for f in [id_f, *feats.values()] for a in (f.last, f.mean, f.head_in, f.lens_top)) / 2**20
    print(f"features {t_feat:.2f} s + study {t_ood - t_feat:.2f} s; feature arrays {mb:.0f} MiB; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    where = "final logits" if study.best_layer is None else f"layer {study.best_layer}"
    print(f"best: {study.best_score} at {where}, AUROC {study.best_auroc:.3f} (held-out ID vs all OOD)")
    per_k = 1000.0 / n_total
    print(f"per 1,000 prompts: bare forward {t_bare * per_k:.2f} s, OOD study {t_ood * per_k:.2f} s")
    print(f"ratio OOD study / bare forward: {t_ood / t_bare:.2f}")


if __name__ == "__main__":
    main()
