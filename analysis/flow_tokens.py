"""Logit flow token resolution: the token id a typed target or competitor stands for ('#123' = a token id).

A text that tokenizes to several tokens resolves to its first token, with a note saying so.
"""
from __future__ import annotations

from typing import Any

from analysis.errors import InputError


def _decode(tokenizer: Any, token_id: int) -> str:
    try:
        return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except TypeError:
        return tokenizer.decode([int(token_id)])


def resolve_token(tokenizer: Any, text: str, what: str = "target") -> tuple[int, str | None]:
    """(token id, note or None) for a target/competitor text: its first token (note if it has more); '#123' = token id."""
    if text is None or text == "":
        raise InputError(f"The {what} is empty; type a token (with its leading space, e.g. ' Paris').")
    stripped = text.strip()
    if stripped.startswith("#") and stripped[1:].isdigit():
        tid = int(stripped[1:])
        vocab = int(getattr(tokenizer, "vocab_size", 0) or 0)
        if vocab and not 0 <= tid < vocab:
            raise InputError(f"The {what} {text!r} is not a token id of this model (0..{vocab - 1}).")
        return tid, None
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(f"The {what} {text!r} does not tokenize to anything; type a visible token.")
    if len(ids) == 1:
        return int(ids[0]), None
    parts = " + ".join(repr(_decode(tokenizer, i)) for i in ids)
    first = _decode(tokenizer, ids[0])
    return int(ids[0]), (f"The {what} {text!r} is {len(ids)} tokens ({parts}); the analysis uses its first token "
                         f"{first!r}.")
