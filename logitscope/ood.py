"""`python -m logitscope ood`: the OOD separability page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from components.reports import ood as R
from components.settings import add_arguments, fields_of, from_args
from logitscope.common import add_common, chat, finish, given_prompts, load_models, load_prompts, main_prompts, progress


def run(args: argparse.Namespace) -> int:
    """OOD separability study on A (and B) as the OOD separability page computes it."""
    s = from_args(R.OODSeparabilitySettings, args)
    id_set = given_prompts(args)
    ood_sets = {}
    if args.id_group is None:
        for n in (n.strip() for n in args.ood_prompts.split(",") if n.strip()):
            ps = load_prompts(n)
            ood_sets[ps.name] = ps
    with progress("ood", args.quiet) as bar:
        models = load_models(args)
        id_set, ood_sets = main_prompts(args, models, id_set), {n: chat(args, models, ps) for n, ps in ood_sets.items()}
        id_set, ood_sets = R.split_sets(id_set, ood_sets, args.id_group)
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, id_set, s, bar.stage(0.05, 1.0), ood_sets=ood_sets, id_group=args.id_group)
    return finish(args, report, R.PAGE, models, settings, id_set,
                  {"--prompts": id_set, "--ood-prompts": list(ood_sets.values())})


def add(sub: Any) -> None:
    """The ood subcommand: the common flags, the sets and one flag per OODSeparabilitySettings field."""
    p = sub.add_parser("ood", help="OOD separability: which layers and scores tell ID from OOD prompts",
                       description="Fit OOD scores on part of the ID set (--prompts) and evaluate them on the held-out "
                                   "rest and the OOD sets; writes the OOD separability page's bundle.")
    add_common(p, "facts")
    g = p.add_argument_group("sets")
    g.add_argument("--ood-prompts", default=",".join(R.DEFAULT_OOD),
                   help="OOD sets, comma separated built-in names or files (default: the page's three)")
    g.add_argument("--id-group", default=None, help="split --prompts by its group column: this group is ID, the "
                                                     "others OOD (then --ood-prompts is ignored)")
    S = R.OODSeparabilitySettings
    views = tuple(f.name for f in fields_of(S) if f.spec.display)
    g = p.add_argument_group("scores (the page's defaults)")
    add_arguments(g, S, skip=views)  # a bare --blood means true, as it always did
    add_arguments(p.add_argument_group("views (the page's defaults)"), S,
                  skip=tuple(f.name for f in fields_of(S) if f.name not in views))
    p.set_defaults(func=run)
