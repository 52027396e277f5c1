"""Logit flow figures: layer x position grids, per-layer bars, layer x head map, source -> head -> final Sankey.

Pure functions (numbers and token strings in, go.Figure out) plus the matching export tables.
Rows are blocks (0-based); block b's write enters the residual stream as layer b + 1 (layer 0 =
embeddings). Values are logit units (pre-cap, final norm scale frozen) unless a title says nats.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from components.charts.style import BLOCK_AXIS, PROMOTES_RGB, SUPPRESSES_RGB, categorical_axis, heatmap_height
from components.charts.text import safe_text, token_label

POS, NEG = f"rgba({PROMOTES_RGB},{{a}})", f"rgba({SUPPRESSES_RGB},{{a}})"


def position_labels(tokens: Sequence[str]) -> list[str]:
    """Unique, escaped x tick labels 'p:token'."""
    return [f"{p}:{token_label(t, max_len=14)}" for p, t in enumerate(tokens)]


def aligned_labels(width: int) -> list[str]:
    """Tick labels for grids aligned at the final token: 'T-k' ... 'T'."""
    return [f"T-{width - 1 - k}" if k < width - 1 else "T" for k in range(width)]


def _sym(z: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(z))) if np.size(z) and np.isfinite(z).any() else 1.0
    return m if m > 0 else 1.0


def grid_heatmap(grid: np.ndarray, x_labels: Sequence[str], title: str, *, units: str = "logit",
                 note: str | None = None) -> go.Figure:
    """A layer x position heatmap [L, T] (diverging, centred at 0) with rows = blocks."""
    g = np.asarray(grid, dtype=float)
    L = g.shape[0]
    m = _sym(g)
    fig = go.Figure(go.Heatmap(
        z=g, x=list(x_labels), y=[f"block {i}" for i in range(L)], colorscale="RdBu", zmid=0, zmin=-m, zmax=m,
        colorbar=dict(title=units), hovertemplate="%{y}, %{x}<br>%{z:.4f} " + units + "<extra></extra>"))
    subtitle = f"<br><sup>{safe_text(note)}</sup>" if note else ""  # a subtitle, never an annotation over the title
    fig.update_layout(title=safe_text(title) + subtitle, height=heatmap_height(L, extra=260),
                      margin=dict(l=70, r=20, t=90, b=80),
                      xaxis=dict(title="source position: token", tickangle=-45), yaxis=dict(title=BLOCK_AXIS))
    return categorical_axis(categorical_axis(fig, "x"), "y")


def layer_bars(attn: np.ndarray, mlp: np.ndarray, title: str, *, embed: float | None = None,
               bias: float | None = None, attn_bias: np.ndarray | None = None, units: str = "logit") -> go.Figure:
    """Per-block bars, attention and MLP side by side (plus the embedding and bias terms when given)."""
    L = len(attn)
    x = [f"block {i}" for i in range(L)]
    fig = go.Figure()
    fig.add_bar(name="attention", x=x, y=np.asarray(attn, float), marker_color="#4c78a8",
                hovertemplate="%{x} attention: %{y:.4f} " + units + "<extra></extra>")
    fig.add_bar(name="MLP", x=x, y=np.asarray(mlp, float), marker_color="#f58518",
                hovertemplate="%{x} MLP: %{y:.4f} " + units + "<extra></extra>")
    extra_x, extra_y = [], []
    if embed is not None:
        extra_x.append("embedding")
        extra_y.append(embed)
    if bias is not None:
        extra_x.append("bias term")
        extra_y.append(bias)
    if extra_x:
        fig.add_bar(name="embedding / bias", x=extra_x, y=extra_y, marker_color="#9d9d9d",
                    hovertemplate="%{x}: %{y:.4f} " + units + "<extra></extra>")
    if attn_bias is not None and np.any(np.asarray(attn_bias) != 0):
        fig.add_scatter(name="o_proj bias (part of attention)", x=x, y=np.asarray(attn_bias, float), mode="markers",
                        marker=dict(symbol="line-ew-open", size=14, color="#222"),
                        hovertemplate="%{x} o_proj bias: %{y:.4f}<extra></extra>")
    fig.update_layout(title=safe_text(title), barmode="group", height=360, yaxis_title=units,
                      xaxis=dict(title="sublayer write at the final position", type="category", categoryorder="array",
                                 categoryarray=(["embedding"] if embed is not None else []) + x
                                 + (["bias term"] if bias is not None else [])),
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=60, r=20, t=60, b=90))
    fig.add_hline(y=0, line_width=1, line_color="#888")
    return fig


def head_heatmap(heads: np.ndarray, title: str, *, units: str = "logit") -> go.Figure:
    """A block x head heatmap [L, H] of each head's contribution at the final position."""
    h = np.asarray(heads, dtype=float)
    L, H = h.shape
    m = _sym(h)
    fig = go.Figure(go.Heatmap(
        z=h, x=[f"H{j}" for j in range(H)], y=[f"block {i}" for i in range(L)], colorscale="RdBu", zmid=0,
        zmin=-m, zmax=m, colorbar=dict(title=units),
        hovertemplate="%{y}, head %{x}<br>%{z:.4f} " + units + "<extra></extra>"))
    fig.update_layout(title=safe_text(title), height=heatmap_height(L, extra=200), xaxis_title="query head",
                      yaxis_title=BLOCK_AXIS, margin=dict(l=70, r=20, t=60, b=50))
    return categorical_axis(categorical_axis(fig, "x"), "y")


def top_edges(sources: np.ndarray, threshold: float, top_k: int = 24) -> list[tuple[int, int, int, float]]:
    """The strongest (block, head, source position, value) edges with |value| >= threshold, largest first."""
    s = np.asarray(sources, dtype=float)
    flat = np.argsort(-np.abs(s), axis=None)[: max(0, int(top_k))]
    out = []
    for k in flat:
        l, h, p = np.unravel_index(int(k), s.shape)
        v = float(s[l, h, p])
        if abs(v) >= threshold and v != 0.0:
            out.append((int(l), int(h), int(p), v))
    return out


def sankey_nodes(*edge_lists: list[tuple[int, int, int, float]]) -> tuple[list[int], list[tuple[int, int]]]:
    """The source positions and (block, head) nodes of several Sankeys' edges, sorted: A and B drawn with the same
    nodes in the same places."""
    edges = [e for el in edge_lists for e in el]
    return sorted({p for _, _, p, _ in edges}), sorted({(l, h) for l, h, _, _ in edges})


def _spread(n: int) -> list[float]:
    return [0.02 + 0.96 * (i + 0.5) / n for i in range(n)] if n else []


def flow_sankey(tokens: Sequence[str], sources: np.ndarray, target: str, *, threshold: float = 0.0,
                top_k: int = 24, title: str = "", units: str = "logit",
                nodes: tuple[list[int], list[tuple[int, int]]] | None = None) -> go.Figure:
    """Sankey from source tokens through the strongest heads into the final position (width = |contribution|).

    Nodes sit at fixed places: sources top to bottom by position, heads by (block, head) in one column per block,
    the final position on the right; ``nodes`` (from ``sankey_nodes``) fixes them across figures so A and B line up.
    Hover: a node's net signed contribution, a link's source token, head and signed value."""
    edges = top_edges(sources, threshold, top_k)
    T = len(tokens)
    if not edges:
        fig = go.Figure()
        fig.add_annotation(text=f"No head x source contribution reaches {threshold:g} {units}; lower the threshold.",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_layout(title=safe_text(title), height=300, xaxis_visible=False, yaxis_visible=False)
        return fig
    src_pos, head_keys = nodes if nodes is not None else sankey_nodes(edges)
    src_pos = [p for p in src_pos if p < T]
    labels = [f"{p}:{token_label(tokens[p])}" for p in src_pos]
    labels += [f"block {l} H{h}" for l, h in head_keys]
    labels.append(f"{T - 1}:{token_label(tokens[-1])}")
    idx_src = {p: i for i, p in enumerate(src_pos)}
    idx_head = {k: len(src_pos) + i for i, k in enumerate(head_keys)}
    final = len(labels) - 1
    s_, t_, v_, c_, cd = [], [], [], [], []
    net_head: dict = {}
    net_src: dict = {}
    for l, h, p, v in edges:
        s_.append(idx_src[p])
        t_.append(idx_head[(l, h)])
        v_.append(abs(v))
        c_.append((POS if v > 0 else NEG).format(a=0.55))
        cd.append(f"source {p}:{token_label(tokens[p])} → block {l} H{h}: {v:+.4f} {units}")
        net_head[(l, h)] = net_head.get((l, h), 0.0) + v
        net_src[p] = net_src.get(p, 0.0) + v
    for k, tot in net_head.items():
        s_.append(idx_head[k])
        t_.append(final)
        v_.append(sum(abs(v) for l, h, _, v in edges if (l, h) == k))
        c_.append((POS if tot > 0 else NEG).format(a=0.35))
        cd.append(f"block {k[0]} H{k[1]} → final position: net {tot:+.4f} {units} (shown edges)")
    blocks = sorted({l for l, _ in head_keys})
    col = {b: 0.22 + 0.56 * (i + 0.5) / len(blocks) for i, b in enumerate(blocks)}
    node_x = [0.01] * len(src_pos) + [col[l] for l, _ in head_keys] + [0.99]
    node_y = _spread(len(src_pos)) + _spread(len(head_keys)) + [0.5]
    total = sum(v for *_, v in edges)
    node_net = [net_src.get(p, 0.0) for p in src_pos] + [net_head.get(k, 0.0) for k in head_keys] + [total]
    fig = go.Figure(go.Sankey(
        arrangement="fixed",
        node=dict(label=labels, pad=14, thickness=14, x=node_x, y=node_y, color="#bbbbbb", customdata=node_net,
                  hovertemplate="%{label}<br>net %{customdata:+.4f} " + units + " over the shown edges<extra></extra>"),
        link=dict(source=s_, target=t_, value=v_, color=c_, customdata=cd,
                  hovertemplate="%{customdata}<extra></extra>")))
    key = (f"{token_label(target)}; blue pushes toward it, red against; width = |{units}|; {len(edges)} strongest "
           f"head x source edges, |value| ≥ {threshold:.3g}")
    fig.update_layout(title=safe_text(title or "Flow into the final position through the strongest heads")
                      + "<br><sup>" + safe_text(f"into {key}", max_len=None) + "</sup>",
                      height=max(340, 26 * max(len(src_pos), len(head_keys)) + 140),
                      margin=dict(l=20, r=70, t=110, b=20))
    return fig


def contrast_bars(target: object, competitor: object, target_label: str, competitor_label: str,
                  title: str = "") -> go.Figure:
    """Per-sublayer contributions to the target, to the competitor, and their difference (logit units)."""
    L = len(target.attn)
    x = ["embedding"] + [f"{k} {i}" for i in range(L) for k in ("attn", "MLP")]

    def seq(a) -> np.ndarray:
        return np.array([a.embed] + [v for i in range(L) for v in (a.attn[i], a.mlp[i])])
    t, c = seq(target), seq(competitor)
    fig = go.Figure()
    fig.add_bar(name=f"target {token_label(target_label)}", x=x, y=t, marker_color="#4c78a8",
                hovertemplate="%{x}: %{y:.4f} logit<extra>target</extra>")
    fig.add_bar(name=f"competitor {token_label(competitor_label)}", x=x, y=c, marker_color="#e45756",
                hovertemplate="%{x}: %{y:.4f} logit<extra>competitor</extra>")
    fig.add_scatter(name="target − competitor", x=x, y=t - c, mode="lines+markers", line=dict(color="#222"),
                    hovertemplate="%{x}: %{y:+.4f} logit difference<extra></extra>")
    fig.update_layout(title=safe_text(title or "Target vs competitor per sublayer"), barmode="group", height=380,
                      yaxis_title="logit (pre-cap, frozen final scale)", xaxis_title="sublayer write at the final position",
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=60, r=20, t=60, b=100))
    fig.add_hline(y=0, line_width=1, line_color="#888")
    return categorical_axis(fig, "x")


# ------------------------------------------------------------------------------------------ tables
def grid_frame(grid: np.ndarray, x_labels: Sequence[str], tokens: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table of a [L, T] grid: block, position, token, value."""
    g = np.asarray(grid, dtype=float)
    rows = []
    for l in range(g.shape[0]):
        for p in range(g.shape[1]):
            rows.append({"block": l, "layer_written": l + 1, "position": x_labels[p],
                         "token": tokens[p] if tokens is not None else None, "value": g[l, p]})
    return pd.DataFrame(rows)


def layer_frame(a) -> pd.DataFrame:
    """Per-block DLA and Imp of one Attribution (plus embedding and bias rows)."""
    L = len(a.attn)
    df = pd.DataFrame({"block": list(range(L)), "layer_written": [i + 1 for i in range(L)], "attention_dla": a.attn,
                       "mlp_dla": a.mlp, "o_proj_bias_dla": a.attn_bias, "attention_imp_nats": a.imp_attn,
                       "mlp_imp_nats": a.imp_mlp})
    extra = pd.DataFrame({"block": ["embedding", "bias term", "logit (model)"], "attention_dla": [a.embed, a.bias, a.logit]})
    return pd.concat([df, extra], ignore_index=True)


def head_frame(heads: np.ndarray, imp: np.ndarray | None = None) -> pd.DataFrame:
    """Long table of a [L, H] head map."""
    rows = []
    for l in range(heads.shape[0]):
        for h in range(heads.shape[1]):
            r = {"block": l, "head": h, "dla": float(heads[l, h])}
            if imp is not None:
                r["imp_nats"] = float(imp[l, h])
            rows.append(r)
    return pd.DataFrame(rows)


def edge_frame(tokens: Sequence[str], sources: np.ndarray, imp: np.ndarray | None = None) -> pd.DataFrame:
    """Every head x source contribution [L, H, T] as a long table (block, head, position, token, dla, imp)."""
    s = np.asarray(sources, dtype=float)
    L, H, T = s.shape
    ll, hh, pp = np.meshgrid(np.arange(L), np.arange(H), np.arange(T), indexing="ij")
    df = pd.DataFrame({"block": ll.ravel(), "head": hh.ravel(), "position": pp.ravel(),
                       "token": [tokens[p] for p in pp.ravel()], "dla": s.ravel()})
    if imp is not None:
        df["imp_nats"] = np.asarray(imp, dtype=float).ravel()
    return df
