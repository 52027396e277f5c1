"""The built-in prompt sets: data/prompts/*.jsonl|csv|txt (or $LOGITSCOPE_PROMPTS_DIR), by name, cached until a
file changes."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from analysis.core.errors import PromptSetError
from analysis.core.paths import DATA_ROOT
from analysis.prompts.parsing import parse_prompt_file
from analysis.prompts.types import PromptSet

ACCEPTED_SUFFIXES = (".jsonl", ".csv", ".txt")


PROMPTS_DIR_ENV = "LOGITSCOPE_PROMPTS_DIR"


_DEFAULT_PROMPTS_DIR = DATA_ROOT / "data" / "prompts"


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
