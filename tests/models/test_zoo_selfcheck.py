"""The post-load self-check passes on every committed demo checkpoint, loaded like any hub model."""
from __future__ import annotations

import pytest

from analysis.core.loading import ModelSpec, load_model
from analysis.models.card import model_card

ZOO = ["gpt2-world-base", "gpt2-world-tuned", "llama-world-base", "llama-world-tuned"]


@pytest.mark.parametrize("name", ZOO)
def test_self_check_passes_on_the_zoo(name):
    lm = load_model(ModelSpec(name))
    card = model_card(lm)
    assert card.check.passed, card.check.message
    assert card.check.lens_err < 1e-4 and card.check.dla_err < 1e-4
    assert card.model_type == ("gpt2" if name.startswith("gpt2") else "llama")
    assert card.norm_kind == ("layernorm" if name.startswith("gpt2") else "rmsnorm")


def test_the_two_families_have_different_tokenizers():
    a = load_model(ModelSpec("gpt2-world-base")).tokenizer
    b = load_model(ModelSpec("llama-world-base")).tokenizer
    assert len(a) != len(b)
