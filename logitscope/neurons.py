"""`python -m logitscope neurons`: the confidence neurons page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import neurons as R
from components.settings import add_arguments, fields_of, from_args
from logitscope.common import (
    add_common,
    chat,
    finish,
    given_prompts,
    load_models,
    load_prompts,
    main_prompts,
    parts_of,
    progress,
)

GROUPS = {"scan": ("max_reference", "processing", "k"),
          "ablate": ("neurons", "mode", "max_prompts", "n_random", "seed", "skip_first", "as_set"),
          "induction": ("induction_source", "induction_neurons", "induction_auto", "sequences", "length",
                        "random_sets", "induction_seed"),
          "neuron card": ("card_neuron", "card_k", "card_window")}


def settings_of(args: argparse.Namespace) -> R.NeuronsSettings:
    """The settings from the flags; the older --no-processing and --no-set switches still work."""
    overrides = {}
    if args.no_processing:
        overrides["processing"] = False
    if args.no_set:
        overrides["as_set"] = False
    return from_args(R.NeuronsSettings, args, **overrides)


def run(args: argparse.Namespace) -> int:
    """Entropy and frequency scans, ablation and the induction study as the Confidence neurons page runs them."""
    s = settings_of(args)
    parts = tuple(p for p in R.PARTS if p in args.parts)
    ref_set = given_prompts(args)
    with progress("neurons", args.quiet) as bar:
        models = load_models(args)
        ref_set = main_prompts(args, models, ref_set)
        eval_set = chat(args, models, load_prompts(args.eval_prompts)) if "ablate" in parts else None
        ind_set = (chat(args, models, load_prompts(args.induction_prompts))
                   if "induction" in parts and s.induction_source == "prompts" else None)
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, ref_set, s, bar.stage(0.05, 1.0), eval_set=eval_set, induction_set=ind_set,
                                 parts=parts)
    sets = {"--prompts": ref_set, "--eval-prompts": eval_set, "--induction-prompts": ind_set}
    return finish(args, report, R.PAGE, models, settings, ref_set,
                  {flag: ps for flag, ps in sets.items() if ps is not None})


def add(sub: Any) -> None:
    """The neurons subcommand: the common flags and one flag per NeuronsSettings field (in its tab's group)."""
    from analysis.neurons import DEFAULT_REFERENCE

    p = sub.add_parser("neurons", help="confidence neurons: entropy/frequency scans, ablation, induction study",
                       description="Scan the last block for entropy neurons and every block for token-frequency "
                                   "neurons, ablate neurons (total vs direct effect) and run the induction study; "
                                   "writes the Confidence neurons page's bundle. --prompts is the reference set "
                                   "(token frequencies and mean activations).")
    add_common(p, DEFAULT_REFERENCE)
    names = {f.name for f in fields_of(R.NeuronsSettings)}
    ungrouped = {f.name for f in fields_of(R.NeuronsSettings) if f.spec.cli} - {n for g in GROUPS.values() for n in g}
    if ungrouped:
        raise TypeError(f"NeuronsSettings flags without a group: {sorted(ungrouped)}")
    groups = {}
    for title, fields in GROUPS.items():
        g = groups[title] = p.add_argument_group(f"{title} (the page's defaults)")
        add_arguments(g, R.NeuronsSettings, skip=tuple(names - set(fields)))
    groups["scan"].add_argument("--no-processing", action="store_true", help="same as --processing false")
    groups["scan"].add_argument("--parts", type=parts_of(R.PARTS, none=True), default=R.PARTS,
                                help="comma separated from ablate,induction, or none (default both)")
    groups["ablate"].add_argument("--eval-prompts", default=DEFAULT_REFERENCE,
                                  help=f"prompts the ablation is evaluated on (default {DEFAULT_REFERENCE})")
    groups["ablate"].add_argument("--no-set", action="store_true", help="same as --as-set false")
    groups["induction"].add_argument("--induction-prompts", default="induction",
                                     help="set of 'R R' texts (default induction)")
    p.set_defaults(func=run)
