"""The logit flow page through Streamlit's AppTest: single model, compare A | B with B − A, multi-token target."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import ModelSpec
from analysis.core.paths import zoo_models
from tests.paths import APP

REAL_ZOO = {"gpt2-world-base", "llama-world-base"} <= set(zoo_models())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    """Model names for A and B: the committed demo zoo, or a temporary zoo of tiny models until it exists."""
    if REAL_ZOO:
        return {"env": None, "A": "gpt2-world-base", "B": "llama-world-base", "word": " Fuvaki", "multi": " Paris France"}
    from tests.model_folders import write_model_folder
    root = tmp_path_factory.mktemp("zoo")
    write_model_folder(root / "tiny-gpt2", "gpt2")
    write_model_folder(root / "tiny-llama", "llama")
    return {"env": str(root), "A": "tiny-gpt2", "B": "tiny-llama", "word": "w9", "multi": "w9 w10"}


def _app(zoo: dict, monkeypatch, compare: bool = False) -> AppTest:
    if zoo["env"]:
        monkeypatch.setenv("LOGITSCOPE_ZOO", zoo["env"])
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["logitscope_spec_A"] = ModelSpec(zoo["A"])
    if compare:
        at.session_state["logitscope_use_B"] = True
        at.session_state["logitscope_spec_B"] = ModelSpec(zoo["B"])
    at.run()
    at.switch_page("pages/logit_flow.py").run()
    assert not at.exception, at.exception
    return at


def _typed(at: AppTest, text: str) -> None:
    at.radio(key="logit_flow__prompts_source").set_value("Typed").run()
    at.text_area(key="logit_flow__prompts_typed").set_value(text).run()


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_single_mode_default_two_hop_runs_and_shows_every_view(zoo, monkeypatch):
    at = _app(zoo, monkeypatch)
    assert any("Press Run" in i.value for i in at.info)
    at.number_input(key="flow_max_prompts").set_value(2).run()
    if zoo["env"]:  # tiny word-level tokenizers map every two_hop answer to <unk>: override with real tokens
        at.text_input(key="flow_target").set_value("w9").run()
        at.text_input(key="flow_competitor").set_value("w10").run()
    at.button(key="flow_run").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    # two_hop has targets and competitors: the difference view is offered and chosen by default
    assert at.radio(key="flow_view").value == "difference"
    assert len(at.tabs) >= 7  # flow, grid, layers, heads, per position, target vs competitor, prompt set
    labels = [m.label for m in at.metric]
    assert "Logit difference" in labels
    assert any("Identities hold" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not any("Identity check failed" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) >= 8
    at.radio(key="flow_view").set_value("target").run()
    assert not at.exception and not _errors(at)


def test_compare_mode_shows_a_and_b_and_the_difference(zoo, monkeypatch):
    at = _app(zoo, monkeypatch, compare=True)
    _typed(at, "w5 w6 w7 w8" if zoo["env"] else "The mother of Beibim Kadro lives in")
    at.text_input(key="flow_target").set_value(zoo["word"]).run()
    at.button(key="flow_run").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    heads = " ".join(m.value for m in at.subheader)
    assert "A: " in heads and "B: " in heads
    # the two families tokenize differently or share depth: either the B − A figures or a message saying why not
    charts = at.get("plotly_chart")
    infos = " ".join(i.value for i in at.info)
    assert len(charts) >= 10
    assert "B − A" in infos or len(charts) >= 12


def test_multi_token_target_is_said_on_screen(zoo, monkeypatch):
    at = _app(zoo, monkeypatch)
    _typed(at, "w5 w6 w7 w8" if zoo["env"] else "The mother of Beibim Kadro lives in")
    at.text_input(key="flow_target").set_value(zoo["multi"]).run()
    at.button(key="flow_run").click().run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("first token" in w for w in warnings), warnings
    texts = [t.value for t in at.text]
    assert any("tokens (" in t and "first token" in t for t in texts), texts


def test_competitor_equal_to_target_is_a_clear_error(zoo, monkeypatch):
    at = _app(zoo, monkeypatch)
    _typed(at, "w5 w6 w7 w8" if zoo["env"] else "The mother of Beibim Kadro lives in")
    at.text_input(key="flow_target").set_value(zoo["word"]).run()
    at.text_input(key="flow_competitor").set_value(zoo["word"]).run()
    at.button(key="flow_run").click().run()
    assert not at.exception
    assert any("same token" in e for e in _errors(at)), _errors(at)


def test_a_display_only_change_never_calls_the_engine_and_a_compute_change_does(zoo, monkeypatch):
    """View, threshold, edges and the prompt shown only redraw the report; the target recomputes."""
    import streamlit as st

    import analysis.flow as F  # the package: what components.reports.flow calls

    calls = []
    real = F.logit_flow_set
    monkeypatch.setattr(F, "logit_flow_set", lambda *a, **k: calls.append(1) or real(*a, **k))
    st.cache_data.clear()  # an earlier test's cached result would hide the first call
    at = _app(zoo, monkeypatch)
    _typed(at, "w5 w6 w7 w8\nw4 w5 w6" if zoo["env"] else "The mother of Beibim Kadro lives in\nBraba Kadro lives in")
    at.text_input(key="flow_target").set_value(zoo["word"]).run()
    at.text_input(key="flow_competitor").set_value("w10" if zoo["env"] else " Paris").run()
    at.button(key="flow_run").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    n = len(calls)
    assert n >= 1
    at.radio(key="flow_view").set_value("target").run()
    at.slider(key="flow_threshold").set_value(40).run()
    at.number_input(key="flow_edges").set_value(6).run()
    at.selectbox(key="flow_show_prompt").set_value(2).run()
    assert not at.exception and not _errors(at), _errors(at)
    assert len(calls) == n, "a display-only setting recomputed the logit flow"
    assert at.query_params["flow.edges"] in ("6", ["6"]) and at.query_params["flow.view"] in ("target", ["target"])
    second = "w4 w5 w6" if zoo["env"] else "Braba Kadro lives in"
    assert any(t.value == "Prompt: " + repr(second) for t in at.text), [t.value for t in at.text]
    at.number_input(key="flow_max_prompts").set_value(1).run()
    at.button(key="flow_run").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert len(calls) > n, "changing the number of prompts did not recompute"


def test_a_compute_setting_the_url_carries_is_not_reverted_by_the_link(zoo, monkeypatch):
    at = _app(zoo, monkeypatch)
    _typed(at, "w5 w6 w7 w8" if zoo["env"] else "The mother of Beibim Kadro lives in")
    at.text_input(key="flow_target").set_value(zoo["word"]).run()
    at.text_input(key="flow_competitor").set_value("w10" if zoo["env"] else " Paris").run()
    at.button(key="flow_run").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    at.text_input(key="flow_competitor").set_value("").run()  # the page stops: "Press Run"
    at.button(key="flow_run").click().run()
    assert at.text_input(key="flow_competitor").value == ""
    assert "Competitor" not in " ".join(t.value for t in at.text)


def test_a_link_with_settings_opens_the_page_with_them(zoo, monkeypatch):
    import components.export_ui as export_ui

    got: dict = {}
    monkeypatch.setattr(export_ui, "export_bundle",
                        lambda figures, tables, metadata, name, key, **kw: got.update(metadata=dict(metadata)))
    if zoo["env"]:
        monkeypatch.setenv("LOGITSCOPE_ZOO", zoo["env"])
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["logitscope_spec_A"] = ModelSpec(zoo["A"])
    at.run()
    at.switch_page("pages/logit_flow.py")
    word = zoo["word"]  # with its leading space
    for k, v in {"flow.max_prompts": "2", "flow.target": word, "flow.view": "target", "flow.edges": "5",
                 "flow.threshold": "30"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception and not any(w.value.startswith("Link:") for w in at.warning)
    assert at.number_input(key="flow_max_prompts").value == 2
    assert at.text_input(key="flow_target").value == word
    at.button(key="flow_run").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert at.radio(key="flow_view").value == "target" and at.slider(key="flow_threshold").value == 30
    meta = got["metadata"]["settings"]
    assert meta["max_prompts"] == 2 and meta["n_prompts"] == 2 and meta["target"] == word
    assert meta["view"] == "target" and meta["edges"] == 5 and meta["threshold"] == 30 and meta["show_prompt"] == 1


def test_a_bad_link_value_is_reported_and_not_applied(zoo, monkeypatch):
    if zoo["env"]:
        monkeypatch.setenv("LOGITSCOPE_ZOO", zoo["env"])
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["logitscope_spec_A"] = ModelSpec(zoo["A"])
    at.run()
    at.switch_page("pages/logit_flow.py")
    at.query_params["flow.max_prompts"] = "500"
    at.run()
    assert not at.exception
    assert any(w.value.startswith("Link:") and "max_prompts" in w.value for w in at.warning)
    assert at.number_input(key="flow_max_prompts").value == 8
