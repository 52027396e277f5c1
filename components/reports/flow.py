"""Logit flow report: per-checkpoint FlowSetResults -> the page's bundle figures and tables."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.errors import LogitscopeError
from analysis.flow import FlowSetResult
from components.charts import flow as charts
from components.reports import Report

PAGE = "logit_flow"
BUNDLE = "logit_flow"
MAX_PROMPTS = 64
VIEW_LABELS = {"target": "Target", "competitor": "Competitor", "difference": "Target − competitor"}
DEFAULTS = {"n_prompts": 8, "threshold_pct": 10, "top_k": 20}
NO_DIFF_GRID = ("B − A grid: the models tokenize this prompt differently or have different depths; compare the grids "
                "side by side.")
NO_DIFF_LAYERS = "B − A per block: the models have different numbers of blocks."
NO_DIFF_HEADS = "B − A heads: the two models have different numbers of blocks or heads."


def has_competitor(results: Mapping[str, FlowSetResult]) -> bool:
    """True when every prompt of every checkpoint has a competitor (the competitor views exist)."""
    return all(all("competitor" in r.by_view for r in res.results) for res in results.values())


def views(results: Mapping[str, FlowSetResult]) -> list[str]:
    """The views the page offers: all three with a competitor, else the target only."""
    return [v for v in VIEW_LABELS if has_competitor(results) or v == "target"]


def default_view(results: Mapping[str, FlowSetResult]) -> str:
    """The page's default view: target − competitor when there is a competitor, else the target."""
    return "difference" if has_competitor(results) else "target"


def flow_settings(view: str, n_prompts: int, target_text: str | None, comp_text: str | None, frac: float, top_k: int,
                  idx: int) -> dict:
    """The settings recorded in the bundle's metadata (idx is the 0-based detail prompt)."""
    return {"view": view, "n_prompts": n_prompts, "target_override": target_text or None,
            "competitor_override": comp_text or None, "flow_threshold_pct": frac, "flow_edges": int(top_k),
            "detail_prompt": int(idx)}


def flow_report(results: Mapping[str, FlowSetResult], names: Mapping[str, str], *, view: str | None = None,
                frac: float = DEFAULTS["threshold_pct"], top_k: int = DEFAULTS["top_k"], idx: int = 0) -> Report:
    """Bundle figures/tables for results keyed "A"/"B" (names: card names): flow, grids, layers, heads, per position,
    target vs competitor for prompt idx, B − A views when both are given, and set averages for several prompts."""
    view = view or default_view(results)
    label = VIEW_LABELS[view]
    rep = Report()
    for which, res in results.items():
        r, name = res.results[idx], names[which]
        # "A, ..." (not "A: ...", which the page shows as a prompt-set error)
        rep.notes.extend(f"{which}, prompt set: {note}" for note in res.notes)
        rep.notes.extend(f"{which}, prompt {k + 1}: {note}" for k, one in enumerate(res.results) for note in one.notes)
        a = r.view(view)
        xl = charts.position_labels(r.tokens)
        strongest = float(np.abs(a.sources).max()) if a.sources.size else 0.0
        rep.add(f"flow_{which}", charts.flow_sankey(r.tokens, a.sources, r.target, threshold=strongest * frac / 100.0,
                                                    top_k=int(top_k), title=f"{name}: source → head → final ({label})"),
                charts.edge_frame(r.tokens, a.sources, a.imp_sources))
        rep.add(f"attention_grid_{which}",
                charts.grid_heatmap(a.attn_grid, xl, f"{name}: attention from source p into T ({label})",
                                    note="additive: rows + o_proj bias = per-block attention DLA"),
                charts.grid_frame(a.attn_grid, xl, r.tokens))
        rep.add(f"layers_{which}", charts.layer_bars(a.attn, a.mlp, f"{name}: DLA per block at T ({label})",
                                                     embed=a.embed, bias=a.bias, attn_bias=a.attn_bias),
                charts.layer_frame(a))
        rep.add(f"importance_{which}", charts.layer_bars(a.imp_attn, a.imp_mlp, f"{name}: log-prob importance Imp per "
                                                         f"block ({label})", units="nats"), charts.layer_frame(a))
        rep.add(f"heads_{which}", charts.head_heatmap(a.heads, f"{name}: heads at T ({label})"),
                charts.head_frame(a.heads, a.imp_heads))
        rep.add(f"mlp_at_position_{which}",
                charts.grid_heatmap(a.mlp_at_pos, xl, f"{name}: MLP write at each position ({label}, not additive)"),
                charts.grid_frame(a.mlp_at_pos, xl, r.tokens))
        rep.add(f"attention_at_position_{which}",
                charts.grid_heatmap(a.attn_at_pos, xl, f"{name}: attention write at each position ({label}, not "
                                    "additive)"), charts.grid_frame(a.attn_at_pos, xl, r.tokens))
        if r.competitor is not None:
            t, c = charts.layer_frame(r.view("target")), charts.layer_frame(r.view("competitor"))
            rep.add(f"target_vs_competitor_{which}",
                    charts.contrast_bars(r.view("target"), r.view("competitor"), r.target, r.competitor,
                                         f"{name}: {r.target!r} vs {r.competitor!r}"),
                    t.add_prefix("target_").join(c.add_prefix("competitor_")))
            d = r.view("difference").attn_grid
            rep.add(f"attention_grid_difference_{which}",
                    charts.grid_heatmap(d, xl, f"{name}: attention grid, target − competitor"),
                    charts.grid_frame(d, xl, r.tokens))
    if "A" in results and "B" in results:
        _differences(rep, results, idx, view)
    if len(next(iter(results.values())).results) > 1:
        for which, res in results.items():
            _prompt_set(rep, which, names[which], res, view)
    return rep


def _differences(rep: Report, results: Mapping[str, FlowSetResult], idx: int, view: str) -> None:
    label = VIEW_LABELS[view]
    ra, rb = results["A"].results[idx], results["B"].results[idx]
    a, b = ra.view(view), rb.view(view)
    if ra.tokens != rb.tokens or ra.n_layers != rb.n_layers:
        rep.notes.append(NO_DIFF_GRID)
    else:
        d = b.attn_grid - a.attn_grid
        xl = charts.position_labels(ra.tokens)
        rep.add("attention_grid_B_minus_A", charts.grid_heatmap(d, xl, f"B − A: attention from source p into T ({label})"),
                charts.grid_frame(d, xl, ra.tokens))
    if a.attn.shape != b.attn.shape:
        rep.notes.append(NO_DIFF_LAYERS)
    else:
        rep.add("layers_B_minus_A", charts.layer_bars(b.attn - a.attn, b.mlp - a.mlp, f"B − A: DLA per block at T ({label})",
                                                      embed=b.embed - a.embed, bias=b.bias - a.bias),
                pd.DataFrame({"block": range(len(a.attn)), "attention_B_minus_A": b.attn - a.attn,
                              "mlp_B_minus_A": b.mlp - a.mlp}))
    if a.heads.shape != b.heads.shape:
        rep.notes.append(NO_DIFF_HEADS)
    else:
        rep.add("heads_B_minus_A", charts.head_heatmap(b.heads - a.heads, f"B − A: heads at T ({label})"),
                charts.head_frame(b.heads - a.heads))


def _prompt_set(rep: Report, which: str, name: str, res: FlowSetResult, view: str) -> None:
    label = VIEW_LABELS[view]
    n = len(res.members(view))
    try:
        attn, mlp = res.mean(view, "attn"), res.mean(view, "mlp")
        rep.add(f"set_layers_{which}",
                charts.layer_bars(attn, mlp, f"{name}: mean DLA per block over {n} prompts ({label})"),
                pd.DataFrame({"block": range(len(attn)), "attention_dla": attn, "mlp_dla": mlp}))
        heads = res.mean(view, "heads")
        rep.add(f"set_heads_{which}", charts.head_heatmap(heads, f"{name}: mean head DLA over {n} prompts"),
                charts.head_frame(heads))
        grid, count = res.aligned(view, "attn_grid")
        xl = charts.aligned_labels(grid.shape[1])
        data = charts.grid_frame(grid, xl)
        data["n_prompts"] = [count[list(xl).index(p)] for p in data["position"]]
        rep.add(f"set_attention_grid_{which}",
                charts.grid_heatmap(grid, xl, f"{name}: mean attention grid, aligned at the last token",
                                    note="columns count back from the last token T"), data)
    except LogitscopeError as err:
        rep.notes.append(f"{which}: {err}")
    rep.add(f"per_prompt_{which}", table=pd.DataFrame(res.table()))
