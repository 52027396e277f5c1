"""OOD page under AppTest: it runs the study on the demo model, and bad inputs give clear messages, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = "gpt2-world-base"


@pytest.fixture(scope="module", autouse=True)
def _needs_zoo():
    from analysis.loading import zoo_models
    if MODEL not in zoo_models():
        pytest.skip(f"{MODEL} is not in zoo/ yet")


def _page():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/ood.py")
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
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download bundle (zip)" in labels


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
    assert at.selectbox(key="ood_view_set").options == ["all OOD", "father", "mother"]


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
