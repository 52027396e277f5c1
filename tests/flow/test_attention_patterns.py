"""Attention patterns (methods.md section 2): rows are probabilities under the causal mask, padding does not change
them, and they are the very probabilities the logit flow's head x source attribution uses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.batching import encode
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.flow import (
    attention_pattern,
    attention_pattern_set,
    attention_patterns,
    capture_hooks,
    eager_attention,
    head_label,
    logit_flow,
    parse_head_label,
)
from analysis.models.tiny import ALL_TYPES, tiny_model
from tests.paths import APP

PROMPTS = ["5 17 3 9 22 4 31", "8 2", "11 12 13 14"]


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


def _check_rows(probs: np.ndarray) -> None:
    T = probs.shape[-1]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    upper = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert (probs[..., upper] == 0).all(), "attention above the diagonal (causal mask broken)"


@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_sum_to_one_and_respect_the_causal_mask(lm, side):
    pats = attention_patterns(lm, PROMPTS, padding_side=side)
    assert [len(p.tokens) for p in pats] == [len(lm.tokenizer(p)["input_ids"]) for p in PROMPTS]
    for p in pats:
        assert p.probs.shape == (lm.adapter.n_layers, lm.adapter.n_heads, len(p.tokens), len(p.tokens))
        _check_rows(p.probs)


def test_left_padding_inside_a_batch_gives_each_prompts_own_pattern(lm):
    alone = [attention_patterns(lm, [p])[0] for p in PROMPTS]
    for side in ("left", "right"):
        batched = attention_patterns(lm, PROMPTS, padding_side=side)
        for a, b in zip(alone, batched, strict=True):
            assert a.tokens == b.tokens
            np.testing.assert_allclose(b.probs, a.probs, atol=1e-5)


def test_last_row_is_the_array_the_flow_uses(lm):
    ad = lm.adapter
    batch = encode(lm.tokenizer, PROMPTS, padding_side="right", max_length=lm.context_length)
    store: dict = {}
    B, T = batch.input_ids.shape
    with eager_attention(lm):
        run(lm, batch, capture_hooks(ad, store, (B, T), batch.last_index()))
    pats = attention_patterns(lm, PROMPTS)
    for b, p in enumerate(pats):
        n = len(p.tokens)
        for i in range(ad.n_layers):
            flow_a = store[("a", i)][b, :, :n].numpy()  # the flow's a^h_{T,p}: [H, T]
            assert np.array_equal(p.probs[i, :, n - 1, :], flow_a)


def test_the_flow_head_sources_are_built_from_these_probabilities(lm):
    """A head's source split is a_{T,p} times a value write: a zero probability gives a zero source cell."""
    res = logit_flow(lm, PROMPTS[0])
    pat = attention_patterns(lm, [PROMPTS[0]])[0]
    a = res.view("target")
    last = pat.probs[:, :, -1, :]  # [L, H, T]
    assert a.sources.shape == last.shape
    assert np.all(a.sources[last == 0] == 0)


def test_single_head_pattern_and_gqa_heads(lm):
    ad = lm.adapter
    one = attention_pattern(lm, PROMPTS[0], ad.n_layers - 1, ad.n_heads - 1)
    full = attention_patterns(lm, [PROMPTS[0]])[0]
    assert np.array_equal(one.probs, full.probs[-1, -1])
    assert full.head(0, 0).probs.shape == (len(full.tokens),) * 2
    with pytest.raises(InputError, match="out of range"):
        full.head(ad.n_layers, 0)
    with pytest.raises(InputError):
        attention_pattern(lm, PROMPTS[0], 0, ad.n_heads)


def test_eager_switch_is_restored_after_the_pattern_pass():
    lm = tiny_model("llama")
    before = getattr(lm.model.config, "_attn_implementation", None)
    attention_patterns(lm, PROMPTS[:1])
    assert getattr(lm.model.config, "_attn_implementation", None) == before


def test_head_labels_parse_and_check_the_range():
    assert head_label(3, 2) == "L3H2"
    assert parse_head_label("l3h2", 4, 4) == (3, 2) and parse_head_label("L3.H2", 4, 4) == (3, 2)
    with pytest.raises(InputError, match="out of range"):
        parse_head_label("L4H0", 4, 4)
    with pytest.raises(InputError, match="not a head id"):
        parse_head_label("3.2", 4, 4)


def test_the_set_keeps_patterns_within_its_budget():
    lm = tiny_model("gpt2")
    pats, notes = attention_pattern_set(lm, PROMPTS)
    assert all(p is not None for p in pats) and not notes
    n0 = len(lm.tokenizer(PROMPTS[0])["input_ids"])
    size0 = lm.adapter.n_layers * lm.adapter.n_heads * n0 * n0 * 4
    pats, notes = attention_pattern_set(lm, PROMPTS, budget=size0)
    assert pats[0] is not None and pats[1] is None and pats[2] is None and "first 1 of 3" in notes[0]
    assert torch.is_tensor(torch.as_tensor(pats[0].probs))


# ------------------------------------------------------------------------------------------ the flow page's view
def test_flow_page_shows_the_picked_heads_pattern_for_a_and_b_side_by_side():

    from streamlit.testing.v1 import AppTest

    from analysis.core.loading import ModelSpec

    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["logitscope_spec_A"] = ModelSpec("gpt2-world-base")
    at.session_state["logitscope_use_B"] = True
    at.session_state["logitscope_spec_B"] = ModelSpec("gpt2-world-tuned")
    at.run()
    at.switch_page("pages/logit_flow.py").run()
    at.number_input(key="flow_max_prompts").set_value(2).run()
    at.button(key="flow_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    picker = at.selectbox(key="flow_pattern_head")
    assert picker.value == "" and picker.format_func("").startswith("auto: L")
    keys = {c.proto.id for c in at.get("plotly_chart")}
    assert len(keys) >= 12
    at.selectbox(key="flow_pattern_head").set_value("L1H2").run()
    assert not at.exception and not at.error
    assert at.query_params["flow.pattern_head"] in ("L1H2", ["L1H2"])


def test_a_click_on_a_head_source_cell_selects_that_head():
    from components.charts.attention import head_from_selection, head_source_heatmap

    g = np.random.default_rng(0)
    sources = g.normal(size=(3, 4, 5))
    fig = head_source_heatmap(sources, [f"t{i}" for i in range(5)], "x", n_heads=6)
    clickable = fig.data[1]  # the invisible markers over the cells
    k = 7
    state = {"selection": {"points": [{"x": clickable.x[k], "y": clickable.y[k], "customdata": clickable.customdata[k]}]}}
    layer, head = head_from_selection(state)
    assert f"L{layer}H{head}" == clickable.y[k]
    assert head_from_selection({"selection": {"points": [{"x": clickable.x[k], "y": clickable.y[k]}]}}) == (layer, head)
    assert clickable.customdata[k][2] == pytest.approx(sources[layer, head, k % 5])
    assert head_from_selection({"selection": {"points": []}}) is None and head_from_selection(None) is None


def test_flow_report_has_each_checkpoints_pattern_of_the_default_head():
    from dataclasses import replace

    from analysis.flow import logit_flow_set
    from components.reports import flow as R

    lm = tiny_model("llama")
    results = R.FlowResults({"A": logit_flow_set(lm, PROMPTS[:2])},
                            {"A": "tiny"}, tuple(PROMPTS[:2]),
                            {"A": attention_pattern_set(lm, PROMPTS[:2])[0]})
    s = R.FlowSettings(show_prompt=2)
    rep = R.report(results, s)
    src = np.abs(results.by_model["A"].results[1].view("target").sources)
    layer, head, _ = np.unravel_index(int(np.argmax(src)), src.shape)
    assert R.pattern_head(s, results) == (layer, head)
    table = rep.tables["attention_pattern_A"]
    want = attention_patterns(lm, [PROMPTS[1]])[0].probs[layer, head]
    got = np.zeros_like(want)
    got[table.query_position, table.key_position] = table.probability
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert "head_source_A" in rep.figures and R.settings_metadata(s, results)["pattern_head_shown"] == f"L{layer}H{head}"
    rep2 = R.report(results, replace(s, pattern_head="L0H1"))
    assert rep2.figures["attention_pattern_A"].layout.title.text.startswith("tiny: attention pattern of L0H1")
