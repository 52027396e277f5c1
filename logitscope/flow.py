"""`python -m logitscope flow`: the logit flow page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.errors import InputError
from logitscope.common import add_common, finish, given_prompts, index_arg, load_models, main_prompts, progress


def run(args: argparse.Namespace) -> int:
    """Logit flow of the first N prompts on A (and B) as the Logit flow page computes it."""
    from analysis.flow import logit_flow_set
    from components.reports import flow as R

    ps = given_prompts(args)
    if not 1 <= args.max_prompts <= R.MAX_PROMPTS:
        raise InputError(f"--max-prompts must be between 1 and {R.MAX_PROMPTS} (got {args.max_prompts}).")
    with progress("flow", args.quiet) as bar:
        models = load_models(args)
        ps = main_prompts(args, models, ps)
        rows = ps.rows[: args.max_prompts]
        targets = [args.target if args.target else r.target for r in rows]
        competitors = [args.competitor if args.competitor else r.competitor for r in rows]
        prompts = [r.prompt for r in rows]
        items = models.items()
        results = {which: logit_flow_set(lm, prompts, targets, competitors,
                                         progress=bar.stage(i / len(items), (i + 1) / len(items), which))
                   for i, (which, lm, _card) in enumerate(items)}
    idx = index_arg(args.show_prompt, len(prompts), "--show-prompt")
    view = args.view or R.default_view(results)
    if view not in R.views(results):
        raise InputError(f"--view {view} needs a competitor for every prompt: give --competitor or a set with a "
                         "'competitor' column (two_hop has one).")
    report = R.flow_report(results, {w: card.name for w, _, card in items}, view=view, frac=args.threshold,
                           top_k=args.edges, idx=idx)
    settings = R.flow_settings(view, len(prompts), args.target, args.competitor, args.threshold, args.edges, idx)
    return finish(args, report, R.PAGE, models, settings, ps)


def add(sub: Any) -> None:
    from components.reports import flow as R

    p = sub.add_parser("flow", help="logit flow: which layers, heads and positions build the prediction",
                       description="Logit flow at the last position of each prompt on A (and B, with B − A views); "
                                   "writes the Logit flow page's bundle.")
    add_common(p, "two_hop")
    s = p.add_argument_group("settings (the page's defaults)")
    s.add_argument("--max-prompts", type=int, default=R.DEFAULTS["n_prompts"],
                   help=f"analyse the first N prompts (default {R.DEFAULTS['n_prompts']}, at most {R.MAX_PROMPTS})")
    s.add_argument("--target", default="", help="target token text ('#123' = id); default: the set's target, else "
                                                "the model's top-1")
    s.add_argument("--competitor", default="", help="competing token; default: the set's competitor, if any")
    s.add_argument("--view", default=None, choices=list(R.VIEW_LABELS),
                   help="read out toward (default: difference when there is a competitor, else target)")
    s.add_argument("--threshold", type=float, default=R.DEFAULTS["threshold_pct"],
                   help="flow threshold, %% of the strongest edge (default 10)")
    s.add_argument("--edges", type=int, default=R.DEFAULTS["top_k"], help="flow edges at most (default 20)")
    s.add_argument("--show-prompt", type=int, default=1, help="prompt shown in detail (1-based)")
    p.set_defaults(func=run)
