"""`python -m logitscope flow`: the logit flow page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import flow as R
from components.settings import add_arguments, from_args
from logitscope.common import add_common, finish, given_prompts, load_models, main_prompts, progress


def run(args: argparse.Namespace) -> int:
    """Logit flow of the first N prompts on A (and B) as the Logit flow page computes it."""
    s = from_args(R.FlowSettings, args)
    ps = given_prompts(args)
    with progress("flow", args.quiet) as bar:
        models = load_models(args)
        ps = main_prompts(args, models, ps)
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, ps, s, bar.stage(0.05, 1.0))
    return finish(args, report, R.PAGE, models, settings, ps)


def add(sub: Any) -> None:
    """The flow subcommand: the common flags and one flag per FlowSettings field."""
    p = sub.add_parser("flow", help="logit flow: which layers, heads and positions build the prediction",
                       description="Logit flow at the last position of each prompt on A (and B, with B − A views); "
                                   "writes the Logit flow page's bundle.")
    add_common(p, "two_hop")
    s = p.add_argument_group("settings (the page's defaults)")
    add_arguments(s, R.FlowSettings)
    p.set_defaults(func=run)
