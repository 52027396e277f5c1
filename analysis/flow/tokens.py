"""Logit flow token resolution: the token id a typed target or competitor stands for ('#123' = a token id).

A text that tokenizes to several tokens resolves to its first token, with a note saying so.
"""
from __future__ import annotations

from typing import Any

from analysis.core.tokens import first_token


def resolve_token(tokenizer: Any, text: str, what: str = "target") -> tuple[int, str | None]:
    """(token id, note or None) for a target/competitor text: its first token (note if it has more); '#123' = token id
    (analysis.core.tokens.first_token)."""
    return first_token(tokenizer, text, None, what)
