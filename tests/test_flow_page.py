"""The logit flow page through Streamlit's AppTest: single model, compare A | B with B − A, multi-token target."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.loading import ModelSpec, zoo_models

APP = str(Path(__file__).resolve().parent.parent / "app.py")
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
    at.number_input(key="flow_n").set_value(2).run()
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
