r"""Prompt sets: parse, validate and describe the prompts every page runs on.

Accepted sources: typed text (one prompt per line), .txt (one prompt per line), .csv (a header
row with a `prompt` column) and .jsonl (one JSON object per line with a "prompt" field, or a
"messages" field: a list of {"role": ..., "content": ...} turns). Optional columns/fields: target,
competitor, label, group, response.

Typed text and .txt files are one prompt per line, so such a prompt can never hold a line break
(a trailing newline after a chat template's assistant header included): give prompts with
newlines in .jsonl ("\n" inside the string) or as quoted .csv fields, which keep every character.

Every problem raises PromptSetError with a sentence that names the file, the line and the
problem; anything skipped or ignored is reported in PromptSet.notes, never dropped silently.
Row numbers are the 1-based line of the source file where the row starts (so in a CSV the
header is line 1, matching a spreadsheet's row numbers).

Prompt text is data: it is never interpreted (no HTML, no escapes). Prompts, targets and responses
are kept character for character (leading/trailing spaces, "\r" and "\n" inside a CSV quoted
field or a JSON string); only the line break that ends a line of the file format itself goes.

Rows given as chat messages have no text until a tokenizer's chat template renders them:
apply_chat_template(prompt_set, tokenizer, wrap_plain=...) returns the set with every prompt the
exact rendered text (and, with wrap_plain, plain prompts wrapped as one user turn). Until then
PromptSet.prompts raises PromptSetError, so an unrendered set can never run by accident.

Where the parts live: the data types in analysis.prompts.types, per-row validation in analysis.prompts.validation
and file parsing in analysis.prompts.parsing; this module keeps the built-in sets, chat templates and the context
check, and re-exports the moved names.

This module is engine code: no streamlit import.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from analysis.core.errors import InputError, PromptSetError
from analysis.prompts.parsing import _FORMATS_SENTENCE as _FORMATS_SENTENCE
from analysis.prompts.parsing import _LINE_BREAKS as _LINE_BREAKS
from analysis.prompts.parsing import _PARSERS as _PARSERS
from analysis.prompts.parsing import _decode as _decode
from analysis.prompts.parsing import _lines as _lines
from analysis.prompts.parsing import _normalise_name as _normalise_name
from analysis.prompts.parsing import _parse_csv as _parse_csv
from analysis.prompts.parsing import _parse_jsonl as _parse_jsonl
from analysis.prompts.parsing import _parse_lines_as_prompts as _parse_lines_as_prompts
from analysis.prompts.parsing import parse_prompt_file as parse_prompt_file
from analysis.prompts.parsing import prompt_set_from_text as prompt_set_from_text
from analysis.prompts.types import _FIELDS as _FIELDS
from analysis.prompts.types import OPTIONAL_FIELDS as OPTIONAL_FIELDS
from analysis.prompts.types import PromptRow as PromptRow
from analysis.prompts.types import PromptSet as PromptSet
from analysis.prompts.types import _content_sha256 as _content_sha256
from analysis.prompts.types import _require_rendered as _require_rendered
from analysis.prompts.validation import _blank_note as _blank_note
from analysis.prompts.validation import _Limits as _Limits
from analysis.prompts.validation import _list_lines as _list_lines
from analysis.prompts.validation import _n as _n
from analysis.prompts.validation import _size as _size
from analysis.prompts.validation import _type_name as _type_name

__all__ = [
    "ACCEPTED_SUFFIXES",
    "OPTIONAL_FIELDS",
    "PromptRow",
    "PromptSet",
    "apply_chat_template",
    "builtin_sets",
    "check_context",
    "load_builtin",
    "parse_prompt_file",
    "prompt_set_from_text",
    "token_lengths",
    "tokenizer_name",
]

ACCEPTED_SUFFIXES = (".jsonl", ".csv", ".txt")
PROMPTS_DIR_ENV = "LOGITSCOPE_PROMPTS_DIR"
_DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "data" / "prompts"


def _prompts_dir() -> Path:
    override = os.environ.get(PROMPTS_DIR_ENV)
    return Path(override) if override else _DEFAULT_PROMPTS_DIR


def builtin_sets() -> dict[str, Path]:
    """Built-in prompt sets: name (file name without extension) -> path, sorted by name.

    Read from data/prompts/ (or the folder in $LOGITSCOPE_PROMPTS_DIR). README files are skipped.
    If two files share a name (facts.csv and facts.jsonl), both are listed under their full file
    names so neither hides the other.
    """
    folder = _prompts_dir()
    if not folder.is_dir():
        return {}
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in ACCEPTED_SUFFIXES and p.stem.lower() != "readme"
    )
    stems: dict[str, int] = {}
    for p in files:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return dict(sorted(((p.stem if stems[p.stem] == 1 else p.name), p) for p in files))


@functools.lru_cache(maxsize=32)
def _load_path(path: str, mtime_ns: int, size: int, name: str) -> PromptSet:
    data = Path(path).read_bytes()
    ps = parse_prompt_file(Path(path).name, data)
    return dataclasses.replace(ps, name=name)


def load_builtin(name: str) -> PromptSet:
    """Load a built-in set by name (as listed by builtin_sets()); cached until the file changes."""
    sets = builtin_sets()
    path = sets.get(name)
    if path is None:
        available = ", ".join(sets) or "none are installed"
        raise PromptSetError(f"There is no built-in prompt set named '{name}' (available: {available}).")
    try:
        st = path.stat()
    except OSError as err:
        raise PromptSetError(f"The built-in prompt set '{name}' could not be read ({err.strerror}).") from None
    return _load_path(str(path), st.st_mtime_ns, st.st_size, name)


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
    from analysis.models.defaults import adds_bos, has_chat_template, render_chat

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
        parts.append(f"{_n(n_messages, 'row')} given as messages")
    if n_plain:
        parts.append(f"{_n(n_plain, 'plain prompt')} wrapped as one user turn")
    note = f"Applied the chat template of '{tok_name}' ({' and '.join(parts)}); the prompts are its exact text."
    if dropped_bos:
        note += (f" The template's leading {bos} was left out of the text because the tokenizer adds it "
                 "when it tokenizes (so it appears once).")
    return PromptSet.from_rows(prompt_set.name, rows, (*prompt_set.notes, note))


# --------------------------------------------------------------------------------------------
# Context length
# --------------------------------------------------------------------------------------------
def _full_text(row: PromptRow) -> str:
    return row.prompt + (row.response or "")


def token_lengths(prompt_set: PromptSet, tokenizer, *, batch_size: int = 256) -> list[int]:
    """Token count of each row's prompt + response (response appended as is), special tokens included."""
    _require_rendered(prompt_set)
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
    over = [(r.row, n) for r, n in zip(prompt_set.rows, lengths) if n > budget]
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
