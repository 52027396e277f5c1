"""The logit lens page through Streamlit's AppTest on the demo zoo: typed prompt, built-in set, parsed upload,
compare mode, bad targets."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.prompts import load_builtin, parse_prompt_file
from tests.paths import APP

PAGE = "pages/logit_lens.py"


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180)
    app.run()
    app.switch_page(PAGE)
    app.run()
    assert not app.exception, app.exception
    return app


def run_lens(app: AppTest) -> AppTest:
    app.button(key="lens_run").click().run()
    assert not app.exception, app.exception
    return app


def charts(app: AppTest) -> list:
    return app.get("plotly_chart")


def test_typed_default_prompt_runs_and_shows_every_view(at):
    assert at.text_area(key="lens__prompts_typed").value == load_builtin("facts").rows[0].prompt
    assert any("Press Run" in i.value for i in at.info)
    run_lens(at)
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) >= 4  # heatmap, target lines, mean KL, decision depth
    assert len(at.dataframe) >= 1
    assert at.button(key="lens_bundle-prepare").label == "Prepare bundle (zip)"
    assert not any(b.proto.label == "Download bundle (zip)" for b in at.get("download_button"))


def test_colour_metric_and_target_modes_switch_without_errors(at):
    run_lens(at)
    for metric in ("entropy", "kl", "log_rank"):
        at.selectbox(key="lens_colour").set_value(metric).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    at.selectbox(key="lens_target").set_value("next_token")
    run_lens(at)
    assert not at.error, [e.value for e in at.error]
    at.selectbox(key="lens_target").set_value("none")
    run_lens(at)
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) >= 3  # no target view without a target


def test_builtin_set_runs_with_its_own_targets(at):
    at.radio(key="lens__prompts_source").set_value("Built-in").run()
    at.selectbox(key="lens__prompts_builtin").set_value("changed_facts").run()
    at.text_input(key="lens_target_text").set_value("").run()  # the set's own targets are used
    run_lens(at)
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="lens_show_prompt").options[0].startswith("1:")
    at.selectbox(key="lens_show_prompt").set_value(3).run()
    assert not at.exception and not at.error
    assert len(charts(at)) >= 4


def test_an_uploaded_file_parses_into_the_same_set_the_page_renders(at, repo_root):
    """AppTest cannot upload: the upload path is parse_prompt_file on the bytes, which gives the very set
    (same content hash) that the built-in path feeds the page; the page renders that set above."""
    data = (repo_root / "data" / "prompts" / "changed_facts.jsonl").read_bytes()
    uploaded = parse_prompt_file("my_facts.jsonl", data)
    assert uploaded.sha256 == load_builtin("changed_facts").sha256
    at.radio(key="lens__prompts_source").set_value("Upload").run()
    assert not at.exception and not at.error  # nothing uploaded yet: a caption, no crash
    at.radio(key="lens__prompts_source").set_value("Built-in").run()
    at.selectbox(key="lens__prompts_builtin").set_value("changed_facts").run()
    run_lens(at)
    assert len(charts(at)) >= 4 and not at.error


def test_compare_mode_shows_both_models_and_kl_between_them(at):
    at.session_state["logitscope_use_B"] = True  # the sidebar toggle (AppTest does not list sidebar widgets here)
    at.run()
    run_lens(at)
    assert not at.error, [e.value for e in at.error]
    heads = [s.value for s in at.subheader]
    assert any(h.startswith("A:") for h in heads) and any(h.startswith("B:") for h in heads)
    assert "A vs B on identical tokens" in heads
    assert len(charts(at)) >= 8  # 2 x (heatmap, target) + mean KL + depth + KL heatmap + KL mean


@pytest.mark.parametrize("bad, message", [("", "target is empty"), ("#99999999", "out of range")])
def test_a_bad_target_shows_a_clear_error(at, bad, message):
    at.selectbox(key="lens_target").set_value("text")
    at.text_input(key="lens_target_text").set_value(bad)
    run_lens(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not charts(at)


def test_a_note_quoting_the_target_shows_it_literally_not_as_markdown(at):
    """The multi-token-target note quotes user text: links, images and emphasis must stay literal."""
    hostile = " **bold** [link](http://example.invalid) ![img](http://example.invalid/x.png)"
    at.selectbox(key="lens_target").set_value("text")
    at.text_input(key="lens_target_text").set_value(hostile)
    run_lens(at)
    notes = [w.value for w in at.warning if "token" in w.value]
    assert notes, [w.value for w in at.warning]
    assert all("\\*\\*bold\\*\\*" in n and "\\[link\\]\\(" in n and "\\!\\[img\\]" in n for n in notes), notes


def test_md_literal_escapes_every_markdown_special_and_keeps_the_text():
    from components.charts.text import md_literal
    text = "a*b_c`d[e](f)!g#h<i>j|k~l$m:n\\o+p-q.r{s}"
    out = md_literal(text)
    assert out.replace("\\", "") == text.replace("\\", "")
    for ch in "*_`[]()!#<>|~$:{}+-.":
        assert f"\\{ch}" in out and all(out[i - 1] == "\\" for i, c in enumerate(out) if c == ch)


def test_the_bundle_is_prepared_once_then_a_static_download_until_the_results_change(at, monkeypatch):
    """Two-step bundle: Prepare builds the zip once; the download then serves those bytes (static, so a click
    during a rerun still arrives) across reruns that show the same results; a new result asks to prepare again."""
    import components.exporting as exporting

    builds = []
    real = exporting.build_bundle
    monkeypatch.setattr(exporting, "build_bundle", lambda *a, **k: builds.append(1) or real(a[0], a[1], a[2], ("html",)))
    run_lens(at)
    at.button(key="lens_bundle-prepare").click().run()
    assert not at.exception and len(builds) == 1
    (button,) = [b for b in at.get("download_button") if b.proto.label == "Download bundle (zip)"]
    at.selectbox(key="lens_colour").set_value("entropy").run()  # a display change: another figure, another bundle
    assert at.button(key="lens_bundle-prepare").label == "Prepare bundle (zip)"
    at.selectbox(key="lens_colour").set_value("probability").run()  # back: the zip prepared for this view is kept
    assert len(builds) == 1 and any(b.proto.label == "Download bundle (zip)" for b in at.get("download_button"))
    at.selectbox(key="lens_colour").set_value("entropy").run()
    at.button(key="lens_bundle-prepare").click().run()
    assert len(builds) == 2
    at.run()  # a rerun with the same results keeps the prepared zip (no rebuild, same download)
    assert len(builds) == 2 and any(b.proto.label == "Download bundle (zip)" for b in at.get("download_button"))
    assert button.proto.label == "Download bundle (zip)"
