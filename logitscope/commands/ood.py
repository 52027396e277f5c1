"""`python -m logitscope ood`: the OOD separability page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import ood as R
from components.settings import add_arguments, fields_of
from logitscope.command import method_command


def arguments(p: argparse.ArgumentParser, g: Any) -> None:
    """The split by a group column, the scores' settings and the views' settings in groups of their own."""
    p.add_argument_group("split").add_argument(
        "--id-group", default=None, help="split --prompts by its group column: this group is ID, the others OOD "
                                         "(then --ood-prompts is ignored)")
    S = R.OODSeparabilitySettings
    views = tuple(f.name for f in fields_of(S) if f.spec.display)
    add_arguments(p.add_argument_group("scores (the page's defaults)"), S, skip=views)  # a bare --blood means true
    add_arguments(p.add_argument_group("views (the page's defaults)"), S,
                  skip=tuple(f.name for f in fields_of(S) if f.name not in views))


def split(args: argparse.Namespace, models: Any, inputs: dict) -> dict:
    """With --id-group: the ID set's rows of that group, and one OOD set per other group."""
    return R.split_inputs(inputs, args.id_group)


run, add = method_command(
    "ood", arguments=arguments, prepare=split, run_kwargs=lambda args, models, inputs, s: {"id_group": args.id_group},
    help="OOD separability: which layers and scores tell ID from OOD prompts",
    description="Fit OOD scores on part of the ID set (--prompts) and evaluate them on the held-out rest and the OOD "
                "sets; writes the OOD separability page's bundle.")
