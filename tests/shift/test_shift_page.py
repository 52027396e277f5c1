"""The checkpoint-shift page under AppTest: asks for checkpoint B, runs A vs B, and explains different tokenizers."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import ModelSpec
from tests.model_folders import write_model_folder
from tests.paths import REPO

PAGE = "pages/checkpoint_shift.py"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny llama folders with the same tokenizer, and a third with a byte-level BPE tokenizer."""
    root = tmp_path_factory.mktemp("shift_page")
    a = write_model_folder(root / "a", "llama")
    b = write_model_folder(root / "b", "llama", rms_norm_eps=1e-5)
    import torch
    from safetensors.torch import load_file, save_file
    sd = load_file(b / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    save_file(sd, b / "model.safetensors", metadata={"format": "pt"})
    c = write_model_folder(root / "c", "llama", vocab=300)
    _bpe_tokenizer(300).save_pretrained(c)
    return a, b, c


def _bpe_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["User: Where does he live?\nAssistant: Sure, he lives in a city."] * 20,
                            trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   model_max_length=64)


def _app(spec_a: ModelSpec, spec_b: ModelSpec | None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["logitscope_spec_A"] = spec_a
    if spec_b is not None:
        at.session_state["logitscope_use_B"] = True
        at.session_state["logitscope_spec_B"] = spec_b
    at.switch_page(PAGE)
    return at


def _texts(at) -> str:
    return "\n".join(str(e.value) for kind in ("info", "warning", "error", "caption", "markdown")
                     for e in getattr(at, kind))


def test_asks_to_enable_checkpoint_b_when_it_is_off(folders):
    at = _app(ModelSpec(str(folders[0])), None).run()
    assert not at.exception
    assert any("Compare with checkpoint B" in str(e.value) for e in at.info)
    assert not at.get("plotly_chart")


def test_runs_a_vs_b_and_draws_every_view(folders):
    at = _app(ModelSpec(str(folders[0])), ModelSpec(str(folders[1]))).run()
    assert not at.exception, at.exception
    at.number_input(key="shift_max_prompts").set_value(2)
    at.number_input(key="shift_top_n").set_value(10)
    at.button(key="shift_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # bars, heatmap, KL along the text, per-layer KL
    assert any(m.label == "Mean KL(B‖A) per step" for m in at.metric)
    # the second pair, chosen on the page: here B -> A, so its shift is pair 1's negated
    other = "Other: hub id or local folder…"
    at.selectbox(key="shift_a2").set_value(other).run()
    at.selectbox(key="shift_b2").set_value(other).run()
    at.text_input(key="shift_a2_other").set_value(str(folders[1]))
    at.text_input(key="shift_b2_other").set_value(str(folders[0])).run()
    at.button(key="shift_sim_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    pearson = next(m for m in at.metric if m.label == "Pearson")
    assert float(pearson.value) < -0.9
    assert len(at.get("plotly_chart")) == 6


def test_different_tokenizers_are_explained(folders):
    at = _app(ModelSpec(str(folders[0])), ModelSpec(str(folders[2]))).run()
    assert not at.exception, at.exception
    warning = " ".join(str(w.value) for w in at.warning)
    assert "different tokenizers" in warning and "lens KL needs the same tokenizer" in warning
    at.radio(key="shift__prompts_source").set_value("Typed").run()
    at.text_area(key="shift__prompts_typed").set_value("User: Where does he live?").run()
    at.radio(key="shift_reference").set_value("greedy").run()
    at.number_input(key="shift_n_tokens").set_value(4)
    at.number_input(key="shift_top_n").set_value(10)
    at.button(key="shift_run").click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 3  # no per-layer KL
    assert any("per-layer lens KL needs" in str(e.value) for e in at.info)


def test_a_display_only_change_never_calls_the_engine_and_a_compute_change_does(folders, captured, monkeypatch):
    import streamlit as st

    from components.reports import shift as R

    calls = []
    real = R.compute_shift
    monkeypatch.setattr(R, "compute_shift", lambda *a, **k: calls.append(1) or real(*a, **k))
    st.cache_data.clear()  # an earlier test's cached result would hide the first call
    at = _app(ModelSpec(str(folders[0])), ModelSpec(str(folders[1]))).run()
    at.number_input(key="shift_max_prompts").set_value(2)
    at.button(key="shift_run").click().run()
    assert not at.exception, at.exception
    n = len(calls)
    assert n == 1
    at.number_input(key="shift_columns_shown").set_value(6).run()
    at.selectbox(key="shift_show_prompt").set_value(2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(calls) == n, "a display-only setting recomputed the shift"
    assert len(at.get("plotly_chart")) == 4  # still shown, no Run needed
    assert captured["metadata"]["settings"]["columns_shown"] == 6
    assert captured["metadata"]["settings"]["show_prompt"] == 2
    assert at.query_params["shift.columns_shown"] in ("6", ["6"])
    at.number_input(key="shift_top_n").set_value(12).run()
    assert len(calls) == n and not at.get("plotly_chart")  # a compute setting asks for Run again
    at.button(key="shift_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(calls) > n, "changing top-N did not recompute"
    assert set(captured["tables"]["shift_top_n"]["rank"]) == set(range(1, 13))


def test_a_link_with_settings_opens_the_page_with_them(folders, captured):
    at = _app(ModelSpec(str(folders[0])), ModelSpec(str(folders[1])))
    for k, v in {"shift.top_n": "8", "shift.max_prompts": "2", "shift.columns_shown": "7",
                 "shift.reference": "greedy", "shift.n_tokens": "3"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="shift_top_n").value == 8
    assert at.radio(key="shift_reference").value == "greedy"
    at.button(key="shift_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    meta = captured["metadata"]["settings"]
    assert (meta["top_n"], meta["max_prompts"], meta["columns_shown"], meta["reference"], meta["n_tokens"]) == \
        (8, 2, 7, "greedy", 3)
    steps = captured["tables"]["kl_per_step"]
    assert set(steps["prompt"]) == {0, 1} and steps.groupby("prompt").size().max() <= 3  # 3 greedy tokens of B
    assert set(captured["tables"]["shift_top_n"]["rank"]) == set(range(1, 9))  # the shift really ran with top-8
