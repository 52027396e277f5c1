"""Prompt file parsing: bytes of a .txt, .csv or .jsonl file (or typed text) to a validated PromptSet.

Decodes UTF-8 (refusing UTF-16 and binary files with a sentence naming the byte and line), splits lines, reads
CSV headers and JSON objects, and reports anything skipped (empty lines, unknown columns) in the set's notes.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.core.errors import PromptSetError
from analysis.prompts.types import FIELDS, PromptRow, PromptSet
from analysis.prompts.validation import Limits, blank_note, plural, size_text, type_name

_FORMATS_SENTENCE = (
    "accepted formats are .txt (one prompt per line), .csv (a header row with a 'prompt' column) "
    'and .jsonl (one JSON object per line with a "prompt" or "messages" field)'
)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


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


def _lines(text: str) -> list[str]:
    """Split on any line break; a final line break does not make an extra empty line."""
    parts = _LINE_BREAKS.split(text)
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def _counted_lines(text: str, lim: Limits) -> tuple[list[str], list[int]]:
    """The lines of a file and the numbers of its blank ones; too many non-blank lines is an error."""
    lines = _lines(text)
    blank = [i for i, line in enumerate(lines, start=1) if not line.strip()]
    count = len(lines) - len(blank)
    if count > lim.max_rows:
        raise lim.too_many(count=count)
    return lines, blank


def _parse_lines_as_prompts(text: str, lim: Limits) -> tuple[list[PromptRow], list[str]]:
    lines, blank = _counted_lines(text, lim)
    rows = [lim.make_row(i, {"prompt": line}) for i, line in enumerate(lines, start=1) if line.strip()]
    notes = [blank_note(blank)] if blank else []
    return rows, notes


def _normalise_name(name: str) -> str:
    return name.strip().lower()


@dataclass
class _CsvHeader:
    """The header row of a CSV prompt file: which column holds each known field, and what is ignored."""

    columns: dict[str, int]
    n_cols: int
    unknown: list[str]
    unnamed: int


def _csv_header(header: list[str], start: int, lim: Limits) -> _CsvHeader:
    names = [_normalise_name(h) for h in header]
    columns: dict[str, int] = {}
    for idx, nm in enumerate(names):
        if nm in FIELDS:
            if nm in columns:
                raise PromptSetError(f"{lim.label}, line {start:,}: the header has the column '{nm}' twice.")
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
    unknown = [h for h, nm in zip(header, names, strict=True) if nm not in FIELDS and nm]
    return _CsvHeader(columns, len(header), unknown, sum(1 for nm in names if not nm))


def _csv_records(text: str, lim: Limits) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) per CSV record, with a sentence naming the line for malformed CSV."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if "field larger than field limit" in str(err):
                raise PromptSetError(
                    f"{lim.label}, line {start:,}: a field is longer than {csv.field_size_limit():,} "
                    f"characters; the limit for a prompt is {lim.max_chars:,}."
                ) from None
            raise PromptSetError(
                f"{lim.label}, line {start:,}: malformed CSV ({err}). Check the quotes on that line."
            ) from None
        yield start, record


def _parse_csv(text: str, lim: Limits) -> tuple[list[PromptRow], list[str]]:
    blank: list[int] = []
    header: _CsvHeader | None = None
    rows: list[PromptRow] = []
    for start, record in _csv_records(text, lim):
        if not record or all(not cell.strip() for cell in record):
            blank.append(start)
            continue
        if header is None:
            header = _csv_header(record, start, lim)
            continue
        if len(rows) >= lim.max_rows:
            raise lim.too_many(line=start)
        if len(record) > header.n_cols:
            raise PromptSetError(
                f"{lim.label}, line {start:,}: this row has {len(record)} fields but the header has "
                f"{header.n_cols} columns. Quote fields that contain commas."
            )
        values = {f: (record[i] if i < len(record) else None) for f, i in header.columns.items()}
        rows.append(lim.make_row(start, values))
    if header is None:
        raise PromptSetError(f"{lim.label} is empty: it has no header row and no prompts.")
    notes: list[str] = []
    if header.unknown:
        notes.append("Ignored unknown columns: " + ", ".join(header.unknown) + ".")
    if header.unnamed:
        notes.append(f"Ignored {plural(header.unnamed, 'column')} without a name in the header.")
    if blank:
        notes.append(blank_note(blank))
    return rows, notes


def _json_object(line: str, i: int, lim: Limits) -> dict[str, Any]:
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
            f'{lim.label}, line {i:,}: expected a JSON object like {{"prompt": "..."}}, got {type_name(obj)}.'
        )
    return obj


def _json_fields(
    obj: dict[str, Any], i: int, lim: Limits, unknown: dict[str, None]
) -> tuple[dict[str, str | None], Any]:
    """The known string fields of one JSONL object and its 'messages' value (None when absent)."""
    values: dict[str, str | None] = {}
    messages: Any = None
    for key, value in obj.items():
        nm = _normalise_name(key)
        if nm == "messages":
            if messages is not None:
                raise PromptSetError(f"{lim.label}, line {i:,}: the field 'messages' appears twice.")
            messages = value
            continue
        if nm not in FIELDS:
            unknown.setdefault(key)
            continue
        if nm in values:
            raise PromptSetError(f"{lim.label}, line {i:,}: the field '{nm}' appears twice.")
        if value is None and nm != "prompt":
            values[nm] = None
            continue
        if not isinstance(value, str):
            raise PromptSetError(
                f"{lim.label}, line {i:,}: the field '{nm}' must be a string, got {type_name(value)} "
                f"({json.dumps(value)[:40]}). Put it in quotes."
            )
        values[nm] = value
    return values, messages


def _parse_jsonl(text: str, lim: Limits) -> tuple[list[PromptRow], list[str]]:
    lines, blank = _counted_lines(text, lim)
    rows: list[PromptRow] = []
    unknown: dict[str, None] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = _json_object(line, i, lim)
        values, messages = _json_fields(obj, i, lim, unknown)
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
        notes.append(blank_note(blank))
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
            f"{label} is {size_text(len(data))}; the limit is {size_text(max_bytes)}. Split it into smaller files."
        )
    text = _decode(label, bytes(data))
    lim = Limits(label, max_rows, max_prompt_chars)
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
    lim = Limits("Typed prompts" if name == "typed" else name, max_rows, max_prompt_chars)
    rows, notes = _parse_lines_as_prompts(text or "", lim)
    if not rows:
        raise PromptSetError("Type at least one prompt (one prompt per line).")
    return PromptSet.from_rows(name, rows, notes)
