"""What a method returns in a notebook: the page's tables and figures, its notes and settings, the engine's own
results, and ``save`` writing exactly the page's bundle (``python -m logitscope rerun`` reruns it)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.core.errors import InputError
from analysis.models.pair import ModelPair
from components.reports import Report
from logitscope.common import bundle_zip, save_bundle


@dataclass
class Result:
    """One run of a method: ``tables`` {name: DataFrame} and ``figures`` {name: plotly Figure} under the bundle's
    names, ``notes``, ``settings`` (as metadata.json records them), ``parts`` {part name: [engine results]} (e.g.
    parts["lens.trace"] holds a LensTrace per checkpoint) and the ``models`` and ``inputs`` it ran on."""

    method: str
    page: str
    report: Report
    settings: dict[str, Any]
    models: ModelPair
    inputs: dict[str, Any]
    parts: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The bundle's tables, by name."""
        return self.report.tables

    @property
    def figures(self) -> dict[str, Any]:
        """The bundle's figures (plotly), by name; each renders inline in Jupyter."""
        return self.report.figures

    @property
    def notes(self) -> list[str]:
        """What the page would say under its figures (skipped prompts, multi-token targets, ...)."""
        return self.report.notes

    def save(self, path: str | Path, *, formats: tuple[str, ...] = ("png", "svg", "html"),
             force: bool = False) -> Path:
        """Write the page's bundle: a zip when ``path`` ends in .zip (the page's "Download bundle", which
        ``python -m logitscope rerun`` takes), else a folder of figures/, data/, prompts/ and metadata.json (the
        CLI's --out). Returns the path."""
        args = (self.report, self.page, self.models, self.settings, self.inputs["--prompts"], self.inputs, formats)
        target = Path(path)
        if target.suffix.lower() == ".zip":
            if target.exists() and not force:
                raise InputError(f"{target} exists; pass force=True to replace it.")
            target.write_bytes(bundle_zip(*args))
            return target
        out, _ = save_bundle(target, *args, force=force)
        return out

    def _summary(self) -> list[tuple[str, str]]:
        models = ", ".join(f"{which}: {card.name}" for which, _, card in self.models.items())
        sets = ", ".join(f"{flag} {getattr(v, 'name', '')} ({len(v)})" if hasattr(v, "rows")
                         else f"{flag} {len(v)} sets" for flag, v in self.inputs.items())
        tables = ", ".join(f"{n} ({len(t)}×{len(t.columns)})" for n, t in self.tables.items())
        return [("models", models), ("prompts", sets), ("tables", tables or "none"),
                ("figures", ", ".join(self.figures) or "none"), ("notes", str(len(self.notes)))]

    def __repr__(self) -> str:
        lines = "\n".join(f"  {k}: {v}" for k, v in self._summary())
        return f"<logitscope {self.method}: {self.page}\n{lines}>"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self._summary())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes[:5])
        more = f"<li>… {len(self.notes) - 5} more</li>" if len(self.notes) > 5 else ""
        return (f"<div><b>logitscope {html.escape(self.method)}</b>: {html.escape(self.page)}<table>{rows}</table>"
                + (f"<ul>{notes}{more}</ul>" if notes else "") + "</div>")
