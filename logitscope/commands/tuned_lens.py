"""`python -m logitscope tuned-lens --model M [--corpus FILE] [--steps N]`: train a tuned lens for a model.

Trains one affine translator per layer (analysis.lens.tuned) on the corpus's training lines (every 5th line held
out), prints the held-out KL and cross-entropy per layer (logit vs tuned) and the time, and stores the translator in
the cache (~/.cache/logitscope/tuned_lens, $LOGITSCOPE_TUNED_LENS), where the Logit lens page and
`python -m logitscope lens --lens tuned` find it. --out also writes a copy (safetensors, with its metadata);
--load installs a translator file into the cache instead of training, after checking it fits the model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analysis.core.errors import InputError


def _corpus(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--corpus {path} is not a file; give a UTF-8 .txt file (one text per line).")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--corpus {path} could not be read as UTF-8 text ({err}).") from None


def held_out_lines(tr: Any) -> list[str]:
    """The held-out table as text lines: layer, KL logit / tuned, cross-entropy logit / tuned."""
    h = tr.held_out
    if h is None:
        return []
    lines = [f"held-out: {h.n_positions} positions of {h.n_texts} lines (nats)",
             "layer  KL logit  KL tuned  CE logit  CE tuned"]
    for layer in range(h.n_layers + 1):
        lines.append(f"{layer:5d}  {h.kl_logit[layer]:8.3f}  {h.kl_tuned[layer]:8.3f}  {h.xent_logit[layer]:8.3f}  "
                     f"{h.xent_tuned[layer]:8.3f}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Train (or --load) a translator for --model and store it in the cache."""
    from analysis.lens import tuned as TL
    from logitscope.common import load_models, progress

    corpus = None if args.load else _corpus(args.corpus)
    if args.steps is not None and args.steps < 0:
        raise InputError(f"--steps must be 0 or more, got {args.steps}.")
    with progress("tuned-lens", args.quiet) as bar:
        lm = load_models(args).a
        bar.stage(0, 0.05)(1.0, "model loaded")
        if args.load:
            tr = TL.load(args.load, lm)
        else:
            tr = TL.fit(lm, corpus, args.steps, bar.stage(0.05, 1.0), positions=args.positions)
    path = TL.store(tr, lm)
    if not args.quiet:
        for line in held_out_lines(tr):
            print(line, file=sys.stderr)
        if not args.load:
            print(f"trained {tr.steps} steps on {tr.positions} positions in {tr.seconds:.1f} s", file=sys.stderr)
    if args.out:
        TL.save(tr, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    print(path)
    return 0


def add(sub: Any) -> None:
    """The tuned-lens subcommand."""
    from analysis.core.loading import DEFAULT_MODEL
    from analysis.lens.tuned import DEMO_CORPUS, STEP_HELP

    p = sub.add_parser("tuned-lens", help="train a tuned lens (an affine translator per layer) for a model",
                       description="Train a tuned lens for --model on a text corpus and store it where the Logit "
                                   "lens page and `lens --lens tuned` find it.")
    g = p.add_argument_group("model and corpus")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"the model (as for lens; default {DEFAULT_MODEL})")
    g.add_argument("--revision", default=None, help="revision (branch, tag or commit) of the model")
    g.add_argument("--adapter", default=None, help="LoRA adapter folder merged into the model")
    g.add_argument("--corpus", default=str(DEMO_CORPUS), help="a UTF-8 .txt file, one text per line; every 5th "
                   "line is held out for the evaluation (default the demo corpus, data/prompts/corpus_sample.txt)")
    g.add_argument("--steps", type=int, default=None, help=STEP_HELP)
    g.add_argument("--positions", type=int, default=4096, help="training token positions sampled from the corpus "
                   "(default 4096)")
    g.add_argument("--load", default=None, help="install this translator file (.safetensors) into the cache instead "
                   "of training; refused when it was trained for other weights")
    g.add_argument("--out", default=None, help="also write the translator to this .safetensors file")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="default auto")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights: they can run code")
    g.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with the checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(func=run, model_b=None, revision_b=None, adapter_b=None)
