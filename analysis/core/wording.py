"""Small wording helpers for messages and notes (pure: no streamlit)."""
from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 prompt', '3 prompts', '1,000 prompts' (``many``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def verb(n: int, one: str = "has", many: str = "have") -> str:
    """The verb that agrees with a count: verb(1) = 'has', verb(2) = 'have'."""
    return one if n == 1 else many
