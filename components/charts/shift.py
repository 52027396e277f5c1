"""Checkpoint-shift figures: shift heatmap, promoted/suppressed bars, KL along the text, per-layer KL, similarity.

Pure functions: an analysis.shift.logit_shift result in, a plotly Figure out. Every token string goes through
token_label; hover text comes from customdata.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.shift import LayerKL, PromptShift, Similarity, TokenTotals
from components.charts.style import DIVERGING, PROMOTES, SUPPRESSES, categorical_axis, integer_axis
from components.charts.text import one_line, safe_text, token_label

SHIFT_SCALE = DIVERGING  # red = suppressed (negative), blue = promoted (positive): the page-wide colour meaning


def _sym_range(*arrays: np.ndarray) -> float:
    vals = np.concatenate([np.abs(a[np.isfinite(a)]).ravel() for a in arrays if a is not None and a.size] or [np.ones(1)])
    m = float(vals.max()) if vals.size else 1.0
    return m if m > 0 else 1.0


def _step_labels(ps: PromptShift) -> list[str]:
    return [f"{t}: {token_label(tok, max_len=16)}" for t, tok in enumerate(ps.tokens)]


def shift_heatmap(ps: PromptShift, *, n_cols: int = 30, second: np.ndarray | None = None,
                  title: str = "", label_1: str = "A→B", label_2: str = "second pair") -> go.Figure:
    """Steps x top-N heatmap of S = log p_B - log p_A (nats); columns per step = B's top-N sorted by shift, every
    cell labelled with its token (a column is a rank, not a token: each step has its own tokens).

    ``second`` [T, N]: another pair's shift at the same tokens (mapped), drawn below in the same column order.
    """
    n = min(n_cols, ps.top_shift.shape[1]) if ps.top_shift.ndim == 2 else 0
    z1 = ps.top_shift[:, :n]
    toks = [[token_label(t, max_len=16) for t in row[:n]] for row in ps.top_tokens]
    pa = np.exp(ps.top_logp_a[:, :n])
    pb = np.exp(ps.top_logp_b[:, :n])
    ylab = _step_labels(ps)
    rows = 2 if second is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[safe_text(label_1, max_len=80)] + ([safe_text(label_2, max_len=80)] if rows == 2 else []))
    zmax = _sym_range(z1, second[:, :n] if second is not None else None)
    custom = np.dstack([np.asarray(toks, dtype=object), pa, pb]) if n else None
    fig.add_trace(go.Heatmap(
        z=z1, x=list(range(1, n + 1)), y=ylab, customdata=custom, colorscale=SHIFT_SCALE, zmid=0, zmin=-zmax,
        zmax=zmax, colorbar=dict(title="shift (nats)"),
        text=toks, texttemplate="%{text}", textfont=dict(size=9 if n <= 20 else 7),
        hovertemplate="step %{y}<br>token %{customdata[0]}<br>shift %{z:.3f} nats<br>p_A %{customdata[1]:.3g}"
                      " → p_B %{customdata[2]:.3g}<extra></extra>"), row=1, col=1)
    if second is not None:
        z2 = second[:, :n]
        fig.add_trace(go.Heatmap(
            z=z2, x=list(range(1, n + 1)), y=ylab, customdata=np.asarray(toks, dtype=object) if n else None,
            colorscale=SHIFT_SCALE, zmid=0, zmin=-zmax, zmax=zmax, showscale=False,
            text=toks, texttemplate="%{text}", textfont=dict(size=9 if n <= 20 else 7),
            hovertemplate="step %{y}<br>token %{customdata} (mapped)<br>shift %{z:.3f} nats<extra></extra>"),
            row=2, col=1)
    for r in range(1, rows + 1):
        fig.update_yaxes(autorange="reversed", title_text="step: predicted token", row=r, col=1)
    fig.update_xaxes(title_text="rank of the column among B's top tokens, sorted by shift", row=rows, col=1)
    integer_axis(fig, "x", span=n)  # shared by both panels
    T = len(ps.tokens)
    fig.update_layout(title=safe_text(title or "Logit shift per step (log p_B − log p_A, nats)", max_len=120),
                      height=min(1400, 180 + rows * max(180, 24 * T)), margin=dict(l=10, r=10, t=70, b=50))
    return fig


def token_bars(totals: TokenTotals, *, k: int = 15, title: str = "") -> go.Figure:
    """Most promoted (right) and suppressed (left) tokens over the set: probability moved (sum of p_B − p_A), with
    the steps counted and the total and mean shift (nats) in the hover."""
    up, down = totals.promoted(k), totals.suppressed(k)
    toks = list(up.tokens) + list(down.tokens)[::-1]
    mass = np.concatenate([up.mass, down.mass[::-1]])
    count = np.concatenate([up.count, down.count[::-1]])
    total = np.concatenate([up.total, down.total[::-1]])
    mean = np.concatenate([up.mean, down.mean[::-1]])
    labels = [f"{token_label(t)} #{i + 1}" for i, t in enumerate(toks)]  # unique even if a text repeats
    fig = go.Figure(go.Bar(
        x=mass, y=labels, orientation="h", marker_color=np.where(mass > 0, PROMOTES, SUPPRESSES),
        customdata=np.stack([count, total, mean], axis=1) if len(toks) else None,
        hovertemplate="%{y}<br>probability moved %{x:.3f} (sum of p_B − p_A)<br>in top-N at %{customdata[0]} steps"
                      "<br>total shift %{customdata[1]:.2f} nats, mean %{customdata[2]:.3f} nats<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="token (#rank)")
    categorical_axis(fig, "y")
    fig.update_xaxes(title_text="probability moved onto the token over the set (sum over steps of p_B − p_A)")
    fig.update_layout(title=safe_text(title or "Most promoted and suppressed tokens (B vs A)", max_len=120),
                      height=max(300, 60 + 20 * len(toks)), margin=dict(l=10, r=10, t=60, b=50))
    return fig


def kl_along_text(ps: PromptShift, *, title: str = "") -> go.Figure:
    """KL(B||A) (nats) at each step of the continuation, the predicted token on the x axis."""
    x = list(range(len(ps.tokens)))
    ticks = [token_label(t, max_len=12) for t in ps.tokens]
    fig = go.Figure(go.Bar(
        x=x, y=ps.kl, customdata=np.stack([np.asarray(ticks, dtype=object), np.exp(ps.logp_a), np.exp(ps.logp_b)], axis=1)
        if x else None, marker_color="#6a51a3",
        hovertemplate="step %{x}: %{customdata[0]}<br>KL(B‖A) %{y:.4f} nats<br>p_A(token) %{customdata[1]:.3g}"
                      " → p_B(token) %{customdata[2]:.3g}<extra></extra>"))
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=ticks, tickangle=-45,
                     title_text="continuation token predicted at the step")
    fig.update_yaxes(title_text="KL(B‖A) (nats)", rangemode="tozero")
    fig.update_layout(title=safe_text(title) if title else f"Per-position KL(B‖A) along the text: {one_line(ps.prompt)}",
                      height=380, margin=dict(l=10, r=10, t=60, b=90))
    return fig


def layer_kl_line(results: Sequence[tuple[str, LayerKL]], *, title: str = "") -> go.Figure:
    """Mean lens KL(A_l ‖ B_l) per layer (0 = embeddings … L = last block output), one line per pair."""
    fig = go.Figure()
    for name, lk in results:
        fig.add_trace(go.Scatter(x=list(range(len(lk.mean))), y=lk.mean, mode="lines+markers",
                                 name=safe_text(name, max_len=60),
                                 hovertemplate="layer %{x}<br>KL %{y:.4f} nats<extra></extra>"))
    fig.update_xaxes(title_text="layer (0 = embedding output, L = last block output before the final norm)")
    integer_axis(fig, "x", span=max((len(lk.mean) - 1 for _, lk in results), default=0))
    fig.update_yaxes(title_text="mean lens KL(A_l ‖ B_l) (nats)", rangemode="tozero")
    fig.update_layout(title=safe_text(title or "Where in depth did tuning act: per-layer lens KL"), height=380,
                      margin=dict(l=10, r=10, t=60, b=50))
    return fig


def similarity_summary(sim: Similarity, *, title: str = "") -> go.Figure:
    """Pearson and cosine of the two pairs' shifts (mean over prompts, ± std) against the shuffled control."""
    fig = go.Figure()
    for label, colour, attrs in (("observed", "#2166ac", ("pearson", "cosine")),
                                 ("shuffled control", "#999999", ("control_pearson", "control_cosine"))):
        means, stds = [], []
        for a in attrs:
            v = getattr(sim, f"{a}_by_prompt")
            v = v[np.isfinite(v)]
            means.append(getattr(sim, a))
            stds.append(float(v.std()) if v.size else 0.0)
        fig.add_trace(go.Bar(x=["Pearson", "cosine"], y=means, name=label, marker_color=colour,
                             error_y=dict(type="data", array=stds),
                             hovertemplate=f"{label}<br>%{{x}} %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(title_text="similarity of shift rows (mean over prompts)", range=[-1, 1])
    sub = (f"{sim.n_steps} aligned steps; columns: {'union of top-N' if sim.columns == 'top' else 'all mapped tokens'}; "
           f"mapped share {sim.mapped_share:.1%}")
    fig.update_layout(barmode="group", height=380, margin=dict(l=10, r=10, t=80, b=50),
                      title=safe_text(title or "Shift similarity: pair 1 vs pair 2", max_len=120) + "<br><sup>"
                      + safe_text(sub) + "</sup>")
    return fig
