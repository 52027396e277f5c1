"""`logitscope app [streamlit options]`: start the Streamlit app from wherever Logitscope is installed.

The app (app.py, pages/) is found beside the packages in a clone or under <prefix>/share/logitscope in an installed
copy (analysis.core.paths.DATA_ROOT); anything after `app` goes to `streamlit run` (e.g. --server.port 8502).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from analysis.core.errors import InputError


def command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line that starts the app, with the options given after `app`."""
    from analysis.core.paths import DATA_ROOT

    app = DATA_ROOT / "app.py"
    if not app.is_file():
        raise InputError(f"the app is not installed beside Logitscope's packages (looked for {app}); reinstall "
                         "Logitscope with `pip install .` from a clone.")
    return [sys.executable, "-m", "streamlit", "run", str(app), *args.streamlit_args]


def run(args: argparse.Namespace) -> int:
    """Become `streamlit run app.py ...` (exec: Ctrl+C and signals reach Streamlit itself)."""
    argv = command(args)
    if args.print_command:
        print(shlex.join(argv))
        return 0
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 1  # not reached


def add(sub: Any) -> None:
    """The app subcommand."""
    p = sub.add_parser("app", help="start the Streamlit app (the pages in a browser)",
                       description="Start the Logitscope app with `streamlit run`; options after `app` (such as "
                                   "--server.port 8502 or --server.headless true) go to Streamlit.")
    p.add_argument("--print-command", action="store_true", help="print the streamlit command instead of running it")
    p.set_defaults(func=run, streamlit_args=[])  # the options after `app` that are not its own (logitscope.cli)
