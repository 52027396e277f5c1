"""Chat templates: whether a tokenizer has one, the exact text it renders for messages, and a prompt set with its chat
rows (and, asked for, its plain prompts as one user turn) rendered to that text."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from analysis.core.errors import PromptSetError
from analysis.core.wording import plural
from analysis.prompts.types import PromptRow, PromptSet


# --------------------------------------------------------------------------------------------
# Chat templates
# --------------------------------------------------------------------------------------------
def tokenizer_name(tokenizer) -> str:
    """A short name for a tokenizer in notes: its hub id, or the folder name of a local one."""
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    if name and (name.startswith(("/", "~", ".")) or os.path.isdir(name)):
        name = Path(name).name
    return name or type(tokenizer).__name__


def apply_chat_template(prompt_set: PromptSet, tokenizer, *, wrap_plain: bool) -> PromptSet:
    """The set with each row's prompt the exact text of the tokenizer's chat template, ready for the assistant.

    Rows given as messages are always rendered; with wrap_plain, plain prompts are rendered as one user
    turn. Without either, the set comes back unchanged. A leading BOS that the template writes is dropped
    from the text when the tokenizer adds its BOS itself, so tokenizing the text (add_special_tokens=True,
    as every analysis does) gives the ids of apply_chat_template(tokenize=True) with one BOS, never two.
    Raises PromptSetError (naming the line) when the tokenizer has no chat template or the template
    refuses a row.
    """
    n_messages = sum(1 for r in prompt_set.rows if r.messages is not None)
    n_plain = len(prompt_set.rows) - n_messages if wrap_plain else 0
    if not n_messages and not n_plain:
        return prompt_set
    tok_name = tokenizer_name(tokenizer)
    if not has_chat_template(tokenizer):
        if n_messages:
            first = next(r.row for r in prompt_set.rows if r.messages is not None)
            raise PromptSetError(
                f"{prompt_set.name}, line {first:,}: this row is given as chat messages, but the tokenizer "
                f"'{tok_name}' has no chat template to render them. Use a chat model, or give the exact text as "
                '"prompt" instead.'
            )
        raise PromptSetError(
            f"The tokenizer '{tok_name}' has no chat template, so the prompts of {prompt_set.name} cannot be "
            "wrapped as user turns; run them as given."
        )
    bos = getattr(tokenizer, "bos_token", None) if adds_bos(tokenizer) else None
    rows: list[PromptRow] = []
    dropped_bos = 0
    for row in prompt_set.rows:
        if row.messages is None and not wrap_plain:
            rows.append(row)
            continue
        turns = row.messages if row.messages is not None else (("user", row.prompt),)
        try:
            text = render_chat(tokenizer, [{"role": role, "content": content} for role, content in turns])
        except Exception as err:  # a Jinja template raising (e.g. roles that must alternate) or a bad template
            raise PromptSetError(
                f"{prompt_set.name}, line {row.row:,}: the chat template of '{tok_name}' refused this row "
                f"({type(err).__name__}: {err})."
            ) from None
        if not isinstance(text, str) or not text:
            raise PromptSetError(
                f"{prompt_set.name}, line {row.row:,}: the chat template of '{tok_name}' gave no text for this row."
            )
        if bos and text.startswith(bos):
            text = text[len(bos):]
            dropped_bos += 1
        rows.append(dataclasses.replace(row, prompt=text, messages=None))
    parts = []
    if n_messages:
        parts.append(f"{plural(n_messages, 'row')} given as messages")
    if n_plain:
        parts.append(f"{plural(n_plain, 'plain prompt')} wrapped as one user turn")
    note = f"Applied the chat template of '{tok_name}' ({' and '.join(parts)}); the prompts are its exact text."
    if dropped_bos:
        note += (f" The template's leading {bos} was left out of the text because the tokenizer adds it "
                 "when it tokenizes (so it appears once).")
    return PromptSet.from_rows(prompt_set.name, rows, (*prompt_set.notes, note))


def has_chat_template(tokenizer) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The exact text the tokenizer's chat template gives for `messages`, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def adds_bos(tokenizer) -> bool:
    """True when the tokenizer itself puts its BOS token in front of a text (checked by encoding one)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except Exception:
        return False
    return bool(ids) and ids[0] == bos
