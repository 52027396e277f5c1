"""Tokens, one place: the text a token id stands for, and the token a typed target stands for.

- ``decode``: the exact text of one token id (leading spaces kept; a tokenizer without decode still gets a label,
  byte-level markers such as GPT-2's 'Ġ' turned back into the space they stand for).
- ``parse_token_ref``: what a user typed: '#123' is token id 123, anything else is text kept character for character.
- ``first_token``: a target (text or id) as (token id, note): a text's first token - with a note naming the
  pieces when it has several - or an id checked against the vocabulary; InputError naming the problem otherwise.
- ``single_token``: a text that must be exactly one token (a logit difference's two sides).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from analysis.core.errors import InputError

_BYTE_LEVEL = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "č": "\r"}  # byte-level BPE markers (GPT-2 style)


def decode(tokenizer: Any, token_id: int) -> str:
    """The text one token id stands for (leading space kept)."""
    try:
        return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except TypeError:
        return tokenizer.decode([int(token_id)])
    except Exception:  # noqa: BLE001 - a tokenizer without decode still gets a label
        tok = tokenizer.convert_ids_to_tokens(int(token_id))
        return "".join(_BYTE_LEVEL.get(ch, ch) for ch in str(tok))


def parse_token_ref(text: str) -> str | int:
    """'#123' -> token id 123; anything else is the text itself (leading and trailing spaces kept)."""
    stripped = text.strip()
    if stripped.startswith("#") and stripped[1:].isdigit():
        return int(stripped[1:])
    return text


def first_token(tokenizer: Any, target: str | int, vocab_size: int | None = None, what: str = "target"
                ) -> tuple[int, str | None]:
    """(token id, note or None) of a target: a token id (an int, or '#123' typed) checked against the vocabulary,
    or a text's first token, with a note naming its pieces when it has several."""
    vocab = int(vocab_size or getattr(tokenizer, "vocab_size", 0) or 0)
    if isinstance(target, str) and target != "":
        target = parse_token_ref(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if vocab and not 0 <= int(target) < vocab:
            raise InputError(f"The {what} #{int(target)} is not a token id of this model (out of range: its "
                             f"vocabulary has ids 0..{vocab - 1}).")
        return int(target), None
    if not isinstance(target, str) or target == "":
        raise InputError(f"The {what} is empty. Type the {what} token's text (e.g. ' Paris', with its leading "
                         "space; or #id for a token id).")
    ids = [int(t) for t in tokenizer(target, add_special_tokens=False)["input_ids"]]
    if not ids:
        raise InputError(f"The {what} {target!r} does not tokenize to any token; type the token's text "
                         "(e.g. ' Paris').")
    if vocab and not 0 <= ids[0] < vocab:
        raise InputError(f"The {what} {target!r} tokenizes to id {ids[0]}, outside this model's vocabulary "
                         f"(0..{vocab - 1}).")
    if len(ids) == 1:
        return ids[0], None
    pieces = [decode(tokenizer, i) for i in ids]
    return ids[0], (f"The {what} {target!r} is {len(ids)} tokens ({' | '.join(repr(p) for p in pieces)}); "
                    f"its first token {pieces[0]!r} is used.")


def single_token(tokenizer: Any, text: str) -> int:
    """The id of ``text`` if it is exactly one token (no special tokens), else InputError."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        raise InputError(f"'{text}' is {len(ids)} tokens for this model's tokenizer; the logit difference needs a "
                         "single token on each side (mind the leading space, e.g. ' Ugh').")
    return int(ids[0])
