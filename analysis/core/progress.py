"""The progress callback every long engine function takes: ``progress(fraction, message)`` with fraction 0..1."""
from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[float, str], None]
Progress = ProgressFn | None  # what engine functions take: a callback, or None for no reporting
