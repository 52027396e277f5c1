"""Streamlit download buttons for a figure (PNG, SVG, PDF, HTML + its data) and for a zip bundle.

Files are produced only when a button is clicked (st.download_button with a callable runs it
on a worker thread), so drawing a page never waits for the browser that renders static images;
rendered bytes are kept in a small bounded cache keyed on the figure's JSON.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components import exporting

_CACHE_MAX_ENTRIES = 48
_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def _cached_figure_bytes(fig_json: str, fmt: str) -> bytes:
    """figure_bytes for a figure given as JSON, memoised (bounded LRU) on (sha256 of JSON, fmt)."""
    key = (hashlib.sha256(fig_json.encode("utf-8")).hexdigest(), fmt)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    data = exporting.figure_bytes(json.loads(fig_json), fmt)
    with _cache_lock:
        _cache[key] = data
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_MAX_ENTRIES:
            _cache.popitem(last=False)
    return data


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
            for fmt, encode in zip(exporting.TABLE_FORMATS, (exporting.table_csv, exporting.table_json)):
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


def export_bundle(
    figures: Mapping[str, go.Figure],
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    name: str,
    key: str,
    *,
    formats: tuple[str, ...] = ("png", "svg", "html"),
) -> None:
    """Draw one "Download bundle (zip)" button: all figures, their data and metadata.json."""
    # Snapshot now: the zip is built later, on click, from what the page shows at this moment.
    fig_dicts = {n: json.loads(f.to_json()) for n, f in figures.items()}
    frames = {n: df.copy() for n, df in tables.items()}
    meta = dict(metadata)

    def _build() -> bytes:
        return exporting.build_bundle(
            {n: go.Figure(d) for n, d in fig_dicts.items()}, frames, meta, formats
        )

    st.download_button(
        "Download bundle (zip)",
        data=_build,
        file_name=exporting.safe_filename(name, "zip"),
        mime=exporting.MIME_TYPES["zip"],
        key=f"{key}-bundle",
        on_click="ignore",
        icon=":material/folder_zip:",
        help="All figures (PNG, SVG, HTML), their data (CSV, JSON) and a metadata.json with "
        "models, settings and package versions.",
    )
