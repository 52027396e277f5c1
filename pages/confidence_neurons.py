"""Confidence neurons page: scan for entropy and token-frequency neurons, ablate them (total vs direct effect),
and watch them in the induction case study; on A (and B side by side).

Wiring only: the widgets come from components.reports.neurons.NeuronsSettings; each tab's computation is its cached
``compute_*`` (keyed on the models, the prompt sets and that tab's settings that change the computation, ``part_key``)
and the figures come from one ``report``.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

import analysis.neurons as ns
from analysis.core.errors import LogitscopeError
from analysis.neurons import DEFAULT_REFERENCE
from components import card_views
from components import page_kit as kit
from components.charts import neurons as charts
from components.charts.text import md_literal
from components.export_ui import export_bundle, export_figure
from components.notes import collapse_notes
from components.prompt_input import prompt_set_input
from components.reports import Report
from components.reports import neurons as R
from components.settings_ui import sync_query, widget
from components.shell import ensure_app_shell

ensure_app_shell()

KEY = R.KEY
S = R.NeuronsSettings


def figure(rep: Report, name: str, data: pd.DataFrame | None) -> None:
    """Draw figure ``name`` of the report with its export popover, whose table is ``data``."""
    kit.plot(rep.figures[name], f"{KEY}_{name}")
    export_figure(rep.figures[name], f"{KEY}_{name}", key=f"{KEY}_x_{name}", data=data)


st.title("Confidence neurons")
st.caption("Entropy neurons write into the unembedding's near-null space and change confidence through the final "
           "norm's scale; token-frequency neurons push the prediction toward or away from the unigram distribution "
           "(Stolfo et al. 2024). Neuron ids are L{block}.N{index} with a 0-based block, e.g. L3.N130 (its MLP writes "
           "to residual layer block+1; layer 0 = embeddings, L = last block's output).")

pair = kit.open_page(S, KEY)
specs = pair.specs()

with st.expander("Reference set (token frequencies and mean activations)", expanded=False):
    ref_set = prompt_set_input(f"{KEY}_ref", default_builtin=DEFAULT_REFERENCE,
                               help="Unigram counts (add-one smoothed) and mean activations for mean ablation.")
    max_reference = widget(S, "max_reference", KEY)
if not R.reference_prompts(ref_set, max_reference):
    st.error("The reference set is empty: pick a built-in set (e.g. corpus_sample), upload a file or type prompts. "
             "Token frequencies and mean ablation need it.")
ref_hash = getattr(ref_set, "sha256", None)

tab_scan, tab_abl, tab_ind, tab_card = st.tabs(["Scan", "Ablate", "Induction", "Neuron card"])

# ------------------------------------------------------------------------------------------ Scan
with tab_scan:
    c1, c2, _c3 = st.columns(3)
    processing = widget(S, "processing", KEY, c1)
    k = widget(S, "k", KEY, c2)
    partial = S(max_reference=max_reference, processing=processing, k=k)
    with kit.user_errors():
        scan = R.scan_part(pair, {"--prompts": ref_set}, partial, kit.memo)
    picks: dict[str, int] = {}
    slots: dict[str, tuple] = {}
    for label, _lm, _card, col in kit.compare_columns(pair):
        which = label.split(":")[0]
        sc = scan.scans[which]
        with col:
            st.subheader(label, anchor=False)
            (st.success if len(sc.candidates) else st.info)(sc.message)
            scatter_slot = st.container()
            picks[which] = widget(S, f"spectrum_{which.lower()}", KEY, choices=[int(i) for i in sc.top],
                                  format_func=lambda i, s=sc: f"{ns.neuron_label(s.block, i)} (ρ {s.rho[i]:.3f})")
            spectrum_slot = st.container()
            if which in scan.freq_errors:
                st.error(scan.freq_errors[which])
            fs = scan.freqs.get(which)
            if fs is not None:
                (st.success if fs.candidates else st.info)(fs.message)
            slots[which] = (scatter_slot, spectrum_slot, st.container())

# ------------------------------------------------------------------------------------------ Ablate
with tab_abl:
    default_ids = R.default_neurons(scan.scans["A"])
    kit.model_default(f"{KEY}_neurons", default_ids)
    left, right = st.columns([3, 2])
    with left:
        neurons = widget(S, "neurons", KEY)
        eval_set = prompt_set_input(f"{KEY}_eval", default_builtin=DEFAULT_REFERENCE,
                                    help="Prompts the ablation is evaluated on (every position with a next token).")
    with right:
        mode = widget(S, "mode", KEY)
        c1, c2 = st.columns(2)
        max_prompts = widget(S, "max_prompts", KEY, c1)
        n_random = widget(S, "n_random", KEY, c2)
        seed = widget(S, "seed", KEY, c1)
        skip_first = widget(S, "skip_first", KEY, c2)
        as_set = widget(S, "as_set", KEY)
        run_abl = st.button("Run ablation", type="primary", key=f"{KEY}_run", use_container_width=True)

# ------------------------------------------------------------------------------------------ Induction
with tab_ind:
    st.caption("Per position of repeated sequences R + R: entropy, loss and the activations of the selected neurons, "
               "clean and with a clipped-mean ablation. The first position is left out of the selection and the "
               "activation scale: on real models it is an attention sink with activations 100x larger (it also keeps "
               "its clean activation in the ablation; entropy and loss keep it).")
    left, right = st.columns([3, 2])
    with left:
        source = widget(S, "induction_source", KEY)
        ind_set = prompt_set_input(f"{KEY}_ind", default_builtin="induction", allow_typed=False) \
            if source == "prompts" else None
        induction_neurons = widget(S, "induction_neurons", KEY)
    with right:
        c1, c2 = st.columns(2)
        sequences = widget(S, "sequences", KEY, c1)
        length = widget(S, "length", KEY, c2, disabled=source != "random")
        random_sets = widget(S, "random_sets", KEY, c1)
        induction_seed = widget(S, "induction_seed", KEY, c2)
        induction_auto = widget(S, "induction_auto", KEY, c1, disabled=bool(induction_neurons.strip()))
        run_ind = st.button("Run induction study", type="primary", key=f"{KEY}_run_ind", use_container_width=True)

with tab_card:
    st.caption("One neuron: the tokens its output weight promotes and suppresses through the unembedding, W_U·(γ ⊙ "
               "w_out) (final norm's gain, no norm scale), its top activating reference prompts and its activations "
               "over every reference position.")
    card_text, card_k, card_window, card_default = card_views.neuron_card_widgets(KEY, scan)

# The defaults the data gives (A's top neurons, each scan's top spectrum) are recorded as the declared defaults, so
# the link and the cache key stay the same whether or not they were typed.
chosen = {which: None if pick == int(scan.scans[which].top[0]) else pick for which, pick in picks.items()}
settings = S(max_reference=max_reference, processing=processing, k=k, spectrum_a=chosen["A"],
             spectrum_b=chosen.get("B"),
             neurons="" if ns.canonical_neuron_text(neurons) == ns.canonical_neuron_text(default_ids) else neurons,
             mode=mode, max_prompts=max_prompts, n_random=n_random, seed=seed, skip_first=skip_first, as_set=as_set,
             induction_source=source, induction_neurons=induction_neurons, induction_auto=induction_auto,
             sequences=sequences, length=length, random_sets=random_sets, induction_seed=induction_seed,
             card_neuron="" if ns.canonical_neuron_text(card_text) == card_default else card_text, card_k=card_k,
             card_window=card_window)
sync_query(settings, KEY, KEY)

inputs = {"--prompts": ref_set, "--eval-prompts": eval_set, "--induction-prompts": ind_set}
ablation = None
with tab_abl:
    eval_hash = getattr(eval_set, "sha256", None)
    if not kit.has_run(f"{KEY}_abl_ran", (specs, ref_hash, eval_hash, R.part_key(settings, "ablate")), run_abl):
        st.info("Press Run ablation to compute total and direct effects.")
    elif eval_set is not None:
        with kit.user_errors(stop=False), kit.progress_bar("Ablating…") as report:
            ablation = R.ablation_part(pair, inputs, settings, scan, report, kit.memo)

induction = None
with tab_ind:
    ind_hash = getattr(ind_set, "sha256", None)
    if not kit.has_run(f"{KEY}_ind_ran", (specs, ind_hash, R.part_key(settings, "induction")), run_ind):
        st.info("Press Run induction study: clean vs clipped-mean-ablated entropy and loss per position.")
    elif source == "random" or ind_set is not None:
        with kit.user_errors(stop=False), kit.progress_bar("Running the induction study…") as report:
            induction = R.induction_part(pair, inputs, settings, report, kit.memo)

cards = None
with tab_card:
    if scan.reference:
        with kit.user_errors(stop=False):
            cards, card_notes = R.card_part(pair, inputs, settings, scan, kit.memo)
            for note in collapse_notes(card_notes):
                st.warning(md_literal(note))

settings = replace(settings, parts=tuple(p for p, r in (("ablate", ablation), ("induction", induction)) if r is not None))
results = R.NeuronsResults(scan, ablation, induction, cards)
with kit.user_errors():
    rep = R.report(results, settings)
    meta = R.settings_metadata(settings, inputs, results)

# ------------------------------------------------------------------------------------------ the report, tab by tab
for which, (scatter_slot, spectrum_slot, freq_slot) in slots.items():
    with scatter_slot:
        for y in ("rho", "logit_var"):
            figure(rep, f"norm_vs_{y}_{which}", rep.tables[f"scan_{which}"])
    with spectrum_slot:
        figure(rep, f"spectrum_{which}", charts.spectrum_frame(scan.scans[which], picks[which]))
    with freq_slot:
        kit.show(rep, f"frequency_{which}", KEY, bundle=KEY, optional=True)
if pair.compare and len(scan.scans) == 2:
    with tab_scan:
        st.subheader("A vs B", anchor=False)
        for msg in collapse_notes(rep.notes):
            st.info(md_literal(msg))
        kit.show(rep, "rho_A_vs_B", KEY, bundle=KEY, optional=True)

if ablation is not None:
    with tab_abl:
        summaries = []
        for label, _lm, _card, col in kit.compare_columns(pair):
            which = label.split(":")[0]
            summ = rep.tables[f"ablation_summary_{which}"]
            with col:
                st.subheader(label, anchor=False)
                st.info(R.ablation_text(summ, ablation[which]))
                figure(rep, f"te_de_boxes_{which}", summ)
                figure(rep, f"mediation_{which}", summ)
                st.dataframe(summ, hide_index=True, key=f"{KEY}_summ_{which}")
            summaries.append(summ.assign(checkpoint=which))
        if len(summaries) > 1:
            st.subheader("A vs B", anchor=False)
            both = pd.concat(summaries, ignore_index=True)
            st.dataframe(both.pivot_table(index="unit", columns="checkpoint",
                                          values=["mean_abs_dloss_te", "mean_abs_dloss_de", "M"]), key=f"{KEY}_abl_ab")

if induction is not None:
    with tab_ind:
        for label, _lm, _card, col in kit.compare_columns(pair):
            which = label.split(":")[0]
            with col:
                st.subheader(label, anchor=False)
                st.info(induction[which].message)
                kit.show(rep, f"induction_{which}", KEY, bundle=KEY)
                st.dataframe(rep.tables[f"induction_summary_{which}"], hide_index=True, key=f"{KEY}_ind_summ_{which}")

if cards:
    with tab_card:
        card_views.show_neuron_card(rep, pair, KEY, KEY)

st.divider()
try:
    export_bundle(rep.figures, rep.tables, kit.page_metadata(R.PAGE, pair, meta, ref_set, rep.notes,
                                                         R.inputs_used(inputs, results, settings)),
                  R.BUNDLE, key=f"{KEY}_bundle")
except LogitscopeError as err:
    st.error(str(err))
