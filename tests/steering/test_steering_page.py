"""The steering page through Streamlit's AppTest: build, monitor, steer, drift, and clear messages for bad inputs.

Runs on the demo zoo when it is there; otherwise on a stand-in zoo of tiny random folders (same names) so the
page wiring is still exercised.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import REPO

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

NEEDED = ("gpt2-world-base", "gpt2-world-tuned")


def standin_folder(path: Path, seed: int) -> None:
    """A tiny random GPT-2 with a word-level tokenizer over the words of the built-in persona and fact sets."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from analysis.models.tiny import tiny_config
    from analysis.prompts import load_builtin
    words = ["<pad>", "<bos>", "<eos>", "<unk>"]
    for name in ("persona_pairs", "persona_eval", "facts"):
        for r in load_builtin(name).rows:
            for text in (r.prompt, r.response or "", r.target or "", r.competitor or ""):
                words += [w for w in text.split() if w not in words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=128)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab=len(words), ctx=128))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def zoo_env(tmp_path_factory):
    from analysis.core.paths import zoo_models
    if set(NEEDED) <= set(zoo_models()):
        yield None
        return
    root = tmp_path_factory.mktemp("zoo")
    for seed, name in enumerate(NEEDED):
        standin_folder(root / name, seed)
    mp = pytest.MonkeyPatch()
    mp.setenv("LOGITSCOPE_ZOO", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def at(zoo_env):
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    app.switch_page("pages/steering.py").run()
    assert not app.exception, app.exception
    app.button(key="steer_build_btn").click().run()
    assert not app.exception, app.exception
    return app


def errors(app) -> list[str]:
    return [e.value for e in app.error]


def charts(app) -> int:
    return len(app.get("plotly_chart"))


def test_build_shows_separability_and_a_save_button(at):
    assert not errors(at)
    assert any("best layer by held-out AUROC" in s.value for s in at.success)
    assert charts(at) >= 2  # separability line + projection histogram
    assert "None" not in [m.value.strip() for m in at.markdown]  # no value printed by Streamlit's magic


def test_the_page_has_no_bare_expression_streamlit_would_print():
    """Streamlit's magic writes every bare non-call expression (e.g. `x.append(y) if c else None` prints None)."""
    import ast

    tree = ast.parse((REPO / "pages" / "steering.py").read_text(encoding="utf-8"))
    bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Call)
            and not (isinstance(n.value, ast.Constant) and isinstance(n.value.value, str))]
    assert bare == []


def test_every_compute_setting_is_in_the_cache_key_of_a_part():
    from components.reports import steering as R
    from components.settings import compute_key, fields_of

    in_parts = {name for names in R.PART_FIELDS.values() for name in names}
    assert {name for name, _ in compute_key(R.SteerSettings())} - in_parts == {"parts"}
    display = {f.name for f in fields_of(R.SteerSettings) if f.spec.display}
    assert display == {"hist_layer", "monitor_layer"} and not display & in_parts


def test_the_default_layer_says_why_and_every_layer_field_starts_there(at):
    import re

    from analysis.steering import default_window
    why = [c.value.replace("\\", "") for c in at.caption]  # without md_literal's escapes
    why = [c for c in why if "(default):" in c]
    assert len(why) == 1, [c.value for c in at.caption]
    text = why[0]
    m = re.search(r"Layer (\d+) \(default\): best held-out AUROC [\d.]+ among layers? (\d+)(?:–(\d+))?", text)
    assert m, text
    layer, lo, hi = int(m[1]), int(m[2]), int(m[3] or m[2])
    L = int(re.search(r"Rule \(L = (\d+)\)", text)[1])
    assert (lo, hi) == default_window(L) and lo <= layer <= hi
    assert "middle" in text
    assert at.select_slider(key="steer_hist_layer").value == layer
    assert at.number_input(key="steer_layer").value == layer
    assert at.number_input(key="steer_flag_layer").value == layer
    assert any("**Default layer**" in m.value and "3L/4" in m.value for m in at.markdown)  # Definitions: the rule


def test_the_steer_tab_defaults_come_from_the_model_and_the_contrast_set(at):
    from analysis.models.defaults import DEMO_QUESTION
    from analysis.steering import DEMO_TRAIT_TOKENS
    assert at.text_area(key="steer_gen_prompt").value == DEMO_QUESTION  # a demo (or stand-in demo) model
    a, b = at.text_input(key="steer_token_a").value, at.text_input(key="steer_token_b").value
    assert a and b and a != b
    assert any("Default tokens a and b" in c.value for c in at.caption)
    if (a, b) != DEMO_TRAIT_TOKENS:  # taken from persona_pairs' responses: grumpy vs kind openers
        assert a.strip() in ("Ugh", "Whatever") and b.strip() in ("Happy", "Gladly")


def test_monitor_projects_the_eval_set(at):
    before = charts(at)
    at.button(key="steer_monitor_btn").click().run()
    assert not at.exception and not errors(at)
    assert charts(at) > before


def test_steer_generates_side_by_side_and_sweeps(at):
    at.button(key="steer_gen_btn").click().run()
    assert not at.exception and not errors(at)
    at.text_input(key="steer_sweep_layers").set_value("1")
    at.text_input(key="steer_sweep_alphas").set_value("0, 4")
    at.button(key="steer_sweep_btn").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert charts(at) >= 6


def test_drift_says_it_needs_checkpoint_b_when_off(at):
    assert any("needs" in i.value.lower() or "compare" in i.value.lower() for i in at.info if "checkpoint" in i.value)


def test_a_layer_out_of_range_gives_a_clear_message(at):
    at.text_input(key="steer_sweep_layers").set_value("99")
    at.run()
    assert not at.exception
    assert any("Layer 99 is out of range" in e for e in errors(at)), errors(at)
    at.text_input(key="steer_sweep_layers").set_value("1").run()


def test_an_extreme_alpha_gives_a_numerical_error_not_nan(at):
    at.number_input(key="steer_alpha").set_value(1e30).run()
    assert not at.exception
    assert any("alpha = 1e+30" in e and "smaller" in e for e in errors(at)), errors(at)
    at.number_input(key="steer_alpha").set_value(4.0).run()


def test_one_group_empty_gives_a_clear_message(zoo_env):
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    app.switch_page("pages/steering.py").run()
    app.radio(key="steer_build__prompts_source").set_value("Typed").run()
    app.text_area(key="steer_build__prompts_typed").set_value("Hello there\nGood morning").run()
    app.button(key="steer_build_btn").click().run()
    assert not app.exception
    assert any("needs two groups" in e for e in errors(app)), errors(app)


def test_drift_runs_with_checkpoint_b(zoo_env):
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    app.switch_page("pages/steering.py")
    app.session_state["logitscope_use_B"] = True  # the sidebar toggle (switch_page does not keep widget values)
    app.run()
    app.session_state["logitscope_use_B"] = True
    app.button(key="steer_build_btn").click().run()
    app.session_state["logitscope_use_B"] = True
    app.button(key="steer_drift_btn").click().run()
    assert not app.exception and not errors(app), errors(app)
    assert charts(app) >= 3


# ------------------------------------------------------------------------------------------ declaration: cache, link
def _open(query: dict | None = None):
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    app.switch_page("pages/steering.py")
    for k, v in (query or {}).items():
        app.query_params[k] = v
    app.run()
    assert not app.exception, app.exception
    return app


def _spy(monkeypatch, module, name: str, calls: dict) -> None:
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, spy)


def _param(app, name: str):
    value = app.query_params.get(name)
    return value[0] if isinstance(value, list) else value


def test_a_display_only_change_never_calls_the_engine_and_a_compute_change_does(zoo_env, captured, monkeypatch):
    import streamlit as st

    import analysis.steering as ST
    import analysis.steering as V

    calls: dict = {}
    for module, name in ((V, "extract_vectors"), (V, "monitor"), (ST, "compare_generations")):
        _spy(monkeypatch, module, name, calls)
    st.cache_data.clear()  # an earlier test's cached result would hide the first call
    app = _open()
    app.button(key="steer_build_btn").click().run()
    app.button(key="steer_monitor_btn").click().run()
    app.number_input(key="steer_new_tokens").set_value(3).run()
    app.button(key="steer_gen_btn").click().run()
    assert not app.exception and not errors(app), errors(app)
    before = dict(calls)
    assert before["extract_vectors"] == 1 and before["monitor"] >= 1 and before["compare_generations"] == 1
    other = 1 if app.select_slider(key="steer_hist_layer").value != 1 else 2
    app.select_slider(key="steer_hist_layer").set_value(other).run()
    app.select_slider(key="steer_monitor_layer").set_value(other).run()
    assert not app.exception and not errors(app), errors(app)
    assert calls == before, "a display-only setting called the engine"
    meta = captured["metadata"]["settings"]
    assert meta["hist_layer"] == other and meta["monitor_layer"] == other
    assert _param(app, "steer.hist_layer") == str(other)  # the link follows the widgets
    app.number_input(key="steer_alpha").set_value(2.0).run()
    assert calls["compare_generations"] == before["compare_generations"] + 1, "alpha did not regenerate"
    assert calls["extract_vectors"] == 1 and calls["monitor"] == before["monitor"]
    app.number_input(key="steer_seed").set_value(1).run()
    assert calls["extract_vectors"] == 1  # the build waits for its button
    app.button(key="steer_build_btn").click().run()
    assert not app.exception and not errors(app), errors(app)
    assert calls["extract_vectors"] == 2
    meta = captured["metadata"]["settings"]
    assert meta["alpha"] == 2.0 and meta["seed"] == 1 and meta["parts"] == ["monitor", "generate"]


def test_a_link_with_settings_opens_the_page_with_them_and_runs_its_parts(zoo_env, captured):
    app = _open({"steer.run": "1", "steer.parts": "generate", "steer.alpha": "2.5", "steer.new_tokens": "3",
                 "steer.sweep_alphas": "0,1", "steer.flag_tokens": "999"})
    assert not errors(app), errors(app)
    assert any("flag_tokens" in w.value for w in app.warning)  # out of bounds: said, not applied
    assert app.number_input(key="steer_alpha").value == 2.5
    assert app.number_input(key="steer_new_tokens").value == 3
    assert app.text_input(key="steer_sweep_alphas").value == "0.0,1.0"
    assert app.number_input(key="steer_flag_tokens").value == 16
    meta = captured["metadata"]["settings"]
    assert meta["parts"] == ["generate"] and meta["alpha"] == 2.5 and meta["new_tokens"] == 3
    assert meta["sweep_alphas"] == [0.0, 1.0]
    assert "generations" in captured["figures"] and "monitoring_A" not in captured["figures"]
    assert captured["tables"]["generations"]["position"].max() <= 3  # generated with the link's 3 new tokens
    assert _param(app, "steer.alpha") == "2.5" and _param(app, "steer.run") == "1"
    assert _param(app, "steer.layer") is None  # the model's default layer stays out of the link


def test_the_cli_keeps_its_flags_and_reads_negative_alpha_lists():
    """--preserve-norm stays a bare switch (true/false also read), and '--sweep-alphas -4,-2' is a value."""
    from logitscope.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["steer", "--out", "x", "--preserve-norm", "--sweep-alphas", "-4,-2, 0", "--alpha", "-2",
                  "--parts", "monitor,sweep"])
    assert args.preserve_norm is True and args.sweep_alphas == (-4.0, -2.0, 0.0) and args.alpha == -2.0
    assert args.parts == ("monitor", "sweep")
    args = parse(["steer", "--out", "x", "--preserve-norm", "false", "--layer", "2"])
    assert args.preserve_norm is False and args.layer == 2 and args.sweep_layers is None
