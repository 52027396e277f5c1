"""The methods, each declared once in components/reports/<method>.py: KEY (widget keys, URL prefix), PAGE, BUNDLE,
its settings dataclass, ``compute`` (cached by the page), ``report`` (display only) and ``run`` (the CLI's).

COMMAND names the CLI command of each method; PAGE_FILE its page. Tests loop over this table, so a method added here
is checked for page/CLI/metadata agreement without a test of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from components.reports import flow, lens, neurons, ood, shift, steering


@dataclass(frozen=True)
class Method:
    """One method's declaration module, its settings class, CLI command and page file."""

    module: ModuleType
    settings: type
    command: str
    page_file: str
    inputs: tuple[str, ...] = ("--prompts",)  # the CLI flags of its prompt sets (a bundle's "inputs" keys)


METHODS: dict[str, Method] = {
    "lens": Method(lens, lens.LensSettings, "lens", "pages/logit_lens.py"),
    "neurons": Method(neurons, neurons.NeuronsSettings, "neurons", "pages/confidence_neurons.py",
                      ("--prompts", "--eval-prompts", "--induction-prompts")),
    "shift": Method(shift, shift.ShiftSettings, "shift", "pages/checkpoint_shift.py"),
    "flow": Method(flow, flow.FlowSettings, "flow", "pages/logit_flow.py"),
    "ood": Method(ood, ood.OODSeparabilitySettings, "ood", "pages/ood.py", ("--prompts", "--ood-prompts")),
    "steer": Method(steering, steering.SteerSettings, "steer", "pages/steering.py",
                    tuple(steering.INPUT_FLAGS.values())),
}
