"""Logit-lens figures: layer x position heatmap, target trajectories, mean KL per layer, decision depth, A-vs-B KL.

Pure functions: a LensTrace / LensComparison in, a go.Figure (or the DataFrame exported with it)
out. Layer 0 = embedding output, layer L = last block's output before the final norm. Every token
string passes through token_label.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.core.errors import InputError
from analysis.core.wording import plural
from analysis.lens import LensComparison, LensTrace, decision_depths, mean_kl_per_layer
from components.charts.style import heatmap_height, integer_axis, layer_rows, layer_rows_axis, log_integer_axis
from components.charts.text import safe_text, token_label

COLOR_METRICS = {
    "probability": "Top-1 probability",
    "entropy": "Entropy (nats)",
    "kl": "KL(p_L || p_l) (nats)",
    "log_rank": "log10 rank of the target",
}
_LAYER_AXIS = "Layer (0 = embeddings, L = last block)"
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0}  # never over the plot
PROMPT_COLOURS = qualitative.Plotly  # one colour per prompt, the same in the probability and the rank panel
_ROW_TICKS = 20  # up to 20 layers every layer row is labelled; deeper models every 2nd/3rd, the last layer always


def _positions(trace_len: int, max_positions: int | None) -> np.ndarray:
    """The last ``max_positions`` positions of a prompt of ``trace_len`` tokens."""
    start = 0 if not max_positions else max(0, trace_len - int(max_positions))
    return np.arange(start, trace_len)


def _position_labels(tokens: Sequence[str], pos: np.ndarray) -> list[str]:
    """Unique tick labels 'index: token' (escaped, visible whitespace)."""
    return [f"{int(t)}: {token_label(tokens[int(t)], max_len=12)}" for t in pos]


def metric_values(trace: LensTrace, n: int, metric: str) -> np.ndarray:
    """The colour values of prompt n for ``metric``: [L+1, T]."""
    if metric == "probability":
        return trace.top_probs[n, :, :, 0]
    if metric == "entropy":
        return trace.entropy[n]
    if metric == "kl":
        return trace.kl[n]
    if metric == "log_rank":
        if trace.target_mode == "none":
            raise InputError("Colouring by the target's rank needs a target: choose a target mode.")
        r = trace.target_rank[n].astype(np.float64)
        return np.where(r > 0, np.log10(np.maximum(r, 1)), np.nan)
    raise InputError(f"Unknown colour metric {metric!r}; choose one of {', '.join(COLOR_METRICS)}.")


def _cell_hover(trace: LensTrace, n: int, layer: int, t: int) -> str:
    """Top-k of one cell as escaped hover text."""
    lines = [f"{i + 1}. {token_label(trace.token(tid))}  {p:.3f}"
             for i, (tid, p) in enumerate(zip(trace.top_ids[n, layer, t], trace.top_probs[n, layer, t], strict=True)) if tid >= 0]
    extra = f"H {trace.entropy[n, layer, t]:.2f} nats · KL {trace.kl[n, layer, t]:.2f}"
    if trace.target_ids[n, t] >= 0:
        extra += (f"<br>target {token_label(trace.token(trace.target_ids[n, t]))}: p {trace.target_prob[n, layer, t]:.3g}"
                  f", rank {int(trace.target_rank[n, layer, t])}")
    return "<br>".join(lines) + "<br>" + extra


def _rows_note(rows: list[int], n_layers: int) -> str:
    return "" if len(rows) == n_layers + 1 else f" (a row every {rows[1] - rows[0]} layers of {n_layers + 1}, and L)"


def lens_heatmap(trace: LensTrace, n: int = 0, metric: str = "probability", max_positions: int | None = 40,
                 title: str | None = None, layer_step: int = 0) -> go.Figure:
    """Layer x position heatmap of prompt n, coloured by ``metric``, annotated with the top-1 token; hover = top-k.
    Deep models draw every ``layer_step``-th layer (0 = auto: at most 40 rows), the last layer always."""
    length = int(trace.lengths[n])
    pos = _positions(length, max_positions)
    layers = np.asarray(layer_rows(trace.n_layers, layer_step))
    vals = metric_values(trace, n, metric)[layers][:, pos]
    text = [[token_label(trace.token(trace.top_ids[n, l, t, 0]), max_len=8) for t in pos] for l in layers]
    hover = [[_cell_hover(trace, n, int(l), int(t)) for t in pos] for l in layers]
    xlabels = _position_labels(trace.tokens(n), pos)
    scale = {"probability": "Blues", "entropy": "Viridis", "kl": "Magma", "log_rank": "Viridis_r"}[metric]
    zmax = {"probability": 1.0, "entropy": float(np.log(trace.vocab_size))}.get(metric)
    fig = go.Figure(go.Heatmap(
        z=vals, x=xlabels, y=layers, text=text, texttemplate="%{text}", textfont={"size": 10},
        customdata=hover, hovertemplate="layer %{y} · position %{x}<br>%{customdata}<extra></extra>",
        colorscale=scale, zmin=0.0, zmax=zmax, colorbar={"title": {"text": COLOR_METRICS[metric]}},
    ))
    shown = "" if len(pos) == length else f" (last {len(pos)} of {length} positions)"
    fig.update_layout(
        title=safe_text(title) if title else f"Logit lens: top-1 token per layer and position{shown}"
                                             f"{_rows_note(list(layers), trace.n_layers)}",
        xaxis={"title": "Input position: token", "tickangle": -45, "type": "category"},
        yaxis={"title": _LAYER_AXIS},
        height=heatmap_height(len(layers)), margin={"l": 60, "r": 20, "t": 60, "b": 110},
    )
    return layer_rows_axis(fig, trace.n_layers, max_ticks=_ROW_TICKS)


def heatmap_frame(trace: LensTrace, n: int = 0, max_positions: int | None = None) -> pd.DataFrame:
    """Long table of prompt n: one row per (layer, position) with top-1, its probability, entropy, KL, target stats."""
    pos = _positions(int(trace.lengths[n]), max_positions)
    toks = trace.tokens(n)
    rows = []
    for l in range(trace.n_layers + 1):
        for t in pos:
            rows.append({"layer": l, "position": int(t), "input_token": toks[int(t)],
                         "top1_token": trace.token(trace.top_ids[n, l, t, 0]),
                         "top1_prob": float(trace.top_probs[n, l, t, 0]), "entropy_nats": float(trace.entropy[n, l, t]),
                         "kl_to_final_nats": float(trace.kl[n, l, t]),
                         "target_token": trace.token(trace.target_ids[n, t]) if trace.target_ids[n, t] >= 0 else None,
                         "target_prob": float(trace.target_prob[n, l, t]),
                         "target_rank": int(trace.target_rank[n, l, t]) or None,
                         "xent_next_nats": float(trace.xent[n, l, t])})
    return pd.DataFrame(rows)


def position_table(trace: LensTrace, n: int, t: int) -> pd.DataFrame:
    """Top-k of every layer at position t of prompt n: one row per layer (plain text, for st.dataframe)."""
    if not 0 <= t < int(trace.lengths[n]):
        raise InputError(f"Position {t} is outside prompt {n + 1}.")
    rows = []
    for l in range(trace.n_layers + 1):
        row: dict = {"layer": l}
        for i in range(trace.k):
            row[f"#{i + 1}"] = trace.token(trace.top_ids[n, l, t, i])
            row[f"p{i + 1}"] = round(float(trace.top_probs[n, l, t, i]), 4)
        row["entropy (nats)"] = round(float(trace.entropy[n, l, t]), 4)
        row["KL to final (nats)"] = round(float(trace.kl[n, l, t]), 4)
        if trace.target_ids[n, t] >= 0:
            row["target p"] = float(trace.target_prob[n, l, t])
            row["target rank"] = int(trace.target_rank[n, l, t])
        rows.append(row)
    return pd.DataFrame(rows)


def target_lines(trace: LensTrace, prompts: Sequence[int], position: int | None = None,
                 max_legend: int = 8) -> go.Figure:
    """Target probability (top) and rank (bottom, log axis) per layer on one shared layer axis: one line per prompt
    (every prompt; faint and named in the hover when there are many), plus the mean probability / median rank."""
    if trace.target_mode == "none":
        raise InputError("The target trajectory needs a target: choose a target mode.")
    layers = np.arange(trace.n_layers + 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Target probability", "Target rank (1 = top, log scale)"))
    lines = []
    for n in (int(i) for i in prompts):
        t = int(trace.last_index[n]) if position is None else int(position)
        if trace.target_ids[n, t] >= 0:
            lines.append((n, t, trace.target_prob[n, :, t], trace.target_rank[n, :, t]))
    if not lines:
        raise InputError("None of the chosen prompts has a target at that position.")
    many = len(lines) > 1
    legend = len(lines) <= max_legend
    for j, (n, t, p, r) in enumerate(lines):
        name = f"{n + 1}: {token_label(trace.token(trace.target_ids[n, t]))}"
        style = {"width": 1 if many else 2.5, "color": PROMPT_COLOURS[j % len(PROMPT_COLOURS)]}
        common = dict(mode="lines+markers" if not many else "lines", name=name, legendgroup=name, line=style,
                      opacity=0.45 if many else 1.0)
        fig.add_trace(go.Scatter(x=layers, y=p, showlegend=legend, **common,
                                 hovertemplate=f"prompt {name}<br>layer %{{x}}: p %{{y:.4f}}<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=layers, y=r, showlegend=False, **common,
                                 hovertemplate=f"prompt {name}<br>layer %{{x}}: rank %{{y}}<extra></extra>"), 2, 1)
    if many:
        probs, ranks = [x[2] for x in lines], [x[3] for x in lines]
        fig.add_trace(go.Scatter(x=layers, y=np.mean(probs, axis=0), name=f"mean over {plural(len(lines), 'prompt')}",
                                 line={"width": 4, "color": "black"}), 1, 1)
        fig.add_trace(go.Scatter(x=layers, y=np.median(ranks, axis=0), name=f"median over {plural(len(lines), 'prompt')}",
                                 line={"width": 4, "color": "black", "dash": "dot"}), 2, 1)
    fig.update_xaxes(title_text=_LAYER_AXIS, row=2, col=1)
    integer_axis(fig, "x", span=trace.n_layers)
    fig.update_yaxes(title_text="probability", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="rank", autorange="reversed", row=2, col=1)
    log_integer_axis(fig, "y", row=2, col=1)
    where = " (last position)" if position is None else f" (position {position})"
    shown = "" if legend else f"; {plural(len(lines), 'prompt')}, each named in its hover"
    fig.update_layout(title=f"Target token through depth{where}{shown}", height=560,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.14, "xanchor": "left", "x": 0})
    return fig


def target_frame(trace: LensTrace, prompts: Sequence[int], position: int | None = None) -> pd.DataFrame:
    """Target probability and rank per layer for each prompt (the data of target_lines)."""
    rows = []
    for n in prompts:
        t = int(trace.last_index[n]) if position is None else int(position)
        if trace.target_ids[n, t] < 0:
            continue
        for l in range(trace.n_layers + 1):
            rows.append({"prompt": int(n) + 1, "position": t, "target": trace.token(trace.target_ids[n, t]),
                         "layer": l, "prob": float(trace.target_prob[n, l, t]),
                         "rank": int(trace.target_rank[n, l, t])})
    return pd.DataFrame(rows)


def mean_kl_figure(traces: dict[str, LensTrace], positions: str = "last", log: bool = False) -> go.Figure:
    """Mean KL(p_L || p_l) per layer over the set, one line per model (``log``: a log KL axis, for real models whose
    early layers sit 10-100 nats away and flatten the rest)."""
    fig = go.Figure()
    for name, tr in traces.items():
        fig.add_trace(go.Scatter(x=np.arange(tr.n_layers + 1), y=mean_kl_per_layer(tr, positions), mode="lines+markers",
                                 name=safe_text(name, max_len=40),
                                 hovertemplate="layer %{x}: %{y:.3f} nats<extra></extra>"))
    where = "each prompt's last position" if positions == "last" else "all positions"
    n = len(next(iter(traces.values())).prompts)
    fig.update_layout(title=f"Mean KL to the final layer ({plural(n, 'prompt')}, {where})", height=430,
                      xaxis={"title": _LAYER_AXIS}, yaxis={"title": "mean KL(p_L || p_l) (nats)", "rangemode": "tozero"},
                      legend=LEGEND_BELOW)
    if log:
        fig.update_yaxes(type="log", rangemode=None, title="mean KL(p_L || p_l) (nats, log scale)")
    return integer_axis(fig, "x", span=max(tr.n_layers for tr in traces.values()))


def kl_axis_log(traces: dict[str, LensTrace], positions: str = "last", scale: str = "auto") -> bool:
    """Whether the mean-KL axis is logarithmic: "log", "linear", or "auto" = when the largest layer mean is at least
    20 times the median layer mean (real models' layer 0), so the other layers do not flatten to zero."""
    if scale != "auto":
        return scale == "log"
    vals = np.concatenate([mean_kl_per_layer(tr, positions) for tr in traces.values()])
    pos = vals[np.isfinite(vals) & (vals > 0)]
    return bool(pos.size > 2 and pos.max() >= 20 * np.median(pos))


def mean_kl_frame(traces: dict[str, LensTrace], positions: str = "last") -> pd.DataFrame:
    """The data of mean_kl_figure: model, layer, mean KL."""
    return pd.DataFrame([{"model": name, "layer": l, "mean_kl_nats": float(v)}
                         for name, tr in traces.items() for l, v in enumerate(mean_kl_per_layer(tr, positions))])


def decision_depth_histogram(traces: dict[str, LensTrace], positions: str = "last") -> go.Figure:
    """How many prompts settle on their final top-1 at each layer (decision depth), one bar group per model."""
    fig = go.Figure()
    top = 0
    for name, tr in traces.items():
        d = decision_depths(tr, positions)
        counts = np.bincount(d, minlength=tr.n_layers + 1)
        top = max(top, int(counts.max()) if counts.size else 0)
        fig.add_trace(go.Bar(x=np.arange(tr.n_layers + 1), y=counts, name=safe_text(name, max_len=40),
                             hovertemplate="depth %{x}: %{y} positions<extra></extra>"))
    fig.update_layout(title="Decision depth: first layer from which the final top-1 stays top-1", barmode="group",
                      height=430, legend=LEGEND_BELOW, xaxis={"title": _LAYER_AXIS}, yaxis={"title": "number of prompts"
                                                                          if positions == "last" else
                                                                          "number of positions"})
    integer_axis(fig, "x", span=max(tr.n_layers for tr in traces.values()))
    return integer_axis(fig, "y", span=top)


def decision_depth_frame(traces: dict[str, LensTrace], positions: str = "last") -> pd.DataFrame:
    """Decision depth per prompt (last position) or per position, per model."""
    rows = []
    for name, tr in traces.items():
        for n in range(len(tr.prompts)):
            ts = [int(tr.last_index[n])] if positions == "last" else range(int(tr.lengths[n]))
            for t in ts:
                rows.append({"model": name, "prompt": n + 1, "position": t,
                             "final_top1": tr.token(tr.top_ids[n, -1, t, 0]),
                             "decision_depth": int(tr.decision_depth[n, t])})
    return pd.DataFrame(rows)


def compare_heatmap(cmp: LensComparison, n: int = 0, max_positions: int | None = 40, layer_step: int = 0) -> go.Figure:
    """KL(A_l || B_l) of prompt n per layer and position (identical token ids); rows as in ``lens_heatmap``."""
    length = int(cmp.mask[n].sum())
    pos = _positions(length, max_positions)
    layers = np.asarray(layer_rows(cmp.n_layers, layer_step))
    fig = go.Figure(go.Heatmap(
        z=cmp.kl[n][layers][:, pos], x=_position_labels(cmp.tokens(n), pos), y=layers,
        colorscale="Magma", zmin=0.0, colorbar={"title": {"text": "KL (nats)"}},
        hovertemplate="layer %{y} · position %{x}<br>KL(A||B) %{z:.4f} nats<extra></extra>"))
    fig.update_layout(
        title=f"KL(A_l || B_l): {safe_text(cmp.model_a, max_len=40)} vs {safe_text(cmp.model_b, max_len=40)}"
              f"{_rows_note(list(layers), cmp.n_layers)}",
        xaxis={"title": "Input position: token", "tickangle": -45, "type": "category"},
        yaxis={"title": _LAYER_AXIS},
        height=heatmap_height(len(layers)), margin={"b": 110})
    return layer_rows_axis(fig, cmp.n_layers, max_ticks=_ROW_TICKS)


def compare_mean_figure(cmp: LensComparison) -> go.Figure:
    """Mean KL(A_l || B_l) per layer over the set: all positions and last positions."""
    layers = np.arange(cmp.n_layers + 1)
    fig = go.Figure([
        go.Scatter(x=layers, y=cmp.mean_kl, mode="lines+markers", name="all positions",
                   hovertemplate="layer %{x}: %{y:.4f} nats<extra></extra>"),
        go.Scatter(x=layers, y=cmp.mean_kl_last, mode="lines+markers", name="last position",
                   hovertemplate="layer %{x}: %{y:.4f} nats<extra></extra>"),
    ])
    fig.update_layout(title=f"Where in depth A and B differ: mean KL(A_l || B_l) over {plural(len(cmp.prompts), 'prompt')}",
                      height=430, xaxis={"title": _LAYER_AXIS}, yaxis={"title": "mean KL (nats)", "rangemode": "tozero"},
                      legend=LEGEND_BELOW)
    return integer_axis(fig, "x", span=cmp.n_layers)


def compare_frame(cmp: LensComparison) -> pd.DataFrame:
    """Per-layer mean KL(A_l || B_l) (all and last positions)."""
    return pd.DataFrame({"layer": np.arange(cmp.n_layers + 1), "mean_kl_all_nats": cmp.mean_kl,
                         "mean_kl_last_nats": cmp.mean_kl_last})
