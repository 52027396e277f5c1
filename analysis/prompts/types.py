"""Prompt set data types: one PromptRow, an immutable PromptSet and the content hash that names a set's rows.

The sha256 covers every row's prompt and optional fields (and chat messages, for rows given as messages), so it
serves as a cache key; a PromptSet whose rows are still unrendered chat messages refuses to hand out its prompts.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from analysis.core.errors import InputError, PromptSetError

OPTIONAL_FIELDS = ("target", "competitor", "label", "group", "response")
FIELDS = ("prompt",) + OPTIONAL_FIELDS


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRow:
    """One prompt. `row` is the 1-based source line where it starts (used in messages only).

    `messages` holds the (role, content) turns of a row given as chat messages; its `prompt` is ""
    until apply_chat_template renders the turns into the exact text (and clears `messages`).
    """

    row: int
    prompt: str
    target: str | None = None
    competitor: str | None = None
    label: str | None = None
    group: str | None = None
    response: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class PromptSet:
    """An immutable, validated set of prompts.

    sha256 is over the canonical content (every row's prompt and optional fields, in order; not
    the name, the row numbers or the source format), so it serves as a cache key and in export
    metadata. Build one with PromptSet.from_rows to get the hash computed.
    """

    name: str
    rows: tuple[PromptRow, ...]
    sha256: str
    notes: tuple[str, ...] = ()

    @classmethod
    def from_rows(cls, name: str, rows: Iterable[PromptRow], notes: Iterable[str] = ()) -> PromptSet:
        rows = tuple(rows)
        return cls(name=name, rows=rows, sha256=content_sha256(rows), notes=tuple(notes))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    @property
    def needs_template(self) -> bool:
        """True while some rows are chat messages not yet rendered by apply_chat_template."""
        return any(r.messages is not None for r in self.rows)

    @property
    def prompts(self) -> list[str]:
        require_rendered(self)
        return [r.prompt for r in self.rows]

    @property
    def targets(self) -> list[str | None]:
        return [r.target for r in self.rows]

    @property
    def competitors(self) -> list[str | None]:
        return [r.competitor for r in self.rows]

    @property
    def labels(self) -> list[str | None]:
        return [r.label for r in self.rows]

    @property
    def responses(self) -> list[str | None]:
        return [r.response for r in self.rows]

    def groups(self) -> list[str]:
        """Distinct group names in order of first appearance (rows without a group are left out)."""
        return list(dict.fromkeys(r.group for r in self.rows if r.group is not None))

    def by_group(self, name: str) -> PromptSet:
        """The rows whose group is `name`, as a PromptSet of its own (its own sha256)."""
        rows = [r for r in self.rows if r.group == name]
        if not rows:
            known = self.groups()
            listed = ", ".join(repr(g) for g in known[:20]) if known else "none"
            raise InputError(f"The prompt set '{self.name}' has no group named {name!r} (groups: {listed}).")
        return PromptSet.from_rows(f"{self.name} / {name}", rows)


def content_sha256(rows: Sequence[PromptRow]) -> str:
    # Messages are appended only to rows that have them, so plain sets keep the hash they always had.
    canonical = [[getattr(r, f) for f in FIELDS] + ([[list(m) for m in r.messages]] if r.messages is not None else [])
                 for r in rows]
    blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def require_rendered(prompt_set: PromptSet) -> None:
    first = next((r for r in prompt_set.rows if r.messages is not None), None)
    if first is not None:
        raise PromptSetError(
            f"{prompt_set.name}, line {first.row:,}: this row is given as chat messages, which need a tokenizer's "
            "chat template to become text; apply the template (apply_chat_template) before running the prompts."
        )
