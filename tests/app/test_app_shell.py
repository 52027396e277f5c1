"""The app shell through Streamlit's AppTest: starts on the demo model, switches A, adds B, survives a bad id."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import DEFAULT_MODEL
from analysis.core.paths import zoo_models
from tests.paths import APP


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def successes(at: AppTest) -> list[str]:
    return [s.value for s in at.success]


def test_the_zoo_ships_four_demo_checkpoints():
    assert {"gpt2-world-base", "gpt2-world-tuned", "llama-world-base", "llama-world-tuned"} <= set(zoo_models())


def test_app_starts_on_the_demo_base_model_with_a_passing_self_check(app):
    assert app.selectbox(key="model_choice_A").value == DEFAULT_MODEL
    assert any(DEFAULT_MODEL in s.value for s in app.subheader)
    assert any("Self-check passed" in s for s in successes(app))
    labels = {m.label: m.value for m in app.metric}
    assert labels["Layers"] and int(labels["Layers"]) >= 1
    assert not app.error


def test_switching_model_a_loads_the_other_family(app):
    app.selectbox(key="model_choice_A").set_value("llama-world-base")
    app.button[0].click().run()
    assert not app.exception
    assert any("llama-world-base" in s.value for s in app.subheader)
    assert {m.label: m.value for m in app.metric}["Final norm"] == "rmsnorm"


def test_adding_checkpoint_b_shows_two_cards(app):
    app.toggle(key="logitscope_use_B").set_value(True).run()
    assert not app.exception
    heads = [s.value for s in app.subheader]
    assert any(h.startswith("Checkpoint A") for h in heads) and any(h.startswith("Checkpoint B") for h in heads)
    assert any("tuned" in h for h in heads if h.startswith("Checkpoint B"))
    assert len([s for s in successes(app) if "Self-check passed" in s]) == 2


def test_a_bad_model_id_shows_an_error_and_the_app_keeps_working(app):
    app.selectbox(key="model_choice_A").set_value("Other: hub id or local folder…")
    app.text_input(key="model_other_A").set_value("/no/such/model/folder")
    app.button[0].click().run()
    assert not app.exception
    assert any("No such folder" in e.value for e in app.error)
    # and it recovers once a good model is picked again
    app.selectbox(key="model_choice_A").set_value(DEFAULT_MODEL)
    app.button[0].click().run()
    assert not app.exception and not app.error
    assert any("Self-check passed" in s for s in successes(app))


def test_an_offline_hub_id_says_to_pass_a_local_folder(app):
    app.selectbox(key="model_choice_A").set_value("Other: hub id or local folder…")
    app.text_input(key="model_other_A").set_value("some-org/not-cached-model")
    app.button[0].click().run()
    assert not app.exception
    assert any("local folder" in e.value for e in app.error)
