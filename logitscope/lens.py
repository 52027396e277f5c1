"""`python -m logitscope lens`: the logit lens page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import lens as R
from components.settings import add_arguments, from_args
from logitscope.common import add_common, finish, first_n, given_prompts, load_models, main_prompts, progress


def run(args: argparse.Namespace) -> int:
    """Logit lens of A (and B, and KL(A||B) on identical tokens) as the Logit lens page computes it."""
    s = from_args(R.LensSettings, args)
    ps = given_prompts(args)
    with progress("lens", args.quiet) as bar:
        models = load_models(args)
        ps = first_n(main_prompts(args, models, ps), args.max_prompts)
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, ps, s, bar.stage(0.05, 1.0))
    return finish(args, report, R.PAGE, models, settings, ps)


def add(sub: Any) -> None:
    """The lens subcommand: the common flags and one flag per LensSettings field."""
    p = sub.add_parser("lens", help="logit lens: what each layer would predict",
                       description="Logit lens on A (and B side by side, with KL(A‖B) on identical tokens); writes "
                                   "the Logit lens page's bundle.")
    add_common(p, "facts")
    s = p.add_argument_group("settings (the page's defaults)")
    s.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts of the set")
    add_arguments(s, R.LensSettings)
    p.set_defaults(func=run)
