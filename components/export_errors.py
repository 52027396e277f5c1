"""Export errors: the one exception every figure, table and bundle export raises with a sentence for the user."""
from __future__ import annotations

from analysis.core.errors import LogitscopeError


class ExportError(LogitscopeError):
    """A figure or table could not be exported (no browser, unknown format, render failure)."""
