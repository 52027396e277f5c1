"""Prompt sets as files: the exact JSONL of a set (every character of every prompt and field kept) and a local
store of the sets users typed or uploaded, named by their content hash, so a link or a bundle that names a set by
its sha256 finds the same set again on this machine.

The JSONL round-trips: ``parse_prompt_file("x.jsonl", to_jsonl(ps))`` has the same rows and sha256 as ``ps``.
The store folder is ~/.cache/logitscope/prompt_store (``LOGITSCOPE_STORE`` moves it).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from analysis.core.errors import PromptSetError
from analysis.prompts.parsing import parse_prompt_file
from analysis.prompts.types import OPTIONAL_FIELDS, PromptSet

STORE_ENV = "LOGITSCOPE_STORE"
_SHA = re.compile(r"^[0-9a-f]{64}$")
MAX_STORED_BYTES = 50_000_000


def to_jsonl(prompt_set: PromptSet) -> bytes:
    """The set as JSONL: one object per row with its prompt (or its chat messages) and its optional fields."""
    lines = []
    for r in prompt_set.rows:
        obj: dict = {}
        if r.messages is not None:
            obj["messages"] = [{"role": role, "content": content} for role, content in r.messages]
        else:
            obj["prompt"] = r.prompt
        for f in OPTIONAL_FIELDS:
            value = getattr(r, f, None)
            if value is not None:
                obj[f] = value
        lines.append(json.dumps(obj, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def from_jsonl(name: str, data: bytes, sha256: str | None = None) -> PromptSet:
    """A set written by to_jsonl, named ``name``; InputError-family PromptSetError when it does not parse or when
    ``sha256`` is given and the content differs."""
    ps = parse_prompt_file("set.jsonl", data, max_bytes=MAX_STORED_BYTES)
    if sha256 is not None and ps.sha256 != sha256:
        raise PromptSetError(f"The stored prompt set {sha256[:12]}… has changed on disk (its content hash is now "
                             f"{ps.sha256[:12]}…).")
    return PromptSet.from_rows(name, ps.rows, ps.notes)


def store_dir() -> Path:
    """The store folder (created on first save)."""
    return Path(os.environ.get(STORE_ENV) or Path.home() / ".cache" / "logitscope" / "prompt_store")


def save(prompt_set: PromptSet) -> str:
    """Keep the set in the store (once per content) and return its sha256."""
    folder = store_dir()
    path = folder / f"{prompt_set.sha256}.jsonl"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".tmp") as fh:
            fh.write(to_jsonl(prompt_set))
        os.replace(fh.name, path)
        (folder / f"{prompt_set.sha256}.name").write_text(prompt_set.name, encoding="utf-8")
    return prompt_set.sha256


def load(sha256: str) -> PromptSet | None:
    """The stored set with this content hash, or None when this machine does not have it."""
    if not _SHA.match(sha256 or ""):
        return None
    path = store_dir() / f"{sha256}.jsonl"
    if not path.is_file():
        return None
    name_file = path.with_suffix(".name")
    name = name_file.read_text(encoding="utf-8") if name_file.is_file() else f"stored {sha256[:12]}"
    return from_jsonl(name, path.read_bytes(), sha256)
