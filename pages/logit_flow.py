"""Logit flow page: which layers, heads and source positions build the prediction at the last position."""
from __future__ import annotations


import streamlit as st

from analysis.model_defaults import default_set
from analysis.flow import CHECK_NAMES, FlowResult, FlowSetResult, failed_checks, logit_flow_set, tolerance
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import compare_columns, page_metadata, progress_bar, require_run, user_errors
from components.prompt_input import prompt_set_input
from components.reports import flow as R
from components.shell import ensure_app_shell

ensure_app_shell()

PAGE = R.PAGE
MAX_PROMPTS = R.MAX_PROMPTS
VIEW_LABELS = R.VIEW_LABELS

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
        ps = prompt_set_input(PAGE, default_builtin=default_set(pair.a, "two_hop"),
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
    require_run("flow_last_run", settings_key, run_clicked, "the logit flow")

    results: dict[str, FlowSetResult] = {}
    for which, lm, card in pair.items():
        with user_errors(), progress_bar(f"Computing logit flow for {card.name}…") as report:
            results[which] = _compute(lm.spec, prompts, targets, competitors, _progress=report)

    v1, v2, v3 = st.columns([2, 1, 1])
    offered = R.views(results)
    view = v1.radio("Read out toward", offered, format_func=VIEW_LABELS.get, horizontal=True, key="flow_view",
                    index=offered.index(R.default_view(results)))
    frac = v2.slider("Flow threshold (% of strongest edge)", 0, 100, R.DEFAULTS["threshold_pct"], key="flow_threshold")
    top_k = v3.number_input("Flow edges (max)", 4, 80, R.DEFAULTS["top_k"], key="flow_topk")
    idx = 0
    if len(prompts) > 1:
        idx = st.selectbox("Prompt shown in detail", range(len(prompts)), key="flow_detail",
                           format_func=lambda i: f"{i + 1}: {prompts[i]}")
    st.text("Prompt: " + repr(prompts[idx]))

    with user_errors():
        rep = R.flow_report(results, {w: card.name for w, _, card in pair.items()}, view=view, frac=frac,
                            top_k=int(top_k), idx=idx)
    figures, tables = rep.figures, rep.tables

    def show(name: str, key: str) -> None:
        """Draw one report figure with its export popover and its table."""
        st.plotly_chart(figures[name], key=f"chart-{key}")
        export_figure(figures[name], name, key=f"exp-{key}", data=tables.get(name))

    def note(text: str) -> None:
        if text in rep.notes:
            st.info(text)

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
                show(f"flow_{which}", f"flow-{which}")

    with tabs[1]:
        for label, lm, card, col in cols_for():
            with col:
                show(f"attention_grid_{label.split(':')[0]}", f"grid-{label.split(':')[0]}")
        if "attention_grid_B_minus_A" in figures:
            show("attention_grid_B_minus_A", "grid-diff")
        note(R.NO_DIFF_GRID)

    with tabs[2]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            with col:
                show(f"layers_{which}", f"layers-{which}")
                show(f"importance_{which}", f"imp-{which}")
        if "layers_B_minus_A" in figures:
            show("layers_B_minus_A", "layers-diff")
        note(R.NO_DIFF_LAYERS)

    with tabs[3]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            with col:
                show(f"heads_{which}", f"heads-{which}")
        if "heads_B_minus_A" in figures:
            show("heads_B_minus_A", "heads-diff")
        note(R.NO_DIFF_HEADS)

    with tabs[4]:
        st.caption("Not additive: each cell is the write *at* position p read through the last position's readout.")
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            with col:
                show(f"mlp_at_position_{which}", f"mlppos-{which}")
                show(f"attention_at_position_{which}", f"attnpos-{which}")

    with tabs[5]:
        for label, lm, card, col in cols_for():
            which = label.split(":")[0]
            with col:
                if f"target_vs_competitor_{which}" not in figures:
                    st.info("No competing token: type one above, or use a prompt set with a 'competitor' column "
                            "(two_hop has one).")
                    continue
                show(f"target_vs_competitor_{which}", f"contrast-{which}")
                show(f"attention_grid_difference_{which}", f"gridd-{which}")

    if len(prompts) > 1:
        with tabs[6]:
            for label, lm, card, col in compare_columns(pair):
                which = label.split(":")[0]
                res = results[which]
                with col:
                    for warning in res.notes:
                        st.warning(warning)  # engine sentence without user text
                    st.caption(f"Averages over {len(res.members(view))} prompt(s).")
                    for text in rep.notes:
                        if text.startswith(f"{which}: "):
                            st.error(text[len(which) + 2:])
                    for name, key in ((f"set_layers_{which}", f"setlayers-{which}"),
                                      (f"set_heads_{which}", f"setheads-{which}"),
                                      (f"set_attention_grid_{which}", f"setgrid-{which}")):
                        if name in figures:
                            show(name, key)
                    st.caption("Per prompt (also in the bundle):")
                    st.dataframe(tables[f"per_prompt_{which}"], hide_index=True, key=f"settable-{which}")

    st.divider()
    settings = R.flow_settings(view, len(prompts), target_text, comp_text, frac, int(top_k), idx)
    export_bundle(figures, tables, page_metadata(PAGE, pair, settings, ps, rep.notes), R.BUNDLE, key="flow-bundle")


main()
