"""Logit lens page: what each layer would predict, for a typed prompt or a prompt set, on A (and B side by side).

Wiring only: the widgets come from components.reports.lens.LensSettings, the computation is its cached ``compute``
(keyed on the models, the prompt set and the settings that change the computation) and the figures its ``report``.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

import analysis.lens as L
from analysis.models.defaults import default_fact
from components import page_kit as kit
from components import tuned_lens_ui
from components.charts.style import MAX_LAYER_ROWS
from components.charts.text import md_literal
from components.export_ui import export_bundle
from components.notes import collapse_notes
from components.prompt_input import prompt_set_input
from components.reports import lens as R
from components.settings import compute_key, field_of
from components.settings_ui import sync_query, widget
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.LensSettings


def main() -> None:
    ensure_app_shell()
    st.title("Logit lens")
    st.caption("What the model would predict if it stopped at layer l: softmax(W_U · final_norm(h_l)), the final norm's "
               "statistics recomputed at every layer. Layer 0 = embeddings, L = last block's output before the final norm.")
    pair = kit.open_page(S, KEY)
    prompt0, target0 = default_fact(pair.a)
    kit.model_default(f"{KEY}__prompts_typed", prompt0)
    kit.model_default(f"{KEY}_target_text", target0)
    left, right = st.columns([3, 2])
    with left:
        prompt_set = prompt_set_input(KEY, help="One prompt, several typed prompts, a built-in set or an uploaded file.")
    with right:
        lens = widget(S, "lens", KEY)
        c1, c2 = st.columns(2)
        top_k = widget(S, "top_k", KEY, c1)
        positions_shown = widget(S, "positions_shown", KEY, c2)
        target = widget(S, "target", KEY)
        target_text = widget(S, "target_text", KEY, disabled=target != L.TARGET_TEXT)
        colour = widget(S, "colour", KEY, choices=[m for m in field_of(S, "colour").spec.choices
                                                   if m != "log_rank" or target != L.TARGET_NONE])
        aggregate = widget(S, "aggregate", KEY)
        run_clicked = st.button("Run", type="primary", key=f"{KEY}_run", use_container_width=True)
    if prompt_set is None:
        st.stop()
    trained = lens == "tuned" and tuned_lens_ui.panel(pair, KEY)  # train the translators on a button press
    settings = S(lens=lens, top_k=top_k, target=target, target_text=target_text, colour=colour, positions_shown=positions_shown,
                 aggregate=aggregate)
    prompts = tuple(prompt_set.prompts)
    ckey = compute_key(settings) + (tuned_lens_ui.stamps(pair) if lens == "tuned" else ())  # a new translator recomputes
    params = (pair.specs(), prompt_set.sha256, ckey)
    kit.require_run(f"{KEY}_ran", params, run_clicked or trained, "the lens")
    results = kit.compute(R, pair, {"--prompts": prompt_set}, settings, "Computing the lens…")
    first = next(iter(results.traces.values()))
    for note in collapse_notes(first.notes):  # one warning per kind, naming the prompts it concerns
        st.warning(md_literal(note))
    if results.compare_error:
        st.warning(f"KL(A‖B) is not shown: {results.compare_error} Each model below reads its own tokenization.")
    show_prompt = 1
    if len(prompts) > 1:
        show_prompt = widget(S, "show_prompt", KEY, choices=list(range(1, len(prompts) + 1)),
                             format_func=lambda i: kit.prompt_label(i, prompts[i - 1]))
    length = int(first.lengths[show_prompt - 1])
    position = None  # None = the prompt's last position (the default, kept out of the link)
    if length > 1:
        position = st.select_slider("Position for the top-k table", options=list(range(length)), value=length - 1,
                                    key=f"{KEY}_position_{show_prompt}", help=field_of(S, "position").spec.help,
                                    format_func=lambda t: f"{t}: {first.tokens(show_prompt - 1)[t]!r}")
        position = None if position == length - 1 else position
    c1, c2 = st.columns(2)
    layer_step = S.layer_step
    if first.n_layers + 1 > MAX_LAYER_ROWS // 2:  # deep models only: a 12-layer heatmap has nothing to thin out
        layer_step = widget(S, "layer_step", KEY, c1)
        c1 = c2
    kl_scale = widget(S, "kl_scale", KEY, c1)
    settings = replace(settings, show_prompt=show_prompt, position=position, kl_scale=kl_scale, layer_step=layer_step)
    sync_query(settings, KEY, KEY)
    with kit.user_errors():
        rep = R.report(results, settings)
        meta = R.settings_metadata(settings, prompt_set, results)
    n, t_sel = show_prompt - 1, meta["position"]
    cols = st.columns(len(pair.items())) if pair.compare else [st.container()]
    for (which, _lm, card), col in zip(pair.items(), cols, strict=True):
        label = f"{which}: {card.name}"
        with col:
            st.subheader(label, anchor=False)
            kit.show(rep, f"heatmap_{which}", KEY, bundle=R.BUNDLE)
            kit.show(rep, f"target_{which}", KEY, bundle=R.BUNDLE, optional=True)
            st.caption(f"Top-{results.traces[label].k} per layer at position {t_sel} of prompt {n + 1}")
            st.dataframe(rep.tables[f"position_{which}"], hide_index=True, key=f"{KEY}_table_{which}")
    st.subheader("Over the set", anchor=False)
    kit.show_row(rep, ("mean_kl", "decision_depth"), KEY, bundle=R.BUNDLE)
    for which, _, _ in pair.items():  # the tuned lens: its translator's held-out KL / cross-entropy, logit vs tuned
        kit.show(rep, f"tuned_vs_logit_{which}", KEY, bundle=R.BUNDLE, optional=True)
    if results.comparison is not None:
        st.subheader("A vs B on identical tokens", anchor=False)
        kit.show_row(rep, ("kl_a_b_heatmap", "kl_a_b_mean"), KEY, bundle=R.BUNDLE)
    export_bundle(rep.figures, rep.tables, kit.page_metadata(R.PAGE, pair, meta, prompt_set, rep.notes), R.BUNDLE,
                  key=f"{KEY}_bundle")


main()
