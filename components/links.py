"""The URL holds the view: the models (A, optional B), each page's settings ("<page key>.<setting>", see
components.settings_ui) and its prompt set ("<input key>.set" = builtin:<name> or the sha256 of a typed or
uploaded set kept in analysis.prompts.store). Opening such a link in a fresh session reproduces the view; the
sidebar's "Link to this view" gives the URL to copy.

Never in a link: pickle weights or remote code (a link must not be able to turn those on).
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from analysis.core.loading import ModelSpec

MODEL_FIELDS = ("revision", "adapter", "dtype", "device")
_APPLIED = "logitscope_model_link_applied"


def spec_query(prefix: str, spec: ModelSpec) -> dict[str, str]:
    """{"a": source, "a.revision": ..., ...}: a spec as query parameters (defaults left out)."""
    out = {prefix: spec.source}
    for f in MODEL_FIELDS:
        value = getattr(spec, f)
        if value not in (None, "", "auto"):
            out[f"{prefix}.{f}"] = str(value)
    return out


def spec_from_query(prefix: str, params: dict[str, str]) -> ModelSpec | None:
    """The spec a link names under ``prefix`` (None when it names none). Pickle and remote code stay off."""
    source = (params.get(prefix) or "").strip()
    if not source:
        return None
    kw = {f: params[f"{prefix}.{f}"] for f in MODEL_FIELDS if params.get(f"{prefix}.{f}")}
    return ModelSpec(source=source, **kw)


def _model_params() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in st.query_params if k.split(".")[0] in ("a", "b")}


def apply_model_link(key_specs: dict[str, str], key_use_b: str) -> None:
    """Put the models a link names into the session (once per link): A, and B with comparison on, or off when the
    link names A without B. The sidebar's widgets start again from the linked specs."""
    params = _model_params()
    if not params or st.session_state.get(_APPLIED) == params:
        return
    st.session_state[_APPLIED] = params
    spec_a, spec_b = spec_from_query("a", params), spec_from_query("b", params)
    if spec_a is None:
        return
    st.session_state[key_specs["A"]] = spec_a
    st.session_state[key_use_b] = spec_b is not None
    if spec_b is not None:
        st.session_state[key_specs["B"]] = spec_b
    for which in ("A", "B"):
        for part in ("choice", "other", "rev", "lora", "device", "dtype"):
            st.session_state.pop(f"model_{part}_{which}", None)


def sync_model_link(spec_a: ModelSpec | None, spec_b: ModelSpec | None) -> None:
    """Make the URL name the models in use (B only while comparison is on)."""
    want = {**(spec_query("a", spec_a) if spec_a else {}), **(spec_query("b", spec_b) if spec_b else {})}
    for k in [k for k in st.query_params if k.split(".")[0] in ("a", "b") and k not in want]:
        del st.query_params[k]
    for k, v in want.items():
        if st.query_params.get(k) != v:
            st.query_params[k] = v
    st.session_state[_APPLIED] = _model_params()


def current_link() -> str:
    """This view's URL: the page's address with the current query parameters."""
    base = (st.context.url or "").split("?")[0]
    query = urlencode({k: st.query_params.get(k) for k in st.query_params})
    return f"{base}?{query}" if query else base


def share_link() -> None:
    """The sidebar's "Link to this view": the URL to copy (models, settings, prompt set)."""
    with st.sidebar.expander("Link to this view", icon=":material/link:"):
        st.caption("Opens this page with the same models, settings and prompts (typed and uploaded prompt sets are "
                   "found again on this machine by their content hash).")
        st.code(current_link(), language=None, wrap_lines=True)
