"""`python -m logitscope shift`: the checkpoint shift page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.core.errors import InputError
from components.reports import shift as R
from components.settings import add_arguments, from_args
from logitscope.common import add_common, finish, given_prompts, load_models, main_prompts, progress, spec_of


def run(args: argparse.Namespace) -> int:
    """Checkpoint shift A -> B (and the second pair's similarity) as the Checkpoint shift page computes it."""
    from analysis.core.loading import load_model

    s = from_args(R.ShiftSettings, args)
    ps = given_prompts(args)
    pair2 = bool(args.pair2_base or args.pair2_tuned)
    if pair2 and not (args.pair2_base and args.pair2_tuned):
        raise InputError("The second pair needs both --pair2-base and --pair2-tuned.")
    with progress("shift", args.quiet) as bar:
        models = load_models(args, need_b=True)
        ps = main_prompts(args, models, ps)
        R.resolve_reference(ps, s)  # a set without responses fails before the second pair loads
        second = None
        if pair2:
            second = (load_model(spec_of(args, args.pair2_base)), load_model(spec_of(args, args.pair2_tuned)))
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, ps, s, bar.stage(0.05, 1.0), second=second)
    return finish(args, report, R.PAGE, models, settings, ps)


def add(sub: Any) -> None:
    """The shift subcommand: the common flags, one flag per ShiftSettings field and the second pair's models."""
    p = sub.add_parser("shift", help="checkpoint shift: what changed from A to B (needs --model-b)",
                       description="Teacher-forced log p_B − log p_A per step, per-layer lens KL, and optionally "
                                   "whether a second pair shifts alike; writes the Checkpoint shift page's bundle.")
    add_common(p, "persona_eval", b_required=True)
    s = p.add_argument_group("settings (the page's defaults)")
    add_arguments(s, R.ShiftSettings, helps={"similarity_columns": "(with --pair2-base/--pair2-tuned)"})
    s = p.add_argument_group("second pair (optional)")
    s.add_argument("--pair2-base", default=None, help=f"the second pair's base checkpoint, e.g. {R.PAIR2[0]}")
    s.add_argument("--pair2-tuned", default=None, help=f"the second pair's tuned checkpoint, e.g. {R.PAIR2[1]}")
    p.set_defaults(func=run)
