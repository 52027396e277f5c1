"""Logit flow page: which layers, heads and source positions build the prediction at the last position.

Wiring only: the widgets come from components.reports.flow.FlowSettings, the computation is its cached ``compute``
(keyed on the models, the prompt set and the settings that change the computation) and the figures its ``report``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import streamlit as st

from analysis.core.wording import plural
from analysis.flow import CHECK_NAMES, FlowResult, failed_checks, tolerance
from analysis.models.defaults import default_set
from components import page_kit as kit
from components import pattern_view
from components.export_ui import export_bundle
from components.prompt_input import prompt_set_input
from components.reports import flow as R
from components.settings import compute_key, field_of
from components.settings_ui import sync_query, widget, widget_key
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.FlowSettings
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
- **Attention patterns**: one query head's attention probabilities over the prompt (query rows × key columns; each row
  sums to 1, causal). The last row is the a(T←p) the head x source attribution uses. GQA heads share keys and values
  but each query head has its own pattern.
"""




def _slider(name: str, where) -> int:
    """An integer setting drawn as a slider, its label, bounds, default and help from the declaration."""
    f = field_of(S, name)
    k = widget_key(KEY, name)
    if k not in st.session_state:
        st.session_state[k] = f.default
    return int(where.slider(f.label, int(f.spec.lo), int(f.spec.hi), key=k, help=f.spec.help))


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


@dataclass(frozen=True)
class Shown:
    """What the tabs draw: the report, the models, the results, the prompt shown and the view."""

    rep: Any
    pair: Any
    results: Any
    idx: int
    view: str

    def fig(self, name: str) -> None:
        kit.show(self.rep, name, KEY, bundle=R.BUNDLE)

    def note(self, text: str) -> None:
        if text in self.rep.notes:
            st.info(text)

    def columns(self) -> list:
        """(which, label, lm, column) per checkpoint, side by side."""
        return [(label.split(":")[0], label, lm, col) for label, lm, _card, col in kit.compare_columns(self.pair)]

    def per_model_then_diff(self, stems: tuple[str, ...], diff: str, no_diff: str) -> None:
        """Each checkpoint's figures ``{stem}_{A|B}`` in its column, then the B − A figure (or why there is none)."""
        for which, _label, _lm, col in self.columns():
            with col:
                for stem in stems:
                    self.fig(f"{stem}_{which}")
        kit.show(self.rep, diff, KEY, bundle=R.BUNDLE, optional=True)
        self.note(no_diff)


def flow_tab(sh: Shown) -> None:
    for which, label, lm, col in sh.columns():
        r = sh.results.by_model[which].results[sh.idx]
        with col:
            st.subheader(label, anchor=False)
            _summary(r, sh.view)
            _messages(r, tolerance(lm))
            sh.fig(f"flow_{which}")


def per_position_tab(sh: Shown) -> None:
    st.caption("Not additive: each cell is the write *at* position p read through the last position's readout.")
    for which, _label, _lm, col in sh.columns():
        with col:
            sh.fig(f"mlp_at_position_{which}")
            sh.fig(f"attention_at_position_{which}")


def competitor_tab(sh: Shown) -> None:
    for which, _label, _lm, col in sh.columns():
        with col:
            if f"target_vs_competitor_{which}" not in sh.rep.figures:
                st.info("No competing token: type one above, or use a prompt set with a 'competitor' column "
                        "(two_hop has one).")
                continue
            sh.fig(f"target_vs_competitor_{which}")
            sh.fig(f"attention_grid_difference_{which}")


def set_tab(sh: Shown) -> None:
    for which, _label, _lm, col in sh.columns():
        res = sh.results.by_model[which]
        with col:
            for warning in res.notes:
                st.warning(warning)  # engine sentence without user text
            st.caption(f"Averages over {plural(len(res.members(sh.view)), 'prompt')}.")
            for text in sh.rep.notes:
                if text.startswith(f"{which}: "):
                    st.error(text[len(which) + 2:])
            for name in (f"set_layers_{which}", f"set_heads_{which}", f"set_attention_grid_{which}"):
                kit.show(sh.rep, name, KEY, bundle=R.BUNDLE, optional=True)
            st.caption("Per prompt (also in the bundle):")
            st.dataframe(sh.rep.tables[f"per_prompt_{which}"], hide_index=True, key=f"{KEY}_table_{which}")


def show_tabs(sh: Shown) -> None:
    """The result tabs: the flow, the grids, layers, heads, per position, target vs competitor, patterns, the set."""
    several = len(sh.results.prompts) > 1
    tabs = st.tabs(["Flow", "Attention grid", "Layers", "Heads", "Per position (not additive)",
                    "Target vs competitor", "Attention patterns"] + (["Prompt set"] if several else []))
    with tabs[0]:
        flow_tab(sh)
    with tabs[1]:
        sh.per_model_then_diff(("attention_grid",), "attention_grid_B_minus_A", R.NO_DIFF_GRID)
    with tabs[2]:
        sh.per_model_then_diff(("layers", "importance"), "layers_B_minus_A", R.NO_DIFF_LAYERS)
    with tabs[3]:
        sh.per_model_then_diff(("heads",), "heads_B_minus_A", R.NO_DIFF_HEADS)
    with tabs[4]:
        per_position_tab(sh)
    with tabs[5]:
        competitor_tab(sh)
    with tabs[6]:
        pattern_view.show(sh.rep, sh.pair, KEY)
    if several:
        with tabs[7]:
            set_tab(sh)


def main() -> None:
    ensure_app_shell()
    st.title("Logit flow")
    st.caption("Which layers, heads and positions build the prediction at the last position.")
    with st.expander("Definitions", expanded=False):
        st.markdown(DEFINITIONS)
    pair = kit.open_page(S, KEY)

    left, right = st.columns([3, 2])
    with left:
        ps = prompt_set_input(R.PAGE, default_builtin=default_set(pair.a, "two_hop"),
                              help="Prompts; the set's target/competitor columns are used unless overridden.")
    with right:
        max_prompts = widget(S, "max_prompts", KEY)
        target = widget(S, "target", KEY)
        competitor = widget(S, "competitor", KEY)
        run_clicked = st.button("Run", type="primary", key=f"{KEY}_run", use_container_width=True)
    if ps is None:
        st.stop()
    if len(ps) > max_prompts:
        st.caption(f"Analysing the first {max_prompts} of {plural(len(ps), 'prompt')}.")
    settings = S(max_prompts=max_prompts, target=target, competitor=competitor)
    kit.require_run(f"{KEY}_ran", (pair.specs(), ps.sha256, compute_key(settings)), run_clicked, "the logit flow")

    results = kit.compute(R, pair, {"--prompts": ps}, settings, "Computing the logit flow…")
    prompts = results.prompts

    v1, v2, v3 = st.columns([2, 1, 1])
    offered = R.views(results.by_model)
    default = R.default_view(results.by_model)
    if st.session_state.get(widget_key(KEY, "view")) not in offered:
        st.session_state[widget_key(KEY, "view")] = default  # the results' default, not the declared None
    view = widget(S, "view", KEY, v1, choices=offered)
    threshold = _slider("threshold", v2)
    edges = widget(S, "edges", KEY, v3)
    show_prompt = 1
    if len(prompts) > 1:
        show_prompt = widget(S, "show_prompt", KEY, choices=list(range(1, len(prompts) + 1)),
                             format_func=lambda i: kit.prompt_label(i, prompts[i - 1]))
    idx = show_prompt - 1
    st.text("Prompt: " + repr(prompts[idx]))
    settings = replace(settings, view=None if view == default else view, threshold=threshold, edges=edges,
                       show_prompt=show_prompt)
    pattern_view.apply_clicks(KEY, list(results.by_model))
    settings = replace(settings, pattern_head=pattern_view.head_picker(KEY, results, settings, v1))
    sync_query(settings, KEY, KEY)

    with kit.user_errors():
        rep = R.report(results, settings)
        meta = R.settings_metadata(settings, results)
    show_tabs(Shown(rep, pair, results, idx, view))
    st.divider()
    export_bundle(rep.figures, rep.tables, kit.page_metadata(R.PAGE, pair, meta, ps, rep.notes), R.BUNDLE,
                  key=f"{KEY}_bundle")


main()
