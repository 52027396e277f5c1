"""The confidence-neurons page through Streamlit's AppTest on the demo zoo: scan verdict, ablation, induction,
compare, bad inputs."""
from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.paths import APP

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
    assert any(b.label == "Prepare bundle (zip)" for b in at.button)


def test_ablation_runs_with_default_candidates(at):
    assert re.fullmatch(r"L\d+\.N\d+(, L\d+\.N\d+)*", at.text_input(key="neurons_neurons").value)
    at.number_input(key="neurons_max_prompts").set_value(4)
    at.number_input(key="neurons_n_random").set_value(3)
    at.button(key="neurons_run").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert any("mean|ΔL| TE" in i.value for i in at.info)
    assert len(at.dataframe) >= 1


def test_neuron_out_of_range_gives_a_clear_message(at):
    at.text_input(key="neurons_neurons").set_value("0.99999")
    at.button(key="neurons_run").click().run()
    assert not at.exception, at.exception
    assert any("out of range" in e and "L0.N99999" in e for e in _errors(at)), _errors(at)  # old input form
    at.text_input(key="neurons_neurons").set_value("banana")
    at.button(key="neurons_run").click().run()
    assert any("not a neuron id" in e for e in _errors(at)), _errors(at)


def test_empty_reference_set_gives_a_clear_message(at):
    at.radio(key="neurons_ref__prompts_source").set_value("Typed").run()
    at.text_area(key="neurons_ref__prompts_typed").set_value("   ").run()
    assert not at.exception, at.exception
    assert any("reference set is empty" in e for e in _errors(at)), _errors(at)
    at.selectbox(key="neurons_mode").set_value("mean")
    at.button(key="neurons_run").click().run()
    assert any("mean and clipped-mean ablation need" in e for e in _errors(at)), _errors(at)


def test_induction_random_tokens_and_compare_mode(at):
    at.session_state["logitscope_use_B"] = True  # the sidebar toggle
    at.run()
    assert not at.exception, at.exception
    assert any("A vs B" in s.value for s in at.subheader), [s.value for s in at.subheader]
    at.radio(key="neurons_induction_source").set_value("random").run()
    at.number_input(key="neurons_sequences").set_value(3)
    at.number_input(key="neurons_length").set_value(8)
    at.number_input(key="neurons_random_sets").set_value(1)
    at.session_state["logitscope_use_B"] = True  # AppTest does not keep the sidebar toggle between runs
    at.button(key="neurons_run_ind").click().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert sum("Mean loss" in i.value for i in at.info) == 2, [i.value for i in at.info] + [s.value for s in at.subheader]
    assert any("first position is left out of the selection and the activation scale" in c.value for c in at.caption)
    assert all("first position is left out" in i.value for i in at.info if "Mean loss" in i.value)


def test_a_display_only_change_never_calls_the_engine_and_a_compute_change_does(monkeypatch, captured):
    """The spectrum's neuron only redraws; the induction's settings never rescan; processing rescans and asks for
    the ablation again (its default neurons and means depend on the scan)."""
    import streamlit as st

    import analysis.neurons as NR  # the package: what components.reports.neurons calls

    calls = {"scan": 0, "ablate": 0}

    def spy(name, real):
        def wrapped(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return wrapped

    monkeypatch.setattr(NR, "scan_entropy", spy("scan", NR.scan_entropy))
    monkeypatch.setattr(NR, "ablate", spy("ablate", NR.ablate))
    st.cache_data.clear()  # an earlier test's cached result would hide the first call
    app = AppTest.from_file(APP, default_timeout=240)
    app.run()
    app.switch_page(PAGE)
    app.run()
    assert calls["scan"] >= 1
    app.number_input(key="neurons_max_prompts").set_value(2)
    app.number_input(key="neurons_n_random").set_value(1)
    app.button(key="neurons_run").click().run()
    assert not app.exception, app.exception
    assert calls["ablate"] == 1 and "te_de_boxes_A" in captured["figures"]
    scans = calls["scan"]
    spectrum = captured["figures"]["spectrum_A"].to_json()

    app.selectbox(key="neurons_spectrum_a").select_index(1).run()
    app.number_input(key="neurons_random_sets").set_value(1).run()  # the induction's part only
    assert not app.exception and not _errors(app), _errors(app)
    assert calls == {"scan": scans, "ablate": 1}, "a display-only or induction setting recomputed the scan/ablation"
    assert captured["figures"]["spectrum_A"].to_json() != spectrum and "te_de_boxes_A" in captured["figures"]
    assert "neurons.spectrum_a" in app.query_params
    assert captured["metadata"]["settings"]["spectrum_a"] == app.selectbox(key="neurons_spectrum_a").value

    app.checkbox(key="neurons_processing").uncheck().run()
    assert calls["scan"] > scans, "turning paper processing off did not rescan"
    assert "te_de_boxes_A" not in captured["figures"]  # the ablation waits for Run with the new scan
    assert any("Press Run ablation" in i.value for i in app.info)
    app.button(key="neurons_run").click().run()
    assert calls["ablate"] == 2 and captured["metadata"]["settings"]["processing"] is False


def test_a_link_with_settings_opens_the_page_with_them(captured):
    app = AppTest.from_file(APP, default_timeout=240)
    app.run()
    app.switch_page(PAGE)
    for k, v in {"neurons.mode": "zero", "neurons.k": "2", "neurons.max_prompts": "2", "neurons.n_random": "1",
                 "neurons.as_set": "false", "neurons.neurons": "L0.N3", "neurons.sequences": "500",
                 "neurons_abl.run": "1"}.items():  # the ablation had run: it runs again without a click
        app.query_params[k] = v
    app.run()
    assert not app.exception, app.exception
    assert app.selectbox(key="neurons_mode").value == "zero"
    assert app.number_input(key="neurons_k").value == 2
    assert app.text_input(key="neurons_neurons").value == "L0.N3"  # not replaced by the scan's default
    assert app.number_input(key="neurons_sequences").value == 16  # out of bounds: not applied, and said so
    assert any("sequences" in w.value for w in app.warning), [w.value for w in app.warning]
    assert not _errors(app), _errors(app)
    meta = captured["metadata"]["settings"]
    assert meta["mode"] == "zero" and meta["k"] == 2 and meta["k_used"] == {"A": 2} and meta["as_set"] is False
    summ = captured["tables"]["ablation_summary_A"]
    assert meta["neurons"] == "L0.N3" and list(summ["kind"]) == ["neuron", "random"]  # no set: as_set is off
    assert summ["unit"][0] == "L0.N3"
    assert "neurons_ind.run" not in app.query_params  # the induction study has not run
