"""Notes collapse (issue 13): per-prompt notes of one kind become one note naming every affected prompt, the lens
page shows one warning for a set of multi-token targets (not one per prompt), and counts agree in number."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.wording import plural, verb
from components.notes import collapse_notes
from components.reports import report_metadata
from tests.paths import APP


def multi(i: int, text: str = " Tokyo Tower", scope: str = "") -> str:
    first, rest = text.split()[0], text.split()[1]
    return (f"{scope}Prompt {i}: The target {text!r} is 2 tokens ({' ' + first!r} | {' ' + rest!r}); its first "
            f"token {' ' + first!r} is used.")


def test_eight_multi_token_notes_become_one_note_naming_all_eight_prompts():
    notes = [multi(i, f" Tokyo Tower{i}") for i in range(1, 9)]
    out = collapse_notes(notes)
    assert len(out) == 1, out
    assert out[0].startswith("8 prompts have a multi-token target; each uses its first token: ")
    for i in range(1, 9):  # every prompt, its target and its pieces are named
        assert f"prompt {i} ' Tokyo Tower{i}' = ' Tokyo' | ' Tower{i}'" in out[0]
    assert "more" not in out[0]


def test_a_long_list_stops_at_ten_and_counts_the_rest():
    out = collapse_notes([multi(i) for i in range(1, 16)])
    assert len(out) == 1 and out[0].startswith("15 prompts have")
    assert "prompt 10 " in out[0] and "prompt 11 " not in out[0] and out[0].endswith("... and 5 more.")


def test_other_notes_stay_as_they_are_and_the_order_is_stable():
    notes = ["Set note first.", multi(2), "A, prompt 1: Target = the model's top-1 prediction ' the'.", multi(5),
             "A, prompt 4: Target = the model's top-1 prediction ' a'.", "1 of 3 prompts has no target.", multi(7),
             "Set note first."]
    out = collapse_notes(notes)
    assert out == ["Set note first.",
                   "3 prompts have a multi-token target; each uses its first token: prompt 2 ' Tokyo Tower' = "
                   "' Tokyo' | ' Tower'; prompt 5 ' Tokyo Tower' = ' Tokyo' | ' Tower'; prompt 7 ' Tokyo Tower' = "
                   "' Tokyo' | ' Tower'.",
                   "A, 2 prompts have no target; each uses the model's top-1 prediction: prompt 1 ' the'; "
                   "prompt 4 ' a'.",
                   "1 of 3 prompts has no target."]


def test_scopes_kinds_and_single_notes_are_kept_apart():
    notes = [multi(1, scope="A: "), multi(2, scope="A: "), multi(1, scope="B: "), multi(3, scope="A, "),
             "A, prompt 2: The same sentence.", "A, prompt 6: The same sentence.",
             "Prompt 1: The competitor ' New York' is 2 tokens (' New' | ' York'); its first token ' New' is used."]
    out = collapse_notes(notes)
    assert out[0].startswith("A: 2 prompts have a multi-token target")
    assert out[1] == multi(1, scope="B: ")  # a group of one keeps its own wording
    assert out[2] == multi(3, scope="A, ")
    assert out[3] == "A, prompts 2, 6: The same sentence."
    assert out[4] == notes[-1]
    assert collapse_notes(out) == out  # collapsing twice changes nothing
    assert collapse_notes([]) == []


def test_metadata_records_the_collapsed_notes():
    meta = report_metadata("lens", {}, {}, notes=[multi(i, scope="A: ") for i in range(1, 4)] + ["other"])
    assert len(meta["notes"]) == 2 and meta["notes"][0].startswith("A: 3 prompts have a multi-token target")


@pytest.mark.parametrize("n, text", [(0, "0 prompts"), (1, "1 prompt"), (2, "2 prompts"), (1500, "1,500 prompts")])
def test_plural_agrees_with_the_count(n, text):
    assert plural(n, "prompt") == text
    assert verb(n) == ("has" if n == 1 else "have")


def test_the_lens_page_shows_one_warning_for_a_set_of_multi_token_targets():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/logit_lens.py")
    at.run()
    prompts = ["The capital of France is", "The capital of Japan is", "The capital of Italy is",
               "The tallest tower is", "A famous landmark is"]
    at.text_area(key="lens__prompts_typed").set_value("\n".join(prompts)).run()
    at.text_input(key="lens_target_text").set_value(" Tokyo Tower").run()  # 2+ tokens in the demo tokenizer
    at.button(key="lens_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = [w.value.replace("\\", "") for w in at.warning]  # md_literal escapes markdown: read the plain text
    multi_token = [w for w in shown if "Tokyo Tower" in w]
    assert len(multi_token) == 1, multi_token  # one warning, not one per prompt
    assert "5 prompts have a multi-token target" in multi_token[0]
    for i in range(1, 6):
        assert f"prompt {i} " in multi_token[0]
    assert "5 prompts" in [c.value for c in at.caption]
