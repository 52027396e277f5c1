"""Logit flow page: which layers, heads and source positions build the prediction at the last position."""
from __future__ import annotations

import contextvars

import numpy as np
import pandas as pd
import streamlit as st

from analysis.flow import CHECK_NAMES, FlowResult, FlowSetResult, failed_checks, logit_flow_set, tolerance
from components.charts import flow as charts
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import compare_columns, page_metadata, progress_bar, user_errors
from components.prompt_input import prompt_set_input
from components.shell import ensure_app_shell

ensure_app_shell()

PAGE = "logit_flow"
MAX_PROMPTS = 64
VIEW_LABELS = {"target": "Target", "competitor": "Competitor", "difference": "Target − competitor"}

DEFINITIONS = """
**What is computed** (at the prompt's last position T, final norm scale frozen at its clean value, pre-cap logits):
- **Sublayer DLA**: embedding + every attention and MLP write + the bias term add up *exactly* to the logit of the
  target (or the logit difference target − competitor).
- **Heads**: each attention write split into query heads through the output projection (the o_proj bias is its own
  term). Gemma-2's post-attention norm is frozen at its clean scale too, so heads still add up.
- **Attention grid** (additive): cell (block l, position p) = sum over heads of attention weight a(T←p) × the value
  vector of p through W_O, read toward the target. A row sums to that block's attention DLA minus the o_proj bias.
  MLPs act only at T in this decomposition: they appear as per-block bars.
- **Per-position grids** (*not additive*): the attention / MLP write *at* position p read through T's readout: what
  that sublayer writes toward the target at p, not how much of it reaches T.
- **Imp** (nats): log p(target) after adding the write minus before, through the same frozen readout
  (attention and heads read from the block input, the MLP from block input + attention).
- Over a prompt set, layer and head views are averaged; grids are aligned at the last token (T, T−1, …).
"""


@st.cache_data(max_entries=16, show_spinner=False)
def _compute(spec, prompts: tuple, targets: tuple, competitors: tuple, _progress=None) -> FlowSetResult:
    lm = load_cached(spec)[0]
    return logit_flow_set(lm, list(prompts), list(targets), list(competitors), progress=_progress)


def _uncached(report):
    """Run progress updates outside st.cache_data's element recording (a cache hit must not replay them)."""
    ctx = contextvars.copy_context()  # taken before the cached function starts: not "in a cached function"
    return lambda fraction, message="": ctx.run(report, fraction, message)


def _show(fig, name: str, key: str, data: pd.DataFrame, figures: dict, tables: dict) -> None:
    st.plotly_chart(fig, key=f"chart-{key}")
    export_figure(fig, name, key=f"exp-{key}", data=data)
    figures[name] = fig
    tables[name] = data


def _messages(r: FlowResult, tol: float) -> None:
    # notes quote token text: shown with st.text (never markdown)
    multi = [n for n in r.notes if "tokens (" in n]
    if multi:
        st.warning("The target or competitor text has several tokens: the analysis uses its first token.", icon="✂️")
    for note in r.notes:
        st.text(note)
    failed = failed_checks(r, tol)
    if failed:
        st.warning("Identity check failed on this prompt: " + "; ".join(failed), icon="⚠️")
    else:
        worst = max(r.checks.values()) if r.checks else 0.0
        st.caption(f"Identities hold ({len(r.checks)} checks, largest relative error {worst:.1e}).",
                   help="\n".join(f"- {v}" for v in CHECK_NAMES.values()))


def _summary(r: FlowResult, view: str) -> None:
    a = r.view(view)
    c1, c2, c3 = st.columns(3)
    c1.metric("Target", repr(r.target), help="Its first token if the text has several.")
    c2.metric("Rank / log p", f"{r.target_rank} / {r.target_logprob:.2f}", help="Rank 1 = the model's own top-1.")
    label = "Logit difference" if view == "difference" else f"{VIEW_LABELS[view]} logit (pre-cap)"
    c3.metric(label, f"{a.logit:.3f}")
    st.text(f"Model's top-1: {r.top_token!r}" + (f"   Competitor: {r.competitor!r}" if r.competitor is not None else ""))


def main() -> None:
    st.title("Logit flow")
    st.caption("Which layers, heads and positions build the prediction at the last position.")
    with st.expander("Definitions", expanded=False):
        st.markdown(DEFINITIONS)
    pair = require_models()

    left, right = st.columns([3, 2])
    with left:
        ps = prompt_set_input(PAGE, default_builtin="two_hop",
                              help="Prompts; the set's target/competitor columns are used unless overridden.")
    with right:
        n_max = st.number_input("Prompts to analyse", 1, MAX_PROMPTS, min(8, len(ps)) if ps is not None else 8,
                                key="flow_n", help=f"The first N prompts of the set (at most {MAX_PROMPTS}).")
        target_text = st.text_input("Target token", key="flow_target",
                                    placeholder="blank: the set's target, else the model's top-1",
                                    help="Text of the token with its leading space (' Paris'), or #123 for a token "
                                         "id. A text of several tokens uses its first token, and the page says so.")
        comp_text = st.text_input("Competing token", key="flow_competitor",
                                  placeholder="blank: the set's competitor, if any",
                                  help="Optional. Adds the competitor and the target − competitor views.")
        run_clicked = st.button("Run", type="primary", key="flow_run", use_container_width=True)
    if ps is None:
        st.stop()
    rows = ps.rows[: int(n_max)]
    if len(ps) > len(rows):
        st.caption(f"Analysing the first {len(rows)} of {len(ps)} prompts.")
    prompts = tuple(r.prompt for r in rows)
    targets = tuple(target_text if target_text else r.target for r in rows)
    competitors = tuple(comp_text if comp_text else r.competitor for r in rows)
    settings_key = (tuple(lm.spec for _, lm, _ in pair.items()), prompts, targets, competitors)
    if run_clicked:
        st.session_state["flow_last_run"] = settings_key
    if st.session_state.get("flow_last_run") != settings_key:
        st.info("Press Run to compute the logit flow" + (" (the settings changed since the last run)." if
                                                         st.session_state.get("flow_last_run") else "."))
        st.stop()

    results: dict[str, FlowSetResult] = {}
    for which, lm, card in pair.items():
        with user_errors(), progress_bar(f"Computing logit flow for {card.name}…") as report:
            results[which] = _compute(lm.spec, prompts, targets, competitors, _progress=_uncached(report))

    has_comp = all(all("competitor" in r.by_view for r in res.results) for res in results.values())
    v1, v2, v3 = st.columns([2, 1, 1])
    view = v1.radio("Read out toward", [v for v in VIEW_LABELS if has_comp or v == "target"],
                    format_func=VIEW_LABELS.get, horizontal=True, key="flow_view",
                    index=2 if has_comp else 0)
    frac = v2.slider("Flow threshold (% of strongest edge)", 0, 100, 10, key="flow_threshold")
    top_k = v3.number_input("Flow edges (max)", 4, 80, 20, key="flow_topk")
    idx = 0
    if len(prompts) > 1:
        idx = st.selectbox("Prompt shown in detail", range(len(prompts)), key="flow_detail",
                           format_func=lambda i: f"{i + 1}: {prompts[i]}")
    st.text("Prompt: " + repr(prompts[idx]))

    figures: dict = {}
    tables: dict = {}
    tabs = st.tabs(["Flow", "Attention grid", "Layers", "Heads", "Per position (not additive)",
                    "Target vs competitor"] + (["Prompt set"] if len(prompts) > 1 else []))
    cols_for = lambda: compare_columns(pair)  # noqa: E731 - one column per checkpoint, inside each tab

    with tabs[0]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            r = results[which].results[idx]
            with col:
                st.subheader(label, anchor=False)
                _summary(r, view)
                _messages(r, tolerance(lm))
                a = r.view(view)
                strongest = float(np.abs(a.sources).max()) if a.sources.size else 0.0
                fig = charts.flow_sankey(r.tokens, a.sources, r.target, threshold=strongest * frac / 100.0,
                                         top_k=int(top_k), title=f"{card.name}: source → head → final ({VIEW_LABELS[view]})")
                _show(fig, f"flow_{which}", f"flow-{which}", charts.edge_frame(r.tokens, a.sources, a.imp_sources),
                      figures, tables)

    with tabs[1]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            r = results[which].results[idx]
            a = r.view(view)
            with col:
                fig = charts.grid_heatmap(a.attn_grid, charts.position_labels(r.tokens),
                                          f"{card.name}: attention from source p into T ({VIEW_LABELS[view]})",
                                          note="additive: rows + o_proj bias = per-block attention DLA")
                _show(fig, f"attention_grid_{which}", f"grid-{which}",
                      charts.grid_frame(a.attn_grid, charts.position_labels(r.tokens), r.tokens), figures, tables)
        _difference_grid(pair, results, idx, view, figures, tables)

    with tabs[2]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            r = results[which].results[idx]
            a = r.view(view)
            with col:
                fig = charts.layer_bars(a.attn, a.mlp, f"{card.name}: DLA per block at T ({VIEW_LABELS[view]})",
                                        embed=a.embed, bias=a.bias, attn_bias=a.attn_bias)
                _show(fig, f"layers_{which}", f"layers-{which}", charts.layer_frame(a), figures, tables)
                fig = charts.layer_bars(a.imp_attn, a.imp_mlp, f"{card.name}: log-prob importance Imp per block "
                                        f"({VIEW_LABELS[view]})", units="nats")
                _show(fig, f"importance_{which}", f"imp-{which}", charts.layer_frame(a), figures, tables)
        _difference_layers(pair, results, idx, view, figures, tables)

    with tabs[3]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            a = results[which].results[idx].view(view)
            with col:
                fig = charts.head_heatmap(a.heads, f"{card.name}: heads at T ({VIEW_LABELS[view]})")
                _show(fig, f"heads_{which}", f"heads-{which}", charts.head_frame(a.heads, a.imp_heads), figures, tables)
        res_a = results["A"].results[idx].view(view)
        if pair.compare:
            res_b = results["B"].results[idx].view(view)
            if res_a.heads.shape == res_b.heads.shape:
                fig = charts.head_heatmap(res_b.heads - res_a.heads, f"B − A: heads at T ({VIEW_LABELS[view]})")
                _show(fig, "heads_B_minus_A", "heads-diff", charts.head_frame(res_b.heads - res_a.heads),
                      figures, tables)
            else:
                st.info("B − A heads: the two models have different numbers of blocks or heads.")

    with tabs[4]:
        st.caption("Not additive: each cell is the write *at* position p read through the last position's readout.")
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            r = results[which].results[idx]
            a = r.view(view)
            xl = charts.position_labels(r.tokens)
            with col:
                fig = charts.grid_heatmap(a.mlp_at_pos, xl, f"{card.name}: MLP write at each position "
                                          f"({VIEW_LABELS[view]}, not additive)")
                _show(fig, f"mlp_at_position_{which}", f"mlppos-{which}", charts.grid_frame(a.mlp_at_pos, xl, r.tokens),
                      figures, tables)
                fig = charts.grid_heatmap(a.attn_at_pos, xl, f"{card.name}: attention write at each position "
                                          f"({VIEW_LABELS[view]}, not additive)")
                _show(fig, f"attention_at_position_{which}", f"attnpos-{which}",
                      charts.grid_frame(a.attn_at_pos, xl, r.tokens), figures, tables)

    with tabs[5]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            r = results[which].results[idx]
            with col:
                if r.competitor is None:
                    st.info("No competing token: type one above, or use a prompt set with a 'competitor' column "
                            "(two_hop has one).")
                    continue
                fig = charts.contrast_bars(r.view("target"), r.view("competitor"), r.target, r.competitor,
                                           f"{card.name}: {r.target!r} vs {r.competitor!r}")
                t, c = charts.layer_frame(r.view("target")), charts.layer_frame(r.view("competitor"))
                data = t.add_prefix("target_").join(c.add_prefix("competitor_"))
                _show(fig, f"target_vs_competitor_{which}", f"contrast-{which}", data, figures, tables)
                fig = charts.grid_heatmap(r.view("difference").attn_grid, charts.position_labels(r.tokens),
                                          f"{card.name}: attention grid, target − competitor")
                _show(fig, f"attention_grid_difference_{which}", f"gridd-{which}",
                      charts.grid_frame(r.view("difference").attn_grid, charts.position_labels(r.tokens), r.tokens),
                      figures, tables)

    if len(prompts) > 1:
        with tabs[6]:
            _prompt_set(pair, results, view, figures, tables)

    st.divider()
    settings = {"view": view, "n_prompts": len(prompts), "target_override": target_text or None,
                "competitor_override": comp_text or None, "flow_threshold_pct": frac, "flow_edges": int(top_k),
                "detail_prompt": int(idx)}
    export_bundle(figures, tables, page_metadata(PAGE, pair, settings, ps), "logit_flow", key="flow-bundle")


def _difference_grid(pair, results, idx, view, figures, tables) -> None:
    if not pair.compare:
        return
    ra, rb = results["A"].results[idx], results["B"].results[idx]
    if ra.tokens != rb.tokens or ra.n_layers != rb.n_layers:
        st.info("B − A grid: the models tokenize this prompt differently or have different depths; compare the grids "
                "side by side.")
        return
    d = rb.view(view).attn_grid - ra.view(view).attn_grid
    xl = charts.position_labels(ra.tokens)
    fig = charts.grid_heatmap(d, xl, f"B − A: attention from source p into T ({VIEW_LABELS[view]})")
    _show(fig, "attention_grid_B_minus_A", "grid-diff", charts.grid_frame(d, xl, ra.tokens), figures, tables)


def _difference_layers(pair, results, idx, view, figures, tables) -> None:
    if not pair.compare:
        return
    a, b = results["A"].results[idx].view(view), results["B"].results[idx].view(view)
    if a.attn.shape != b.attn.shape:
        st.info("B − A per block: the models have different numbers of blocks.")
        return
    fig = charts.layer_bars(b.attn - a.attn, b.mlp - a.mlp, f"B − A: DLA per block at T ({VIEW_LABELS[view]})",
                            embed=b.embed - a.embed, bias=b.bias - a.bias)
    data = pd.DataFrame({"block": range(len(a.attn)), "attention_B_minus_A": b.attn - a.attn,
                         "mlp_B_minus_A": b.mlp - a.mlp})
    _show(fig, "layers_B_minus_A", "layers-diff", data, figures, tables)


def _prompt_set(pair, results, view, figures, tables) -> None:
    for label, lm, card, col in compare_columns(pair):
        which = label.split(":")[0]
        res = results[which]
        with col:
            for note in res.notes:
                st.warning(note)  # engine sentence without user text
            n = len(res.members(view))
            st.caption(f"Averages over {n} prompt(s).")
            with user_errors():
                fig = charts.layer_bars(res.mean(view, "attn"), res.mean(view, "mlp"),
                                        f"{card.name}: mean DLA per block over {n} prompts ({VIEW_LABELS[view]})")
                data = pd.DataFrame({"block": range(len(res.mean(view, "attn"))), "attention_dla": res.mean(view, "attn"),
                                     "mlp_dla": res.mean(view, "mlp")})
                _show(fig, f"set_layers_{which}", f"setlayers-{which}", data, figures, tables)
                heads = res.mean(view, "heads")
                fig = charts.head_heatmap(heads, f"{card.name}: mean head DLA over {n} prompts")
                _show(fig, f"set_heads_{which}", f"setheads-{which}", charts.head_frame(heads), figures, tables)
                grid, count = res.aligned(view, "attn_grid")
                xl = charts.aligned_labels(grid.shape[1])
                fig = charts.grid_heatmap(grid, xl, f"{card.name}: mean attention grid, aligned at the last token",
                                          note="columns count back from the last token T")
                data = charts.grid_frame(grid, xl)
                data["n_prompts"] = [count[list(xl).index(p)] for p in data["position"]]
                _show(fig, f"set_attention_grid_{which}", f"setgrid-{which}", data, figures, tables)
            table = pd.DataFrame(res.table())
            st.caption("Per prompt (also in the bundle):")
            st.dataframe(table, hide_index=True, key=f"settable-{which}")
            tables[f"per_prompt_{which}"] = table


main()
