"""`python -m logitscope steer`: the steering and personas page's computation and bundle, headless."""
from __future__ import annotations

import argparse
import re
from typing import Any

from components.reports import steering as R
from components.settings import add_arguments
from logitscope.command import method_command


def arguments(p: argparse.ArgumentParser, g: Any) -> None:
    """One flag per SteerSettings field; lists of numbers that start with a minus sign are values."""
    # "--sweep-alphas -4,-2,0" (and rerun's "--sweep-alphas -4.0,-2.0"): a list of numbers that starts with a minus
    # sign is a value, not an unknown option (argparse only knows single negative numbers)
    p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+(\s*,\s*-?\d*\.?\d+)+$")
    add_arguments(g, R.SteerSettings)  # a bare --preserve-norm means true, as before the declaration


run, add = method_command(
    "steer", arguments=arguments, help="steering vectors: build, monitor, flag data, steer, sweep, drift",
    description="Build a steering vector per layer on A from a contrastive set (--prompts), then the Steering page's "
                "other parts (--parts); writes the Steering page's bundle.")
