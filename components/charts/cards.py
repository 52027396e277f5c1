"""Neuron card and vector card charts and tables (pure functions, no streamlit; methods.md sections 3 and 4)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.neurons import NeuronCard
from analysis.steering import SteeringVectors, VectorCard
from components.charts.style import categorical_axis, count_span, integer_axis
from components.charts.text import safe_text, token_label, visible

MARK = ("⟦", "⟧")


def token_bars(top: Sequence[str], top_v: np.ndarray, bottom: Sequence[str], bottom_v: np.ndarray, title: str,
               units: str) -> go.Figure:
    """Promoted (left) and suppressed (right) tokens as horizontal bars, strongest on top."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("promoted", "suppressed"), horizontal_spacing=0.25)
    for col, (toks, vals, colour) in enumerate(((top, top_v, "#2166ac"), (bottom, bottom_v, "#b2182b")), start=1):
        labels = [f"{i + 1}. {token_label(t)}" for i, t in enumerate(toks)]
        fig.add_trace(go.Bar(x=list(vals), y=labels, orientation="h", marker_color=colour, showlegend=False,
                             hovertemplate="%{y}<br>%{x:.4f} " + units + "<extra></extra>"), row=1, col=col)
        categorical_axis(fig, "y", row=1, col=col, order=list(reversed(labels)))
    fig.update_xaxes(title_text=units)
    fig.update_layout(title=safe_text(title), height=max(300, 120 + 22 * len(top)), margin=dict(l=20, r=20, t=70, b=50))
    return fig


def token_frame(top: Sequence[str], top_ids: np.ndarray, top_v: np.ndarray, bottom: Sequence[str],
                bottom_ids: np.ndarray, bottom_v: np.ndarray) -> pd.DataFrame:
    """Rank, token, id and value of the promoted and the suppressed tokens."""
    k = len(top)
    return pd.DataFrame({"rank": range(1, k + 1), "promoted_token": list(top), "promoted_id": top_ids[:k],
                         "promoted_logit": top_v[:k], "suppressed_token": list(bottom), "suppressed_id": bottom_ids[:k],
                         "suppressed_logit": bottom_v[:k]})


# ------------------------------------------------------------------------------------------ neuron card
def neuron_tokens_figure(card: NeuronCard, k: int, name: str = "") -> go.Figure:
    """The neuron's top-k promoted and suppressed tokens of W_U (gamma * w_out)."""
    title = f"{name + ': ' if name else ''}{card.label} direct logits W_U·(γ ⊙ w_out)"
    return token_bars(card.top_tokens[:k], card.top_values[:k], card.bottom_tokens[:k], card.bottom_values[:k], title,
                      "logit per unit activation")


def neuron_tokens_frame(card: NeuronCard, k: int) -> pd.DataFrame:
    """The top-k tokens table of the neuron card."""
    return token_frame(card.top_tokens[:k], card.top_ids, card.top_values, card.bottom_tokens[:k], card.bottom_ids,
                       card.bottom_values)


def context(tokens: Sequence[str], position: int, window: int) -> str:
    """The tokens around ``position`` (``window`` each side) with the token marked ⟦ ⟧, whitespace made visible."""
    lo, hi = max(0, position - window), min(len(tokens), position + window + 1)
    parts = [visible(t, max_len=None) for t in tokens[lo:hi]]
    parts[position - lo] = MARK[0] + parts[position - lo] + MARK[1]
    return ("… " if lo > 0 else "") + "".join(parts) + (" …" if hi < len(tokens) else "")


def examples_frame(card: NeuronCard, k: int, window: int = 8) -> pd.DataFrame:
    """The k top activating examples: prompt (1-based), position, token, activation and the context with ⟦token⟧."""
    rows = [{"prompt": p + 1, "position": pos, "token": card.tokens[p][pos], "activation": float(a),
             "context": context(card.tokens[p], pos, window)} for p, pos, a in card.top_examples(k)]
    return pd.DataFrame(rows, columns=["prompt", "position", "token", "activation", "context"])


def activation_histogram(card: NeuronCard, name: str = "") -> go.Figure:
    """Histogram of the neuron's activation over every reference position."""
    a = np.asarray(card.activation, dtype=float)
    fig = go.Figure(go.Histogram(x=a, marker_color="#4d4d4d", hovertemplate="%{x}<br>%{y} positions<extra></extra>"))
    fig.update_layout(title=safe_text(f"{name + ': ' if name else ''}{card.label} activations over "
                                      f"{len(a)} reference positions"),
                      xaxis_title="activation (input of the down-projection)", yaxis_title="positions", height=320,
                      margin=dict(l=60, r=20, t=60, b=50), bargap=0.05)
    return integer_axis(fig, "y", span=count_span(a))


def activation_frame(card: NeuronCard) -> pd.DataFrame:
    """Every reference position's activation: prompt (1-based), position, token, activation."""
    return pd.DataFrame({"prompt": card.prompt_index + 1, "position": card.position,
                         "token": [card.tokens[p][t] for p, t in zip(card.prompt_index, card.position, strict=True)],
                         "activation": card.activation.astype(float)})


# ------------------------------------------------------------------------------------------ vector card
def vector_tokens_figure(card: VectorCard, layer: int, k: int) -> go.Figure:
    """The top-k promoted and suppressed tokens of W_U N_f(v) at ``layer``."""
    r = card.row(layer)
    return token_bars(card.top_tokens[r][:k], card.top_values[r][:k], card.bottom_tokens[r][:k],
                      card.bottom_values[r][:k], f"Vector at layer {layer}: tokens of W_U·(γ ⊙ v) (gain only, no "
                      "norm scale)", "logit per unit of v")


def vector_tokens_frame(card: VectorCard, layer: int, k: int) -> pd.DataFrame:
    """The top-k tokens table of the vector card at ``layer``."""
    r = card.row(layer)
    out = token_frame(card.top_tokens[r][:k], card.top_ids[r], card.top_values[r], card.bottom_tokens[r][:k],
                      card.bottom_ids[r], card.bottom_values[r])
    out.insert(0, "layer", layer)
    return out


def projection_strip(sv: SteeringVectors, layer: int) -> go.Figure:
    """Where the contrast groups sit along v_l: each row's projection h_l · v_l/||v_l||, box plus points per group."""
    col = sv.layers.index(layer)
    proj = np.asarray(sv.projections, dtype=float)[:, col]
    fig = go.Figure()
    for flag, name, colour in ((True, sv.positive, "#b2182b"), (False, sv.negative, "#2166ac")):
        sel = np.asarray(sv.is_positive, dtype=bool) == flag
        idx = np.nonzero(sel)[0]
        texts = [safe_text(sv.prompts[i], max_len=80) if i < len(sv.prompts) else "" for i in idx]
        fig.add_trace(go.Box(x=proj[sel], name=safe_text(name or ("positive" if flag else "negative"), max_len=40),
                             boxpoints="all", jitter=0.4, pointpos=0, marker_color=colour, orientation="h",
                             customdata=texts, hovertemplate="%{x:.3f}<br>%{customdata}<extra></extra>"))
    fig.update_layout(title=f"Contrast groups along the vector at layer {layer}", showlegend=False, height=300,
                      xaxis_title="projection h_l · v_l / ||v_l||", margin=dict(l=120, r=20, t=60, b=50))
    return fig


def projection_frame(sv: SteeringVectors, layer: int) -> pd.DataFrame:
    """Each contrast row's group and projection on v_l / ||v_l|| at ``layer``."""
    col = sv.layers.index(layer)
    n = sv.projections.shape[0]
    return pd.DataFrame({"row": range(1, n + 1), "group": [sv.positive if p else sv.negative for p in sv.is_positive],
                         "prompt": list(sv.prompts[:n]) + [""] * (n - len(sv.prompts[:n])),
                         "layer": layer, "projection": sv.projections[:, col].astype(float)})
