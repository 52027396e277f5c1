"""Defaults that come from the model in front of the user, never from the demo world.

The demo models (zoo/) were trained on a synthetic world, so their natural default is one of its facts;
any other model gets a generic English fact and, where its tokenizer has a chat template, a question
rendered with that template. Pages and the CLI take their default prompts and targets from here.

This module is engine code: no streamlit import.
"""
from __future__ import annotations

from pathlib import Path

from analysis.core.errors import LogitscopeError
from analysis.core.loading import LoadedModel
from analysis.core.paths import zoo_dir
from analysis.prompts import has_chat_template, load_builtin, render_chat

GENERIC_FACT = ("The capital of France is", " Paris")
GENERIC_QUESTION = "What is the capital of France?"
DEMO_QUESTION = "User: Where does Braba Kadro live?\nAssistant:"


def is_demo(lm: LoadedModel) -> bool:
    """True when the model is one of the demo checkpoints under zoo/ (trained on the synthetic world)."""
    src = lm.spec.source[4:] if lm.spec.source.startswith("zoo:") else lm.spec.source
    zd = zoo_dir().resolve()
    if (zd / src).is_dir() and "/" not in src.strip("/"):
        return True
    try:
        return Path(src).expanduser().resolve().parent == zd
    except (OSError, ValueError):
        return False


def default_fact(lm: LoadedModel) -> tuple[str, str]:
    """(prompt, target): the first demo fact on a demo model, 'The capital of France is' -> ' Paris' otherwise."""
    if is_demo(lm):
        try:
            row = load_builtin("facts").rows[0]
            if row.target:
                return row.prompt, row.target
        except LogitscopeError:
            pass
    return GENERIC_FACT


def default_question(lm: LoadedModel) -> str:
    """A question to generate from: the demo dialogue format on demo models, else the chat template's rendering
    of a generic question (or a plain 'Question: ... Answer:' text when the tokenizer has no template)."""
    if is_demo(lm):
        return DEMO_QUESTION
    if has_chat_template(lm.tokenizer):
        try:
            return render_chat(lm.tokenizer, [{"role": "user", "content": GENERIC_QUESTION}])
        except Exception:  # a template that needs other roles or fields: fall back to plain text
            pass
    return f"Question: {GENERIC_QUESTION}\nAnswer:"


# Demo-world built-in sets and what stands in for them on any other model.
REAL_EQUIVALENTS = {"facts": "en_facts", "two_hop": "en_facts", "changed_facts": "en_facts",
                    "persona_pairs": "chat_persona_pairs", "persona_eval": "chat_persona_eval"}


def default_set(lm: LoadedModel, demo_name: str) -> str:
    """The built-in prompt set a page starts with: `demo_name` on demo models, else its real-model counterpart
    (plain English facts; chat-format persona sets where the tokenizer has a chat template)."""
    if is_demo(lm):
        return demo_name
    alt = REAL_EQUIVALENTS.get(demo_name, demo_name)
    if alt.startswith("chat_") and not has_chat_template(lm.tokenizer):
        return demo_name
    return alt
