"""Confidence neurons page: scan for entropy and token-frequency neurons, ablate them (total vs direct effect),
and watch them in the induction case study; on A (and B side by side)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pandas as pd
import streamlit as st

from analysis import induction as ind
from analysis import neuron_ablation as abl
from analysis import neuron_scan as ns
from analysis.errors import InputError, LogitscopeError
from analysis.loading import ModelSpec
from analysis.unigram import DEFAULT_REFERENCE, Unigram, unigram_distribution
from components.charts.text import md_literal
from components.charts import neurons as charts
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import compare_columns, page_metadata, progress_bar, user_errors
from components.prompt_input import prompt_set_input
from components.reports import Report
from components.reports import neurons as R
from components.shell import ensure_app_shell

ensure_app_shell()

KEY = "neurons"
MODE_LABELS = {"mean": "Mean (over the reference set)", "zero": "Zero",
               "clipped": "Clipped mean (only activations above the mean are pulled down)"}


@contextmanager
def soft_errors() -> Iterator[None]:
    """Show an error as st.error and carry on with the rest of the page (other tabs, the bundle)."""
    try:
        yield
    except LogitscopeError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page must keep working
        st.error(f"Something went wrong: {type(err).__name__}: {err}")


@st.cache_data(max_entries=8, show_spinner=False)
def cached_scan(spec: ModelSpec, processing: bool, k: int | None, extra: tuple[int, ...]) -> ns.EntropyScan:
    """scan_entropy of the last block, cached on the model and settings."""
    return ns.scan_entropy(load_cached(spec)[0].adapter, k=k, processing=processing, extra=extra)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_unigram(spec: ModelSpec, reference: tuple[str, ...]) -> Unigram:
    """Unigram distribution of the reference set in this model's tokenizer."""
    lm = load_cached(spec)[0]
    return unigram_distribution(lm.tokenizer, list(reference), lm.adapter.vocab_size)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_frequency(spec: ModelSpec, processing: bool, reference: tuple[str, ...]) -> ns.FrequencyScan:
    """scan_frequency over every block, cached."""
    return ns.scan_frequency(load_cached(spec)[0].adapter, cached_unigram(spec, reference), processing=processing)


@st.cache_data(max_entries=6, show_spinner=False)
def cached_ablation(spec: ModelSpec, neurons: tuple[tuple[int, int], ...], mode: str, prompts: tuple[str, ...],
                    reference: tuple[str, ...], n_random: int, seed: int, as_set: bool, min_position: int,
                    _progress=None) -> abl.AblationResult:
    """build_units + ablate, cached on every setting."""
    lm = load_cached(spec)[0]
    half = (lambda f, m: _progress(0.2 * f, m)) if _progress else None
    units = abl.build_units(lm, list(neurons), mode=mode, reference=list(reference), as_set=as_set,
                            n_random=n_random, seed=seed, progress=half)
    uni = cached_unigram(spec, reference)
    rest = (lambda f, m: _progress(0.2 + 0.8 * f, m)) if _progress else None
    return abl.ablate(lm, list(prompts), units, mode=mode, log_p_freq=uni.log_p, min_position=min_position,
                      progress=rest)


@st.cache_data(max_entries=6, show_spinner=False)
def cached_induction(spec: ModelSpec, source: str, prompts: tuple[str, ...], labels: tuple, n_seq: int, length: int,
                     neurons: tuple[tuple[int, int], ...], n_auto: int, n_random_sets: int, seed: int,
                     _progress=None) -> ind.InductionResult:
    """The induction study on built-in/uploaded "R R" prompts or random R + R tokens (BOS first when the tokenizer
    adds one), cached."""
    from analysis.prompts import PromptRow, PromptSet
    lm = load_cached(spec)[0]
    if source == "random":
        seq = ind.random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=n_seq, length=length, seed=seed)
    else:
        ps = PromptSet.from_rows("induction prompts", [PromptRow(i + 1, p, label=lab)
                                                        for i, (p, lab) in enumerate(zip(prompts, labels))])
        seq = ind.prompt_sequences(lm.tokenizer, ps, max_rows=n_seq)
    chosen = list(neurons) or list(ind.select_neurons(lm, seq, n=n_auto))
    return ind.induction_study(lm, seq, chosen, n_random_sets=n_random_sets, seed=seed, progress=_progress)


def render_ablation(ids_text: str, mode: str, prompts: tuple[str, ...], n_random: int, seed: int, as_set: bool,
                    min_pos: int) -> None:
    """Run (cached) and draw the ablation for every loaded checkpoint; raises LogitscopeError on bad input."""
    if mode != "zero" and not reference:
        raise InputError("The reference set is empty: mean and clipped-mean ablation need reference prompts "
                         "(open 'Reference set' above).")
    ids = {w: ns.parse_neuron_ids(ids_text, lm.adapter) for w, lm, _ in pair.items()}
    results: dict[str, abl.AblationResult] = {}
    with progress_bar("Ablating…") as report:
        items = pair.items()
        for i, (which, lm, _card) in enumerate(items):
            step = (lambda f, m, i=i, w=which: report((i + f) / len(items), f"{w}: {m}"))
            results[which] = cached_ablation(lm.spec, ids[which], mode, prompts, reference, n_random, seed,
                                             as_set, min_pos, _progress=step)
    summaries = []
    for label, _lm, _card, col in compare_columns(pair):
        which = label.split(":")[0]
        res = results[which]
        with col:
            st.subheader(label, anchor=False)
            part = R.ablation_report({which: res}, scans)
            bundle.merge(part)
            summ = part.tables[f"ablation_summary_{which}"]
            named = summ[summ["kind"] != "random"]
            rnd = summ[summ["kind"] == "random"]
            lines = [f"{r.unit}: mean|ΔL| TE {r.mean_abs_dloss_te:.4f}, DE {r.mean_abs_dloss_de:.4f}, M = {r.M:.2f}"
                     for r in named.itertuples()]
            if len(rnd):
                lines.append(f"random neurons (n = {len(rnd)}): mean|ΔL| TE {rnd.mean_abs_dloss_te.mean():.4f}, "
                             f"DE {rnd.mean_abs_dloss_de.mean():.4f}")
            st.info("  \n".join(lines) + f"  \n{res.dloss_te.shape[1]} tokens; KL is {res.kl_direction}.")
            show(part.figures[f"te_de_boxes_{which}"], f"neurons_te_de_{which}", f"boxes_{which}", f"x_boxes_{which}", summ)
            show(part.figures[f"mediation_{which}"], f"neurons_mediation_{which}", f"med_{which}", f"x_med_{which}", summ)
            st.dataframe(summ, hide_index=True, key=f"{KEY}_summ_{which}")
            summaries.append(summ.assign(checkpoint=which))
    if len(summaries) > 1:
        st.subheader("A vs B", anchor=False)
        both = pd.concat(summaries, ignore_index=True)
        st.dataframe(both.pivot_table(index="unit", columns="checkpoint",
                                      values=["mean_abs_dloss_te", "mean_abs_dloss_de", "M"]), key=f"{KEY}_abl_ab")


def render_induction(source: str, ind_set, ind_ids: str, n_seq: int, length: int, n_sets: int, seed: int) -> None:
    """Run (cached) and draw the induction study for every loaded checkpoint."""
    ids = {w: (ns.parse_neuron_ids(ind_ids, lm.adapter) if ind_ids.strip() else ()) for w, lm, _ in pair.items()}
    prompts = tuple(ind_set.prompts) if ind_set is not None else ()
    labels = tuple(ind_set.labels) if ind_set is not None else ()
    results: dict[str, ind.InductionResult] = {}
    with progress_bar("Running the induction study…") as report:
        items = pair.items()
        for i, (which, lm, _card) in enumerate(items):
            step = (lambda f, m, i=i, w=which: report((i + f) / len(items), f"{w}: {m}"))
            results[which] = cached_induction(lm.spec, source, prompts, labels, n_seq, length, ids[which], 3, n_sets,
                                              seed, _progress=step)
    for label, _lm, _card, col in compare_columns(pair):
        which = label.split(":")[0]
        res = results[which]
        with col:
            st.subheader(label, anchor=False)
            st.info(res.message)
            part = R.induction_report({which: res})
            bundle.merge(part)
            show(part.figures[f"induction_{which}"], f"neurons_induction_{which}", f"ind_fig_{which}", f"x_ind_{which}",
                 part.tables[f"induction_{which}"])
            st.dataframe(part.tables[f"induction_summary_{which}"], hide_index=True, key=f"{KEY}_ind_summ_{which}")



st.title("Confidence neurons")
st.caption("Entropy neurons write into the unembedding's near-null space and change confidence through the final "
           "norm's scale; token-frequency neurons push the prediction toward or away from the unigram distribution "
           "(Stolfo et al. 2024). Neuron ids are L{block}.N{index} with a 0-based block, e.g. L3.N130 (its MLP writes "
           "to residual layer block+1; layer 0 = embeddings, L = last block's output).")

pair = require_models()
bundle = Report()
figures, tables = bundle.figures, bundle.tables
settings: dict = {}


def show(fig, file_name: str, key: str, export_key: str, data=None) -> None:
    """Draw a figure with its export popover (file_name, with data as its table)."""
    st.plotly_chart(fig, key=f"{KEY}_{key}")
    export_figure(fig, file_name, key=f"{KEY}_{export_key}", data=data)

with st.expander("Reference set (token frequencies and mean activations)", expanded=False):
    ref_set = prompt_set_input(f"{KEY}_ref", default_builtin=DEFAULT_REFERENCE,
                               help="Unigram counts (add-one smoothed) and mean activations for mean ablation.")
    max_ref = int(st.number_input("Use at most this many reference prompts", 1, 10_000, 128, key=f"{KEY}_max_ref"))
reference = tuple(p for p in (ref_set.prompts if ref_set is not None else []) if p.strip())[:max_ref]
if not reference:
    st.error("The reference set is empty: pick a built-in set (e.g. corpus_sample), upload a file or type prompts. "
             "Token frequencies and mean ablation need it.")
settings["reference"] = {"name": getattr(ref_set, "name", None), "sha256": getattr(ref_set, "sha256", None),
                         "n_used": len(reference)}

tab_scan, tab_abl, tab_ind = st.tabs(["Scan", "Ablate", "Induction"])

# ------------------------------------------------------------------------------------------ Scan
with tab_scan:
    c1, c2, c3 = st.columns(3)
    processing = c1.checkbox("Paper processing", value=True, key=f"{KEY}_proc",
                             help="Fold the final norm's gain into W_U, centre W_U over the vocabulary and centre "
                                  "w_out for LayerNorm models (on copies), as TransformerLens does.")
    k_auto = c2.checkbox("k = 1% of d_model", value=True, key=f"{KEY}_k_auto")
    k_val = int(c3.number_input("Null-space size k", 1, 100_000, 1, key=f"{KEY}_k", disabled=k_auto))
    k = None if k_auto else k_val
    settings["scan"] = {"processing": processing, "k": k or "1% of d_model"}
    scans: dict[str, ns.EntropyScan] = {}
    for label, lm, card, col in compare_columns(pair):
        which = label.split(":")[0]
        with col:
            st.subheader(label, anchor=False)
            with user_errors():
                scan = cached_scan(lm.spec, processing, k, ())
            scans[which] = scan
            (st.success if len(scan.candidates) else st.info)(scan.message)
            scatter_slot = st.container()
            pick = st.selectbox("Neuron for the spectrum", [int(i) for i in scan.top], key=f"{KEY}_spec_{which}",
                                format_func=lambda i, s=scan: f"{ns.neuron_label(s.block, i)} (ρ {s.rho[i]:.3f})")
            spectrum_slot = st.container()
            fs = None
            if reference:
                with soft_errors():
                    fs = cached_frequency(lm.spec, processing, reference)
                    (st.success if fs.candidates else st.info)(fs.message)
            part = R.scan_report({which: scan}, {which: fs} if fs is not None else None, {which: pick})
            bundle.merge(part)
            with scatter_slot:
                for y in ("rho", "logit_var"):
                    show(part.figures[f"norm_vs_{y}_{which}"], f"neurons_norm_vs_{y}_{which}", f"scatter_{y}_{which}",
                         f"x_{y}_{which}", part.tables[f"scan_{which}"])
            with spectrum_slot:
                show(part.figures[f"spectrum_{which}"], f"neurons_spectrum_{which}", f"spectrum_{which}",
                     f"x_spec_{which}", charts.spectrum_frame(scan, pick))
            if f"frequency_{which}" in part.figures:
                show(part.figures[f"frequency_{which}"], f"neurons_frequency_{which}", f"freq_{which}",
                     f"x_freq_{which}", part.tables[f"frequency_{which}"])
    if pair.compare and len(scans) == 2:
        st.subheader("A vs B", anchor=False)
        part = R.compare_report(scans["A"], scans["B"], pair.card_a.name, pair.card_b.name)
        bundle.merge(part)
        for msg in part.notes:
            st.info(md_literal(msg))
        if "rho_A_vs_B" in part.figures:
            show(part.figures["rho_A_vs_B"], "neurons_rho_A_vs_B", "compare", "x_compare", part.tables["rho_A_vs_B"])

# ------------------------------------------------------------------------------------------ Ablate
with tab_abl:
    scan_a = scans.get("A")
    default_ids = ", ".join(scan_a.labels(scan_a.ranked[:3])) if scan_a is not None else ""
    st.session_state.setdefault(f"{KEY}_ids", default_ids)
    left, right = st.columns([3, 2])
    with left:
        ids_text = st.text_input("Neurons to ablate (L{block}.N{index}, comma separated)", key=f"{KEY}_ids",
                                 help="Default: the top 3 of checkpoint A's scan by ρ. Any block works; for earlier "
                                      "blocks the direct effect is the direct path only.")
        eval_set = prompt_set_input(f"{KEY}_eval", default_builtin=DEFAULT_REFERENCE,
                                    help="Prompts the ablation is evaluated on (every position with a next token).")
    with right:
        mode = st.selectbox("Ablation", list(MODE_LABELS), format_func=MODE_LABELS.get, key=f"{KEY}_mode")
        c1, c2 = st.columns(2)
        max_eval = int(c1.number_input("Max prompts", 1, 2000, 16, key=f"{KEY}_max_eval"))
        n_random = int(c2.number_input("Random baseline neurons", 0, 200, 10, key=f"{KEY}_n_random",
                                       help="Seeded random neurons of the same block(s), each ablated alone."))
        seed = int(c1.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))
        min_pos = int(c2.number_input("Skip first positions", 0, 64, 0, key=f"{KEY}_min_pos",
                                      help="The paper drops positions < 3."))
        as_set = st.checkbox("Also ablate them together", value=True, key=f"{KEY}_as_set")
        run_abl = st.button("Run ablation", type="primary", key=f"{KEY}_run_abl", use_container_width=True)
    settings["ablate"] = {"neurons": ns.canonical_neuron_text(ids_text), "mode": mode, "max_prompts": max_eval,
                          "n_random": n_random, "seed": seed, "skip_first": min_pos, "as_set": as_set,
                          "eval_set": getattr(eval_set, "name", None)}
    params = (tuple((w, lm.spec) for w, lm, _ in pair.items()), ids_text, mode, getattr(eval_set, "sha256", None),
              max_eval, n_random, seed, min_pos, as_set, reference)
    if run_abl:
        st.session_state[f"{KEY}_abl_ran"] = params
    if st.session_state.get(f"{KEY}_abl_ran") != params:
        st.info("Press Run ablation to compute total and direct effects.")
    elif eval_set is not None:
        with soft_errors():
            render_ablation(ids_text, mode, tuple(eval_set.prompts[:max_eval]), n_random, seed, as_set, min_pos)

# ------------------------------------------------------------------------------------------ Induction
with tab_ind:
    st.caption("Per position of repeated sequences R + R: entropy, loss and the activations of the selected neurons, "
               "clean and with a clipped-mean ablation. The first position is left out of the selection and the "
               "activation scale: on real models it is an attention sink with activations 100x larger (it also keeps "
               "its clean activation in the ablation; entropy and loss keep it).")
    left, right = st.columns([3, 2])
    with left:
        source = st.radio("Sequences", ["prompts", "random"], horizontal=True, key=f"{KEY}_ind_src",
                          format_func={"prompts": "Prompt set of 'R R' texts",
                                       "random": "Random tokens R + R (BOS first if the tokenizer adds one)"}.get)
        ind_set = prompt_set_input(f"{KEY}_ind", default_builtin="induction", allow_typed=False) \
            if source == "prompts" else None
        ind_ids = st.text_input("Neurons (L{block}.N{index}; empty = the 3 last-block neurons that change most on "
                                "the repeat)",
                                key=f"{KEY}_ind_ids")
    with right:
        c1, c2 = st.columns(2)
        n_seq = int(c1.number_input("Sequences", 1, 200, 16, key=f"{KEY}_ind_n"))
        length = int(c2.number_input("Random R length", 2, 500, 30, key=f"{KEY}_ind_len", disabled=source != "random"))
        n_sets = int(c1.number_input("Random neuron sets", 0, 20, 3, key=f"{KEY}_ind_sets"))
        ind_seed = int(c2.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_ind_seed"))
        run_ind = st.button("Run induction study", type="primary", key=f"{KEY}_run_ind", use_container_width=True)
    settings["induction"] = {"source": source, "neurons": ns.canonical_neuron_text(ind_ids) or "auto (3)",
                             "sequences": n_seq, "length": length, "random_sets": n_sets, "seed": ind_seed}
    iparams = (tuple((w, lm.spec) for w, lm, _ in pair.items()), source, getattr(ind_set, "sha256", None), ind_ids,
               n_seq, length, n_sets, ind_seed)
    if run_ind:
        st.session_state[f"{KEY}_ind_ran"] = iparams
    if st.session_state.get(f"{KEY}_ind_ran") != iparams:
        st.info("Press Run induction study: clean vs clipped-mean-ablated entropy and loss per position.")
    elif source == "random" or ind_set is not None:
        with soft_errors():
            render_induction(source, ind_set, ind_ids, n_seq, length, n_sets, ind_seed)

st.divider()
try:
    export_bundle(figures, tables, page_metadata(R.PAGE, pair, settings, ref_set, bundle.notes), R.BUNDLE,
                  key=f"{KEY}_bundle")
except LogitscopeError as err:
    st.error(str(err))
