"""Command line: `python -m logitscope <lens|flow|steer|neurons|shift|ood> --model ... --prompts ... --out DIR`.

Each command (one module per command in this package) computes its analysis with the same engine calls and default
settings as its page, turns the results into figures and tables with the page's report function (components.reports)
and writes DIR/ exactly like the page's bundle zip (figures/<name>.<fmt>, data/<name>.csv|.json, metadata.json).
Project errors print their message to stderr and exit with status 2. Never imports streamlit.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from analysis.core.errors import LogitscopeError
from components.methods import METHODS, by_command

# One command per registered method (components.methods, in menu order), then the tools: rerun, tuned-lens, app.
COMMANDS: dict[str, Callable[[Any], None]] = {name: import_module(f"logitscope.commands.{name}").add for name in
                                              [m.command for m in METHODS.values()] + ["rerun", "tuned_lens", "app"]}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per analysis page."""
    parser = argparse.ArgumentParser(
        prog="logitscope",
        description="Logitscope headless runs: each command writes the same figures, data and metadata.json as "
                    "its page's bundle into --out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; project errors print their message to stderr and return 2 (no traceback)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "app":  # what follows `app` is Streamlit's (--server.port 8502 ...)
        args.streamlit_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        from analysis.compute.backend import use_backend
        from analysis.compute.choose import parse_backend

        method = by_command(args.command)
        if getattr(args, "ray", None) and method is not None and not method.shards:
            sharded = ", ".join(m.command for m in METHODS.values() if m.shards)
            print(f"note: {args.command} runs in this process; --ray shards {sharded}.", file=sys.stderr)
        with use_backend(parse_backend(getattr(args, "ray", None))):  # --ray: the backend of the whole command
            return int(args.func(args))
    except LogitscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `logitscope` console script (pyproject's [project.scripts]): `logitscope <command> ...`."""
    sys.exit(main())
