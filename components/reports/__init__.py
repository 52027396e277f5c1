"""Reports: an analysis result -> the figures and tables a page exports, in one pure place (no streamlit).

Each page builds its export bundle from its report function, and `python -m logitscope <command>` calls the same
function on results computed with the same engine calls, so the bundle and the command line write the same files.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pandas as pd
import plotly.graph_objects as go

from analysis.compute.backend import current_backend
from components.charts.pairs import fix_histograms, share_scales
from components.charts.style import themed, wrap_titles
from components.notes import collapse_notes


@dataclass
class Report:
    """What a page exports: {name: figure}, {name: table} (bundle names) and notes the page may show."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, fig: go.Figure | None = None, table: pd.DataFrame | None = None) -> None:
        """Record a figure and/or a table under name. Titles wrap to fit a half-width column, and a figure named
        "<view>_B" (or "_A") shares its axis ranges and colour scales with its partner already added."""
        if fig is not None:
            wrap_titles(themed(fig))
            if any(t.type == "histogram" for t in fig.data):
                fix_histograms(fig)
            self.figures[name] = fig
            stem, _, which = name.rpartition("_")
            if stem and which in ("A", "B"):
                other = self.figures.get(f"{stem}_{'B' if which == 'A' else 'A'}")
                if other is not None:
                    share_scales([self.figures[f"{stem}_A"], self.figures[f"{stem}_B"]])
        if table is not None:
            self.tables[name] = table

    def merge(self, other: Report) -> Report:
        """Add other's figures (through ``add``: A/B pairs share their scales), tables and notes (later names win);
        returns self."""
        for name, fig in other.figures.items():
            self.add(name, fig)
        self.tables.update(other.tables)
        self.notes.extend(other.notes)
        return self


# ------------------------------------------------------------------------------------------ a method's inputs
Inputs = Mapping[str, Any]  # {CLI flag: PromptSet, or a tuple of sets for an input of several}: what compute reads
T = TypeVar("T")


@dataclass(frozen=True)
class Input:
    """One prompt-set input of a method: its CLI flag (also its key in ``Inputs`` and in a bundle's metadata
    "inputs"), the built-in set(s) it starts from on the demo models (analysis.models.defaults.default_set maps each
    to its real-model counterpart), its help, whether it takes several sets, and the part that reads it (None: the
    method always does)."""

    flag: str
    demo_set: str | tuple[str, ...]
    help: str
    many: bool = False
    part: str | None = None

    @property
    def dest(self) -> str:
        """The argparse destination of the flag: '--monitor-prompts' -> 'monitor_prompts'."""
        return self.flag.lstrip("-").replace("-", "_")


class Memo(Protocol):
    """How a computation runs its parts: ``memo(name, key, fn, *args, **kwargs)`` = fn(*args, **kwargs), possibly
    from a cache keyed on (name, key): the page passes its cache (components.page_kit.memo), the CLI runs them."""

    def __call__(self, name: str, key: tuple, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


def direct(name: str, key: tuple, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The Memo that just calls fn (the CLI's, the tests')."""
    return fn(*args, **kwargs)


def sets_of(value: Any) -> tuple:
    """An input's sets as a tuple (one set, several, or none)."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def inputs_key(inputs: Inputs) -> tuple:
    """((flag, (sha256, ...)), ...) of the inputs: what identifies them in a cache key."""
    return tuple((flag, tuple(ps.sha256 for ps in sets_of(v))) for flag, v in sorted(inputs.items()) if v is not None)


PROMPT_FILES = "prompt_files"  # metadata key build_bundle turns into prompts/*.jsonl files (and drops)


def report_metadata(page: str, cards: Mapping[str, Any], settings: Mapping[str, Any], prompt_set: Any = None,
                    notes: Sequence[str] = (), inputs: Mapping[str, Any] | None = None) -> dict:
    """Export metadata: the page, each checkpoint's card ({"A": card, "B": card}), the settings, the prompt set's
    hash (and its parsing notes) and the notes of the engine's results (multi-token targets, skipped rows...).

    ``inputs`` = {CLI flag: prompt set or list of sets} of every prompt set the run used (default: ``prompt_set``
    under --prompts). Each set goes into the bundle as prompts/<flag>-<i>.jsonl with its exact prompts (as they ran,
    chat templates applied), and metadata["inputs"] names those files, so `python -m logitscope rerun` can
    recompute the bundle from the bundle alone."""
    from analysis.prompts.store import to_jsonl

    meta: dict[str, Any] = {
        "page": page,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "models": {which: (card.as_dict() if hasattr(card, "as_dict") else dict(card)) for which, card in cards.items()},
        "settings": dict(settings),
        "notes": collapse_notes(notes),  # per-prompt notes of one kind as one note naming the prompts
        "backend": current_backend().label,  # "process", or "ray <address>" (analysis.compute.backend)
    }
    if prompt_set is not None:
        meta["prompt_set"] = {"name": getattr(prompt_set, "name", None), "sha256": getattr(prompt_set, "sha256", None),
                              "n_prompts": len(prompt_set), "notes": list(getattr(prompt_set, "notes", ()))}
    if inputs is None and prompt_set is not None and hasattr(prompt_set, "rows"):
        inputs = {"--prompts": prompt_set}
    if inputs:
        meta["inputs"], files = {}, {}
        for flag, value in inputs.items():
            sets = list(value) if isinstance(value, (list, tuple)) else [value]
            entries = []
            for i, ps in enumerate(sets):
                path = f"prompts/{flag.lstrip('-')}-{i + 1}.jsonl"
                files[path] = to_jsonl(ps)
                entries.append({"file": path, "name": ps.name, "sha256": ps.sha256, "n_prompts": len(ps)})
            meta["inputs"][flag] = entries
        meta[PROMPT_FILES] = files
    return meta
