"""The one registry of methods: app.py draws a page per entry, the CLI adds a command per entry, the rerun of a
bundle finds its method here, and the tests loop over it (a method added here is checked for page / CLI / metadata
agreement without a test of its own).

Each method is declared once in components/reports/<method>.py (``Declaration``): KEY (widget keys, URL prefix),
PAGE (metadata "page"), BUNDLE (export names), its settings dataclass, its prompt-set inputs (``INPUTS``), whether
it needs checkpoint B (``NEEDS_B``), the parts that shard on a Ray backend (``SHARDS``), ``compute`` (one
signature for every method), ``report`` (display only) and ``run`` (compute + report + metadata settings).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from analysis.core.progress import Progress
from analysis.models.pair import ModelPair
from components.reports import Input, Inputs, Memo, Report, flow, lens, neurons, ood, shift, steering


@runtime_checkable
class Declaration(Protocol):
    """What components/reports/<method>.py provides."""

    PAGE: str
    BUNDLE: str
    KEY: str
    INPUTS: tuple[Input, ...]
    NEEDS_B: bool
    SHARDS: tuple[str, ...]
    PAGE_DEFAULT_EXEMPT: dict[str, str]

    def compute(self, models: ModelPair, inputs: Inputs, s: Any, progress: Progress = None,
                memo: Memo = ...) -> Any: ...

    def report(self, results: Any, s: Any) -> Report: ...

    def run(self, models: ModelPair, inputs: Inputs, s: Any, progress: Progress = None,
            memo: Memo = ...) -> tuple[Report, dict]: ...


@dataclass(frozen=True)
class Method:
    """One method: its declaration module and settings class, its page (file, title, icon) and its CLI command."""

    module: ModuleType
    settings: type
    command: str
    page_file: str
    title: str
    icon: str

    @property
    def key(self) -> str:
        """The declaration's KEY (widget keys and URL prefix)."""
        return self.module.KEY

    @property
    def inputs(self) -> tuple[str, ...]:
        """The CLI flags of its prompt sets (a bundle's "inputs" keys), the main set (--prompts) first."""
        return tuple(i.flag for i in self.module.INPUTS)

    @property
    def needs_b(self) -> bool:
        """Whether the method compares A with B and stops without B."""
        return bool(self.module.NEEDS_B)

    @property
    def shards(self) -> tuple[str, ...]:
        """The parts that run on the actors of a Ray backend (empty: the whole method runs in this process)."""
        return tuple(self.module.SHARDS)

    @property
    def engine(self) -> str:
        """Its engine package: analysis/<name of the declaration module> (components/reports/lens.py: analysis.lens)."""
        return "analysis." + self.module.__name__.rsplit(".", 1)[1]

    @property
    def compute(self) -> Callable[..., Any]:
        """The declaration's compute."""
        return self.module.compute


METHODS: dict[str, Method] = {
    "lens": Method(lens, lens.LensSettings, "lens", "pages/logit_lens.py", "Logit lens", "🔭"),
    "flow": Method(flow, flow.FlowSettings, "flow", "pages/logit_flow.py", "Logit flow", "🌊"),
    "steer": Method(steering, steering.SteerSettings, "steer", "pages/steering.py", "Steering and personas", "🧭"),
    "neurons": Method(neurons, neurons.NeuronsSettings, "neurons", "pages/confidence_neurons.py",
                      "Confidence neurons", "🌡️"),
    "shift": Method(shift, shift.ShiftSettings, "shift", "pages/checkpoint_shift.py", "Checkpoint shift", "🔀"),
    "ood": Method(ood, ood.OODSeparabilitySettings, "ood", "pages/ood.py", "OOD separability", "🧪"),
}  # in menu order


def method_of(page: str) -> Method | None:
    """The method whose declaration's PAGE is ``page``."""
    return next((m for m in METHODS.values() if page == m.module.PAGE), None)


def by_command(command: str) -> Method | None:
    """The method of a CLI command."""
    return next((m for m in METHODS.values() if m.command == command), None)
