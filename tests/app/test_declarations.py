"""One declaration per method: the page's widgets, the CLI's flags and metadata.json all derive from the method's
settings dataclass (components.settings); display-only settings never call the engine; a link carries the settings.

Every test loops over components.methods.METHODS, so each method is checked the same way.
"""
from __future__ import annotations

import argparse
import json

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.errors import InputError
from analysis.core.loading import ModelSpec
from components import settings as S
from components.methods import METHODS
from logitscope.cli import build_parser
from tests.paths import APP

BASE = "gpt2-world-base"


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_cli_flag_has_the_declared_default_type_and_help(name):
    m = METHODS[name]
    p = _subparser(m.command)
    actions = {a.dest: a for a in p._actions}
    help_text = p.format_help()
    declared = [f for f in S.fields_of(m.settings) if f.spec.cli]
    assert declared, "a method with no CLI settings"
    for f in declared:
        a = actions[f.name]
        assert f.flag in a.option_strings
        assert a.default == f.default, (f.name, a.default, f.default)
        if f.spec.choices is not None and not isinstance(f.default, tuple):
            assert list(a.choices) == list(f.spec.choices)
        shown = S.to_text(f, f.default) if f.default is not None else "none"
        assert f"(default {shown or 'empty'})" in " ".join(a.help.split()), f.name
        assert f.flag in help_text
    # parsing the default text gives the default back (what --help says is what runs)
    for f in declared:
        if f.default is not None and f.default != "":
            assert S.from_text(f, S.to_text(f, f.default)) == f.default


@pytest.mark.parametrize("name", sorted(METHODS))
def test_settings_defaults_are_within_their_own_bounds_and_choices(name):
    m = METHODS[name]
    S.check(m.settings())  # raises InputError when a default breaks its declaration
    for f in S.fields_of(m.settings):
        assert f.spec.help, f"{name}.{f.name} has no help text"


def test_check_names_the_setting_that_is_out_of_bounds():
    m = METHODS["lens"]
    with pytest.raises(InputError, match="top_k"):
        S.check(m.settings(top_k=0))
    with pytest.raises(InputError, match="colour"):
        S.check(m.settings(colour="rainbow"))


def test_query_round_trip_keeps_only_changed_settings_and_reports_bad_ones():
    cls = METHODS["lens"].settings
    s = cls(top_k=5, colour="entropy")
    q = S.to_query(s, "lens")
    assert q == {"lens.top_k": "5", "lens.colour": "entropy"}
    values, problems = S.from_query(cls, {**q, "lens.top_k": "5", "lens.nope": "1", "other.top_k": "7"}, "lens")
    assert values == {"top_k": 5, "colour": "entropy"} and problems == ["unknown setting 'nope' in the link"]
    values, problems = S.from_query(cls, {"lens.top_k": "500"}, "lens")
    assert values == {} and "top_k" in problems[0]


def _page(m, captured: dict, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["logitscope_spec_A"] = ModelSpec(BASE)
    if m.needs_b:  # a method that compares two checkpoints
        at.session_state["logitscope_use_B"] = True
        at.session_state["logitscope_spec_B"] = ModelSpec("gpt2-world-tuned")
    at.run()
    at.switch_page(m.page_file)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.button(key=f"{m.module.KEY}_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert captured, "the page did not reach its export_bundle call"
    return at


@pytest.mark.parametrize("name", sorted(METHODS))
def test_page_widgets_and_metadata_start_at_the_declared_defaults(name, captured):
    """Every setting the page shows starts at its declared default, and metadata.json records the declared default
    of every setting (except those the page fills from the model in front of it, listed by the method)."""
    m = METHODS[name]
    at = _page(m, captured)
    exempt = m.module.PAGE_DEFAULT_EXEMPT
    meta = json.loads(json.dumps(captured["metadata"]["settings"], default=list))
    drawn = 0
    for f in S.fields_of(m.settings):
        if f.name in exempt:
            continue
        want = json.loads(json.dumps(S.as_metadata(m.settings())[f.name]))
        assert meta[f.name] == want, (f.name, meta[f.name], want)
        key = f"{m.module.KEY}_{f.name}"
        if key in at.session_state:
            got = at.session_state[key]
            from components.settings_ui import _state_value
            expect = _state_value(f, f.default)
            assert got == expect, (f.name, got, expect)
            drawn += 1
    assert drawn >= len(S.fields_of(m.settings)) - len(exempt) - 2, "most settings should be widgets"


def test_a_display_only_change_never_calls_the_engine_and_a_compute_change_does(captured, monkeypatch):
    import analysis.lens as L  # the package: what components.reports.lens calls

    calls = []
    real = L.lens_trace
    monkeypatch.setattr(L, "lens_trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    import streamlit as st

    st.cache_data.clear()  # an earlier test's cached result would hide the first call
    m = METHODS["lens"]
    at = _page(m, captured)
    n = len(calls)
    assert n >= 1
    at.selectbox(key="lens_colour").set_value("entropy").run()
    at.number_input(key="lens_positions_shown").set_value(5).run()
    at.radio(key="lens_aggregate").set_value("all").run()
    assert not at.exception and not at.error
    assert len(calls) == n, "a display-only setting recomputed the lens"
    assert at.query_params["lens.colour"] == ["entropy"] or at.query_params["lens.colour"] == "entropy"
    at.number_input(key="lens_top_k").set_value(3).run()
    at.button(key="lens_run").click().run()
    assert len(calls) > n, "changing top-k did not recompute"


def test_a_link_with_settings_opens_the_page_with_them(captured):
    m = METHODS["lens"]
    at = _page(m, captured, {"lens.top_k": "4", "lens.colour": "kl", "lens.positions_shown": "7"})
    assert at.number_input(key="lens_top_k").value == 4
    assert at.selectbox(key="lens_colour").value == "kl"
    meta = captured["metadata"]["settings"]
    assert meta["top_k"] == 4 and meta["colour"] == "kl" and meta["positions_shown"] == 7
    cols = set(captured["tables"]["position_A"].columns)
    assert "#4" in cols and "#5" not in cols  # the lens really ran with top-4


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_declaration_has_the_one_compute_signature(name):
    """Each components/reports/<method>.py satisfies the Declaration protocol, and compute and run take (models,
    inputs, settings, progress, memo) in that order (run may add keyword-only options after them)."""
    import inspect

    from components.methods import Declaration
    from components.reports import Input

    m = METHODS[name]
    assert isinstance(m.module, Declaration), name
    for fn in (m.module.compute, m.module.run):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:5]] == ["models", "inputs", "s", "progress", "memo"], (name, fn.__name__)
        assert all(p.kind is p.KEYWORD_ONLY for p in params[5:]), (name, fn.__name__)
    assert m.module.INPUTS[0].flag == "--prompts" and all(isinstance(i, Input) for i in m.module.INPUTS)
    assert len({i.flag for i in m.module.INPUTS}) == len(m.module.INPUTS)
