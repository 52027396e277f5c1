"""The logit flow method, declared once: its settings, its computation (``compute``), its report (``report``).

The page draws its widgets from ``FlowSettings``, caches ``compute`` and shows ``report``; ``python -m logitscope
flow`` derives its flags from the same declaration and calls ``run``; metadata.json records ``settings_metadata``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import analysis.flow as AP
import analysis.flow as F
from analysis.core.errors import InputError, LogitscopeError
from analysis.core.progress import Progress
from analysis.core.wording import plural, verb
from analysis.flow import FlowSetResult
from analysis.models.pair import ModelPair, stage
from components.charts import attention as attn_charts
from components.charts import flow as charts
from components.notes import collapse_notes
from components.reports import Input, Inputs, Memo, Report, direct
from components.settings import as_metadata, compute_key, setting

PAGE = "logit_flow"
BUNDLE = "logit_flow"
KEY = "flow"
INPUTS = (Input("--prompts", "two_hop", "the prompts (targets and competitors from the set, or typed)"),)
NEEDS_B = False
SHARDS: tuple[str, ...] = ()  # runs in this process (one prompt's head x source grid is one forward pass)
MAX_PROMPTS = 64
VIEW_LABELS = {"target": "Target", "competitor": "Competitor", "difference": "Target − competitor"}
NO_DIFF_GRID = ("B − A grid: the models tokenize this prompt differently or have different depths; compare the grids "
                "side by side.")
NO_DIFF_LAYERS = "B − A per block: the models have different numbers of blocks."
NO_DIFF_HEADS = "B − A heads: the two models have different numbers of blocks or heads."


@dataclass(frozen=True)
class FlowSettings:
    """Every setting of the logit flow (display-only ones never recompute)."""

    max_prompts: int = setting(8, f"analyse the first N prompts of the set (at most {MAX_PROMPTS})",
                               label="Prompts to analyse", lo=1, hi=MAX_PROMPTS)
    target: str = setting("", "target token: its text with the leading space (' Paris'), or #123 for a token id; "
                          "blank: the set's target, else the model's top-1. A text of several tokens uses its first "
                          "token, and says so", label="Target token")
    competitor: str = setting("", "competing token, optional: adds the competitor and the target − competitor views; "
                              "blank: the set's competitor, if any", label="Competing token")
    view: str | None = setting(None, "read out toward the target, the competitor or their difference; unset: the "
                               "difference when every prompt has a competitor, else the target", label="Read out toward",
                               choices=VIEW_LABELS, display=True, widget="radio")
    threshold: int = setting(10, "flow threshold: edges weaker than this % of the strongest edge are hidden",
                             label="Flow threshold (% of strongest edge)", lo=0, hi=100, display=True, widget="slider")
    edges: int = setting(20, "flow edges drawn at most", label="Flow edges (max)", lo=4, hi=80, display=True)
    show_prompt: int = setting(1, "the prompt shown in detail (1-based)", label="Prompt shown in detail", lo=1,
                               display=True)
    pattern_head: str = setting("", "head whose attention pattern is shown, L<block>H<head> (0-based); blank: the head "
                                "with the largest |DLA| in A's head x source view of the shown prompt",
                                label="Attention pattern of head", display=True)


@dataclass(frozen=True)
class FlowResults:
    """What ``compute`` returns: one FlowSetResult per checkpoint ("A", "B"), their card names, the prompts run."""

    by_model: Mapping[str, FlowSetResult]
    names: Mapping[str, str]
    prompts: tuple[str, ...]
    patterns: Mapping[str, tuple] = field(default_factory=dict)  # {which: AttentionPatterns or None per prompt}
    pattern_notes: tuple[str, ...] = ()


def has_competitor(results: Mapping[str, FlowSetResult]) -> bool:
    """True when every prompt of every checkpoint has a competitor (the competitor views exist)."""
    return all(all("competitor" in r.by_view for r in res.results) for res in results.values())


def views(results: Mapping[str, FlowSetResult]) -> list[str]:
    """The views the page offers: all three with a competitor, else the target only."""
    return [v for v in VIEW_LABELS if has_competitor(results) or v == "target"]


def default_view(results: Mapping[str, FlowSetResult]) -> str:
    """The page's default view: target − competitor when there is a competitor, else the target."""
    return "difference" if has_competitor(results) else "target"


def compute(models: ModelPair, inputs: Inputs, s: FlowSettings, progress: Progress = None, memo: Memo = direct
            ) -> FlowResults:
    """The logit flow of the first ``max_prompts`` prompts of --prompts on every checkpoint: the typed target /
    competitor override the set's own (blank: the set's target, else the model's top-1; the set's competitor, if
    any). Each checkpoint's flow and attention patterns are parts of their own (``memo``)."""
    prompt_set = inputs["--prompts"]
    rows = prompt_set.rows[: s.max_prompts]
    prompts = tuple(r.prompt for r in rows)
    targets = [s.target if s.target else r.target for r in rows]
    competitors = [s.competitor if s.competitor else r.competitor for r in rows]
    items = models.items()
    key = (prompt_set.sha256, compute_key(s))
    by_model = {which: memo("flow.set", (lm.spec, *key), F.logit_flow_set, lm, list(prompts), targets, competitors,
                            progress=stage(progress, i / len(items), (i + 1) / len(items), which))
                for i, (which, lm, _card) in enumerate(items)}
    patterns, notes = {}, []
    for which, lm, _card in items:
        patterns[which], why = memo("flow.patterns", (lm.spec, prompts), AP.attention_pattern_set, lm, list(prompts))
        notes.extend(f"{which}, attention patterns: {n}" for n in why)
    return FlowResults(by_model, {which: card.name for which, _, card in items}, prompts, patterns, tuple(notes))


def resolve_view(s: FlowSettings, results: FlowResults) -> str:
    """The view shown: the chosen one, else the default (InputError when it needs a competitor there is not)."""
    view = s.view or default_view(results.by_model)
    if view not in views(results.by_model):
        raise InputError(f"The '{view}' view needs a competitor for every prompt: type a competing token, or use a "
                         "set with a 'competitor' column (two_hop has one).")
    return view


def shown_prompt(s: FlowSettings, results: FlowResults) -> int:
    """The 0-based prompt shown in detail (InputError when show_prompt is past the prompts analysed)."""
    count = len(results.prompts)
    if not 1 <= s.show_prompt <= count:
        raise InputError(f"The prompt shown in detail ({s.show_prompt}) is out of range: {plural(count, 'prompt')} "
                         f"{verb(count, 'is', 'are')} analysed (1..{count}).")
    return s.show_prompt - 1


def report(results: FlowResults, s: FlowSettings) -> Report:
    """The page's figures and tables for these results and display settings (no engine call)."""
    rep = flow_report(results.by_model, results.names, view=resolve_view(s, results), frac=s.threshold,
                      top_k=s.edges, idx=shown_prompt(s, results))
    return rep.merge(pattern_report(results, s))


def pattern_head(s: FlowSettings, results: FlowResults) -> tuple[int, int]:
    """(block, head) of the attention pattern shown: the chosen head, else the largest |DLA| cell of A's head x
    source view (the shown prompt, the view shown)."""
    first = results.by_model["A"] if "A" in results.by_model else next(iter(results.by_model.values()))
    r = first.results[shown_prompt(s, results)]
    if s.pattern_head.strip():
        return AP.parse_head_label(s.pattern_head, r.n_layers, r.n_heads)
    src = np.abs(r.view(resolve_view(s, results)).sources)
    layer, head, _ = np.unravel_index(int(np.argmax(src)), src.shape)
    return int(layer), int(head)


def pattern_report(results: FlowResults, s: FlowSettings) -> Report:
    """Per checkpoint: the head x source view of the shown prompt and the chosen head's attention pattern."""
    rep = Report(notes=list(results.pattern_notes))
    if not results.patterns:
        return rep
    idx, view = shown_prompt(s, results), resolve_view(s, results)
    layer, head = pattern_head(s, results)
    hl = AP.head_label(layer, head)
    for which, res in results.by_model.items():
        r, name = res.results[idx], results.names[which]
        a = r.view(view)
        rep.add(f"head_source_{which}", attn_charts.head_source_heatmap(
            a.sources, r.tokens, f"{name}: head x source DLA into T ({VIEW_LABELS[view]}), strongest heads"),
            attn_charts.head_source_frame(a.sources, r.tokens))
        pats = results.patterns.get(which, ())
        pat = pats[idx] if idx < len(pats) else None
        if pat is None:
            rep.notes.append(f"{which}, attention patterns: none kept for prompt {idx + 1}.")
        elif layer >= pat.probs.shape[0] or head >= pat.probs.shape[1]:
            rep.notes.append(f"{which}, attention patterns: this model has no head {hl}.")
        else:
            p = pat.head(layer, head).probs
            rep.add(f"attention_pattern_{which}", attn_charts.pattern_heatmap(
                p, pat.tokens, f"{name}: attention pattern of {hl} (query x key, rows sum to 1)"),
                attn_charts.pattern_frame(p, pat.tokens))
    return rep


def settings_metadata(s: FlowSettings, results: FlowResults) -> dict:
    """metadata.json's settings: every declared setting, the view actually shown (the default resolved) and the
    number of prompts analysed."""
    meta = as_metadata(s)
    meta["view"] = resolve_view(s, results)
    meta["n_prompts"] = len(results.prompts)
    if results.patterns:
        meta["pattern_head_shown"] = AP.head_label(*pattern_head(s, results))
    return meta


def run(models: ModelPair, inputs: Inputs, s: FlowSettings, progress: Progress = None, memo: Memo = direct
        ) -> tuple[Report, dict]:
    """compute + report, as the CLI runs it: (report, metadata settings)."""
    results = compute(models, inputs, s, progress, memo)
    return report(results, s), settings_metadata(s, results)


def _sankey_edges(r, view: str, frac: float, top_k: int) -> list:
    """The edges the Sankey of one prompt's result draws (its threshold = frac % of its strongest edge)."""
    a = r.view(view)
    strongest = float(np.abs(a.sources).max()) if a.sources.size else 0.0
    return charts.top_edges(a.sources, strongest * frac / 100.0, int(top_k))


def flow_report(results: Mapping[str, FlowSetResult], names: Mapping[str, str], *, view: str | None = None,
                frac: float = FlowSettings.threshold, top_k: int = FlowSettings.edges, idx: int = 0) -> Report:
    """Bundle figures/tables for results keyed "A"/"B" (names: card names): flow, grids, layers, heads, per position,
    target vs competitor for prompt idx, B − A views when both are given, and set averages for several prompts."""
    view = view or default_view(results)
    label = VIEW_LABELS[view]
    rep = Report()
    nodes = charts.sankey_nodes(*[_sankey_edges(res.results[idx], view, frac, top_k) for res in results.values()])
    for which, res in results.items():
        r, name = res.results[idx], names[which]
        # "A, ..." (not "A: ...", which the page shows as a prompt-set error)
        rep.notes.extend(f"{which}, prompt set: {note}" for note in res.notes)
        rep.notes.extend(f"{which}, prompt {k + 1}: {note}" for k, one in enumerate(res.results) for note in one.notes)
        a = r.view(view)
        xl = charts.position_labels(r.tokens)
        strongest = float(np.abs(a.sources).max()) if a.sources.size else 0.0
        rep.add(f"flow_{which}", charts.flow_sankey(r.tokens, a.sources, r.target, threshold=strongest * frac / 100.0,
                                                    top_k=int(top_k), title=f"{name}: source → head → final ({label})",
                                                    nodes=nodes),
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
    rep.notes = collapse_notes(rep.notes)
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
                charts.layer_bars(attn, mlp, f"{name}: mean DLA per block over {plural(n, 'prompt')} ({label})"),
                pd.DataFrame({"block": range(len(attn)), "attention_dla": attn, "mlp_dla": mlp}))
        heads = res.mean(view, "heads")
        rep.add(f"set_heads_{which}", charts.head_heatmap(heads, f"{name}: mean head DLA over {plural(n, 'prompt')}"),
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


# Settings whose page default comes from the results rather than the declaration (tests/test_declarations).
PAGE_DEFAULT_EXEMPT = {"view": "the results' default view: difference when every prompt has a competitor, else target"}
