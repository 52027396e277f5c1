"""Logitscope: the command line (``python -m logitscope <command>``, one module per command, routed by cli) and the
Python API (``import logitscope as ls``: ls.load, ls.wrap and one function per registered method, from
logitscope.api).

The API's names load on first use, so the command line starts without importing the API.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    # not for a dunder probe (pickle, inspect), nor for "api" itself (`from logitscope import api` asks first)
    if not name.startswith("__") and name != "api":
        api = import_module("logitscope.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'logitscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(import_module("logitscope.api").__all__))
