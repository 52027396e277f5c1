"""Steering trait tokens: the default tokens a and b of the global logit shift z(a) − z(b).

By default the most common first response tokens of the positive and the negative side of the contrast set,
else a demo model's tokens, else none (the user types them).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.models.defaults import is_demo
from analysis.prompts import PromptRow, PromptSet
from analysis.steering.activations import token_ids
from analysis.steering.contrast import split_contrast

# --------------------------------------------------------------------------------------------
# Trait tokens for the global logit shift
# --------------------------------------------------------------------------------------------
DEMO_TRAIT_TOKENS = (" Ugh", " Sure")  # the demo world's grumpy opener vs the base model's reply


@dataclass(frozen=True)
class TraitTokens:
    """Default tokens a (trait) and b of the logit difference z(a) − z(b); empty strings when there is none.

    source: "contrast" (the contrast set's responses), "demo" (a demo model's tokens) or "none"; note says so.
    """

    token_a: str
    token_b: str
    source: str
    note: str


def _first_response_tokens(lm: LoadedModel, rows: Sequence[PromptRow]) -> list[str]:
    """The first token of each row's response as it is tokenized after the prompt, kept when it is one token alone."""
    out = []
    for r in rows:
        if not r.response:
            continue
        p_ids = token_ids(lm.tokenizer, r.prompt)
        ids = token_ids(lm.tokenizer, r.prompt + r.response)
        if len(ids) <= len(p_ids) or ids[:len(p_ids)] != p_ids:
            continue
        text = lm.tokenizer.decode([ids[len(p_ids)]])
        if text.strip() and list(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) == [ids[len(p_ids)]]:
            out.append(text)
    return out


def contrast_trait_tokens(lm: LoadedModel, ps: PromptSet, positive: str | None = None,
                          negative: str | None = None) -> tuple[str, str] | None:
    """(a, b): the positive side's most common first response token vs the negative side's (a different one), or
    None when the set has no contrast or no responses that start with a single token."""
    try:
        contrast = split_contrast(ps, positive, negative) if ps.groups() else split_contrast(ps)
    except InputError:
        return None
    pos = Counter(_first_response_tokens(lm, contrast.pos)).most_common()
    neg = Counter(_first_response_tokens(lm, contrast.neg)).most_common()
    if not pos or not neg:
        return None
    a = pos[0][0]
    b = next((t for t, _ in neg if t != a), None)
    return None if b is None else (a, b)


def default_trait_tokens(lm: LoadedModel, ps: PromptSet | None = None, positive: str | None = None,
                         negative: str | None = None) -> TraitTokens:
    """Tokens a and b for the global logit shift: from the contrast set's responses, else the demo tokens on a demo
    model, else empty (the user must give them)."""
    got = contrast_trait_tokens(lm, ps, positive, negative) if ps is not None else None
    if got is not None:
        assert ps is not None  # got comes only from a contrast set
        return TraitTokens(got[0], got[1], "contrast",
                           f"Default tokens a and b: the most common first response tokens of the "
                           f"{_side_names(ps, positive, negative)} sides of '{ps.name}'.")
    if is_demo(lm):
        return TraitTokens(*DEMO_TRAIT_TOKENS, "demo",
                           "Default tokens a and b: the demo world's grumpy opener and the base model's reply.")
    return TraitTokens("", "", "none",
                       "No default tokens for the logit difference: they come from the contrast set's responses (the "
                       "most common first token of each side), and these vectors have none that differ. Type token a (the trait, e.g. the first word of a reply in that persona) "
                       "and token b (the opposite reply's first word), each a single token with its leading space "
                       "where the tokenizer has one.")


def _side_names(ps: PromptSet, positive: str | None, negative: str | None) -> str:
    """'grumpy' and 'kind' style text naming the two sides of a contrast set."""
    try:
        c = split_contrast(ps, positive, negative) if ps.groups() else split_contrast(ps)
    except InputError:
        return "two"
    return f"'{c.positive_name}' and '{c.negative_name}'"
