"""The confidence-neurons page through Streamlit's AppTest on the demo zoo: scan verdict, ablation, induction,
compare, bad inputs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/confidence_neurons.py"


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=240)
    app.run()
    app.switch_page(PAGE)
    app.run()
    assert not app.exception, app.exception
    return app


def _errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def test_scan_states_what_it_found_and_offers_exports(at):
    assert not _errors(at), _errors(at)
    verdicts = [m.value for m in list(at.info) + list(at.success)]
    assert any("stands out" in v or "stand out" in v for v in verdicts), verdicts
    assert any("median" in v for v in verdicts)
    assert len(at.get("plotly_chart")) >= 4  # norm vs rho, norm vs LogitVar, spectrum, frequency
    assert any(b.proto.label == "Download bundle (zip)" for b in at.get("download_button"))


def test_ablation_runs_with_default_candidates(at):
    assert re.fullmatch(r"L\d+\.N\d+(, L\d+\.N\d+)*", at.text_input(key="neurons_ids").value)
    at.number_input(key="neurons_max_eval").set_value(4)
    at.number_input(key="neurons_n_random").set_value(3)
    at.button(key="neurons_run_abl").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert any("mean|ΔL| TE" in i.value for i in at.info)
    assert len(at.dataframe) >= 1


def test_neuron_out_of_range_gives_a_clear_message(at):
    at.text_input(key="neurons_ids").set_value("0.99999")
    at.button(key="neurons_run_abl").click().run()
    assert not at.exception, at.exception
    assert any("out of range" in e and "L0.N99999" in e for e in _errors(at)), _errors(at)  # old input form
    at.text_input(key="neurons_ids").set_value("banana")
    at.button(key="neurons_run_abl").click().run()
    assert any("not a neuron id" in e for e in _errors(at)), _errors(at)


def test_empty_reference_set_gives_a_clear_message(at):
    at.radio(key="neurons_ref__prompts_source").set_value("Typed").run()
    at.text_area(key="neurons_ref__prompts_typed").set_value("   ").run()
    assert not at.exception, at.exception
    assert any("reference set is empty" in e for e in _errors(at)), _errors(at)
    at.selectbox(key="neurons_mode").set_value("mean")
    at.button(key="neurons_run_abl").click().run()
    assert any("mean and clipped-mean ablation need" in e for e in _errors(at)), _errors(at)


def test_induction_random_tokens_and_compare_mode(at):
    at.session_state["logitscope_use_B"] = True  # the sidebar toggle
    at.run()
    assert not at.exception, at.exception
    assert any("A vs B" in s.value for s in at.subheader), [s.value for s in at.subheader]
    at.radio(key="neurons_ind_src").set_value("random").run()
    at.number_input(key="neurons_ind_n").set_value(3)
    at.number_input(key="neurons_ind_len").set_value(8)
    at.number_input(key="neurons_ind_sets").set_value(1)
    at.session_state["logitscope_use_B"] = True  # AppTest does not keep the sidebar toggle between runs
    at.button(key="neurons_run_ind").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert sum("Mean loss" in i.value for i in at.info) == 2, [i.value for i in at.info] + [s.value for s in at.subheader]
    assert any("first position is left out of the selection and the activation scale" in c.value for c in at.caption)
    assert all("first position is left out" in i.value for i in at.info if "Mean loss" in i.value)
