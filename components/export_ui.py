"""Streamlit download buttons for a figure (PNG, SVG, PDF, HTML + its data) and for a zip bundle.

A figure's files are produced only when a button is clicked (st.download_button with a callable runs it on a
worker thread), so drawing a page never waits for the browser that renders static images; rendered bytes are
kept in a small bounded cache keyed on the figure's JSON. The bundle, which renders every figure, is two steps
(prepare, then a static download whose address survives reruns; see export_bundle).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components import exporting


@st.cache_data(max_entries=48, show_spinner=False)
def _cached_figure_bytes(fig_json: str, fmt: str) -> bytes:
    """figure_bytes for a figure given as JSON, cached on (the JSON, fmt)."""
    return exporting.figure_bytes(json.loads(fig_json), fmt)


def _lazy(fn: Callable[..., bytes], *args: Any) -> Callable[[], bytes]:
    return lambda: fn(*args)


def export_figure(
    fig: go.Figure,
    name: str,
    key: str,
    data: pd.DataFrame | None = None,
    *,
    label: str = "Export",
) -> None:
    """Draw a compact "Export" popover with PNG/SVG/PDF/HTML downloads (+ CSV/JSON of data)."""
    fig_json = fig.to_json()
    static_ok, reason = exporting.static_export_available()
    with st.popover(label, icon=":material/download:"):
        st.caption("Figure")
        row = st.container(horizontal=True, gap="small")
        for fmt in exporting.FIGURE_FORMATS:
            static = fmt in exporting.STATIC_FORMATS
            row.download_button(
                fmt.upper(),
                data=_lazy(_cached_figure_bytes, fig_json, fmt),
                file_name=exporting.safe_filename(name, fmt),
                mime=exporting.MIME_TYPES[fmt],
                key=f"{key}-{fmt}",
                on_click="ignore",
                disabled=static and not static_ok,
                help=reason if static and not static_ok else None,
            )
        if data is not None:
            st.caption("Data")
            frame = data.copy()
            row = st.container(horizontal=True, gap="small")
            for fmt, encode in zip(exporting.TABLE_FORMATS, (exporting.table_csv, exporting.table_json), strict=True):
                row.download_button(
                    fmt.upper(),
                    data=_lazy(encode, frame),
                    file_name=exporting.safe_filename(name, fmt),
                    mime=exporting.MIME_TYPES[fmt],
                    key=f"{key}-{fmt}",
                    on_click="ignore",
                    )
        if not static_ok:
            st.caption(reason)


def _bundle_digest(fig_json: Mapping[str, str], tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> str:
    """What the bundle would hold, hashed: figures, tables, metadata (not its creation time) and prompt files."""
    h = hashlib.sha256()
    for n, j in fig_json.items():
        h.update(n.encode() + b"\0" + j.encode())
    for n, df in tables.items():
        h.update(n.encode() + b"\0" + exporting.table_csv(df))
    rest = {k: v for k, v in meta.items() if k not in ("created", "prompt_files")}
    h.update(json.dumps(rest, sort_keys=True, default=str).encode())
    for path, data in sorted((meta.get("prompt_files") or {}).items()):
        h.update(path.encode() + b"\0" + data)
    return h.hexdigest()


def export_bundle(
    figures: Mapping[str, go.Figure],
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    name: str,
    key: str,
    *,
    formats: tuple[str, ...] = ("png", "svg", "html"),
) -> None:
    """Two steps: "Prepare bundle (zip)" renders every figure, its data and metadata.json into a zip, then "Download
    bundle (zip)" hands over those bytes.

    The download is static (its bytes are in the page, not produced on click), so its address is the same in every
    run that shows the same results: a click that lands while the page reruns still downloads. A deferred
    (callable) download gets a new address each run and such a click silently never started. The prepared zip is
    kept for this session until the results, settings or prompts change (then Prepare shows again).
    """
    fig_json = {n: f.to_json() for n, f in figures.items()}
    meta = dict(metadata)
    digest = _bundle_digest(fig_json, tables, meta)
    state = f"{key}__prepared_bundle"
    prepared = st.session_state.get(state)
    if prepared is None or prepared[0] != digest:
        if not st.button("Prepare bundle (zip)", key=f"{key}-prepare", icon=":material/folder_zip:",
                         help="Renders all figures (PNG, SVG, HTML), their data (CSV, JSON) and a metadata.json with "
                              "models, settings, the exact prompts and package versions into one zip."):
            return
        with st.spinner("Rendering every figure into the bundle…"):
            data = exporting.build_bundle({n: go.Figure(json.loads(j)) for n, j in fig_json.items()},
                                          {n: df.copy() for n, df in tables.items()}, meta, formats)
        prepared = (digest, data)
        st.session_state[state] = prepared
    st.download_button(
        "Download bundle (zip)",
        data=prepared[1],
        file_name=exporting.safe_filename(name, "zip"),
        mime=exporting.MIME_TYPES["zip"],
        key=f"{key}-bundle",
        on_click="ignore",
        icon=":material/download:",
        help=f"The prepared zip ({len(prepared[1]) / 1e6:.1f} MB): figures, data, metadata.json and prompts.",
    )
