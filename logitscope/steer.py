"""`python -m logitscope steer`: the steering and personas page's computation and bundle, headless."""
from __future__ import annotations

import argparse
import re
from typing import Any

from components.reports import steering as R
from components.settings import add_arguments, from_args
from logitscope.common import add_common, finish, given_prompts, load_models, main_prompts, other_prompts, progress


def run(args: argparse.Namespace) -> int:
    """Steering vectors built on A, then the page's Monitor, Flag, Steer (generations, sweep) and Drift parts."""
    s = from_args(R.SteerSettings, args)
    ps = given_prompts(args)
    with progress("steer", args.quiet) as bar:
        models = load_models(args)
        ps = main_prompts(args, models, ps)

        def part_set(part: str, given: str | None, demo_name: str) -> Any:
            return other_prompts(args, models, given, demo_name) if part in s.parts else None

        sets = R.SteerSets(
            monitor=part_set("monitor", args.monitor_prompts, "persona_eval"),
            flag=part_set("flag", args.flag_prompts, "persona_pairs"),
            targets=part_set("sweep", args.targets, "persona_eval"),
            controls=part_set("sweep", args.controls, "facts"),
            drift=part_set("drift", args.drift_prompts, "persona_eval") if models.compare else None)
        bar.stage(0, 0.05)(1.0, "models loaded")
        report, settings = R.run(models, ps, s, bar.stage(0.05, 1.0), sets)
    return finish(args, report, R.PAGE, models, settings, ps, R.inputs(ps, sets))


def add(sub: Any) -> None:
    """The steer subcommand: the common flags, one flag per SteerSettings field and the parts' prompt sets."""
    p = sub.add_parser("steer", help="steering vectors: build, monitor, flag data, steer, sweep, drift",
                       description="Build a steering vector per layer on A from a contrastive set (--prompts), then "
                                   "the Steering page's other parts (--parts); writes the Steering page's bundle.")
    add_common(p, "persona_pairs")
    # "--sweep-alphas -4,-2,0" (and rerun's "--sweep-alphas -4.0,-2.0"): a list of numbers that starts with a minus
    # sign is a value, not an unknown option (argparse only knows single negative numbers)
    p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+(\s*,\s*-?\d*\.?\d+)+$")
    s = p.add_argument_group("settings (the page's defaults)")
    add_arguments(s, R.SteerSettings)  # a bare --preserve-norm means true, as before the declaration
    g = p.add_argument_group("prompt sets of the parts")
    g.add_argument("--monitor-prompts", default=None, help="prompts projected on the vector (default from model A: "
                   "persona_eval on demo models, chat_persona_eval on chat models)")
    g.add_argument("--flag-prompts", default=None, help="rows with responses to flag (default from model A: "
                   "persona_pairs on demo models, chat_persona_pairs on chat models)")
    g.add_argument("--targets", default=None, help="target prompts of the sweep (default as --monitor-prompts)")
    g.add_argument("--controls", default=None, help="control prompts of the sweep (default from model A: facts on "
                   "demo models, en_facts on others)")
    g.add_argument("--drift-prompts", default=None, help="prompts of the drift (default as --monitor-prompts)")
    p.set_defaults(func=run)
