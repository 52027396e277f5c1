"""Confidence neurons page: scan for entropy and token-frequency neurons, ablate them (total vs direct effect),
and watch them in the induction case study; on A (and B side by side).

Wiring only: the widgets come from components.reports.neurons.NeuronsSettings; each tab's computation is the
declaration's part (scan, ablation, induction, neuron card) run through the page's cache (page_kit.memo, keyed on the
models, the prompt sets and the settings that part reads) and the figures come from one ``report``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import streamlit as st

import analysis.neurons as ns
from analysis.core.errors import LogitscopeError
from analysis.models.pair import ModelPair
from analysis.neurons import DEFAULT_REFERENCE
from components import card_views
from components import page_kit as kit
from components.charts import neurons as charts
from components.charts.text import md_literal
from components.export_ui import export_bundle, export_figure
from components.notes import collapse_notes
from components.page_settings import PageSettings
from components.prompt_input import prompt_set_input
from components.reports import Report
from components.reports import neurons as R
from components.settings_ui import sync_query
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.NeuronsSettings


@dataclass
class Page:
    """One run of the page: the models, the widgets drawn, the inputs, the scan and what the other tabs ran."""

    pair: ModelPair
    ps: PageSettings = field(default_factory=lambda: PageSettings(S, KEY))
    inputs: dict[str, Any] = field(default_factory=dict)
    scan: Any = None
    picks: dict[str, int] = field(default_factory=dict)
    slots: dict[str, tuple] = field(default_factory=dict)
    clicked: dict[str, bool] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def figure(rep: Report, name: str, data: pd.DataFrame | None) -> None:
    """Draw figure ``name`` of the report with its export popover, whose table is ``data``."""
    kit.plot(rep.figures[name], f"{KEY}_{name}")
    export_figure(rep.figures[name], f"{KEY}_{name}", key=f"{KEY}_x_{name}", data=data)


# ------------------------------------------------------------------------------------------------------ widgets
def reference_widgets(page: Page) -> None:
    with st.expander("Reference set (token frequencies and mean activations)", expanded=False):
        page.inputs["--prompts"] = prompt_set_input(f"{KEY}_ref", default_builtin=DEFAULT_REFERENCE,
                                                    help="Unigram counts (add-one smoothed) and mean activations for "
                                                         "mean ablation.")
        page.ps.draw("max_reference")
    if not R.reference_prompts(page.inputs["--prompts"], page.ps.drawn["max_reference"]):
        st.error("The reference set is empty: pick a built-in set (e.g. corpus_sample), upload a file or type prompts. "
                 "Token frequencies and mean ablation need it.")


def scan_tab(page: Page) -> None:
    c1, c2, _c3 = st.columns(3)
    page.ps.draw("processing", c1)
    page.ps.draw("k", c2)
    with kit.user_errors():
        page.scan = R.scan_part(page.pair, page.inputs, page.ps.current(), kit.memo)
    for label, _lm, _card, col in kit.compare_columns(page.pair):
        which = label.split(":")[0]
        sc = page.scan.scans[which]
        with col:
            st.subheader(label, anchor=False)
            (st.success if len(sc.candidates) else st.info)(sc.message)
            scatter_slot = st.container()
            page.picks[which] = page.ps.draw(f"spectrum_{which.lower()}", choices=[int(i) for i in sc.top],
                                             format_func=lambda i, s=sc: f"{ns.neuron_label(s.block, i)} "
                                                                         f"(ρ {s.rho[i]:.3f})")
            spectrum_slot = st.container()
            if which in page.scan.freq_errors:
                st.error(page.scan.freq_errors[which])
            fs = page.scan.freqs.get(which)
            if fs is not None:
                (st.success if fs.candidates else st.info)(fs.message)
            page.slots[which] = (scatter_slot, spectrum_slot, st.container())


def ablate_widgets(page: Page) -> None:
    kit.model_default(f"{KEY}_neurons", R.default_neurons(page.scan.scans["A"]))
    left, right = st.columns([3, 2])
    with left:
        page.ps.draw("neurons")
        page.inputs["--eval-prompts"] = prompt_set_input(
            f"{KEY}_eval", default_builtin=DEFAULT_REFERENCE,
            help="Prompts the ablation is evaluated on (every position with a next token).")
    with right:
        page.ps.draw("mode")
        c1, c2 = st.columns(2)
        for name, col in (("max_prompts", c1), ("n_random", c2), ("seed", c1), ("skip_first", c2)):
            page.ps.draw(name, col)
        page.ps.draw("as_set")
        page.clicked["ablate"] = st.button("Run ablation", type="primary", key=f"{KEY}_run", use_container_width=True)


def induction_widgets(page: Page) -> None:
    st.caption("Per position of repeated sequences R + R: entropy, loss and the activations of the selected neurons, "
               "clean and with a clipped-mean ablation. The first position is left out of the selection and the "
               "activation scale: on real models it is an attention sink with activations 100x larger (it also keeps "
               "its clean activation in the ablation; entropy and loss keep it).")
    left, right = st.columns([3, 2])
    with left:
        source = page.ps.draw("induction_source")
        page.inputs["--induction-prompts"] = (prompt_set_input(f"{KEY}_ind", default_builtin="induction",
                                                               allow_typed=False) if source == "prompts" else None)
        neurons = page.ps.draw("induction_neurons")
    with right:
        c1, c2 = st.columns(2)
        page.ps.draw("sequences", c1)
        page.ps.draw("length", c2, disabled=source != "random")
        page.ps.draw("random_sets", c1)
        page.ps.draw("induction_seed", c2)
        page.ps.draw("induction_auto", c1, disabled=bool(neurons.strip()))
        page.clicked["induction"] = st.button("Run induction study", type="primary", key=f"{KEY}_run_ind",
                                              use_container_width=True)


def card_widgets(page: Page) -> str:
    st.caption("One neuron: the tokens its output weight promotes and suppresses through the unembedding, W_U·(γ ⊙ "
               "w_out) (final norm's gain, no norm scale), its top activating reference prompts and its activations "
               "over every reference position.")
    text, k, window, default = card_views.neuron_card_widgets(KEY, page.scan)
    page.ps.drawn.update(card_neuron=text, card_k=k, card_window=window)
    return default


def settings_of(page: Page, card_default: str) -> R.NeuronsSettings:
    """The settings drawn; the defaults the data gives (A's top neurons, each scan's top spectrum) are recorded as the
    declared defaults, so the link and the cache key stay the same whether or not they were typed."""
    s = page.ps.current()
    tops = {w: int(sc.top[0]) for w, sc in page.scan.scans.items()}
    default_ids = R.default_neurons(page.scan.scans["A"])
    return replace(s, spectrum_a=None if s.spectrum_a == tops["A"] else s.spectrum_a,
                   spectrum_b=None if s.spectrum_b == tops.get("B") else s.spectrum_b,
                   neurons="" if ns.canonical_neuron_text(s.neurons) == ns.canonical_neuron_text(default_ids)
                   else s.neurons,
                   card_neuron="" if ns.canonical_neuron_text(s.card_neuron) == card_default else s.card_neuron,
                   parts=R.PARTS)


# ------------------------------------------------------------------------------------------------------- the parts
def run_ablation(page: Page, s: R.NeuronsSettings) -> None:
    ev = page.inputs.get("--eval-prompts")
    params = (page.pair.specs(), getattr(page.inputs["--prompts"], "sha256", None), getattr(ev, "sha256", None),
              R.part_key(s, "ablate"))
    if not kit.has_run(f"{KEY}_abl_ran", params, page.clicked["ablate"]):
        st.info("Press Run ablation to compute total and direct effects.")
    elif ev is not None:
        with kit.user_errors(stop=False), kit.progress_bar("Ablating…") as report:
            page.results["ablation"] = R.ablation_part(page.pair, page.inputs, s, page.scan, report, kit.memo)


def run_induction(page: Page, s: R.NeuronsSettings) -> None:
    ind = page.inputs.get("--induction-prompts")
    params = (page.pair.specs(), getattr(ind, "sha256", None), R.part_key(s, "induction"))
    if not kit.has_run(f"{KEY}_ind_ran", params, page.clicked["induction"]):
        st.info("Press Run induction study: clean vs clipped-mean-ablated entropy and loss per position.")
    elif s.induction_source == "random" or ind is not None:
        with kit.user_errors(stop=False), kit.progress_bar("Running the induction study…") as report:
            page.results["induction"] = R.induction_part(page.pair, page.inputs, s, report, kit.memo)


def run_card(page: Page, s: R.NeuronsSettings) -> None:
    if not page.scan.reference:
        return
    with kit.user_errors(stop=False):
        page.results["cards"], notes = R.card_part(page.pair, page.inputs, s, page.scan, kit.memo)
        for note in collapse_notes(notes):
            st.warning(md_literal(note))


# ----------------------------------------------------------------------------------------------------- the report
def show_scan(page: Page, rep: Report) -> None:
    for which, (scatter_slot, spectrum_slot, freq_slot) in page.slots.items():
        with scatter_slot:
            for y in ("rho", "logit_var"):
                figure(rep, f"norm_vs_{y}_{which}", rep.tables[f"scan_{which}"])
        with spectrum_slot:
            figure(rep, f"spectrum_{which}", charts.spectrum_frame(page.scan.scans[which], page.picks[which]))
        with freq_slot:
            kit.show(rep, f"frequency_{which}", KEY, bundle=KEY, optional=True)
    if page.pair.compare and len(page.scan.scans) == 2:
        st.subheader("A vs B", anchor=False)
        for msg in collapse_notes(rep.notes):
            st.info(md_literal(msg))
        kit.show(rep, "rho_A_vs_B", KEY, bundle=KEY, optional=True)


def show_ablation(page: Page, rep: Report) -> None:
    ablation = page.results["ablation"]
    summaries = []
    for label, _lm, _card, col in kit.compare_columns(page.pair):
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


def show_induction(page: Page, rep: Report) -> None:
    for label, _lm, _card, col in kit.compare_columns(page.pair):
        which = label.split(":")[0]
        with col:
            st.subheader(label, anchor=False)
            st.info(page.results["induction"][which].message)
            kit.show(rep, f"induction_{which}", KEY, bundle=KEY)
            st.dataframe(rep.tables[f"induction_summary_{which}"], hide_index=True, key=f"{KEY}_ind_summ_{which}")


def export(page: Page, rep: Report, s: R.NeuronsSettings, results: R.NeuronsResults) -> None:
    st.divider()
    try:
        meta = R.settings_metadata(s, page.inputs, results)
        export_bundle(rep.figures, rep.tables, kit.page_metadata(R.PAGE, page.pair, meta, page.inputs["--prompts"],
                                                                 rep.notes, R.inputs_used(page.inputs, results, s)),
                      R.BUNDLE, key=f"{KEY}_bundle")
    except LogitscopeError as err:
        st.error(str(err))


def main() -> None:
    ensure_app_shell()
    st.title("Confidence neurons")
    st.caption("Entropy neurons write into the unembedding's near-null space and change confidence through the final "
               "norm's scale; token-frequency neurons push the prediction toward or away from the unigram distribution "
               "(Stolfo et al. 2024). Neuron ids are L{block}.N{index} with a 0-based block, e.g. L3.N130 (its MLP "
               "writes to residual layer block+1; layer 0 = embeddings, L = last block's output).")
    page = Page(kit.open_page(S, KEY))
    reference_widgets(page)
    tab_scan, tab_abl, tab_ind, tab_card = st.tabs(["Scan", "Ablate", "Induction", "Neuron card"])
    with tab_scan:
        scan_tab(page)
    with tab_abl:
        ablate_widgets(page)
    with tab_ind:
        induction_widgets(page)
    with tab_card:
        card_default = card_widgets(page)
    s = settings_of(page, card_default)
    sync_query(s, KEY, KEY)
    with tab_abl:
        run_ablation(page, s)
    with tab_ind:
        run_induction(page, s)
    with tab_card:
        run_card(page, s)
    r = page.results
    s = replace(s, parts=tuple(p for p, name in (("ablate", "ablation"), ("induction", "induction")) if name in r))
    results = R.NeuronsResults(page.scan, r.get("ablation"), r.get("induction"), r.get("cards"))
    with kit.user_errors():
        rep = R.report(results, s)
    with tab_scan:
        show_scan(page, rep)
    if "ablation" in r:
        with tab_abl:
            show_ablation(page, rep)
    if "induction" in r:
        with tab_ind:
            show_induction(page, rep)
    if r.get("cards"):
        with tab_card:
            card_views.show_neuron_card(rep, page.pair, KEY, KEY)
    export(page, rep, s, results)


main()
