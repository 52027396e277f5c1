"""Neuron card (methods.md section 4) and vector card (section 3): top tokens equal an independent W_U computation,
top examples are sorted and their activations recompute with an independent hook on the neuron site."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.errors import InputError
from analysis.models.tiny import ALL_TYPES, tiny_model
from analysis.neurons import neuron_card
from analysis.prompts import adds_bos
from analysis.steering import SteeringVectors, vector_card
from tests.paths import APP

REFERENCE = ["5 17 3 9 22 4 31", "8 2", "11 12 13 14", "30 1 30 1 30", "7"]


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


def _independent_direction(lm, w: torch.Tensor) -> torch.Tensor:
    """W_U (gamma * centred w) with plain torch, from the model's own modules."""
    W_U = lm.model.get_output_embeddings().weight.detach().double()
    gamma = lm.adapter.final_norm.gain.detach().double()
    w = w.detach().double()
    if lm.adapter.final_norm.kind == "layernorm":
        w = w - w.mean()
    return W_U @ (gamma * w)


def _down_proj_row(lm, block: int, index: int) -> torch.Tensor:
    mod = lm.adapter.down_proj(block)
    W = mod.weight.detach()
    return W[index] if lm.adapter.row.down_proj_conv1d else W[:, index]


def _hooked_activations(lm, block: int, index: int, prompt: str) -> np.ndarray:
    """The neuron's activation at every token of one prompt, from a plain forward pre-hook on the down-projection."""
    got = {}
    mod = lm.adapter.down_proj(block)
    handle = mod.register_forward_pre_hook(lambda m, args: got.__setitem__("x", args[0].detach().float().clone()))
    try:
        ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
        with lm.lock, torch.inference_mode():
            lm.model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    x = got["x"]
    return x.reshape(-1, x.shape[-1])[:, index].numpy()


def test_neuron_card_top_tokens_equal_an_independent_computation(lm):
    block, index = lm.adapter.n_layers - 1, 3
    card = neuron_card(lm, block, index, REFERENCE, k=10)
    z = _independent_direction(lm, _down_proj_row(lm, block, index))
    want_top = torch.topk(z, 10).indices.numpy()
    want_bottom = torch.topk(-z, 10).indices.numpy()
    np.testing.assert_array_equal(card.top_ids, want_top)
    np.testing.assert_array_equal(card.bottom_ids, want_bottom)
    np.testing.assert_allclose(card.top_values, z[want_top].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(card.bottom_values, z[want_bottom].numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(card.top_values) <= 0) and np.all(np.diff(card.bottom_values) >= 0)
    assert card.label == f"L{block}.N{index}"


@pytest.mark.parametrize("batch_size", [1, 8])
def test_neuron_card_top_examples_are_sorted_and_recompute(lm, batch_size):
    block, index = 0, 5
    card = neuron_card(lm, block, index, REFERENCE, batch_size=batch_size)
    top = card.top_examples(4)
    assert len(top) == 4 and len({p for p, _, _ in top}) == 4
    acts = [a for _, _, a in top]
    assert acts == sorted(acts, reverse=True)
    skip = 1 if adds_bos(lm.tokenizer) else 0
    for p, pos, a in top:
        hooked = _hooked_activations(lm, block, index, REFERENCE[p])
        assert pos >= skip
        assert a == pytest.approx(float(hooked[skip:].max()), abs=1e-6)
        if batch_size == 1:
            assert np.float32(a) == np.float32(hooked[pos]), "not the exact activation"
        else:
            assert a == pytest.approx(float(hooked[pos]), abs=1e-5)
    # every reference position is in the histogram's sample, BOS excepted
    assert len(card.activation) == sum(len(t) - skip for t in card.tokens)
    assert [len(t) for t in card.tokens] == [len(lm.tokenizer(p)["input_ids"]) for p in REFERENCE]


def test_neuron_card_refuses_bad_ids_and_empty_reference():
    lm = tiny_model("gpt2")
    with pytest.raises(InputError, match="out of range"):
        neuron_card(lm, lm.adapter.n_layers, 0, REFERENCE)
    with pytest.raises(InputError, match="reference"):
        neuron_card(lm, 0, 0, [])


def _vectors(lm, seed: int = 0) -> SteeringVectors:
    g = np.random.default_rng(seed)
    L, d = lm.adapter.n_layers, lm.adapter.d_model
    proj = g.normal(size=(6, L + 1)).astype(np.float32)
    return SteeringVectors(vectors=g.normal(size=(L + 1, d)).astype(np.float32), layers=tuple(range(L + 1)),
                           model_name="tiny", method="mean_diff", position_rule="last", prompt_set_name="t",
                           prompt_set_sha256="0", positive="pos", negative="neg", auroc=np.full(L + 1, np.nan),
                           projections=proj, is_positive=np.array([True] * 3 + [False] * 3), n_blocks=L)


def test_vector_card_top_tokens_equal_an_independent_computation(lm):
    sv = _vectors(lm)
    card = vector_card(lm, sv, k=7)
    for row, layer in enumerate(sv.layers):
        z = _independent_direction(lm, torch.as_tensor(sv.vector(layer)))
        assert card.row(layer) == row
        np.testing.assert_array_equal(card.top_ids[row], torch.topk(z, 7).indices.numpy())
        np.testing.assert_array_equal(card.bottom_ids[row], torch.topk(-z, 7).indices.numpy())
        np.testing.assert_allclose(card.top_values[row], z[card.top_ids[row]].numpy(), rtol=1e-4, atol=1e-5)
    # the ranking does not depend on the vector's norm; a negated vector swaps top and bottom
    scaled = vector_card(lm, SteeringVectors(**{**sv.__dict__, "vectors": sv.vectors * 3.0}), k=7)
    np.testing.assert_array_equal(scaled.top_ids, card.top_ids)
    neg = vector_card(lm, SteeringVectors(**{**sv.__dict__, "vectors": -sv.vectors}), k=7)
    np.testing.assert_array_equal(neg.top_ids, card.bottom_ids)
    with pytest.raises(InputError):
        card.row(lm.adapter.n_layers + 5)


# ------------------------------------------------------------------------------------------ the pages' views
def _page(path: str):

    from streamlit.testing.v1 import AppTest

    from analysis.core.loading import ModelSpec

    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["logitscope_spec_A"] = ModelSpec("gpt2-world-base")
    at.run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def test_neurons_page_shows_the_card_of_the_top_entropy_neuron_and_another_one():
    at = _page("pages/confidence_neurons.py")
    assert not at.error, [e.value for e in at.error]
    box = at.text_input(key="neurons_card_neuron")
    assert box.value.startswith("L") and ".N" in box.value
    frames = [d.value for d in at.dataframe if {"context", "activation"} <= set(d.value.columns)]
    assert frames, "no examples table"
    ex = frames[0]
    assert list(ex["activation"]) == sorted(ex["activation"], reverse=True)
    assert all("⟦" in c and "⟧" in c for c in ex["context"])
    box.set_value("L0.N5").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.query_params["neurons.card_neuron"] in ("L0.N5", ["L0.N5"])
    at.number_input(key="neurons_card_k").set_value(3).run()
    frames = [d.value for d in at.dataframe if {"context", "activation"} <= set(d.value.columns)]
    assert len(frames[0]) == 3


def test_steering_page_shows_the_vector_card_after_build():
    at = _page("pages/steering.py")
    n = len(at.get("plotly_chart"))
    at.button(key="steer_build_btn").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= n + 4  # separability, projection, vector tokens, groups along v
    assert any("Vector card" in c.value for c in at.caption)


def test_steering_report_and_bundle_hold_the_vector_card():
    from components.reports import steering as R

    lm = tiny_model("llama")
    sv = _vectors(lm)
    card = vector_card(lm, sv)
    rep = R.report(R.SteerResults(R.SteerSettings(), sv, card=card), R.SteerSettings(hist_layer=1))
    table = rep.tables["vector_tokens"]
    assert list(table["promoted_id"]) == list(card.top_ids[card.row(1)][:10]) and set(table["layer"]) == {1}
    groups = rep.tables["vector_groups"]
    np.testing.assert_array_equal(groups["projection"].to_numpy(), sv.projections[:, 1].astype(float))
