"""analysis.core.tokens is the one place that turns token ids into text and typed targets into token ids: every page's
target box, the flow's target and competitor, the steering logit difference and the UI's token labels use it."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from analysis.core import tokens as T
from analysis.core.errors import InputError
from analysis.core.paths import zoo_dir


@pytest.fixture(scope="module")
def tok():
    path = zoo_dir() / "gpt2-world-base"
    if not (path / "config.json").is_file():
        pytest.skip("the demo zoo is not trained")
    return AutoTokenizer.from_pretrained(path)


def test_decode_keeps_the_leading_space_and_falls_back_to_the_token_string(tok):
    (tid,) = tok(" Liloru", add_special_tokens=False)["input_ids"]
    assert T.decode(tok, tid) == " Liloru"

    class NoDecode:
        def decode(self, ids, **kw):
            raise RuntimeError("no decoder")

        def convert_ids_to_tokens(self, i):
            return "ĠParis"
    assert T.decode(NoDecode(), 7) == " Paris"


@pytest.mark.parametrize("typed, want", [("#12", 12), (" #12 ", 12), ("#", "#"), ("# 12", "# 12"), (" Paris", " Paris"),
                                         ("12", "12"), ("#-1", "#-1")])
def test_parse_token_ref_reads_hash_ids_and_keeps_text_exactly(typed, want):
    assert T.parse_token_ref(typed) == want


def test_first_token_of_ids_texts_and_multi_token_texts(tok):
    v = len(tok)
    assert T.first_token(tok, 5, v) == (5, None)
    assert T.first_token(tok, "#5", v) == (5, None)
    with pytest.raises(InputError, match="not a token id.*out of range"):
        T.first_token(tok, f"#{v}", v)
    with pytest.raises(InputError, match="competitor is empty"):
        T.first_token(tok, "", v, "competitor")
    ids = tok(" Liloru lives", add_special_tokens=False)["input_ids"]
    tid, note = T.first_token(tok, " Liloru lives", v)
    assert tid == ids[0] and len(ids) > 1 and f"is {len(ids)} tokens" in note and "first token ' Liloru'" in note


def test_single_token_accepts_exactly_one_token(tok):
    (tid,) = tok(" Liloru", add_special_tokens=False)["input_ids"]
    assert T.single_token(tok, " Liloru") == tid
    with pytest.raises(InputError, match="single token on each side"):
        T.single_token(tok, " Liloru lives")


def test_every_module_decodes_and_resolves_through_analysis_tokens():
    import analysis.flow as flow_pkg
    import analysis.lens as lens
    from analysis.flow import attention, attribution
    from analysis.flow import tokens as flow_tokens
    from analysis.lens import comparison, inputs, logit_lens
    from components.charts import text
    for module in (logit_lens, comparison, attribution, attention):
        assert module.decode is T.decode, module.__name__
    assert text.decode_token is T.decode
    assert lens.resolve_target is inputs.resolve_target and flow_pkg.resolve_token is flow_tokens.resolve_token


def test_different_tokenizers_say_what_differs_both_ways():
    """A vocabulary that only adds tokens used to be reported as '0 token-id pairs differ'."""
    from types import SimpleNamespace

    from analysis.core.errors import IncompatibleModelsError
    from analysis.lens import check_compatible

    def lm(vocab: dict, name: str):
        tok = SimpleNamespace(get_vocab=lambda: vocab, vocab_size=len(vocab))
        return SimpleNamespace(tokenizer=tok, name=name, adapter=SimpleNamespace(vocab_size=len(vocab), n_layers=2))
    small = {"a": 0, "b": 1}
    with pytest.raises(IncompatibleModelsError, match=r"0 \(token, id\) pairs only in A's, 1 only in B's"):
        check_compatible(lm(small, "A"), lm({**small, "c": 2}, "B"))
