"""`python -m logitscope neurons`: the confidence neurons page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import neurons as R
from components.settings import add_arguments, fields_of, from_args
from logitscope.command import method_command

GROUPS = {"scan": ("max_reference", "processing", "k", "parts"),
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


def arguments(p: argparse.ArgumentParser, _g: Any) -> None:
    """One flag per NeuronsSettings field, in its tab's group, and the older switches."""
    names = {f.name for f in fields_of(R.NeuronsSettings)}
    ungrouped = {f.name for f in fields_of(R.NeuronsSettings) if f.spec.cli} - {n for g in GROUPS.values() for n in g}
    if ungrouped:
        raise TypeError(f"NeuronsSettings flags without a group: {sorted(ungrouped)}")
    groups = {}
    for title, fields in GROUPS.items():
        g = groups[title] = p.add_argument_group(f"{title} (the page's defaults)")
        add_arguments(g, R.NeuronsSettings, skip=tuple(names - set(fields)))
    groups["scan"].add_argument("--no-processing", action="store_true", help="same as --processing false")
    groups["ablate"].add_argument("--no-set", action="store_true", help="same as --as-set false")


run, add = method_command(
    "neurons", arguments=arguments, settings_of=settings_of,
    help="confidence neurons: entropy/frequency scans, ablation, induction study",
    description="Scan the last block for entropy neurons and every block for token-frequency neurons, ablate neurons "
                "(total vs direct effect) and run the induction study; writes the Confidence neurons page's bundle. "
                "--prompts is the reference set (token frequencies and mean activations).")
