"""Page widgets and the URL, derived from a method's settings declaration (components.settings).

A page lays out its widgets where it likes, one ``widget(Settings, "top_k", KEY, where=col)`` call per setting; the
label, default, bounds, choices and help come from the declaration, the key is ``f"{KEY}_{name}"``. The URL's
query parameters ("lens.top_k=5") fill those keys when a link is opened and follow the widgets afterwards.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

import streamlit as st

from analysis.core.errors import InputError
from components.settings import RESERVED, check, field_of, fields_of, from_query, from_text, to_query, to_text


def widget_key(key: str, name: str) -> str:
    """The session-state key of a setting's widget."""
    return f"{key}_{name}"


def _is_multi(f: Any) -> bool:
    """A tuple of declared choices: drawn as a multiselect, held as a list in the widget's state."""
    return typing.get_origin(f.base) is tuple and f.spec.choices is not None


def _state_value(f: Any, value: Any) -> Any:
    """A setting's value as its widget holds it: tuples as text (or a list for a multiselect)."""
    if typing.get_origin(f.base) is tuple:
        return list(value or ()) if _is_multi(f) else to_text(f, value)
    return value


def widget(cls: type, name: str, key: str, where: Any = None, *, choices: Sequence | None = None,
           disabled: bool = False, label: str | None = None, help: str | None = None,
           format_func: Any = None, hi: float | None = None) -> Any:
    """Draw the widget of setting ``name`` of ``cls`` (in ``where``, default the page) and return its value.

    ``choices`` narrows the declared choices for this page state (e.g. no 'log rank' without a target) or gives
    them where they depend on the data (the prompts of the set); ``format_func`` names them; ``hi`` lowers the
    declared upper bound for this page state (e.g. the number of prompts in the set). The declared ``widget``
    picks the kind: "radio", "slider" (numbers with both bounds), "toggle", "textarea"; by default a checkbox,
    a selectbox (a multiselect for a tuple of choices), a number input or a text input.
    """
    f = field_of(cls, name)
    where = where if where is not None else st
    k = widget_key(key, name)
    text = label or f.label
    tip = help or f.spec.help
    options = list(choices) if choices is not None else (list(f.spec.choices) if f.spec.choices else None)
    multi = _is_multi(f)
    if multi:
        if k in st.session_state:
            st.session_state[k] = [v for v in st.session_state[k] if v in options]
    elif k in st.session_state and options is not None and st.session_state[k] not in options:
        del st.session_state[k]  # a choice this page state does not offer: back to the default
    initial = f.default if options is None or multi or f.default in options else (options[0] if options else None)
    if k not in st.session_state:
        st.session_state[k] = _state_value(f, initial)
    if f.base is bool:
        fn = where.toggle if f.spec.widget == "toggle" else where.checkbox
        return bool(fn(text, key=k, help=tip, disabled=disabled))
    if multi:
        picked = where.multiselect(text, options, format_func=format_func or f.name_of, key=k, help=tip,
                                   disabled=disabled)
        return tuple(picked)
    if options is not None:
        if f.spec.widget == "radio":
            return where.radio(text, options, format_func=format_func or f.name_of, key=k, help=tip, disabled=disabled,
                               horizontal=True)
        return where.selectbox(text, options, format_func=format_func or f.name_of, key=k, help=tip, disabled=disabled)
    if typing.get_origin(f.base) is tuple or f.base is str:
        box = where.text_area if f.spec.widget == "textarea" else where.text_input
        raw = box(text, key=k, help=tip, disabled=disabled)
        if f.base is str:
            return raw
        try:
            value = from_text(f, raw)
            check(_replace(cls, name, value))
            return value
        except InputError as err:
            where.error(f"{text}: {err} Using the default {to_text(f, f.default)!r}.")
            return f.default
    if f.base in (int, float):
        kind = f.base
        lo = None if f.spec.lo is None else kind(f.spec.lo)
        top = f.spec.hi if hi is None else (hi if f.spec.hi is None else min(hi, f.spec.hi))
        top = None if top is None else kind(top)
        if top is not None and st.session_state.get(k) is not None and st.session_state[k] > top:
            st.session_state[k] = top
        if f.spec.widget == "slider" and lo is not None and top is not None:
            value = where.slider(text, min_value=lo, max_value=top, key=k, help=tip, disabled=disabled)
        else:
            value = where.number_input(text, min_value=lo, max_value=top, key=k, help=tip, disabled=disabled,
                                       step=1 if kind is int else None)
        return None if value is None else kind(value)
    raise TypeError(f"no widget for setting {name!r} of type {f.type!r}")


def _replace(cls: type, name: str, value: Any) -> Any:
    return cls(**{name: value})


def apply_query(cls: type, key: str, prefix: str) -> list[str]:
    """Put the settings a link carries (query parameters "<prefix>.<name>") into the widgets' keys, once per link.

    Returns the problems of parameters that were not applied (unknown names, values out of bounds) for the page
    to show. Values already changed by the user in this session are not overwritten by the same link again.
    """
    params = _link_params(prefix)
    seen = f"{key}__query_applied"
    if st.session_state.get(seen) == params:
        return []
    st.session_state[seen] = params
    values, problems = from_query(cls, params, prefix)
    for name, value in values.items():
        st.session_state[widget_key(key, name)] = _state_value(field_of(cls, name), value)
    return problems


def sync_query(settings: Any, key: str, prefix: str) -> None:
    """Make the URL carry the settings that differ from their defaults (and drop this method's others)."""
    want = to_query(settings, prefix)
    declared = {f"{prefix}.{f.name}" for f in fields_of(type(settings))}
    for k in [k for k in st.query_params if k in declared and k not in want]:
        del st.query_params[k]
    for k, v in want.items():
        if st.query_params.get(k) != v:
            st.query_params[k] = v
    st.session_state[f"{key}__query_applied"] = _link_params(prefix)


def _link_params(prefix: str) -> dict[str, str]:
    """This method's setting parameters in the URL (not the reserved ones: a prompt input's set, the run flag)."""
    return {k: st.query_params.get(k) for k in st.query_params
            if k.startswith(prefix + ".") and k[len(prefix) + 1:] not in RESERVED}
