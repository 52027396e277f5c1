"""OOD page under AppTest: it runs the study on the demo model, and bad inputs give clear messages, no traceback."""
from __future__ import annotations

import pytest

from tests.paths import REPO

MODEL = "gpt2-world-base"


@pytest.fixture(scope="module", autouse=True)
def _needs_zoo():
    from analysis.core.paths import zoo_models
    if MODEL not in zoo_models():
        pytest.skip(f"{MODEL} is not in zoo/ yet")


def _page(query: dict | None = None):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/ood.py")
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    return at


def _errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return " ".join(e.value for e in at.error)


def _typed_id(at, text: str) -> None:
    at.radio(key="ood_id__prompts_source").set_value("Typed").run()
    at.text_area(key="ood_id__prompts_typed").set_value(text).run()


def test_ood_set_of_one_prompt_gives_a_clear_message():
    at = _page()
    at.multiselect(key="ood_ood_builtin").set_value([]).run()
    at.text_area(key="ood_ood_typed").set_value("zq xv kk").run()
    msg = _errors(at)
    assert "OOD set 'typed' has 1 prompt" in msg and "at least 2" in msg


def test_too_few_id_prompts_give_a_clear_message():
    at = _page()
    _typed_id(at, "Braba Kadro lives in\nBraba Kadro works as a\nBraba Kadro lives in")
    msg = _errors(at)
    assert "ID set has 2 distinct prompt" in msg and "at least 4" in msg


def test_no_ood_set_gives_a_clear_message():
    at = _page()
    at.multiselect(key="ood_ood_builtin").set_value([]).run()
    assert "at least one OOD set" in _errors(at)


def test_page_runs_the_study_on_small_sets_and_offers_the_bundle():
    at = _page()
    _typed_id(at, "\n".join(f"{n} lives in" for n in ["Braba Kadro", "Fate Trukeir", "Tueml Bulrrbo", "Sirba Impai",
                                                      "Mustre Fianfa", "Kado Lin", "Pera Voss", "Tila Run"]))
    at.multiselect(key="ood_ood_builtin").set_value(["ood_random_chars"]).run()
    at.button(key="ood_run").click().run()
    assert not _errors(at)
    assert any("Best separation" in m.label for m in at.metric)
    assert len(at.get("plotly_chart")) >= 5
    assert any(b.label == "Prepare bundle (zip)" for b in at.button)


def test_group_column_split_and_compare_mode():
    at = _page()
    at.session_state["logitscope_use_B"] = True  # the sidebar toggle (AppTest does not keep it between runs)
    at.toggle(key="ood_use_groups").set_value(True).run()
    at.session_state["logitscope_use_B"] = True
    at.selectbox(key="ood_id_group").set_value("child").run()
    at.session_state["logitscope_use_B"] = True
    at.button(key="ood_run").click().run()
    assert not _errors(at)
    heads = [h.value for h in at.subheader]
    assert "A vs B" in heads and any(h.startswith("A: ") for h in heads) and any(h.startswith("B: ") for h in heads)
    assert at.selectbox(key="ood_view").options == ["all OOD", "father", "mother"]


def test_blood_option_adds_the_score():
    at = _page()
    _typed_id(at, "\n".join(f"{n} works as a" for n in ["Braba Kadro", "Fate Trukeir", "Tueml Bulrrbo", "Sirba Impai",
                                                        "Mustre Fianfa", "Kado Lin"]))
    at.multiselect(key="ood_ood_builtin").set_value([]).run()
    at.text_area(key="ood_ood_typed").set_value("zq xv kk\n12 + 4 = 16\n%%% ###").run()
    at.checkbox(key="ood_blood").check().run()
    at.number_input(key="ood_blood_draws").set_value(2).run()
    at.button(key="ood_run").click().run()
    assert not _errors(at)
    assert "BLOOD" in at.selectbox(key="ood_score").options


NAMES = ["Braba Kadro", "Fate Trukeir", "Tueml Bulrrbo", "Sirba Impai", "Mustre Fianfa", "Kado Lin", "Pera Voss",
         "Tila Run"]


def _small_study(at) -> None:
    """Typed ID prompts and one small built-in OOD set (quick), then Run."""
    _typed_id(at, "\n".join(f"{n} lives in" for n in NAMES))
    at.multiselect(key="ood_ood_builtin").set_value(["ood_random_chars"]).run()
    at.button(key="ood_run").click().run()
    assert not _errors(at)


def test_view_settings_never_refit_and_study_settings_never_reextract(monkeypatch, captured):
    """The views (metric, score, layer, map) reuse the study; a study setting refits it on the cached features;
    only a setting the features read (the batch size) extracts them again."""
    import streamlit as st

    import analysis.ood as O  # the package: what components.reports.ood calls

    calls = {"features": 0, "study": 0}
    real_f, real_s = O.extract_features, O.study_from_features

    def features(*a, **k):
        calls["features"] += 1
        return real_f(*a, **k)

    def study(*a, **k):
        calls["study"] += 1
        return real_s(*a, **k)

    monkeypatch.setattr(O, "extract_features", features)
    monkeypatch.setattr(O, "study_from_features", study)
    st.cache_data.clear()  # an earlier test's cached features would hide the first calls
    at = _page()
    _small_study(at)
    assert calls == {"features": 2, "study": 1}, calls
    at.selectbox(key="ood_metric").set_value("fpr95_id").run()
    at.selectbox(key="ood_layer").set_value("1").run()
    at.selectbox(key="ood_score").set_value("MSP").run()
    at.radio(key="ood_fit_on").set_value("all").run()
    at.radio(key="ood_map_pooling").set_value("mean").run()
    at.number_input(key="ood_random_state").set_value(3).run()
    assert not _errors(at)
    assert calls == {"features": 2, "study": 1}, f"a view setting recomputed: {calls}"
    assert captured["metadata"]["settings"]["metric"] == "fpr95_id"
    assert at.query_params["ood.metric"] in ("fpr95_id", ["fpr95_id"])
    at.number_input(key="ood_knn_k").set_value(2).run()
    at.button(key="ood_run").click().run()
    assert not _errors(at)
    assert calls == {"features": 2, "study": 2}, f"KNN's k should refit the study on cached features: {calls}"
    assert captured["metadata"]["settings"]["knn_k"] == 2
    at.number_input(key="ood_batch_size").set_value(4).run()
    at.button(key="ood_run").click().run()
    assert not _errors(at)
    assert calls == {"features": 4, "study": 3}, calls


def test_a_link_with_settings_opens_the_page_with_them(captured):
    at = _page({"ood.knn_k": "3", "ood.poolings": "mean", "ood.metric": "aupr_out", "ood.layer": "1",
                "ood.fit_fraction": "0.6", "ood.bogus": "1"})
    assert any("unknown setting 'bogus'" in w.value for w in at.warning)
    assert at.number_input(key="ood_knn_k").value == 3
    assert at.slider(key="ood_fit_fraction").value == 0.6
    assert at.multiselect(key="ood_poolings").value == ["mean"]
    _small_study(at)
    assert at.selectbox(key="ood_metric").value == "aupr_out"
    assert at.selectbox(key="ood_layer").value == "1"
    meta = captured["metadata"]["settings"]
    assert meta["knn_k"] == 3 and meta["poolings"] == ["mean"] and meta["metric"] == "aupr_out"
    assert meta["layer"] == "1" and meta["fit_fraction"] == 0.6
    scores = set(captured["tables"]["metrics_all_A"]["score"])
    assert "Mahalanobis·mean" in scores and "Mahalanobis·last" not in scores  # the study ran with mean pooling only
