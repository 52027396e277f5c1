"""Logit lens page: what each layer would predict, for a typed prompt or a prompt set, on A (and B side by side)."""
from __future__ import annotations


import streamlit as st

from analysis import lens as L
from analysis.errors import LogitscopeError
from analysis.loading import ModelSpec
from analysis.model_defaults import default_fact
from components.charts.text import md_literal
from components.charts import lens as charts
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import (compare_columns, model_default, page_metadata, progress_bar, require_run,
                                 user_errors)
from components.prompt_input import prompt_set_input
from components.reports.lens import BUNDLE, PAGE, lens_report, lens_settings, resolve_targets
from components.shell import ensure_app_shell

ensure_app_shell()

KEY = "lens"
TARGET_LABELS = {
    L.TARGET_TEXT: "Target text (the set's targets, or the one typed below)",
    L.TARGET_FINAL_TOP1: "The model's own final top-1",
    L.TARGET_NEXT: "The actual next token",
    L.TARGET_NONE: "No target",
}


@st.cache_data(max_entries=8, show_spinner=False)
def cached_trace(spec: ModelSpec, prompts: tuple[str, ...], k: int, target_mode: str,
                 targets: tuple | None, token_ids: tuple | None, _progress=None) -> L.LensTrace:
    """lens_trace for a model spec (re-fetched from the model cache), cached on the inputs."""
    lm = load_cached(spec)[0]
    return L.lens_trace(lm, list(prompts), k=k, target_mode=target_mode,
                        targets=list(targets) if targets is not None else None,
                        token_ids=[list(r) for r in token_ids] if token_ids is not None else None, progress=_progress)


@st.cache_data(max_entries=4, show_spinner=False)
def cached_compare(spec_a: ModelSpec, spec_b: ModelSpec, prompts: tuple[str, ...], _progress=None) -> L.LensComparison:
    """lens_compare of two specs, cached on the inputs."""
    return L.lens_compare(load_cached(spec_a)[0], load_cached(spec_b)[0], list(prompts), progress=_progress)


st.title("Logit lens")
st.caption("What the model would predict if it stopped at layer l: softmax(W_U · final_norm(h_l)), the final norm's "
           "statistics recomputed at every layer. Layer 0 = embeddings, L = last block's output before the final norm.")

pair = require_models()

prompt0, target0 = default_fact(pair.a)
model_default(f"{KEY}__prompts_typed", prompt0)
model_default(f"{KEY}_target_text", target0)

left, right = st.columns([3, 2])
with left:
    prompt_set = prompt_set_input(KEY, help="One prompt, several typed prompts, a built-in set or an uploaded file.")
with right:
    c1, c2 = st.columns(2)
    k = int(c1.number_input("Top-k", min_value=1, max_value=50, value=10, key=f"{KEY}_k"))
    max_pos = int(c2.number_input("Positions shown (last n)", min_value=1, max_value=512, value=24,
                                  key=f"{KEY}_max_pos", help="For long prompts the heatmap shows the last n positions."))
    target_mode = st.selectbox("Target", list(TARGET_LABELS), format_func=TARGET_LABELS.get, key=f"{KEY}_target_mode")
    target_text = st.text_input("Target token text", key=f"{KEY}_target_text", disabled=target_mode != L.TARGET_TEXT,
                                help="Used for prompts without their own target. Keep the leading space (' Paris'); "
                                     "#123 means token id 123. A text of several tokens uses its first token.")
    metrics = [m for m in charts.COLOR_METRICS if m != "log_rank" or target_mode != L.TARGET_NONE]
    metric = st.selectbox("Heatmap colour", metrics, format_func=charts.COLOR_METRICS.get, key=f"{KEY}_metric")
    positions = st.radio("Set aggregates over", ["last", "all"], horizontal=True, key=f"{KEY}_agg",
                         format_func={"last": "each prompt's last position", "all": "all positions"}.get)
    run_clicked = st.button("Run", type="primary", key=f"{KEY}_run", use_container_width=True)

if prompt_set is None:
    st.stop()

prompts = tuple(prompt_set.prompts)
specs = {which: lm.spec for which, lm, _card in pair.items()}
params = (tuple(specs.items()), prompt_set.sha256, k, target_mode, target_text if target_mode == L.TARGET_TEXT else None)
require_run(f"{KEY}_ran", params, run_clicked, "the lens")

traces: dict[str, L.LensTrace] = {}
comparison: L.LensComparison | None = None
compare_error: str | None = None
with user_errors():
    targets = resolve_targets(prompt_set, target_text) if target_mode == L.TARGET_TEXT else None
    token_ids = None
    if pair.compare:
        try:
            L.check_compatible(pair.a, pair.b)
            token_ids = tuple(tuple(r) for r in L.encode_prompts(pair.a, list(prompts)))
        except LogitscopeError as err:
            compare_error = str(err)
    parts = len(specs) + (1 if pair.compare and not compare_error else 0)
    with progress_bar("Computing the lens…") as report:
        for i, (which, lm, card) in enumerate(pair.items()):
            def step(f: float, m: str, i: int = i, which: str = which) -> None:
                report((i + f) / parts, f"{which}: {m}")
            traces[f"{which}: {card.name}"] = cached_trace(lm.spec, prompts, k, target_mode, targets,
                                                           token_ids if which == "B" else None, _progress=step)
        if pair.compare and not compare_error:
            comparison = cached_compare(pair.a.spec, pair.b.spec, prompts,
                                        _progress=lambda f, m: report((parts - 1 + f) / parts, f"A vs B: {m}"))

first = next(iter(traces.values()))
for note in first.notes:
    st.warning(md_literal(note))
if compare_error:
    st.warning(f"KL(A‖B) is not shown: {compare_error} Each model below reads its own tokenization.")

n = 0
if len(prompts) > 1:
    n = st.selectbox("Prompt to show", range(len(prompts)), key=f"{KEY}_prompt",
                     format_func=lambda i: f"{i + 1}: {prompts[i][:80]}")
length = int(first.lengths[n])
t_sel = 0
if length > 1:
    t_sel = st.select_slider("Position for the top-k table", options=list(range(length)), value=length - 1,
                             key=f"{KEY}_position_{n}", format_func=lambda t: f"{t}: {first.tokens(n)[t]!r}")

with user_errors():
    rep = lens_report(traces, comparison, target_mode=target_mode, metric=metric, max_pos=max_pos, positions=positions,
                      n=n, t_sel=t_sel)
if compare_error:
    rep.notes.append(f"KL(A‖B) is not computed: {compare_error}")
figures, tables = rep.figures, rep.tables


def _show(name: str, file_name: str, key: str) -> None:
    """Draw one report figure with its export popover (and its table, if the report has one)."""
    st.plotly_chart(figures[name], key=f"{KEY}_{key}")
    export_figure(figures[name], file_name, key=f"{KEY}_x_{key}", data=tables.get(name))


for label, lm, card, col in compare_columns(pair):
    which = label.split(":")[0]
    with col:
        st.subheader(label, anchor=False)
        _show(f"heatmap_{which}", f"logit_lens_heatmap_{which}", f"heat_{which}")
        if f"target_{which}" in figures:
            _show(f"target_{which}", f"logit_lens_target_{which}", f"target_{which}")
        st.caption(f"Top-{traces[label].k} per layer at position {t_sel} of prompt {n + 1}")
        st.dataframe(tables[f"position_{which}"], hide_index=True, key=f"{KEY}_table_{which}")

st.subheader("Over the set", anchor=False)
c1, c2 = st.columns(2)
with c1:
    _show("mean_kl", "logit_lens_mean_kl", "meankl")
with c2:
    _show("decision_depth", "logit_lens_decision_depth", "depth")

if comparison is not None:
    st.subheader("A vs B on identical tokens", anchor=False)
    c1, c2 = st.columns(2)
    with c1:
        _show("kl_a_b_heatmap", "logit_lens_kl_a_b_heatmap", "cmp_heat")
    with c2:
        _show("kl_a_b_mean", "logit_lens_kl_a_b_mean", "cmp_mean")

settings = lens_settings(k, target_mode, target_text, metric, max_pos, positions, n, t_sel, prompt_set)
export_bundle(figures, tables, page_metadata(PAGE, pair, settings, prompt_set, rep.notes), BUNDLE, key=f"{KEY}_bundle")
