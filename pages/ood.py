"""OOD separability page: which layers and scores tell familiar (ID) input from unfamiliar (OOD) input, on A (and B).

Wiring only: the widgets come from components.reports.ood.OODSeparabilitySettings, the computation is its
``compute``, its parts (each set's features per model and batch size, each study) cached apart, so a study setting
never re-extracts features, and the figures are its ``report``.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

import analysis.ood as O
from analysis.core.errors import LogitscopeError
from analysis.models.defaults import default_set
from analysis.prompts import PromptSet, builtin_sets, load_builtin, prompt_set_from_text
from components import page_kit as kit
from components.charts.text import md_literal
from components.export_ui import export_bundle, export_figure
from components.notes import collapse_notes
from components.prompt_input import parse_upload, prompt_set_input, render_like
from components.reports import ood as R
from components.settings import compute_key, field_of
from components.settings_ui import sync_query, widget
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.OODSeparabilitySettings



def fit_fraction_slider(where) -> float:
    """The fit fraction as today's slider (settings_ui draws numbers as number inputs), from the declaration."""
    f, k = field_of(S, "fit_fraction"), f"{KEY}_fit_fraction"
    if k not in st.session_state:
        st.session_state[k] = f.default
    return float(where.slider(f.label, float(f.spec.lo), float(f.spec.hi), step=0.05, key=k, help=f.spec.help))


def show_with(figures: dict, name: str, data) -> None:
    """A report figure whose export carries another table than the report's own (page_kit.show's keys and name)."""
    kit.plot(figures[name], f"{KEY}_{name}")
    export_figure(figures[name], f"{R.BUNDLE}_{name}", key=f"{KEY}_x_{name}", data=data)


def main() -> None:
    ensure_app_shell()
    st.title("OOD separability")
    st.caption("Which layers and scores tell familiar (in-distribution) prompts from unfamiliar ones. Every score is "
               "'higher = more in-distribution'; scores are fitted on part of the ID set and evaluated on the held-out "
               "rest and on the OOD sets, never on the prompts they were fitted on. Layer 0 = embeddings, "
               "L = last block's output before the final norm.")
    pair = kit.open_page(S, KEY)
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**In-distribution (ID) set**")
        id_set = prompt_set_input(f"{KEY}_id", default_builtin=default_set(pair.a, "facts"),
                                  help="The familiar prompts. A file with a `group` column can also be split below.")
        use_groups = False
        if id_set is not None and len(id_set.groups()) >= 2:
            use_groups = st.toggle("Split this file by its `group` column (one group is ID, the others OOD)",
                                   key=f"{KEY}_use_groups")
        st.markdown("**Out-of-distribution (OOD) sets**")
        id_group = None
        ood_sets: dict[str, PromptSet] = {}
        if use_groups:
            id_group = st.selectbox("ID group", id_set.groups(), key=f"{KEY}_id_group")
            st.caption("Every other group is an OOD set.")
        else:
            names = [n for n in builtin_sets()]
            chosen = st.multiselect("Built-in OOD sets", names, default=[n for n in R.DEFAULT_OOD if n in names],
                                    key=f"{KEY}_ood_builtin")
            uploads = st.file_uploader("Upload OOD sets (.txt, .csv, .jsonl; one set per file)",
                                       type=["txt", "csv", "jsonl"],
                                       accept_multiple_files=True, key=f"{KEY}_ood_upload")
            typed = st.text_area("Typed OOD set (one prompt per line, optional)", key=f"{KEY}_ood_typed", height=80)
            try:
                for n in chosen:
                    ood_sets[n] = load_builtin(n)
                for up in uploads or []:
                    ood_sets[up.name] = parse_upload(up.name, up.getvalue())
                if typed.strip():
                    ood_sets["typed"] = prompt_set_from_text(typed, "typed OOD")
                ood_sets = {n: render_like(f"{KEY}_id", ps) for n, ps in ood_sets.items()}  # rendered as the ID set is
            except LogitscopeError as err:
                st.error(str(err))
                st.stop()
    with right:
        c1, c2 = st.columns(2)
        seed = widget(S, "seed", KEY, c1)
        fit_fraction = fit_fraction_slider(c2)
        with st.expander("Score settings", expanded=False):
            c1, c2 = st.columns(2)
            knn_k = widget(S, "knn_k", KEY, c1)
            shrinkage = widget(S, "shrinkage", KEY, c2)
            vim_dim = widget(S, "vim_dim", KEY, c1)
            neco_k = widget(S, "neco_k", KEY, c2)
            gap_n = widget(S, "gap_n", KEY, c1)
            batch_size = widget(S, "batch_size", KEY, c2)
            poolings = widget(S, "poolings", KEY)
            blood = widget(S, "blood", KEY)
            blood_draws = widget(S, "blood_draws", KEY) if blood else S.blood_draws
        run_clicked = st.button("Run", type="primary", key=f"{KEY}_run", use_container_width=True)
    if id_set is None:
        st.stop()
    with kit.user_errors():
        id_set, ood_sets = R.split_sets(id_set, ood_sets, id_group if use_groups else None)
        R.check_inputs(pair, id_set, ood_sets)
    settings = S(seed=seed, fit_fraction=fit_fraction, knn_k=knn_k, shrinkage=shrinkage, vim_dim=vim_dim, neco_k=neco_k,
                 gap_n=gap_n, batch_size=batch_size, poolings=poolings, blood=blood, blood_draws=blood_draws)
    params = (pair.specs(), id_set.sha256, tuple((n, ps.sha256) for n, ps in ood_sets.items()), compute_key(settings))
    kit.require_run(f"{KEY}_ran", params, run_clicked, "the study", changed="inputs")
    results = kit.compute(R, pair, {"--prompts": id_set, "--ood-prompts": tuple(ood_sets.values())}, settings,
                          "Computing features and scores…")
    studies = results.studies
    first = next(iter(studies.values()))
    st.subheader("View", anchor=False)
    c = st.columns(4)
    views = R.metric_sets(first)
    view = widget(S, "view", KEY, c[0], choices=views)
    metric = widget(S, "metric", KEY, c[1])
    kit.model_default(f"{KEY}_score", first.best_score)  # the best score, until the user picks another
    score = widget(S, "score", KEY, c[2], choices=R.scores(first))
    max_layer = max(s.layers[-1] for s in studies.values())
    layer = widget(S, "layer", KEY, c[3], choices=["best"] + [str(i) for i in range(max_layer + 1)],
                   format_func=lambda v: "best layer for the score" if v == "best" else f"layer {v}")
    c = st.columns(4)
    projection = widget(S, "projection", KEY, c[0])
    fit_on = widget(S, "fit_on", KEY, c[1])
    map_pooling = widget(S, "map_pooling", KEY, c[2])
    random_state = widget(S, "random_state", KEY, c[3])
    settings = replace(settings, view=None if view == views[0] else view, metric=metric,
                       score=None if score == first.best_score else score, layer=layer, projection=projection,
                       fit_on=fit_on, map_pooling=map_pooling, random_state=random_state)
    sync_query(settings, KEY, KEY)
    with kit.user_errors(), st.spinner("Projecting…"):
        rep = R.report(results, settings)
        meta = R.settings_metadata(settings, results, ood_sets, id_group if use_groups else None)
        _view, shown_score, shown_layer = R.resolve_view(results, settings)
    figures, tables = rep.figures, rep.tables
    for label, _lm, _card, col in kit.compare_columns(pair):
        study_ = studies[label]
        which = label.split(":")[0]
        with col:
            st.subheader(label, anchor=False)
            for note in collapse_notes(study_.notes):  # one note per kind, naming what it concerns
                st.caption("Note: " + md_literal(note))
            where = "final logits" if study_.best_layer is None else f"layer {study_.best_layer}"
            st.metric("Best separation (AUROC, held-out ID vs "
                      + (O.ALL_OOD if len(study_.ood_names) > 1 else study_.ood_names[0]) + ")",
                      f"{study_.best_auroc:.3f}",
                      help="Highest AUROC in the metrics table (outlined); ties go to the lower FPR@95 (ID+), then the "
                           "lower AUTC.")
            st.caption(f"Best: {study_.best_score} at {where}. Fitted on {study_.settings['n_fit']} ID prompts, "
                       f"evaluated on {study_.settings['n_heldout']} held-out.")
            kit.show(rep, f"metrics_{which}", KEY, bundle=R.BUNDLE)
            with st.expander("All metrics (every score, layer and OOD set)"):
                st.dataframe(tables[f"metrics_all_{which}"], hide_index=True, key=f"{KEY}_full_{which}")
            show_with(figures, f"by_layer_{which}", tables[f"metrics_{which}"])
            at_layer = R.score_layer(study_, shown_score, shown_layer)
            sdata = tables[f"scores_{which}"]
            at_rows = sdata.layer.isna() if at_layer is None else sdata.layer == at_layer
            sel = sdata[(sdata.score == shown_score) & at_rows]
            show_with(figures, f"histograms_{which}", sel.reset_index(drop=True))
            kit.show(rep, f"roc_{which}", KEY, bundle=R.BUNDLE)
            kit.show(rep, f"map_{which}", KEY, bundle=R.BUNDLE)
    if "a_vs_b" in figures:
        st.subheader("A vs B", anchor=False)
        kit.show(rep, "a_vs_b", KEY, bundle=R.BUNDLE)
    export_bundle(figures, tables, kit.page_metadata(R.PAGE, pair, meta, id_set, rep.notes,
                                                 {"--prompts": id_set, "--ood-prompts": list(ood_sets.values())}),
                  R.BUNDLE, key=f"{KEY}_bundle")


main()
