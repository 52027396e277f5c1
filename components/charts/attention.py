"""Attention pattern charts (pure functions, no streamlit): one head's query x key heatmap, and the head x source
view of the logit flow whose cells carry their head (a click on one selects that head's pattern on the page)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from components.charts.style import categorical_axis, heatmap_height
from components.charts.text import safe_text, token_label


def _labels(tokens: Sequence[str]) -> list[str]:
    """'p: token' tick labels (unique even when tokens repeat), escaped."""
    return [f"{i}: {token_label(t, max_len=14)}" for i, t in enumerate(tokens)]


def pattern_heatmap(probs: np.ndarray, tokens: Sequence[str], title: str) -> go.Figure:
    """Query rows x key columns of one head's attention probabilities [T, T], colour fixed to 0..1."""
    p = np.asarray(probs, dtype=float)
    T = p.shape[0]
    labels = _labels(tokens)
    upper = np.triu(np.ones((T, T), dtype=bool), k=1)
    z = np.where(upper, np.nan, p)  # above the diagonal: masked (causal), drawn blank
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, colorscale="Blues", zmin=0.0, zmax=1.0, colorbar=dict(title="prob"),
        hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.4f}<extra></extra>", hoverongaps=False))
    fig.update_layout(title=safe_text(title), height=heatmap_height(T, extra=240), xaxis_title="key position (source)",
                      yaxis_title="query position", margin=dict(l=110, r=20, t=60, b=110))
    fig.update_yaxes(autorange="reversed")
    categorical_axis(fig, "x", order=labels)
    return categorical_axis(fig, "y", order=labels)


def pattern_frame(probs: np.ndarray, tokens: Sequence[str]) -> pd.DataFrame:
    """Long table of one head's pattern: query and key positions and tokens, probability (causal cells only)."""
    p = np.asarray(probs, dtype=float)
    q, k = np.tril_indices(p.shape[0])
    return pd.DataFrame({"query_position": q, "query_token": [tokens[i] for i in q], "key_position": k,
                         "key_token": [tokens[j] for j in k], "probability": p[q, k]})


def top_heads(sources: np.ndarray, n: int = 12) -> list[tuple[int, int]]:
    """The n heads (block, head) with the largest total |DLA| over source positions, in block then head order."""
    s = np.abs(np.asarray(sources, dtype=float)).sum(axis=2)
    flat = np.argsort(-s, axis=None, kind="stable")[: max(1, int(n))]
    return sorted((int(i // s.shape[1]), int(i % s.shape[1])) for i in flat)


def head_source_heatmap(sources: np.ndarray, tokens: Sequence[str], title: str, *, n_heads: int = 12,
                        units: str = "logit") -> go.Figure:
    """Head x source position DLA [heads shown, T] of the strongest heads; every cell's customdata is its [block,
    head] (an invisible marker on each cell makes it clickable in a streamlit selection)."""
    s = np.asarray(sources, dtype=float)
    heads = top_heads(s, n_heads)
    rows = [f"L{l}H{h}" for l, h in heads]
    z = np.stack([s[l, h] for l, h in heads])
    labels = _labels(tokens)
    m = float(np.abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=rows, colorscale="RdBu", zmid=0, zmin=-m, zmax=m,
                               colorbar=dict(title=units), hoverinfo="skip"))
    xs, ys, cd = [], [], []
    for r, (l, h) in enumerate(heads):
        for p, x in enumerate(labels):
            xs.append(x)
            ys.append(rows[r])
            cd.append([l, h, float(z[r, p])])
    # the cells' hover and click targets: invisible markers (a heatmap cell cannot be selected in streamlit)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", customdata=cd, showlegend=False,
                             hovertemplate="head %{y}, source %{x}<br>%{customdata[2]:.4f} " + units
                             + "<br>click: show this head's pattern<extra></extra>",
                             marker=dict(size=14, opacity=0.0, symbol="square")))
    fig.update_layout(title=safe_text(title), height=heatmap_height(len(rows), extra=220), xaxis_title="source position",
                      yaxis_title="query head (L{block}H{head}, 0-based)", margin=dict(l=80, r=20, t=60, b=110))
    fig.update_yaxes(autorange="reversed")  # block 0 on top
    categorical_axis(fig, "x", order=labels)
    return categorical_axis(fig, "y", order=rows)


def head_source_frame(sources: np.ndarray, tokens: Sequence[str], n_heads: int = 12) -> pd.DataFrame:
    """The head x source view as a long table (the heads drawn)."""
    s = np.asarray(sources, dtype=float)
    rows = [{"head": f"L{l}H{h}", "block": l, "query_head": h, "source_position": p, "source_token": tokens[p],
             "dla": float(s[l, h, p])} for l, h in top_heads(s, n_heads) for p in range(s.shape[2])]
    return pd.DataFrame(rows)


def head_from_selection(selection: Any) -> tuple[int, int] | None:
    """(block, head) of the first selected cell of a head x source chart's selection state, else None."""
    try:
        points = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for pt in points or []:
        if not isinstance(pt, dict):
            continue
        cd = pt.get("customdata")
        if isinstance(cd, (list, tuple)) and len(cd) >= 2:
            return int(cd[0]), int(cd[1])
        m = re.fullmatch(r"L(\d+)H(\d+)", str(pt.get("y", "")))  # the row label, when no customdata came back
        if m:
            return int(m.group(1)), int(m.group(2))
    return None
