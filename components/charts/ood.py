"""Figures of the OOD separability study: metrics heatmap, AUROC by layer, score histograms, ROC curves, 2-D map,
A vs B. Pure functions of analysis.ood.study results; every prompt or name shown goes through safe_text/token_label."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from analysis.ood import (
    ALL_OOD,
    HIGHER_IS_BETTER,
    ID_KEY,
    METRIC_LABELS,
    OODStudy,
    Projection2D,
    auroc_table,
    best_from_table,
    roc_curve_points,
)
from components.charts.style import categorical_axis, integer_axis, integer_dtick
from components.charts.text import safe_text, token_label

LAYER_AXIS = "layer (0 = embeddings, L = last block's output before the final norm)"
PALETTE = qualitative.Plotly + qualitative.D3
NOT_DEFINED_GREY = "#d9d9d9"


def _default_set(study: OODStudy, ood_set: str | None) -> str:
    return ood_set or (ALL_OOD if len(study.ood_names) > 1 else study.ood_names[0])


def _set_colors(names: list[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _not_defined_text(study: OODStudy, score: str, col: str) -> str:
    """Hover text of a cell where ``score`` is not defined (e.g. rank-deficient fit features), else ""."""
    if not col.startswith("layer ") or score in study.logit_scores:
        return ""
    why = study.not_defined_reason(score, int(col.split()[1]))
    return "" if why is None else f"not defined here: {safe_text(why, max_len=None)}"


CELL_TEXT_COLUMNS = 16  # up to this many columns the metrics heatmap prints each value in its cell


def layer_ticks(layers) -> list[int]:
    """About a dozen integer ticks over the layers shown, always the first and the last."""
    layers = [int(l) for l in layers]
    if len(layers) <= 13:
        return layers
    step = integer_dtick(len(layers) - 1)
    return sorted(set(layers[::step]) | {layers[-1]})


def metrics_heatmap(study: OODStudy, metric: str = "auroc", ood_set: str | None = None) -> go.Figure:
    """Heatmap of ``metric`` over scores (rows) x layers (+ final logits), best cell outlined; cells where a score
    is not defined are grey, marked "n/d", with the reason on hover."""
    ood_set = _default_set(study, ood_set)
    table = auroc_table(study, ood_set, metric)
    z = table.to_numpy(dtype=float)
    text = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    x = [safe_text(c, max_len=None) for c in table.columns]
    y = [safe_text(r, max_len=None) for r in table.index]
    nd = [[_not_defined_text(study, r, c) for c in table.columns] for r in table.index]
    hover = [[nd[i][j] or ("not applicable" if np.isnan(v) else f"{metric} {v:.3f}") for j, v in enumerate(row)]
             for i, row in enumerate(z)]
    higher = HIGHER_IS_BETTER[metric]
    wide = len(x) > CELL_TEXT_COLUMNS  # a 30-layer model: values in the hover, "l" column labels (no "layer l")
    if wide:
        x = [c.removeprefix("layer ") if c.startswith("layer ") else c for c in x]
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=y, text=text, texttemplate=None if wide else "%{text}", zmin=0, zmax=1, customdata=hover,
        hoverongaps=False,
        colorscale="Viridis" if higher else "Viridis_r", colorbar=dict(title=metric.upper()),
        hovertemplate="score %{y}<br>%{x}<br>%{customdata}<extra></extra>"))
    if any(c for row in nd for c in row):  # grey cells on top of the gaps, only where the score is not defined
        fig.add_trace(go.Heatmap(
            z=[[1.0 if c else np.nan for c in row] for row in nd], x=x, y=y, name="not defined",
            text=[["n/d" if c else "" for c in row] for row in nd], texttemplate="%{text}", customdata=nd,
            colorscale=[[0, NOT_DEFINED_GREY], [1, NOT_DEFINED_GREY]], zmin=0, zmax=1, showscale=False,
            hoverongaps=False, hovertemplate="score %{y}<br>%{x}<br>%{customdata}<extra></extra>"))
    if metric == "auroc" and ood_set == _default_set(study, None):  # the study's pick, with its tie-break
        best_score = study.best_score
        best_col = "final logits" if study.best_layer is None else f"layer {study.best_layer}"
    else:
        best_score, best_col = best_from_table(table, metric)
    i, j = list(table.index).index(best_score), list(table.columns).index(best_col)  # by position: labels may change
    fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="red", width=3))
    fig.update_layout(
        title=f"{METRIC_LABELS[metric]}: held-out {safe_text(study.id_name)} vs {safe_text(ood_set)} "
              f"<br>best outlined: {safe_text(best_score, max_len=None)}, {best_col}",
        xaxis_title="layer (0 = embeddings, L = last block); logit scores read the final logits; n/d = not defined",
        yaxis_title="score", yaxis_autorange="reversed", height=200 + 32 * len(y),
        margin=dict(l=20 + 7 * max((len(r) for r in y), default=8), r=10, t=90, b=80))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return categorical_axis(categorical_axis(fig, "x"), "y")  # 'layer l' / 'final logits' columns, score rows


def auroc_by_layer(study: OODStudy, ood_set: str | None = None, metric: str = "auroc") -> go.Figure:
    """One line per feature score over layers; logit scores (final logits) as flat dotted lines, hidden by default."""
    ood_set = _default_set(study, ood_set)
    table = auroc_table(study, ood_set, metric)
    fig = go.Figure()
    layers = list(study.layers)
    for k, name in enumerate(study.feature_scores):
        fig.add_trace(go.Scatter(x=layers, y=[table.loc[name, f"layer {l}"] for l in layers], mode="lines+markers",
                                 name=token_label(name, max_len=None), line=dict(color=PALETTE[k % len(PALETTE)])))
    for k, name in enumerate(study.logit_scores):
        v = table.loc[name, "final logits"]
        fig.add_trace(go.Scatter(x=[layers[0], layers[-1]], y=[v, v], mode="lines", visible="legendonly",
                                 name=f"{token_label(name, max_len=None)} (final logits)",
                                 line=dict(dash="dot", color=PALETTE[(k + len(study.feature_scores)) % len(PALETTE)])))
    fig.add_hline(y=0.5, line=dict(color="grey", dash="dash"), annotation_text="chance" if metric == "auroc" else None)
    fig.update_layout(title=f"{METRIC_LABELS[metric]} by layer: held-out {safe_text(study.id_name)} vs "
                            f"{safe_text(ood_set)}",
                      xaxis_title=LAYER_AXIS, yaxis_title=metric.upper(), yaxis_range=[0, 1.02], height=560,
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0),  # the plot keeps a half column
                      xaxis=dict(tickmode="array", tickvals=layer_ticks(layers), tickformat="d"))
    return fig


def score_histograms(study: OODStudy, score: str, layer: int | None = None, nbins: int = 40) -> go.Figure:
    """Overlaid histograms (probability density) of one score per set: held-out ID and every OOD set."""
    colors = _set_colors(list(study.sets))
    fig = go.Figure()
    where = "final logits" if score in study.logit_scores else f"layer {layer}"
    why = None if score in study.logit_scores else study.not_defined_reason(score, layer)
    if why is not None:
        return _not_defined_figure(f"{token_label(score, max_len=None)} at {where} per set", score, where, why, 380)
    all_v = np.concatenate([study.score_values(score, layer, s) for s in study.sets])
    lo, hi = float(all_v.min()), float(all_v.max())
    size = (hi - lo) / nbins if hi > lo else 1.0
    for s in study.sets:
        label = f"{study.id_name} (held-out ID)" if s == ID_KEY else s
        fig.add_trace(go.Histogram(x=study.score_values(score, layer, s), name=safe_text(label, max_len=60),
                                   histnorm="probability density", opacity=0.55, marker_color=colors[s],
                                   xbins=dict(start=lo, end=hi + size, size=size)))
    fig.update_layout(barmode="overlay", height=380,
                      title=f"{token_label(score, max_len=None)} at {where} per set (higher = more in-distribution)",
                      xaxis_title=f"{token_label(score, max_len=None)} score", yaxis_title="density")
    return fig


def roc_curves(study: OODStudy, score: str, layer: int | None = None) -> go.Figure:
    """ROC curves (ID positive) of one score: held-out ID vs each OOD set."""
    colors = _set_colors(list(study.sets))
    why = None if score in study.logit_scores else study.not_defined_reason(score, layer)
    if why is not None:
        return _not_defined_figure(f"ROC of {token_label(score, max_len=None)} at layer {layer}", score,
                                   f"layer {layer}", why, 420)
    fig = go.Figure()
    for s in study.ood_names:
        fpr, tpr = roc_curve_points(study, score, layer, s)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=safe_text(s, max_len=60),
                                 line=dict(color=colors[s], shape="hv")))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="grey", dash="dash")))
    where = "final logits" if score in study.logit_scores else f"layer {layer}"
    fig.update_layout(title=f"ROC of {token_label(score, max_len=None)} at {where} (ID = positive)",
                      xaxis_title="OOD accepted (false positive rate)", yaxis_title="ID kept (true positive rate)",
                      height=420, xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def _not_defined_figure(title: str, score: str, where: str, why: str, height: int) -> go.Figure:
    """An empty figure that says the score is not defined there, and why."""
    fig = go.Figure()
    text = f"{token_label(score, max_len=None)} is not defined at {where}:<br>{safe_text(why, max_len=None)}"
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    fig.update_layout(title=f"{title}: not defined", height=height, xaxis_visible=False, yaxis_visible=False)
    return fig


def projection_map(proj: Projection2D) -> go.Figure:
    """Scatter of the 2-D projection coloured by set; hover shows the (escaped) prompt."""
    names = list(dict.fromkeys(proj.set_names))
    colors = _set_colors(names)
    fig = go.Figure()
    sets = np.array(proj.set_names)
    for n in names:
        idx = np.flatnonzero(sets == n)
        fig.add_trace(go.Scatter(
            x=proj.coords[idx, 0], y=proj.coords[idx, 1], mode="markers", name=safe_text(n, max_len=60),
            marker=dict(size=6, color=colors[n], opacity=0.75),
            customdata=[[safe_text(proj.prompts[i], max_len=120)] for i in idx],
            hovertemplate="%{customdata[0]}<extra>" + safe_text(n, max_len=40) + "</extra>"))
    fitted = "fitted on ID only" if proj.fit_on == "id" else "fitted on all points"
    extra = f", explained variance {proj.explained[0]:.0%} + {proj.explained[1]:.0%}" if proj.explained else ""
    axis = "PC" if proj.method == "pca" else "UMAP "
    fig.update_layout(title=f"{proj.method.upper()} of layer {proj.layer} features, coloured by set<br>"
                            f"<sup>{proj.pooling}-token pooling, standardised, {fitted}, random_state "
                            f"{proj.random_state}{extra}</sup>",
                      xaxis_title=f"{axis}1 (arbitrary units)", yaxis_title=f"{axis}2 (arbitrary units)", height=520)
    return fig


def compare_auroc_by_layer(study_a: OODStudy, study_b: OODStudy, label_a: str = "A", label_b: str = "B",
                           ood_set: str | None = None, metric: str = "auroc") -> go.Figure:
    """AUROC by layer of checkpoint A (solid) and B (dashed), one colour per feature score."""
    ood_set = _default_set(study_a, ood_set)
    fig = go.Figure()
    for which, study, dash in ((label_a, study_a, "solid"), (label_b, study_b, "dash")):
        table = auroc_table(study, ood_set if ood_set in (ALL_OOD, *study.ood_names) else None, metric)
        for k, name in enumerate(study.feature_scores):
            fig.add_trace(go.Scatter(x=list(study.layers), y=[table.loc[name, f"layer {l}"] for l in study.layers],
                                     mode="lines+markers", name=f"{safe_text(which, max_len=40)}: {token_label(name, max_len=None)}",
                                     legendgroup=name, line=dict(color=PALETTE[k % len(PALETTE)], dash=dash)))
    fig.add_hline(y=0.5, line=dict(color="grey", dash="dot"))
    fig.update_layout(title=f"{METRIC_LABELS[metric]} by layer, A (solid) vs B (dashed): {safe_text(ood_set)}",
                      xaxis_title=LAYER_AXIS, yaxis_title=metric.upper(), yaxis_range=[0, 1.02], height=460)
    return integer_axis(fig, "x", span=max([*study_a.layers, *study_b.layers], default=0))
