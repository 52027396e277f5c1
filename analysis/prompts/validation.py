"""Prompt row validation shared by every file format: the per-row limits and the sentences that report problems.

Limits turns one parsed row (plain prompt or chat messages) into a PromptRow or a PromptSetError naming the
file and line; the small helpers format counts, line lists, byte sizes and JSON type names for those sentences.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analysis.core.errors import PromptSetError
from analysis.core.wording import plural
from analysis.prompts.types import FIELDS, OPTIONAL_FIELDS, PromptRow


# --------------------------------------------------------------------------------------------
# Small message helpers
# --------------------------------------------------------------------------------------------
def list_lines(lines: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    if len(lines) > limit:
        shown += f" and {len(lines) - limit:,} more"
    return shown


def size_text(nbytes: int) -> str:
    if nbytes >= 1_000_000:
        return f"{nbytes / 1_000_000:.1f} MB ({nbytes:,} bytes)"
    if nbytes >= 1_000:
        return f"{nbytes / 1_000:.1f} kB ({nbytes:,} bytes)"
    return f"{nbytes:,} bytes"


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def blank_note(blank_lines: Sequence[int]) -> str:
    return f"Ignored {plural(len(blank_lines), 'empty line')} (line{'s' if len(blank_lines) != 1 else ''} {list_lines(blank_lines)})."


# --------------------------------------------------------------------------------------------
# Per-row validation shared by every format
# --------------------------------------------------------------------------------------------
class Limits:
    def __init__(self, label: str, max_rows: int, max_prompt_chars: int):
        self.label = label
        self.max_rows = max_rows
        self.max_chars = max_prompt_chars

    def too_many(self, line: int | None = None, count: int | None = None) -> PromptSetError:
        if count is not None:
            what = f"has {plural(count, 'prompt')}"
        else:
            what = f"has more than {plural(self.max_rows, 'prompt')} (stopped reading at line {line:,})"
        return PromptSetError(
            f"{self.label} {what}; the limit is {self.max_rows:,}. Split it into smaller sets."
        )

    def make_row(self, line: int, values: dict[str, str | None]) -> PromptRow:
        prompt = values.get("prompt")
        if prompt is None or not prompt.strip():
            raise PromptSetError(f"{self.label}, line {line:,}: the prompt is empty.")
        for field in FIELDS:
            value = prompt if field == "prompt" else values.get(field)
            if value is not None and len(value) > self.max_chars:
                raise PromptSetError(
                    f"{self.label}, line {line:,}: the {field} is {len(value):,} characters long; "
                    f"the limit is {self.max_chars:,}."
                )
        optional: dict[str, Any] = {f: (values.get(f) or None) for f in OPTIONAL_FIELDS}
        return PromptRow(row=line, prompt=prompt, **optional)

    def make_chat_row(self, line: int, messages: Any, values: dict[str, str | None]) -> PromptRow:
        """A row given as chat messages: a non-empty list of {"role": str, "content": str} objects."""
        where = f"{self.label}, line {line:,}"
        if not isinstance(messages, list) or not messages:
            got = "an empty list" if messages == [] else type_name(messages)
            raise PromptSetError(
                f'{where}: "messages" must be a non-empty list of {{"role": ..., "content": ...}} objects, got {got}.'
            )
        turns: list[tuple[str, str]] = []
        for j, msg in enumerate(messages, start=1):
            if not isinstance(msg, dict):
                raise PromptSetError(
                    f'{where}: message {j} must be an object like {{"role": "user", "content": "..."}}, '
                    f"got {type_name(msg)}."
                )
            extra = [k for k in msg if k not in ("role", "content")]
            if extra:
                raise PromptSetError(
                    f"{where}: message {j} has the field {extra[0]!r}; only 'role' and 'content' are supported."
                )
            for field in ("role", "content"):
                if field not in msg:
                    raise PromptSetError(f"{where}: message {j} has no '{field}' field.")
                if not isinstance(msg[field], str):
                    raise PromptSetError(
                        f"{where}: the {field} of message {j} must be a string, got {type_name(msg[field])}."
                    )
            if not msg["role"].strip():
                raise PromptSetError(f"{where}: the role of message {j} is empty.")
            turns.append((msg["role"], msg["content"]))
        if all(not content.strip() for _, content in turns):
            raise PromptSetError(f"{where}: every message is empty.")
        total = sum(len(content) for _, content in turns)
        if total > self.max_chars:
            raise PromptSetError(
                f"{where}: the messages are {total:,} characters long; the limit is {self.max_chars:,}."
            )
        for field in OPTIONAL_FIELDS:
            value = values.get(field)
            if value is not None and len(value) > self.max_chars:
                raise PromptSetError(
                    f"{where}: the {field} is {len(value):,} characters long; the limit is {self.max_chars:,}."
                )
        return PromptRow(
            row=line,
            prompt="",
            messages=tuple(turns),
            **{f: (values.get(f) or None) for f in OPTIONAL_FIELDS},
        )
