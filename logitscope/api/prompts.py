"""Prompt sets for the Python API: whatever a notebook holds, read through the same parser and limits as an upload.

A PromptSet is used as it is. A string is a built-in set's name, 'store:<sha256>', or a path to a .txt/.csv/.jsonl
file when one of those exists, else one prompt (kept character for character, line breaks included). A list holds
prompts (strings), chat conversations (lists of {"role", "content"} messages) or rows ({"prompt": ...} or
{"messages": ...} with target, competitor, label, group, response). A pandas DataFrame has the columns of an upload.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from analysis.core.errors import PromptSetError
from analysis.prompts import PromptSet, builtin_sets, parse_prompt_file
from logitscope.common import load_prompts


def prompt_set(value: Any, name: str = "prompts") -> PromptSet:
    """The PromptSet of ``value`` (see the module docstring); PromptSetError naming the problem."""
    if isinstance(value, PromptSet):
        return value
    if isinstance(value, Path):
        return load_prompts(str(value))
    if isinstance(value, str):
        if value in builtin_sets() or value.startswith("store:") or _is_prompt_file(value):
            return load_prompts(value)
        return _from_rows([{"prompt": value}], name)
    frame = _frame_rows(value)
    if frame is not None:
        return _from_rows(frame, name)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return _from_rows([_row(item, i) for i, item in enumerate(value, start=1)], name)
    raise PromptSetError(f"Prompts must be a string, a list of prompts, conversations or rows, a DataFrame or a "
                         f"PromptSet; got {type(value).__name__}.")


def _is_prompt_file(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    try:
        return Path(text).suffix.lower() in (".txt", ".csv", ".jsonl") and Path(text).is_file()
    except OSError:
        return False


def _frame_rows(value: Any) -> list[dict] | None:
    """The rows of a pandas DataFrame (missing cells left out), or None for anything else."""
    to_dict = getattr(value, "to_dict", None)
    if not callable(to_dict) or not hasattr(value, "columns"):
        return None
    rows = []
    for record in to_dict("records"):
        rows.append({str(k): v for k, v in record.items()
                     if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return rows


def _row(item: Any, i: int) -> dict:
    if isinstance(item, str):
        return {"prompt": item}
    if isinstance(item, Mapping):
        if "role" in item and "content" in item and "prompt" not in item and "messages" not in item:
            raise PromptSetError(f"Prompt {i} is a single message; give a conversation as a list of messages.")
        return dict(item)
    if isinstance(item, Sequence) and all(isinstance(m, Mapping) for m in item):
        return {"messages": [dict(m) for m in item]}
    raise PromptSetError(f"Prompt {i} must be a string, a conversation (a list of messages) or a row (a dict with "
                         f"'prompt' or 'messages'); got {type(item).__name__}.")


def _from_rows(rows: list[dict], name: str) -> PromptSet:
    """The rows as .jsonl through the upload's parser: the same checks, limits and messages as a file."""
    if not rows:
        raise PromptSetError("Give at least one prompt.")
    try:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise PromptSetError(f"The prompts could not be read as rows of text: {err}.") from None
    return replace(parse_prompt_file(f"{name}.jsonl", data), name=name)
