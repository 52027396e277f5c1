"""Token lengths of a prompt set and the check that every row (prompt + response, + room to generate) fits the
model's context."""
from __future__ import annotations

from analysis.core.errors import InputError, PromptSetError
from analysis.prompts.types import PromptRow, PromptSet, require_rendered


# --------------------------------------------------------------------------------------------
# Context length
# --------------------------------------------------------------------------------------------
def _full_text(row: PromptRow) -> str:
    return row.prompt + (row.response or "")


def token_lengths(prompt_set: PromptSet, tokenizer, *, batch_size: int = 256) -> list[int]:
    """Token count of each row's prompt + response (response appended as is), special tokens included."""
    require_rendered(prompt_set)
    texts = [_full_text(r) for r in prompt_set.rows]
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        try:
            enc = tokenizer(chunk, add_special_tokens=True, verbose=False)
        except TypeError:  # tokenizers without the `verbose` keyword
            enc = tokenizer(chunk, add_special_tokens=True)
        lengths.extend(len(ids) for ids in enc["input_ids"])
    return lengths


def check_context(prompt_set: PromptSet, tokenizer, max_positions: int | None, *, extra_tokens: int = 0) -> None:
    """Raise PromptSetError naming the rows whose prompt (+ response) + extra_tokens exceed the context.

    max_positions None means the model declares no limit (nothing to check). extra_tokens is room the
    caller needs beyond the text, e.g. tokens it will generate.
    """
    if max_positions is None:
        return
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) or max_positions <= 0:
        raise InputError(f"The model's context length must be a positive whole number, got {max_positions!r}.")
    if extra_tokens < 0:
        raise InputError(f"extra_tokens must be 0 or more, got {extra_tokens}.")
    budget = max_positions - extra_tokens
    lengths = token_lengths(prompt_set, tokenizer)
    over = [(r.row, n) for r, n in zip(prompt_set.rows, lengths, strict=True) if n > budget]
    if not over:
        return
    shown = ", ".join(f"line {row:,} ({n:,} tokens)" for row, n in over[:5])
    if len(over) > 5:
        shown += f" and {len(over) - 5:,} more"
    room = f"{max_positions:,} tokens"
    if extra_tokens:
        room += f" minus {extra_tokens:,} for generation"
    what = "prompt is" if len(over) == 1 else "prompts are"
    raise PromptSetError(
        f"{prompt_set.name}: {len(over):,} {what} longer than the model's context of {room}: {shown}. "
        "Shorten or remove them."
    )
