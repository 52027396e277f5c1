"""Bench: the OOD page's default study end to end on a demo model, against a bare forward pass over the same prompts.

What the page runs with its defaults (pages/ood.py, components/reports/ood.py OODSeparabilitySettings), timed as one piece:
features of the ID set and of each OOD set (analysis.ood.features.extract_features, batch 32, no BLOOD),
the study (analysis.ood.study.study_from_features: every scorer at every layer, metrics, the best pick) with the
page's OODSettings, and the 2-D map (analysis.ood.study.project_2d: PCA of the best score's best layer, 'last'
pooling, fitted on ID, random_state 0). The prompts: the page's default ID set (model_defaults.default_set:
'facts' on demo models) and its default OOD sets (components.reports.ood.DEFAULT_OOD);
``--sets synthetic --n 2000`` uses 2,000 generated ID and 2,000 generated OOD prompts instead.

Floor: the model's bare forward pass (logits, nothing kept) over the same prompts, set by set, in the same
length-bucketed batches of the same size as the features use. Each round times the floor, the study and, for
information, the floor with plain consecutive batches (the padding the features had before bucketing);
rounds are interleaved and the best of each is kept, since the CPU may be shared. A warm-up round runs first
(imports, kernels) and is not timed. Threads: 1 by default for torch, BLAS and OpenMP alike (``--threads``;
on a loaded 2-core machine two threads make small matrix products many times slower and the numbers noisy).

Last line: the ratio (OOD study / floor); goal <= 1.5. ``--umap`` also times the UMAP map (first call in the
process, numba compilation included, then a warm call). Not part of the test suite.

    python -m bench.ood [--model gpt2-world-base] [--rounds 3] [--threads 1] [--umap]
    python -m bench.ood --sets synthetic --n 2000
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

import resource  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from analysis.core.batching import bucketed, chunks, encode  # noqa: E402
from analysis.core.forward import run  # noqa: E402
from analysis.core.loading import ModelSpec, load_model  # noqa: E402
from analysis.demo import prompts as DP  # noqa: E402
from analysis.demo import world as W  # noqa: E402
from analysis.models.defaults import default_set  # noqa: E402
from analysis.ood import OODSettings, clear_map_cache, extract_features, project_2d, study_from_features
from analysis.prompts import load_builtin  # noqa: E402
from components.reports import ood as R  # noqa: E402

D = R.OODSeparabilitySettings()  # the page's defaults


def _fits(lm, texts: list[str]) -> list[str]:
    """Distinct texts that fit the model's context, in order."""
    out, seen = [], set()
    for t in texts:
        if t and t not in seen and len(lm.tokenizer(t)["input_ids"]) <= lm.context_length:
            seen.add(t)
            out.append(t)
    return out


def synthetic_sets(lm, n: int) -> tuple[str, list[str], dict[str, list[str]]]:
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
    return "world", ids, ood


def page_sets(lm) -> tuple[str, list[str], dict[str, list[str]]]:
    """The page's default ID set for this model and its default built-in OOD sets."""
    id_set = load_builtin(default_set(lm, "facts"))
    return id_set.name, list(id_set.prompts), {n: list(load_builtin(n).prompts) for n in R.DEFAULT_OOD}


def page_settings() -> OODSettings:
    """The page's OODSettings with every widget at its default (0 = auto for ViM's dim and NECO's k)."""
    return D.to_study_settings()


def bare_forward(lm, sets: dict[str, list[str]], batch_size: int, bucket: bool = True) -> None:
    """The model's forward pass over every set, in the features' batches (bucketed) or plain chunks; nothing kept."""
    for ps in sets.values():
        if bucket:
            for _, batch in bucketed(lm.tokenizer, ps, batch_size, max_length=lm.context_length):
                run(lm, batch)
        else:
            for sl in chunks(len(ps), batch_size):
                run(lm, encode(lm.tokenizer, ps[sl], max_length=lm.context_length))


def ood_study(lm, id_name: str, sets: dict[str, list[str]], batch_size: int, method: str = "pca"):
    """What the page computes on Run: features per set, the study, the 2-D map of the default layer."""
    clear_map_cache()  # project_2d memoises fitted maps: every round fits its own
    feats = {name: extract_features(lm, ps, batch_size=batch_size) for name, ps in sets.items()}
    id_f = feats.pop(id_name)
    study = study_from_features(id_f, feats, page_settings(), id_name=id_name)
    layer = R.map_layer(study, study.best_score, D.layer)
    proj = project_2d(id_f, feats, layer, pooling=D.map_pooling, method=method, fit_on=D.fit_on,
                      random_state=D.random_state, id_name=id_name)
    return id_f, feats, study, proj


def padding(lm, sets: dict[str, list[str]], batch_size: int, bucket: bool) -> tuple[int, int]:
    """(real tokens, padded batch entries) of the batches the features run."""
    real = padded = 0
    for ps in sets.values():
        lens = [len(lm.tokenizer(p)["input_ids"]) for p in ps]
        real += sum(lens)
        order = sorted(range(len(ps)), key=lambda i: -lens[i]) if bucket else list(range(len(ps)))
        for sl in chunks(len(ps), batch_size):
            rows = [lens[i] for i in order[sl]]
            padded += max(rows) * len(rows)
    return real, padded


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-world-base")
    ap.add_argument("--sets", choices=["page", "synthetic"], default="page")
    ap.add_argument("--n", type=int, default=2000, help="with --sets synthetic: ID prompts; as many OOD prompts")
    ap.add_argument("--batch-size", type=int, default=D.batch_size)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds; the best of each is kept")
    ap.add_argument("--threads", type=int, default=1, help="torch, BLAS and OpenMP threads (default 1)")
    ap.add_argument("--umap", action="store_true", help="also time the UMAP map (not the page default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = load_model(ModelSpec(args.model, device=args.device))
    id_name, ids, ood = page_sets(lm) if args.sets == "page" else synthetic_sets(lm, args.n)
    sets = {id_name: ids, **ood}
    n_total = sum(len(v) for v in sets.values())
    bs = args.batch_size
    load = load_average()
    print(f"model {args.model} ({lm.adapter.n_layers} layers, d {lm.adapter.d_model}, V {lm.adapter.vocab_size}), "
          f"{args.sets} sets: {id_name} {len(ids)} ID + {n_total - len(ids)} OOD prompts "
          f"({', '.join(f'{k} {len(v)}' for k, v in ood.items())}), batch {bs}, device {lm.device}, "
          f"{args.threads} thread(s), load average {load:.1f} on {os.cpu_count()} CPUs", flush=True)
    real, pad_b = padding(lm, sets, bs, True)
    _, pad_p = padding(lm, sets, bs, False)
    print(f"tokens: {real:,} real; padded batches hold {pad_b:,} entries bucketed by length, "
          f"{pad_p:,} in plain consecutive batches", flush=True)

    bare_forward(lm, sets, bs)  # warm-up round: imports (sklearn), kernels, caches
    ood_study(lm, id_name, sets, bs)
    best = {"floor": float("inf"), "study": float("inf"), "plain": float("inf")}
    for r in range(max(1, args.rounds)):
        t0 = time.perf_counter()
        bare_forward(lm, sets, bs)
        t_floor = time.perf_counter() - t0
        t0 = time.perf_counter()
        id_f, feats, study, proj = ood_study(lm, id_name, sets, bs)
        t_study = time.perf_counter() - t0
        t0 = time.perf_counter()
        bare_forward(lm, sets, bs, bucket=False)
        t_plain = time.perf_counter() - t0
        for k, v in (("floor", t_floor), ("study", t_study), ("plain", t_plain)):
            best[k] = min(best[k], v)
        print(f"round {r + 1}: floor {t_floor:.3f} s, OOD study {t_study:.3f} s (ratio {t_study / t_floor:.2f}), "
              f"floor in plain batches {t_plain:.3f} s", flush=True)

    # one more study, in parts, to say where the time goes (not used for the ratio)
    t0 = time.perf_counter()
    feats = {name: extract_features(lm, ps, batch_size=bs) for name, ps in sets.items()}
    t1 = time.perf_counter()
    id_f = feats.pop(id_name)
    study = study_from_features(id_f, feats, page_settings(), id_name=id_name)
    t2 = time.perf_counter()
    layer = R.map_layer(study, study.best_score, D.layer)
    clear_map_cache()
    project_2d(id_f, feats, layer, pooling=D.map_pooling, method="pca", fit_on=D.fit_on,
               random_state=D.random_state, id_name=id_name)
    t3 = time.perf_counter()
    print(f"parts: features {t1 - t0:.3f} s, scores + metrics {t2 - t1:.3f} s, PCA map {t3 - t2:.3f} s")
    if args.umap:
        for what in ("first UMAP call in this process (numba compiles)", "warm UMAP call"):
            clear_map_cache()
            t0 = time.perf_counter()
            project_2d(id_f, feats, layer, pooling=D.map_pooling, method="umap", fit_on=D.fit_on,
                       random_state=D.random_state, id_name=id_name)
            print(f"UMAP map ({what}): {time.perf_counter() - t0:.3f} s", flush=True)
    where = "final logits" if study.best_layer is None else f"layer {study.best_layer}"
    print(f"best: {study.best_score} at {where}, AUROC {study.best_auroc:.3f}; map at layer {layer}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    per_k = 1000.0 / n_total
    print(f"best of {max(1, args.rounds)} rounds per 1,000 prompts: floor {best['floor'] * per_k:.3f} s, "
          f"OOD study {best['study'] * per_k:.3f} s; plain batches cost {best['plain'] / best['floor']:.2f}x the floor")
    print(f"ratio OOD study / bare forward: {best['study'] / best['floor']:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
