"""Tuned lens charts: per-layer KL to the final distribution and cross-entropy, logit lens vs tuned lens, on the
held-out part of the training corpus (analysis.lens.tuned.HeldOut). Pure plotly, no streamlit.

Layer convention: 0 = embeddings, l = output of block l-1, L = last block's output before the final norm.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.lens.tuned import HeldOut
from components.charts.style import integer_axis
from components.charts.text import safe_text

LOGIT_COLOUR, TUNED_COLOUR = "#7f7f7f", "#9467bd"  # grey and purple: blue and red mean promote and suppress
LOG_RATIO = 20.0  # a log KL axis when the largest layer mean is 20x the median (real models' layer 0)


def held_out_frame(held: HeldOut) -> pd.DataFrame:
    """One row per layer 0..L: mean KL(p_L || p_l) and cross-entropy (nats), logit lens and tuned lens."""
    L = held.n_layers
    return pd.DataFrame({"layer": np.arange(L + 1), "kl_logit": held.kl_logit, "kl_tuned": held.kl_tuned,
                         "xent_logit": held.xent_logit, "xent_tuned": held.xent_tuned})


def held_out_figure(held: HeldOut, label: str = "", log: bool | None = None) -> go.Figure:
    """Two panels over layers: mean KL to the final layer (layers 0..L-1; 0 at L by definition) and mean
    cross-entropy against the next token (0..L), each logit lens vs tuned lens (``log`` None = automatic KL axis)."""
    L = held.n_layers
    layers = np.arange(L + 1)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("KL(p_L ‖ p_l), nats", "cross-entropy vs next token, nats"))
    kl_max = float(np.nanmax(held.kl_logit[:L])) if L else 0.0
    kl_med = float(np.nanmedian(np.concatenate([held.kl_logit[:L], held.kl_tuned[:L]]))) if L else 0.0
    if log is None:
        log = kl_med > 0 and kl_max / kl_med >= LOG_RATIO
    for name, colour, kl, xe in (("logit lens", LOGIT_COLOUR, held.kl_logit, held.xent_logit),
                                 ("tuned lens", TUNED_COLOUR, held.kl_tuned, held.xent_tuned)):
        fig.add_trace(go.Scatter(x=layers[:L], y=kl[:L], mode="lines+markers", name=name, legendgroup=name,
                                 line=dict(color=colour),
                                 hovertemplate=f"{name}<br>layer %{{x}}<br>KL %{{y:.4f}} nats<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=xe, mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line=dict(color=colour),
                                 hovertemplate=f"{name}<br>layer %{{x}}<br>cross-entropy %{{y:.4f}} nats"
                                               "<extra></extra>"), row=1, col=2)
    title = "Logit lens vs tuned lens on held-out text"
    if label:
        title += f" — {safe_text(label, max_len=60)}"
    sub = f"{held.n_positions} positions of {held.n_texts} held-out lines"
    fig.update_layout(title=dict(text=f"{title}<br><sup>{sub}</sup>"), height=460, margin=dict(t=90),
                      legend=dict(orientation="h", yanchor="top", y=-0.35, x=0))  # under the wrapped axis titles
    for col in (1, 2):
        fig.update_xaxes(title_text="layer (0 = embeddings, L = last block)", row=1, col=col)
        integer_axis(fig, "x", span=L, row=1, col=col)
    fig.update_yaxes(title_text="mean KL to the final layer (nats)", type="log" if log else "linear", row=1, col=1,
                     **({"dtick": 1} if log else {}))  # log: one labelled tick per decade
    fig.update_yaxes(title_text="mean cross-entropy (nats)", row=1, col=2)
    return fig
