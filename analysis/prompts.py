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

This module is engine code: no streamlit import.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from analysis.errors import InputError, PromptSetError

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
OPTIONAL_FIELDS = ("target", "competitor", "label", "group", "response")
_FIELDS = ("prompt",) + OPTIONAL_FIELDS
_FORMATS_SENTENCE = (
    "accepted formats are .txt (one prompt per line), .csv (a header row with a 'prompt' column) "
    'and .jsonl (one JSON object per line with a "prompt" or "messages" field)'
)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
PROMPTS_DIR_ENV = "LOGITSCOPE_PROMPTS_DIR"
_DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"


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
    def from_rows(cls, name: str, rows: Iterable[PromptRow], notes: Iterable[str] = ()) -> "PromptSet":
        rows = tuple(rows)
        return cls(name=name, rows=rows, sha256=_content_sha256(rows), notes=tuple(notes))

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
        _require_rendered(self)
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

    def by_group(self, name: str) -> "PromptSet":
        """The rows whose group is `name`, as a PromptSet of its own (its own sha256)."""
        rows = [r for r in self.rows if r.group == name]
        if not rows:
            known = self.groups()
            listed = ", ".join(repr(g) for g in known[:20]) if known else "none"
            raise InputError(f"The prompt set '{self.name}' has no group named {name!r} (groups: {listed}).")
        return PromptSet.from_rows(f"{self.name} / {name}", rows)


def _content_sha256(rows: Sequence[PromptRow]) -> str:
    # Messages are appended only to rows that have them, so plain sets keep the hash they always had.
    canonical = [[getattr(r, f) for f in _FIELDS] + ([[list(m) for m in r.messages]] if r.messages is not None else [])
                 for r in rows]
    blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------------------------
# Small message helpers
# --------------------------------------------------------------------------------------------
def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (plural or word + 's')}"


def _list_lines(lines: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    if len(lines) > limit:
        shown += f" and {len(lines) - limit:,} more"
    return shown


def _size(nbytes: int) -> str:
    if nbytes >= 1_000_000:
        return f"{nbytes / 1_000_000:.1f} MB ({nbytes:,} bytes)"
    if nbytes >= 1_000:
        return f"{nbytes / 1_000:.1f} kB ({nbytes:,} bytes)"
    return f"{nbytes:,} bytes"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _blank_note(blank_lines: Sequence[int]) -> str:
    return f"Ignored {_n(len(blank_lines), 'empty line')} (line{'s' if len(blank_lines) != 1 else ''} {_list_lines(blank_lines)})."


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
def _decode(label: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PromptSetError(
            f"{label} is UTF-16 encoded; save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet) and try again."
        )
    nul = data.find(b"\x00")
    if nul != -1:
        line = data.count(b"\n", 0, nul) + 1
        raise PromptSetError(
            f"{label} looks like a binary file (it contains a NUL byte at byte offset {nul:,}, "
            f"line {line:,}), not UTF-8 text; {_FORMATS_SENTENCE}."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.start + 1].hex().upper()
        raise PromptSetError(
            f"{label} is not UTF-8 text: the byte 0x{bad} at byte offset {err.start:,} (line {line:,}) "
            "cannot be decoded. Save the file as UTF-8 and try again."
        ) from None


# --------------------------------------------------------------------------------------------
# Per-row validation shared by every format
# --------------------------------------------------------------------------------------------
class _Limits:
    def __init__(self, label: str, max_rows: int, max_prompt_chars: int):
        self.label = label
        self.max_rows = max_rows
        self.max_chars = max_prompt_chars

    def too_many(self, line: int | None = None, count: int | None = None) -> PromptSetError:
        if count is not None:
            what = f"has {_n(count, 'prompt')}"
        else:
            what = f"has more than {_n(self.max_rows, 'prompt')} (stopped reading at line {line:,})"
        return PromptSetError(
            f"{self.label} {what}; the limit is {self.max_rows:,}. Split it into smaller sets."
        )

    def make_row(self, line: int, values: dict[str, str | None]) -> PromptRow:
        prompt = values.get("prompt")
        if prompt is None or not prompt.strip():
            raise PromptSetError(f"{self.label}, line {line:,}: the prompt is empty.")
        for field in _FIELDS:
            value = prompt if field == "prompt" else values.get(field)
            if value is not None and len(value) > self.max_chars:
                raise PromptSetError(
                    f"{self.label}, line {line:,}: the {field} is {len(value):,} characters long; "
                    f"the limit is {self.max_chars:,}."
                )
        return PromptRow(
            row=line,
            prompt=prompt,
            **{f: (values.get(f) or None) for f in OPTIONAL_FIELDS},
        )

    def make_chat_row(self, line: int, messages: Any, values: dict[str, str | None]) -> PromptRow:
        """A row given as chat messages: a non-empty list of {"role": str, "content": str} objects."""
        where = f"{self.label}, line {line:,}"
        if not isinstance(messages, list) or not messages:
            got = "an empty list" if messages == [] else _type_name(messages)
            raise PromptSetError(
                f'{where}: "messages" must be a non-empty list of {{"role": ..., "content": ...}} objects, got {got}.'
            )
        turns: list[tuple[str, str]] = []
        for j, msg in enumerate(messages, start=1):
            if not isinstance(msg, dict):
                raise PromptSetError(
                    f'{where}: message {j} must be an object like {{"role": "user", "content": "..."}}, '
                    f"got {_type_name(msg)}."
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
                        f"{where}: the {field} of message {j} must be a string, got {_type_name(msg[field])}."
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


def _lines(text: str) -> list[str]:
    """Split on any line break; a final line break does not make an extra empty line."""
    parts = _LINE_BREAKS.split(text)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def _parse_lines_as_prompts(text: str, lim: _Limits) -> tuple[list[PromptRow], list[str]]:
    lines = _lines(text)
    blank = [i for i, line in enumerate(lines, start=1) if not line.strip()]
    count = len(lines) - len(blank)
    if count > lim.max_rows:
        raise lim.too_many(count=count)
    rows = [lim.make_row(i, {"prompt": line}) for i, line in enumerate(lines, start=1) if line.strip()]
    notes = [_blank_note(blank)] if blank else []
    return rows, notes


def _normalise_name(name: str) -> str:
    return name.strip().lower()


def _parse_csv(text: str, lim: _Limits) -> tuple[list[PromptRow], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    blank: list[int] = []
    header: list[str] | None = None
    rows: list[PromptRow] = []
    columns: dict[str, int] = {}
    n_cols = 0
    unknown: list[str] = []
    unnamed = 0
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if "field larger than field limit" in str(err):
                raise PromptSetError(
                    f"{lim.label}, line {start:,}: a field is longer than {csv.field_size_limit():,} "
                    f"characters; the limit for a prompt is {lim.max_chars:,}."
                ) from None
            raise PromptSetError(
                f"{lim.label}, line {start:,}: malformed CSV ({err}). Check the quotes on that line."
            ) from None
        if not record or all(not cell.strip() for cell in record):
            blank.append(start)
            continue
        if header is None:
            header = record
            names = [_normalise_name(h) for h in header]
            for idx, nm in enumerate(names):
                if nm in _FIELDS:
                    if nm in columns:
                        raise PromptSetError(
                            f"{lim.label}, line {start:,}: the header has the column '{nm}' twice."
                        )
                    columns[nm] = idx
            if "prompt" not in columns:
                found = ", ".join(repr(h) for h in header) or "none"
                hint = ""
                if any((";" in h or "\t" in h) and "prompt" in h.lower() for h in header):
                    hint = " The file seems to use semicolons or tabs; separate the columns with commas."
                raise PromptSetError(
                    f"{lim.label} has no 'prompt' column (line {start:,} is taken as the header; "
                    f"columns found: {found}).{hint}"
                )
            n_cols = len(header)
            unknown = [h for h, nm in zip(header, names) if nm not in _FIELDS and nm]
            unnamed = sum(1 for nm in names if not nm)
            continue
        if len(rows) >= lim.max_rows:
            raise lim.too_many(line=start)
        if len(record) > n_cols:
            raise PromptSetError(
                f"{lim.label}, line {start:,}: this row has {len(record)} fields but the header has "
                f"{n_cols} columns. Quote fields that contain commas."
            )
        values = {f: (record[i] if i < len(record) else None) for f, i in columns.items()}
        rows.append(lim.make_row(start, values))
    if header is None:
        raise PromptSetError(f"{lim.label} is empty: it has no header row and no prompts.")
    notes: list[str] = []
    if unknown:
        notes.append("Ignored unknown columns: " + ", ".join(unknown) + ".")
    if unnamed:
        notes.append(f"Ignored {_n(unnamed, 'column')} without a name in the header.")
    if blank:
        notes.append(_blank_note(blank))
    return rows, notes


def _parse_jsonl(text: str, lim: _Limits) -> tuple[list[PromptRow], list[str]]:
    lines = _lines(text)
    blank = [i for i, line in enumerate(lines, start=1) if not line.strip()]
    count = len(lines) - len(blank)
    if count > lim.max_rows:
        raise lim.too_many(count=count)
    rows: list[PromptRow] = []
    unknown: dict[str, None] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            detail = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            hint = ""
            if line.lstrip().startswith("["):
                hint = " It looks like a JSON array; .jsonl needs one object per line."
            raise PromptSetError(f"{lim.label}, line {i:,}: malformed JSON ({detail}).{hint}") from None
        if not isinstance(obj, dict):
            raise PromptSetError(
                f'{lim.label}, line {i:,}: expected a JSON object like {{"prompt": "..."}}, got {_type_name(obj)}.'
            )
        values: dict[str, str | None] = {}
        messages: Any = None
        for key, value in obj.items():
            nm = _normalise_name(key)
            if nm == "messages":
                if messages is not None:
                    raise PromptSetError(f"{lim.label}, line {i:,}: the field 'messages' appears twice.")
                messages = value
                continue
            if nm not in _FIELDS:
                unknown.setdefault(key)
                continue
            if nm in values:
                raise PromptSetError(f"{lim.label}, line {i:,}: the field '{nm}' appears twice.")
            if value is None and nm != "prompt":
                values[nm] = None
                continue
            if not isinstance(value, str):
                raise PromptSetError(
                    f"{lim.label}, line {i:,}: the field '{nm}' must be a string, got {_type_name(value)} "
                    f"({json.dumps(value)[:40]}). Put it in quotes."
                )
            values[nm] = value
        if messages is not None:
            if "prompt" in values:
                raise PromptSetError(
                    f'{lim.label}, line {i:,}: give either a "prompt" or "messages", not both.'
                )
            rows.append(lim.make_chat_row(i, messages, values))
            continue
        if "prompt" not in values:
            fields = ", ".join(repr(k) for k in obj) or "none"
            raise PromptSetError(
                f'{lim.label}, line {i:,}: no "prompt" field (fields found: {fields}); '
                'give the text as "prompt" or chat turns as "messages".'
            )
        rows.append(lim.make_row(i, values))
    notes: list[str] = []
    if unknown:
        notes.append("Ignored unknown fields: " + ", ".join(unknown) + ".")
    if blank:
        notes.append(_blank_note(blank))
    return rows, notes


_PARSERS = {".txt": _parse_lines_as_prompts, ".csv": _parse_csv, ".jsonl": _parse_jsonl}


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def parse_prompt_file(
    filename: str,
    data: bytes,
    *,
    max_bytes: int = 5_000_000,
    max_rows: int = 10_000,
    max_prompt_chars: int = 20_000,
) -> PromptSet:
    """Parse and validate an uploaded or on-disk prompt file; the format comes from the extension.

    Raises PromptSetError (a sentence naming the problem and the line) on anything malformed.
    """
    label = Path(filename).name or "The file"
    suffix = Path(filename).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        got = f"'{suffix}'" if suffix else "no extension"
        raise PromptSetError(f"{label}: unsupported file type ({got}); {_FORMATS_SENTENCE}.")
    if len(data) > max_bytes:
        raise PromptSetError(
            f"{label} is {_size(len(data))}; the limit is {_size(max_bytes)}. Split it into smaller files."
        )
    text = _decode(label, bytes(data))
    lim = _Limits(label, max_rows, max_prompt_chars)
    rows, notes = parser(text, lim)
    if not rows:
        only_blank = any(n.startswith("Ignored") and "empty line" in n for n in notes)
        raise PromptSetError(f"{label} contains no prompts" + (", only empty lines." if only_blank else "."))
    return PromptSet.from_rows(label, rows, notes)


def prompt_set_from_text(
    text: str,
    name: str = "typed",
    *,
    max_rows: int = 10_000,
    max_prompt_chars: int = 20_000,
) -> PromptSet:
    """Typed prompts: one prompt per non-empty line, so no prompt can hold a line break (use .jsonl for that)."""
    lim = _Limits("Typed prompts" if name == "typed" else name, max_rows, max_prompt_chars)
    rows, notes = _parse_lines_as_prompts(text or "", lim)
    if not rows:
        raise PromptSetError("Type at least one prompt (one prompt per line).")
    return PromptSet.from_rows(name, rows, notes)


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
def _require_rendered(prompt_set: PromptSet) -> None:
    first = next((r for r in prompt_set.rows if r.messages is not None), None)
    if first is not None:
        raise PromptSetError(
            f"{prompt_set.name}, line {first.row:,}: this row is given as chat messages, which need a tokenizer's "
            "chat template to become text; apply the template (apply_chat_template) before running the prompts."
        )


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
    from analysis.model_defaults import adds_bos, has_chat_template, render_chat

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
