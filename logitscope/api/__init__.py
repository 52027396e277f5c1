"""Logitscope as a library, for notebooks: ``import logitscope as ls``.

    a = ls.load("gpt2-world-base")            # or ls.wrap(model, tokenizer) for a model already in memory
    r = ls.lens(a, ["The capital of France is"], top_k=5)
    r.tables["summary"], r.figures["heatmap_A"], r.save("out/")   # the page's tables, figures and bundle

One function per method (lens, flow, steer, neurons, shift, ood), generated from the method's declaration: the same
settings, defaults and bounds as the page and the CLI. docs/api.md has the details.
"""
from __future__ import annotations

from logitscope.api.methods import make
from logitscope.api.models import card, load, wrap
from logitscope.api.prompts import prompt_set
from logitscope.api.result import Result

lens = make("lens")
flow = make("flow")
steer = make("steer")
neurons = make("neurons")
shift = make("shift")
ood = make("ood")

__all__ = ["Result", "card", "flow", "lens", "load", "neurons", "ood", "prompt_set", "shift", "steer", "wrap"]
