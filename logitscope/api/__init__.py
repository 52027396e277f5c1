"""Logitscope as a library, for notebooks: ``import logitscope as ls``.

    a = ls.load("gpt2-world-base")            # or ls.wrap(model, tokenizer) for a model already in memory
    r = ls.lens(a, ["The capital of France is"], top_k=5)
    r.tables["summary"], r.figures["heatmap_A"], r.save("out/")   # the page's tables, figures and bundle

One function per registered method (components/methods.py: lens, flow, steer, neurons, shift, ood), named after its
command and generated from its declaration: the same settings, defaults and bounds as the page and the CLI, so a
method added to the registry is in the API too. docs/api.md has the details.
"""
from __future__ import annotations

from components.methods import METHODS
from logitscope.api.methods import make
from logitscope.api.models import card, load, wrap
from logitscope.api.prompts import prompt_set
from logitscope.api.result import Result

__all__ = ["Result", "card", "load", "prompt_set", "wrap"]
for _key, _method in METHODS.items():  # the registry, as app.py and the CLI router iterate it
    globals()[_method.command] = make(_key)
    __all__ += [_method.command]
