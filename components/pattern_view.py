"""The logit flow page's attention pattern view: the head picker, and per checkpoint the head x source chart (a click
on a cell picks that head) and the picked head's query x key pattern, side by side in compare mode."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from analysis.flow import head_label
from components import page_kit as kit
from components.charts.attention import head_from_selection
from components.export_ui import export_figure
from components.reports import Report
from components.reports import flow as R
from components.settings_ui import widget, widget_key


def _chart_key(key: str, which: str) -> str:
    return f"{key}_head_source_{which}"


def apply_clicks(key: str, whiches: list[str]) -> None:
    """Before the picker is drawn: a new click on a head x source cell (its chart's selection) sets the picker."""
    pick = widget_key(key, "pattern_head")
    for which in whiches:
        chart = _chart_key(key, which)
        head = head_from_selection(st.session_state.get(chart))
        memo = f"{chart}__applied"
        if head is not None and st.session_state.get(memo) != head:
            st.session_state[pick] = head_label(*head)
        st.session_state[memo] = head  # a selection is applied once; a later pick in the box stays


def head_picker(key: str, results: R.FlowResults, settings: R.FlowSettings, where: Any = None) -> str:
    """The head picker: blank (the default head, named in its label) or any head L<block>H<head> of A."""
    first = results.by_model["A"].results[0]
    options = [""] + [head_label(l, h) for l in range(first.n_layers) for h in range(first.n_heads)]
    try:
        auto = head_label(*R.pattern_head(replace(settings, pattern_head=""), results))
    except Exception:  # noqa: BLE001 - the label only; the report says what is wrong
        auto = "?"
    return widget(R.FlowSettings, "pattern_head", key, where, choices=options,
                  format_func=lambda v: v or f"auto: {auto} (largest |DLA|)")


def show(rep: Report, pair: Any, key: str) -> None:
    """Per checkpoint: the clickable head x source chart with its export, then the picked head's pattern."""
    st.caption("Click a cell of the head x source view to show that head's attention pattern (or pick the head "
               "above). Pattern colours are fixed to 0..1, so A and B share the scale; cells above the diagonal are "
               "masked (causal).")
    for note in rep.notes:
        if ", attention patterns: " in note:
            st.info(note)  # engine sentences without user text
    for label, _lm, _card, col in kit.compare_columns(pair):
        which = label.split(":")[0]
        name = f"head_source_{which}"
        with col:
            st.subheader(label, anchor=False)
            if name in rep.figures:
                kit.plot(rep.figures[name], _chart_key(key, which), on_select="rerun", selection_mode="points")
                export_figure(rep.figures[name], f"{R.BUNDLE}_{name}", key=f"{key}_x_{name}",
                              data=rep.tables.get(name))
            kit.show(rep, f"attention_pattern_{which}", key, bundle=R.BUNDLE, optional=True)
