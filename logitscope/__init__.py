"""Logitscope: the command line (``python -m logitscope <command>``, one module per command, routed by cli) and the
Python API (``import logitscope as ls``: ls.load, ls.wrap and one function per method, from logitscope.api).

The API's names load on first use, so the command line starts without importing the engine's methods.
"""
from __future__ import annotations

from typing import Any

API = ("Result", "card", "flow", "lens", "load", "neurons", "ood", "prompt_set", "shift", "steer", "wrap")
__all__ = list(API)


def __getattr__(name: str) -> Any:
    if name in API:
        from logitscope import api

        return getattr(api, name)
    raise AttributeError(f"module 'logitscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(API))
