"""OOD separability page: which layers and scores tell familiar (ID) input from unfamiliar (OOD) input, on A (and B)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import streamlit as st

from analysis import ood as O
from analysis.errors import LogitscopeError
from analysis.loading import ModelSpec
from analysis.model_defaults import default_set
from analysis.ood_features import OODFeatures, extract_features
from analysis.ood_metrics import METRIC_LABELS
from analysis.prompts import PromptSet, builtin_sets, check_context, load_builtin, parse_prompt_file, prompt_set_from_text
from components.charts.text import md_literal
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import compare_columns, page_metadata, progress_bar, require_run, user_errors
from components.prompt_input import prompt_set_input, render_like
from components.reports import ood as R
from components.shell import ensure_app_shell

ensure_app_shell()

KEY = "ood"
FEATURE_CACHE_ENTRIES = 24
DEFAULT_OOD = R.DEFAULT_OOD


@st.cache_resource(max_entries=1, show_spinner=False)
def _feature_store() -> tuple[OrderedDict, threading.Lock]:
    """One bounded LRU of feature sets shared by all sessions (see cached_features for why not st.cache_data)."""
    return OrderedDict(), threading.Lock()


def cached_features(spec: ModelSpec, prompts: tuple[str, ...], batch_size: int, blood_draws: int = 0,
                    _progress=None) -> OODFeatures:
    """extract_features for a model spec (re-fetched from the model cache), memoised on (spec, prompts, batch size).

    Not st.cache_data: it is called once with a progress bar and again (a hit) inside the cached study and
    projection, where streamlit would replay the recorded progress-bar updates on a block that does not exist
    there (CacheReplayClosureError). A bounded LRU (24 feature sets, all sessions) instead.
    """
    store, lock = _feature_store()
    key = (spec, prompts, batch_size, blood_draws)
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    feats = extract_features(load_cached(spec)[0], list(prompts), batch_size=batch_size, blood_draws=blood_draws,
                             progress=_progress)
    with lock:
        store[key] = feats
        while len(store) > FEATURE_CACHE_ENTRIES:
            store.popitem(last=False)
    return feats


@st.cache_data(max_entries=8, show_spinner=False)
def cached_study(spec: ModelSpec, id_name: str, id_prompts: tuple[str, ...], ood: tuple[tuple[str, tuple[str, ...]], ...],
                 settings: O.OODSettings, batch_size: int, blood_draws: int) -> O.OODStudy:
    """The study on the cached features of every set (call cached_features first: it reports progress)."""
    id_f = cached_features(spec, id_prompts, batch_size, blood_draws)
    ood_f = {n: cached_features(spec, p, batch_size, blood_draws) for n, p in ood}
    return O.study_from_features(id_f, ood_f, settings, id_name=id_name)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_projection(spec: ModelSpec, id_name: str, id_prompts: tuple[str, ...], ood: tuple[tuple[str, tuple[str, ...]], ...],
                      batch_size: int, blood_draws: int, layer: int, pooling: str, method: str, fit_on: str, random_state: int
                      ) -> O.Projection2D:
    """2-D map of one layer (features from the cache), cached on every setting."""
    id_f = cached_features(spec, id_prompts, batch_size, blood_draws)
    ood_f = {n: cached_features(spec, p, batch_size, blood_draws) for n, p in ood}
    return O.project_2d(id_f, ood_f, layer, pooling=pooling, method=method, fit_on=fit_on,
                        random_state=random_state, id_name=id_name)


@st.cache_data(max_entries=16, show_spinner=False)
def _parse_upload(filename: str, data: bytes) -> PromptSet:
    return parse_prompt_file(filename, data)


st.title("OOD separability")
st.caption("Which layers and scores tell familiar (in-distribution) prompts from unfamiliar ones. Every score is "
           "'higher = more in-distribution'; scores are fitted on part of the ID set and evaluated on the held-out "
           "rest and on the OOD sets, never on the prompts they were fitted on. Layer 0 = embeddings, "
           "L = last block's output before the final norm.")

pair = require_models()

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
        chosen = st.multiselect("Built-in OOD sets", names, default=[n for n in DEFAULT_OOD if n in names],
                                key=f"{KEY}_ood_builtin")
        uploads = st.file_uploader("Upload OOD sets (.txt, .csv, .jsonl; one set per file)", type=["txt", "csv", "jsonl"],
                                   accept_multiple_files=True, key=f"{KEY}_ood_upload")
        typed = st.text_area("Typed OOD set (one prompt per line, optional)", key=f"{KEY}_ood_typed", height=80)
        try:
            for n in chosen:
                ood_sets[n] = load_builtin(n)
            for up in uploads or []:
                ood_sets[up.name] = _parse_upload(up.name, up.getvalue())
            if typed.strip():
                ood_sets["typed"] = prompt_set_from_text(typed, "typed OOD")
            ood_sets = {n: render_like(f"{KEY}_id", ps) for n, ps in ood_sets.items()}  # rendered as the ID set is
        except LogitscopeError as err:
            st.error(str(err))
            st.stop()
with right:
    c1, c2 = st.columns(2)
    seed = int(c1.number_input("Split seed", min_value=0, max_value=2**31 - 1, value=0, key=f"{KEY}_seed"))
    fit_fraction = float(c2.slider("ID fraction used to fit", 0.2, 0.8, 0.5, 0.05, key=f"{KEY}_fit_fraction"))
    with st.expander("Score settings", expanded=False):
        c1, c2 = st.columns(2)
        knn_k = int(c1.number_input("KNN k", min_value=1, max_value=200, value=5, key=f"{KEY}_knn_k"))
        shrinkage = c2.selectbox("Mahalanobis shrinkage", ["ledoit-wolf", "oas"], key=f"{KEY}_shrink")
        vim_dim = int(c1.number_input("ViM dim (0 = auto)", min_value=0, max_value=8192, value=0, key=f"{KEY}_vim"))
        neco_k = int(c2.number_input("NECO k (0 = auto)", min_value=0, max_value=8192, value=0, key=f"{KEY}_neco"))
        gap_n = int(c1.number_input("LogitGap N", min_value=1, max_value=100, value=10, key=f"{KEY}_gap"))
        batch_size = int(c2.number_input("Batch size", min_value=1, max_value=256, value=32, key=f"{KEY}_bs"))
        poolings = tuple(st.multiselect("Pooling for Mahalanobis and KNN", ["last", "mean"], default=["last", "mean"],
                                        key=f"{KEY}_pool", help="'mean' averages the prompt's real tokens, BOS left out.")
                         or ["last"])
        use_blood = st.checkbox("BLOOD (needs gradients: one backward pass per draw and batch; slower)",
                                key=f"{KEY}_blood")
        blood_draws = int(st.number_input("BLOOD random draws", min_value=1, max_value=500, value=20,
                                          key=f"{KEY}_blood_draws", disabled=not use_blood)) if use_blood else 0
    run_clicked = st.button("Run", type="primary", key=f"{KEY}_run", use_container_width=True)

if id_set is None:
    st.stop()
if use_groups:
    with user_errors():
        groups = id_set.groups()
        ood_sets = {g: id_set.by_group(g) for g in groups if g != id_group}
        id_set = id_set.by_group(id_group)

with user_errors():
    O.check_sets(len(set(id_set.prompts)), {n: len(ps) for n, ps in ood_sets.items()})
    for _, lm, _card in pair.items():
        for ps in [id_set, *ood_sets.values()]:
            check_context(ps, lm.tokenizer, lm.context_length)

settings = O.OODSettings(seed=seed, fit_fraction=fit_fraction, poolings=poolings, knn_k=knn_k, shrinkage=shrinkage,
                         vim_dim=vim_dim or None, neco_k=neco_k or None, logitgap_n=gap_n)
id_name = id_set.name
ood_key = tuple((n, tuple(ps.prompts)) for n, ps in ood_sets.items())
specs = {which: lm.spec for which, lm, _card in pair.items()}
params = (tuple(specs.items()), id_set.sha256, tuple((n, ps.sha256) for n, ps in ood_sets.items()), settings, batch_size,
          blood_draws)
require_run(f"{KEY}_ran", params, run_clicked, "the study", changed="inputs")

studies: dict[str, O.OODStudy] = {}
with user_errors():
    with progress_bar("Computing features and scores…") as report:
        items = pair.items()
        all_sets = ((id_name, tuple(id_set.prompts)),) + ood_key
        total = len(items) * sum(len(p) for _, p in all_sets)
        done = 0
        for which, lm, card in items:
            for name, ps in all_sets:
                def step(f: float, m: str, d: int = done, n: int = len(ps), tag: str = f"{which}, {name}") -> None:
                    report((d + f * n) / total, f"{tag}: {m}")
                cached_features(lm.spec, ps, batch_size, blood_draws, _progress=step)
                done += len(ps)
            report(done / total, f"{which}: fitting and scoring")
            studies[f"{which}: {card.name}"] = cached_study(lm.spec, id_name, tuple(id_set.prompts), ood_key, settings,
                                                            batch_size, blood_draws)

first = next(iter(studies.values()))
st.subheader("View", anchor=False)
c = st.columns(4)
sets_for_metrics = R.metric_sets(first)
ood_view = c[0].selectbox("OOD set for the metrics", sets_for_metrics, key=f"{KEY}_view_set")
metric = c[1].selectbox("Metric", list(METRIC_LABELS), format_func=METRIC_LABELS.get, key=f"{KEY}_metric")
score = c[2].selectbox("Score for histograms and ROC", R.scores(first), index=R.scores(first).index(first.best_score),
                       key=f"{KEY}_score")
max_layer = max(s.layers[-1] for s in studies.values())
layer_opt = c[3].selectbox("Layer (histograms, ROC, map)", ["best"] + list(range(max_layer + 1)), key=f"{KEY}_layer",
                           format_func=lambda v: "best layer for the score" if v == "best" else f"layer {v}")
c = st.columns(4)
method = c[0].radio("2-D map", ["pca", "umap"], horizontal=True, key=f"{KEY}_proj",
                    format_func={"pca": "PCA", "umap": "UMAP"}.get)
fit_on = c[1].radio("Projection fitted on", ["id", "all"], horizontal=True, key=f"{KEY}_fit_on",
                    format_func={"id": "ID only", "all": "all points"}.get)
map_pool = c[2].radio("Map pooling", ["last", "mean"], horizontal=True, key=f"{KEY}_map_pool")
rstate = int(c[3].number_input("random_state", min_value=0, max_value=10_000, value=0, key=f"{KEY}_rs"))

projections: dict[str, O.Projection2D] = {}
with user_errors(), st.spinner("Projecting…"):
    for which, lm, card in pair.items():
        label = f"{which}: {card.name}"
        projections[label] = cached_projection(lm.spec, id_name, tuple(id_set.prompts), ood_key, batch_size, blood_draws,
                                               R.map_layer(studies[label], score, layer_opt), map_pool, method, fit_on,
                                               rstate)
with user_errors():
    rep = R.ood_report(studies, projections, ood_view=ood_view, metric=metric, score=score, layer_opt=layer_opt)
figures, tables = rep.figures, rep.tables


def show(name: str, key: str, data=None, file_name: str | None = None) -> None:
    """Draw a report figure with its export popover (file ood_<name> unless given, with data as its table)."""
    st.plotly_chart(figures[name], key=f"{KEY}_{key}")
    export_figure(figures[name], file_name or f"ood_{name}", key=f"{KEY}_x_{key}", data=data)


for label, lm, card, col in compare_columns(pair):
    study = studies[label]
    which = label.split(":")[0]
    with col:
        st.subheader(label, anchor=False)
        for note in study.notes:
            st.caption("Note: " + md_literal(note))
        where = "final logits" if study.best_layer is None else f"layer {study.best_layer}"
        st.metric("Best separation (AUROC, held-out ID vs "
                  + (O.ALL_OOD if len(study.ood_names) > 1 else study.ood_names[0]) + ")",
                  f"{study.best_auroc:.3f}", help="Highest AUROC in the metrics table (outlined); ties go to the lower FPR@95 (ID+), "
                       "then the lower AUTC.")
        st.caption(f"Best: {study.best_score} at {where}. Fitted on {study.settings['n_fit']} ID prompts, "
                   f"evaluated on {study.settings['n_heldout']} held-out.")
        data = tables[f"metrics_{which}"]
        show(f"metrics_{which}", f"heat_{which}", data)
        with st.expander("All metrics (every score, layer and OOD set)"):
            st.dataframe(tables[f"metrics_all_{which}"], hide_index=True, key=f"{KEY}_full_{which}")
        show(f"by_layer_{which}", f"lines_{which}", data)
        layer = R.score_layer(study, score, layer_opt)
        sdata = tables[f"scores_{which}"]
        sel = sdata[(sdata.score == score) & ((sdata.layer.isna()) if layer is None else (sdata.layer == layer))]
        show(f"histograms_{which}", f"hist_{which}", sel.reset_index(drop=True), f"ood_hist_{which}")
        show(f"roc_{which}", f"roc_{which}")
        show(f"map_{which}", f"map_{which}", tables[f"map_{which}"])

if "a_vs_b" in figures:
    st.subheader("A vs B", anchor=False)
    show("a_vs_b", "cmp", tables["a_vs_b"])

meta_settings = R.ood_settings(first, id_name=id_name, id_group=id_group, ood_sets=ood_sets, batch_size=batch_size,
                               blood_draws=blood_draws, ood_view=ood_view, metric=metric, score=score,
                               layer_opt=layer_opt, method=method, fit_on=fit_on, map_pool=map_pool, random_state=rstate)
export_bundle(figures, tables, page_metadata(R.PAGE, pair, meta_settings, id_set, rep.notes), R.BUNDLE, key=f"{KEY}_bundle")
