"""Figures for steering and persona vectors: separability, projections, sweep, targets vs controls, drift, generations.

Pure functions: result in, go.Figure out (no streamlit). Every prompt or token string passes through
components.charts.text. Layer numbering: 0 = embedding output, l = output of block l-1, L = last block's
output before the final norm.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.core.wording import plural
from analysis.steering import Drift, Flagged, GenerationComparison, Monitoring, SteeringVectors, Sweep
from components.charts.style import DIVERGING, categorical_axis, count_span, integer_axis
from components.charts.text import one_line, safe_text, token_label

LAYER_AXIS = "layer (0 = embeddings, l = output of block l-1)"
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def separability_figure(sv: SteeringVectors) -> go.Figure:
    """Held-out AUROC of the projection on the vector, per layer (0.5 = chance, 1 = perfect)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(sv.layers), y=np.asarray(sv.auroc, dtype=float), mode="lines+markers",
                             name="held-out AUROC", hovertemplate="layer %{x}<br>AUROC %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    choice = sv.default_layer_choice()
    lo, hi = choice.window
    fig.add_vrect(x0=lo - 0.5, x1=hi + 0.5, fillcolor="grey", opacity=0.08, line_width=0,
                  annotation_text="default-layer window", annotation_position="bottom left")
    fig.add_vline(x=choice.layer, line_dash="dash", line_color="#d62728")
    fig.update_layout(
        title=f"Separability of {safe_text(sv.positive, max_len=30)} vs {safe_text(sv.negative, max_len=30)} "
              f"(held-out AUROC; default layer {choice.layer})",
        xaxis_title=LAYER_AXIS, yaxis_title="AUROC of projection on v_l (held out)", yaxis_range=[0, 1.02],
        height=380, margin=dict(t=60, b=50))
    return integer_axis(fig, "x", span=max(sv.layers, default=0))


def separability_table(sv: SteeringVectors) -> pd.DataFrame:
    """Per layer: AUROC, Cohen's d of the contrast projections (the default layer's tie-break) and the vector's norm."""
    return pd.DataFrame({"layer": list(sv.layers), "auroc_heldout": np.asarray(sv.auroc, dtype=float),
                         "cohens_d": sv.separation(), "vector_norm": np.linalg.norm(sv.vectors, axis=1)})


def projection_histogram(values: np.ndarray, groups: Sequence[str], layer: int, *, title: str | None = None
                         ) -> go.Figure:
    """Histogram of projections h_l . v_l/||v_l|| per group at one layer."""
    values = np.asarray(values, dtype=float)
    fig = go.Figure()
    names = list(dict.fromkeys(groups))
    samples = []
    for i, g in enumerate(names):
        sel = np.array([x == g for x in groups])
        samples.append(values[sel])
        fig.add_trace(go.Histogram(x=values[sel], name=token_label(g, max_len=30), opacity=0.65,
                                   marker_color=PALETTE[i % len(PALETTE)],
                                   hovertemplate="projection %{x}<br>%{y} prompts<extra></extra>"))
    fig.update_layout(barmode="overlay", title=title or f"Projection on the unit vector at layer {layer}",
                      xaxis_title=f"h_{layer}[last prompt token] · v̂_{layer} (residual units)",
                      yaxis_title="prompts", height=360, margin=dict(t=60, b=50))
    return integer_axis(fig, "y", span=count_span(*samples))  # counts of prompts


def build_projection_figure(sv: SteeringVectors, layer: int) -> go.Figure:
    """Projection histogram of the contrast set itself (positive vs negative) at one layer."""
    k = sv.layers.index(layer)
    groups = [sv.positive if p else sv.negative for p in sv.is_positive]
    return projection_histogram(sv.projections[:, k], groups, layer,
                                title=f"Contrast set projected on v̂_{layer} ({safe_text(sv.positive, max_len=30)} "
                                      f"vs {safe_text(sv.negative, max_len=30)})")


def monitoring_figure(mon: Monitoring, layer: int) -> go.Figure:
    """Projection histogram per group of a monitored prompt set at one layer."""
    k = mon.layers.index(layer)
    return projection_histogram(mon.projections[:, k], mon.groups, layer)


def monitoring_table(mon: Monitoring) -> pd.DataFrame:
    """One row per prompt, one column per layer's projection."""
    df = pd.DataFrame({"prompt": list(mon.prompts), "group": list(mon.groups)})
    for k, l in enumerate(mon.layers):
        df[f"proj_layer_{l}"] = mon.projections[:, k]
    return df


def _who(model: str) -> str:
    return f"{safe_text(model, max_len=40)}: " if model else ""


def sweep_figure(sw: Sweep, model: str = "") -> go.Figure:
    """Alpha on x; target logit difference (left panel) and KL(clean || steered) on targets (right), a line per layer
    (``model``: the checkpoint's label in the title, when A and B are both shown)."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"target logit difference z({token_label(sw.token_a)}) − z({token_label(sw.token_b)})",
        "KL(clean ‖ steered) on targets (nats)"))
    for i, l in enumerate(sw.layers):
        c = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=list(sw.alphas), y=sw.ld_target[i], mode="lines+markers", name=f"layer {l}",
                                 legendgroup=str(l), line_color=c,
                                 hovertemplate=f"layer {l}<br>alpha %{{x:g}}<br>logit diff %{{y:.3f}}<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=list(sw.alphas), y=sw.kl_target[i], mode="lines+markers", name=f"layer {l}",
                                 legendgroup=str(l), showlegend=False, line_color=c,
                                 hovertemplate=f"layer {l}<br>alpha %{{x:g}}<br>KL %{{y:.4f}} nats<extra></extra>"),
                      row=1, col=2)
    fig.add_hline(y=sw.ld_target_clean, line_dash="dot", line_color="grey", row=1, col=1,
                  annotation_text="unsteered")
    fig.update_xaxes(title_text="alpha (steering coefficient)")
    fig.update_yaxes(title_text="mean logit difference (logits)", row=1, col=1)
    fig.update_yaxes(title_text="mean KL (nats)", row=1, col=2)
    fig.update_layout(title=f"{_who(model)}Steering sweep ({plural(sw.n_targets, 'target prompt')}; positions: {sw.rule})",
                      height=420,
                      margin=dict(t=80, b=50))
    return fig


def targets_vs_controls_figure(sw: Sweep, model: str = "") -> go.Figure:
    """Change of the logit difference on targets (y) against on controls (x), one point per (layer, alpha)."""
    fig = go.Figure()
    for i, l in enumerate(sw.layers):
        fig.add_trace(go.Scatter(
            x=sw.d_ld_control[i], y=sw.d_ld_target[i], mode="markers+lines", name=f"layer {l}",
            marker=dict(size=9, color=PALETTE[i % len(PALETTE)]),
            customdata=np.c_[np.asarray(sw.alphas), sw.kl_control[i], sw.d_entropy_control[i], sw.mean_shift_control[i]],
            hovertemplate=(f"layer {l}<br>alpha %{{customdata[0]:g}}<br>Δ on targets %{{y:.3f}}<br>Δ on controls "
                           "%{x:.3f}<br>KL controls %{customdata[1]:.4f}<br>ΔH controls %{customdata[2]:.3f} nats"
                           "<br>mean logit shift %{customdata[3]:.3f}<extra></extra>")))
    lo = float(np.nanmin([sw.d_ld_control.min(), sw.d_ld_target.min(), 0.0]))
    hi = float(np.nanmax([sw.d_ld_control.max(), sw.d_ld_target.max(), 0.0]))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="grey"),
                             name="y = x (a purely global shift)", hoverinfo="skip"))
    fig.update_layout(
        title=f"{_who(model)}Targets vs controls: Δ[z({token_label(sw.token_a)}) − z({token_label(sw.token_b)})] "
              f"({plural(sw.n_targets, 'target')}, {plural(sw.n_controls, 'control')})",
        xaxis_title="change of logit difference on control prompts (logits)",
        yaxis_title="change on target prompts (logits)", height=420, margin=dict(t=60, b=50))
    return fig


def sweep_table(sw: Sweep) -> pd.DataFrame:
    """Long table: one row per (layer, alpha) with every statistic."""
    rows = []
    for i, l in enumerate(sw.layers):
        for j, a in enumerate(sw.alphas):
            rows.append({"layer": l, "alpha": a, "ld_target": sw.ld_target[i, j], "d_ld_target": sw.d_ld_target[i, j],
                         "kl_target": sw.kl_target[i, j], "ld_control": sw.ld_control[i, j],
                         "d_ld_control": sw.d_ld_control[i, j], "kl_control": sw.kl_control[i, j],
                         "d_entropy_control": sw.d_entropy_control[i, j],
                         "mean_logit_shift_control": sw.mean_shift_control[i, j]})
    return pd.DataFrame(rows)


def drift_figure(d: Drift) -> go.Figure:
    """Drift of B relative to A along v̂_l per layer, with the random-direction baseline."""
    fig = go.Figure()
    x = list(d.layers)
    fig.add_trace(go.Bar(x=x, y=d.drift, name="along the steering vector", marker_color=PALETTE[0],
                         hovertemplate="layer %{x}<br>drift %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Bar(x=x, y=d.random_drift, name=f"along a random direction (seed {d.seed})",
                         marker_color="#aaaaaa", hovertemplate="layer %{x}<br>random %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=d.random_abs_mean, mode="markers", marker_symbol="line-ew-open",
                             marker=dict(size=18, color="black"), name=f"mean |random| over {d.n_random} directions",
                             hovertemplate="layer %{x}<br>mean |random| %{y:.4f}<extra></extra>"))
    fig.update_layout(barmode="group",
                      title=f"Persona drift: {safe_text(d.model_b, max_len=40)} − {safe_text(d.model_a, max_len=40)} "
                            f"at the last prompt token ({len(d.prompts)} prompts)",
                      xaxis_title=LAYER_AXIS, yaxis_title="mean (h_l^B − h_l^A) · v̂_l (residual units)",
                      height=400, margin=dict(t=60, b=50))
    return integer_axis(fig, "x", span=max(x, default=0))


def drift_table(d: Drift) -> pd.DataFrame:
    """Per layer: drift, one random direction, mean |random|."""
    return pd.DataFrame({"layer": list(d.layers), "drift": d.drift, "random_drift": d.random_drift,
                         "mean_abs_random_drift": d.random_abs_mean})


def flagged_table(f: Flagged) -> pd.DataFrame:
    """Rows ranked by projection difference, highest first."""
    order = f.ranking()
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "line": [f.lines[i] for i in order],
                         "prompt": [f.prompts[i] for i in order], "response": [f.responses[i] for i in order],
                         "own_response": [f.own_responses[i] for i in order], "projection_difference": f.dp[order],
                         "proj_data": f.proj_data[order], "proj_own": f.proj_own[order]})


def flagged_figure(f: Flagged, top: int = 30) -> go.Figure:
    """Bar chart of the projection difference per row (highest first, at most ``top`` rows)."""
    order = f.ranking()[:top]
    labels = [f"line {f.lines[i]}" for i in order]
    fig = go.Figure(go.Bar(x=labels, y=f.dp[order], customdata=[[safe_text(f.prompts[i], max_len=80),
                                                                 safe_text(f.responses[i], max_len=80)] for i in order],
                           hovertemplate="%{x}<br>%{customdata[0]}<br>response: %{customdata[1]}"
                                         "<br>ΔP %{y:.4f}<extra></extra>", marker_color=PALETTE[0]))
    fig.update_layout(title=f"Data flagging at layer {f.layer}: projection difference (dataset − own response)",
                      xaxis_title="row (source line)", yaxis_title="(a(x,y) − a(x,y')) · v̂ (residual units)",
                      height=380, margin=dict(t=60, b=80))
    return categorical_axis(fig, "x")


def shift_scale(*cmps: GenerationComparison | None) -> float:
    """The |log-prob shift| that gets the deepest tile shade: the 95th percentile over every continuation given (so
    A's and B's tiles share one scale)."""
    allv = np.concatenate([np.abs(g.logprob_shift) for c in cmps if c is not None for g in (c.unsteered, c.steered)]
                          + [np.zeros(1)])
    return float(np.quantile(allv, 0.95)) or 1.0


def generations_figure(cmp: GenerationComparison, per_row: int = 8, scale: float | None = None,
                       model: str = "") -> go.Figure:
    """Unsteered (left) and steered (right) continuations as grids of token cells coloured by log p_steered −
    log p_clean on the page-wide diverging scale (blue = steering made the token more likely, red = less), from
    −scale to +scale (``scale``: default this comparison's own ``shift_scale``; A and B pass one shared value)."""
    from plotly.subplots import make_subplots
    gens = [("unsteered", cmp.unsteered), (f"steered (layer {cmp.layer}, alpha {cmp.alpha:g})", cmp.steered)]
    scale = shift_scale(cmp) if scale is None else scale
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for t, _ in gens], horizontal_spacing=0.04)
    n_rows = max(1, max((len(g.tokens) + per_row - 1) // per_row for _, g in gens))
    for c, (_, g) in enumerate(gens, start=1):
        z = np.full((n_rows, per_row), np.nan)
        text = np.full((n_rows, per_row), "", dtype=object)
        number = np.full((n_rows, per_row), "", dtype=object)
        for i, (tok, sh) in enumerate(zip(g.tokens, g.logprob_shift, strict=True)):
            z[i // per_row, i % per_row] = float(sh)
            text[i // per_row, i % per_row] = token_label(tok, max_len=12)
            number[i // per_row, i % per_row] = str(i + 1)
        fig.add_trace(go.Heatmap(
            z=z, text=text, texttemplate="%{text}", textfont=dict(size=11), customdata=number, colorscale=DIVERGING,
            zmin=-scale, zmax=scale, xgap=2, ygap=2, showscale=c == 2, hoverongaps=False,
            colorbar=dict(title="nats"),
            hovertemplate="token %{customdata}: %{text}<br>log p steered − log p clean %{z:.3f} nats<extra></extra>"),
            row=1, col=c)
        fig.update_xaxes(visible=False, row=1, col=c)
        fig.update_yaxes(visible=False, autorange="reversed", row=1, col=c)
    how = "greedy" if cmp.temperature == 0 else f"T = {cmp.temperature:g}, seed {cmp.seed}"
    fig.update_layout(
        title=f"{_who(model)}Continuations ({how}; steered positions: {cmp.rule})<br><sup>of “"
              f"{one_line(cmp.prompt)}”; blue: steering made the token more likely, red: less</sup>",
        height=160 + 44 * n_rows, margin=dict(t=90, b=20, l=10, r=10))
    return fig


def generations_table(cmp: GenerationComparison) -> pd.DataFrame:
    """One row per generated token of each continuation, with its log-prob shift."""
    rows = []
    for which, g in (("unsteered", cmp.unsteered), ("steered", cmp.steered)):
        for i, (tok, tid, sh) in enumerate(zip(g.tokens, g.ids, g.logprob_shift, strict=True)):
            rows.append({"continuation": which, "position": i + 1, "token": tok, "token_id": int(tid),
                         "logprob_shift": float(sh)})
    return pd.DataFrame(rows)
