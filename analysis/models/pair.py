"""The loaded checkpoints an analysis runs on: A and an optional B, each with its model card."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.models.card import ModelCard


@dataclass(frozen=True)
class ModelPair:
    """The loaded checkpoint A and optional checkpoint B with their cards (the page's and the CLI's)."""

    a: LoadedModel
    card_a: ModelCard
    b: LoadedModel | None = None
    card_b: ModelCard | None = None

    @property
    def compare(self) -> bool:
        """True when checkpoint B is loaded."""
        return self.b is not None

    def items(self) -> list[tuple[str, LoadedModel, ModelCard]]:
        """[("A", lm, card), ("B", lm, card)] for the loaded checkpoints."""
        out = [("A", self.a, self.card_a)]
        if self.b is not None and self.card_b is not None:
            out.append(("B", self.b, self.card_b))
        return out

    def cards(self) -> dict[str, Any]:
        """{"A": card, "B": card} for the export metadata."""
        return {which: card for which, _, card in self.items()}

    def specs(self) -> tuple:
        """((which, spec), ...): what identifies the pair in a cache key."""
        return tuple((which, lm.spec) for which, lm, _ in self.items())


def stage(progress: Progress, lo: float, hi: float, label: str = "") -> Progress:
    """A progress callback whose fractions 0..1 fill ``progress`` from lo to hi, messages prefixed by ``label``."""
    if progress is None:
        return None

    def report(fraction: float, message: str = "") -> None:
        f = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
        progress(f, f"{label}: {message}" if label and message else (label or message))
    return report
