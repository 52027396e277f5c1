"""Figures for the confidence-neurons page: scans (norm vs rho / LogitVar, W_U spectrum), TE vs DE boxes,
the induction case study and the A vs B scan comparison. Pure functions: result in, go.Figure out. SVG traces only
(go.Scatter, never Scattergl): a page holds many scatters, and browsers allow only a few WebGL contexts.

Neuron ids are 'L{block}.N{index}' strings with a 0-based block (its write lands in residual layer block + 1);
an axis that shows ids is always categorical, and tables carry the id as that string (plus integer block and
index columns), never as a float-like "block.index".
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.neurons import AblationResult, EntropyScan, FrequencyScan, InductionResult, neuron_label
from components.charts.style import categorical_axis, integer_axis
from components.charts.text import safe_text

COLORS = {"neuron": "#1f77b4", "set": "#9467bd", "random": "#7f7f7f", "TE": "#f58518", "DE": "#4c78a8",
          "clean": "#2ca02c", "candidate": "#d62728", "other": "#9db4c8"}


def scan_frame(scan: EntropyScan) -> pd.DataFrame:
    """One row per neuron of the scanned block: id, norm, rho, LogitVar, rank, candidate flag."""
    rank = np.empty(len(scan.rho), dtype=np.int64)
    rank[scan.ranked] = np.arange(1, len(scan.rho) + 1)
    return pd.DataFrame({"neuron": scan.labels(), "block": scan.block, "index": np.arange(len(scan.rho)),
                         "norm": scan.norms, "rho": scan.rho, "logit_var": scan.logit_var, "rho_rank": rank,
                         "candidate": np.isin(np.arange(len(scan.rho)), scan.candidates)})


def scan_scatter(scan: EntropyScan, y: str = "rho", title: str = "") -> go.Figure:
    """||w_out|| vs rho (threshold line) or vs LogitVar (log axis); candidates in red; hover names the neuron id."""
    if y not in ("rho", "logit_var"):
        raise ValueError(y)
    vals = scan.rho if y == "rho" else scan.logit_var
    is_cand = np.isin(np.arange(len(vals)), scan.candidates)
    fig = go.Figure()
    for flag, name in ((False, "other neurons"), (True, "stand out (candidates)")):
        idx = np.flatnonzero(is_cand == flag)
        if idx.size == 0:
            continue
        fig.add_trace(go.Scatter(
            x=scan.norms[idx], y=vals[idx], mode="markers", name=name,
            marker=dict(size=7 if flag else 5, color=COLORS["candidate" if flag else "other"],
                        line=dict(width=0.5, color="#333") if flag else None),
            customdata=np.stack([scan.labels(idx), scan.rho[idx], scan.logit_var[idx]], axis=-1),
            hovertemplate="neuron %{customdata[0]}<br>norm %{x:.3f}<br>rho %{customdata[1]:.4f}"
                          "<br>LogitVar %{customdata[2]:.3g}<extra></extra>"))
    if y == "rho":
        fig.add_hline(y=scan.threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"stands out above {scan.threshold:.3f}", annotation_position="top left")
        fig.add_hline(y=scan.rho_random, line_dash="dot", line_color="#555",
                      annotation_text=f"random direction √(k/d) = {scan.rho_random:.3f}",
                      annotation_position="bottom right")
    proc = "processed weights" if scan.processing else "raw weights"
    fig.update_layout(
        title=safe_text(title or (f"Block {scan.block}: norm vs " + ("null-space fraction ρ" if y == "rho" else
                                                                      "LogitVar") + f" ({proc}, k = {scan.k})")),
        xaxis_title="‖w_out‖ (norm of the neuron's output weights)",
        yaxis_title="ρ = ‖U₀ᵀ w_out‖ / ‖w_out‖" if y == "rho" else "LogitVar = Var_v cos(w_out, u_v) (log)",
        yaxis_type="log" if y == "logit_var" else "linear", height=420, legend=dict(orientation="h", y=-0.2))
    if y == "logit_var":
        fig.update_yaxes(dtick=1)  # one labelled tick per decade: no crowded 2..9 minor labels
    return fig


def spectrum_figure(scan: EntropyScan, index: int) -> go.Figure:
    """Singular values of W_U' (descending) with |cos(w_out, U_i)| of neuron ``index`` (one of scan.top)."""
    where = np.flatnonzero(scan.top == index)
    if where.size == 0:
        raise ValueError(f"neuron {index} has no spectrum in this scan")
    cos = scan.cos_U[where[0]]
    i = np.arange(len(cos))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=i, y=cos, name=f"|cos(w_out, U_i)| of {neuron_label(scan.block, index)}",
                         marker_color="#d62728", opacity=0.7,
                         hovertemplate="i = %{x}<br>|cos| %{y:.3f}<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=i, y=scan.singular_values, name="singular value of W_U", mode="lines",
                             line=dict(color="#333"), hovertemplate="i = %{x}<br>σ_i %{y:.4g}<extra></extra>"),
                  secondary_y=True)
    fig.add_vrect(x0=len(cos) - scan.k - 0.5, x1=len(cos) - 0.5, fillcolor="#ffbf00", opacity=0.15, line_width=0,
                  annotation_text=f"null space U₀ (last k = {scan.k})", annotation_position="top left")
    fig.update_layout(title=safe_text(f"Unembedding spectrum and neuron {neuron_label(scan.block, index)}"),
                      xaxis_title="singular direction i of W_U (σ descending)", height=420,
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0))
    fig.update_yaxes(title_text="|cos(w_out, U_i)|", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="singular value", secondary_y=True, rangemode="tozero")
    fig.update_xaxes(range=[-0.5, len(cos) - 0.5])  # the d_model directions, nothing past the last
    return integer_axis(fig, "x", span=len(cos))


def spectrum_frame(scan: EntropyScan, index: int) -> pd.DataFrame:
    """i, singular value, |cos| of the chosen neuron."""
    where = np.flatnonzero(scan.top == index)
    return pd.DataFrame({"i": np.arange(scan.d_model), "singular_value": scan.singular_values,
                         f"abs_cos_{neuron_label(scan.block, index)}": scan.cos_U[where[0]]})


def frequency_frame(fs: FrequencyScan) -> pd.DataFrame:
    """Every neuron of every block: id, norm, cos to the frequency direction."""
    B, n = fs.score.shape
    b, i = np.divmod(np.arange(B * n), n)
    return pd.DataFrame({"neuron": [neuron_label(x, y) for x, y in zip(b, i, strict=True)], "block": b, "index": i,
                         "norm": fs.norms.ravel(), "freq_cos": fs.score.ravel()})


def frequency_figure(fs: FrequencyScan, max_points: int = 6000) -> go.Figure:
    """cos(W_U w_out, f) per block (strip), hover names the neuron id; the top neurons labelled."""
    B, n = fs.score.shape
    fig = go.Figure()
    rng = np.random.default_rng(0)
    for b in range(B):
        idx = np.arange(n)
        if n * B > max_points:  # keep the extremes, thin the bulk
            keep = np.argsort(-np.abs(fs.score[b]))[: max(50, max_points // B)]
            idx = np.sort(keep)
        x = b + rng.uniform(-0.3, 0.3, size=idx.size)
        fig.add_trace(go.Scatter(x=x, y=fs.score[b, idx], mode="markers", name=f"block {b}", showlegend=False,
                                   marker=dict(size=4, color="#9db4c8"),
                                   customdata=np.stack([[neuron_label(b, i) for i in idx], fs.norms[b, idx]], -1),
                                   hovertemplate="neuron %{customdata[0]}<br>cos %{y:.3f}<br>norm %{customdata[1]:.3f}"
                                                 "<extra></extra>"))
    tb = np.array([t[0] for t in fs.top])
    ti = np.array([t[1] for t in fs.top])
    fig.add_trace(go.Scatter(x=tb, y=fs.score[tb, ti], mode="markers+text", name="top |cos|",
                             text=[neuron_label(b, i) for b, i in fs.top], textposition="middle right",
                             texttemplate=["%{text}" if j < 4 else "" for j in range(len(fs.top))],  # 4 labels: no pile-up
                             marker=dict(size=8, color="#d62728"), hovertemplate="neuron %{text}<br>cos %{y:.3f}"
                                                                                "<extra></extra>"))
    fig.update_layout(title="Token-frequency direction: cos(W_U w_out, log p_freq − mean) per block",
                      xaxis_title="block (0-based; its MLP writes to residual layer block+1)",
                      yaxis_title="cos with the frequency direction", height=400)
    return integer_axis(fig, "x", span=B)


def _iqr_clip(x: np.ndarray) -> np.ndarray:
    """Drop outliers beyond 1.5 IQR (as in the paper's box plots)."""
    if x.size < 4:
        return x
    q1, q3 = np.percentile(x, [25, 75])
    r = 1.5 * (q3 - q1)
    return x[(x >= q1 - r) & (x <= q3 + r)]


def ablation_boxes(res: AblationResult, title: str = "") -> go.Figure:
    """|dLoss| total vs direct effect per neuron (and set), beside one pooled box of the random neurons."""
    fig = go.Figure()
    groups: list[tuple[str, np.ndarray]] = []
    for u, (label, kind) in enumerate(zip(res.units, res.kinds, strict=True)):
        if kind != "random":
            groups.append((label, np.array([u])))
    rnd = np.flatnonzero(np.array(res.kinds) == "random")
    if rnd.size:
        groups.append((f"random ({rnd.size} neurons)", rnd))
    for eff, arr in (("TE", res.dloss_te), ("DE", res.dloss_de)):
        xs, ys = [], []
        for label, units in groups:
            vals = _iqr_clip(np.abs(arr[units]).ravel())
            xs += [_box_label(label)] * vals.size
            ys += vals.tolist()
        fig.add_trace(go.Box(x=xs, y=ys, name="total effect (TE)" if eff == "TE" else "direct effect (DE, frozen scale)",
                             marker_color=COLORS[eff], boxpoints=False))
    fig.update_layout(boxmode="group", height=420, title=safe_text(title or f"|ΔLoss| per token, {res.mode} ablation"),
                      xaxis_title="ablated neuron (L{block}.N{index}, 0-based block)",
                      yaxis_title="|Δ next-token loss| (nats)",
                      legend=dict(x=1, y=1, xanchor="right", yanchor="top", bgcolor="rgba(255,255,255,0.8)"))
    fig.update_xaxes(tickangle=0)  # labels wrapped below: never under the legend
    return categorical_axis(fig, "x", order=[_box_label(g) for g, _ in groups])


def _box_label(label: str) -> str:
    """An ablated unit's tick label, one neuron per line ("set: a+b+c" -> "set:<br>a<br>+b<br>+c")."""
    text = safe_text(label, max_len=80)
    return text.replace("set: ", "set:<br>").replace("+", "<br>+").replace(" (", "<br>(")


def ablation_summary_frame(res: AblationResult) -> pd.DataFrame:
    """Per unit: TE/DE mean |dLoss|, M, entropy, scale, flips, KL change."""
    return pd.DataFrame(res.summary_rows())


def ablation_token_frame(res: AblationResult) -> pd.DataFrame:
    """Long table: one row per (unit, token) with the clean values and the TE/DE changes."""
    U, N = res.dloss_te.shape
    return pd.DataFrame({
        "unit": np.repeat(res.units, N), "prompt": np.tile(res.prompt_index + 1, U), "position": np.tile(res.position, U),
        "next_token": np.tile(np.array(res.next_token, dtype=object), U), "clean_loss": np.tile(res.clean_loss, U),
        "clean_entropy": np.tile(res.clean_entropy, U), "clean_norm_scale": np.tile(res.clean_sigma, U),
        "dloss_te": res.dloss_te.ravel(), "dloss_de": res.dloss_de.ravel(), "dentropy_te": res.dentropy_te.ravel(),
        "dentropy_de": res.dentropy_de.ravel(), "dnorm_scale_te": res.dsigma_te.ravel(),
        "top1_flip_te": res.flip_te.ravel(), "top1_flip_de": res.flip_de.ravel(),
        "dkl_unigram_te": res.dkl_te.ravel(), "dkl_unigram_de": res.dkl_de.ravel()})


def mediation_scatter(res: AblationResult, rho: dict[str, float] | None = None) -> go.Figure:
    """Per unit: M (LN-mediated fraction) vs mean |dLoss_TE|, or vs rho when given; colour = |mean dH_TE|."""
    rows = res.summary_rows()
    x = [rho.get(r["unit"].removeprefix("random "), np.nan) if rho else r["mean_abs_dloss_te"] for r in rows]
    fig = go.Figure(go.Scatter(
        x=x, y=[r["M"] for r in rows], mode="markers+text", text=[safe_text(r["unit"], max_len=30) for r in rows],
        textposition="top center",
        marker=dict(size=10, color=[abs(r["mean_dentropy_te"]) for r in rows], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="|mean ΔH| TE")),
        hovertemplate="%{text}<br>x %{x:.4g}<br>M %{y:.3f}<extra></extra>"))
    fig.update_layout(title="LN-mediated fraction M = 1 − mean|ΔL_DE| / mean|ΔL_TE|", height=380,
                      xaxis_title="ρ (null-space fraction)" if rho else "mean |ΔLoss| total effect (nats)",
                      yaxis_title="M")
    return fig


def induction_figure(res: InductionResult, title: str = "") -> go.Figure:
    """Per position (relative to the repeat): entropy, loss (clean, TE, DE, random TE) and neuron activations.

    The activation panel leaves out the first position of each sequence (an attention sink on real models, about
    100x larger; see analysis.neurons.induction): its values are only named in the panel's title and in the hover.
    """
    x = res.rel_position
    first = ", ".join(f"{safe_text(lab)} {v:.3g}" for lab, v in zip(res.neurons, res.acts_first, strict=True) if np.isfinite(v))
    act_title = "activation of the selected neurons (clean), first position left out (attention sink)"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.09,
                        subplot_titles=("entropy of the next-token prediction (nats)", "next-token loss (nats)",
                                        act_title + (f"<br>at the first position: {first}" if first else "")))
    for row, (clean, te, de, rnd) in enumerate(((res.entropy, res.entropy_te, res.entropy_de, res.random_entropy_te),
                                                (res.loss, res.loss_te, res.loss_de, res.random_loss_te)), start=1):
        fig.add_trace(go.Scatter(x=x, y=clean, name="clean", line=dict(color=COLORS["clean"]), legendgroup="clean",
                                 showlegend=row == 1), row=row, col=1)
        fig.add_trace(go.Scatter(x=x, y=te, name="ablated, total effect", line=dict(color=COLORS["TE"]),
                                 legendgroup="te", showlegend=row == 1), row=row, col=1)
        fig.add_trace(go.Scatter(x=x, y=de, name="ablated, direct effect", line=dict(color=COLORS["DE"], dash="dash"),
                                 legendgroup="de", showlegend=row == 1), row=row, col=1)
        if rnd.shape[0]:
            fig.add_trace(go.Scatter(x=x, y=np.nanmean(rnd, axis=0), name="random sets, total effect",
                                     line=dict(color=COLORS["random"], dash="dot"), legendgroup="rnd",
                                     showlegend=row == 1), row=row, col=1)
    for j, label in enumerate(res.neurons):
        fig.add_trace(go.Scatter(x=x, y=res.acts[j], name=f"neuron {safe_text(label)}", mode="lines",
                                 hovertemplate="t − start %{x}<br>activation %{y:.4g} "
                                               "(mean over sequences, t = 0 left out)"
                                               f"<br>first position (left out): {res.acts_first[j]:.4g}"
                                               "<extra>%{fullData.name}</extra>"), row=3, col=1)
    for row in (1, 2, 3):
        fig.add_vline(x=-0.5, line_dash="dash", line_color="#444", row=row, col=1)
    fig.add_annotation(x=-0.5, y=1.0, xref="x", yref="paper", text="repeat starts", showarrow=False, xanchor="left",
                       yanchor="bottom")
    fig.update_xaxes(title_text="position relative to the start of the repeat (t − start)", row=3, col=1)
    integer_axis(fig, "x", span=float(np.ptp(x)) if np.size(x) else 0.0)  # shared by the three panels
    fig.update_yaxes(title_text="activation (t ≥ 1)", row=3, col=1)
    fig.update_layout(height=720, title=safe_text(title or f"Induction: {res.source} ({res.n_sequences} sequences), "
                                                            f"clipped-mean ablation of {', '.join(res.neurons)}"),
                      legend=dict(orientation="h", y=-0.12))
    return fig


def induction_frame(res: InductionResult) -> pd.DataFrame:
    """Per relative position: count and clean/TE/DE entropy and loss, random TE loss, activations (act_*: the
    first position of each sequence left out; its values are in the summary as act_first_position_*)."""
    d = {"position_from_repeat": res.rel_position, "n_sequences": res.count, "entropy": res.entropy,
         "entropy_te": res.entropy_te, "entropy_de": res.entropy_de, "loss": res.loss, "loss_te": res.loss_te,
         "loss_de": res.loss_de}
    if res.random_loss_te.shape[0]:
        d["random_loss_te"] = np.nanmean(res.random_loss_te, axis=0)
    for j, label in enumerate(res.neurons):
        d[f"act_{label}"] = res.acts[j]
    return pd.DataFrame(d)


def compare_scans(a: EntropyScan, b: EntropyScan, label_a: str = "A", label_b: str = "B"
                  ) -> tuple[go.Figure | None, str]:
    """rho (A) vs rho (B) per neuron id when both scans have the same shape, and which candidates they share."""
    top_a = set(a.labels(a.ranked[:10]))
    top_b = set(b.labels(b.ranked[:10]))
    shared = sorted(top_a & top_b)
    if a.rho.shape != b.rho.shape or a.block != b.block:
        return None, (f"The two checkpoints have different shapes ({len(a.rho)} vs {len(b.rho)} neurons in the last "
                      "block): neuron ids cannot be matched.")
    msg = (f"Top-10 by ρ shared by both checkpoints: {', '.join(shared) if shared else 'none'} "
           f"({len(shared)} of 10). Correlation of ρ across neurons: {np.corrcoef(a.rho, b.rho)[0, 1]:.3f}.")
    fig = go.Figure(go.Scatter(
        x=a.rho, y=b.rho, mode="markers", marker=dict(size=5, color=np.log10(np.maximum(a.norms, 1e-12)),
                                                      colorscale="Viridis", colorbar=dict(title="log10 ‖w_out‖ (A)")),
        customdata=np.stack([a.labels(), a.norms, b.norms], -1),
        hovertemplate="neuron %{customdata[0]}<br>ρ A %{x:.4f} · ρ B %{y:.4f}<br>norm A %{customdata[1]:.3f} · "
                      "norm B %{customdata[2]:.3f}<extra></extra>"))
    lim = float(max(a.rho.max(), b.rho.max()))
    fig.add_trace(go.Scatter(x=[0, lim], y=[0, lim], mode="lines", line=dict(dash="dot", color="#777"),
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(title=safe_text(f"Null-space fraction ρ per neuron: {label_a} vs {label_b} (same ids)"),
                      xaxis_title=safe_text(f"ρ in {label_a}"), yaxis_title=safe_text(f"ρ in {label_b}"), height=420,
                      showlegend=False)
    return fig, msg


def compare_frame(a: EntropyScan, b: EntropyScan) -> pd.DataFrame:
    """Per neuron id: norm and rho in A and in B."""
    return pd.DataFrame({"neuron": a.labels(), "norm_A": a.norms, "rho_A": a.rho, "norm_B": b.norms, "rho_B": b.rho})


__all__ = ["scan_scatter", "scan_frame", "spectrum_figure", "spectrum_frame", "frequency_figure", "frequency_frame",
           "ablation_boxes", "ablation_summary_frame", "ablation_token_frame", "mediation_scatter",
           "induction_figure", "induction_frame", "compare_scans", "compare_frame"]
