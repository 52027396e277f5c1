"""`python -m logitscope shift`: the checkpoint shift page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.core.errors import InputError
from analysis.core.loading import load_model
from components.reports import shift as R
from components.settings import add_arguments
from logitscope.command import method_command
from logitscope.common import spec_of


def arguments(p: argparse.ArgumentParser, g: Any) -> None:
    """The settings, and the second pair's models."""
    add_arguments(g, R.ShiftSettings, helps={"similarity_columns": "(with --pair2-base/--pair2-tuned)"})
    s = p.add_argument_group("second pair (optional)")
    s.add_argument("--pair2-base", default=None, help=f"the second pair's base checkpoint, e.g. {R.PAIR2[0]}")
    s.add_argument("--pair2-tuned", default=None, help=f"the second pair's tuned checkpoint, e.g. {R.PAIR2[1]}")


def second_pair(args: argparse.Namespace, models: Any, inputs: dict, s: R.ShiftSettings) -> dict:
    """run's ``second``: the second pair, loaded once the set is known to have what the reference needs."""
    if not (args.pair2_base or args.pair2_tuned):
        return {}
    if not (args.pair2_base and args.pair2_tuned):
        raise InputError("The second pair needs both --pair2-base and --pair2-tuned.")
    R.resolve_reference(inputs["--prompts"], s)  # a set without responses fails before the second pair loads
    return {"second": (load_model(spec_of(args, args.pair2_base)), load_model(spec_of(args, args.pair2_tuned)))}


run, add = method_command(
    "shift", arguments=arguments, run_kwargs=second_pair,
    help="checkpoint shift: what changed from A to B (needs --model-b)",
    description="Teacher-forced log p_B − log p_A per step, per-layer lens KL, and optionally whether a second pair "
                "shifts alike; writes the Checkpoint shift page's bundle.")
