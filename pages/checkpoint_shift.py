"""Checkpoint shift: what changed between checkpoint A and B (log p_B - log p_A), and whether two model pairs
changed alike (also across tokenizers, through the PM-MinED token map)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import streamlit as st

from analysis.loading import ModelSpec, builtin_models
from analysis.model_defaults import default_set
from analysis.shift import (
    LayerKL,
    ShiftResult,
    Similarity,
    compatibility,
    compute_shift,
    layer_kl,
    shift_similarity,
)
from components.export_ui import export_bundle, export_figure
from components.model_state import KEY_SPECS, KEY_USE_B, load_cached, require_models
from components.page_kit import page_metadata, progress_bar, user_errors
from components.prompt_input import prompt_set_input
from components.reports import Report
from components.reports import shift as R
from components.shell import ensure_app_shell

ensure_app_shell()

PAGE = R.PAGE
OTHER = "Other: hub id or local folder…"
REF_LABELS = {"response": "The prompt set's response", "greedy": "B's greedy output"}

st.title("Checkpoint shift")
st.caption("What changed between checkpoint A and checkpoint B: the same text runs through both, teacher-forced on a "
           "reference continuation, and each step's shift is log p_B − log p_A (nats). Positive = B promotes the "
           "token. Layer 0 is the embedding output; layer L is the last block's output before the final norm.")


def _sibling(spec: ModelSpec) -> tuple[str, ModelSpec] | None:
    """(label, spec) of A's fine-tuned sibling: a demo base's tuned checkpoint (gpt2-world-base ->
    gpt2-world-tuned), the real model's grumpy LoRA; else the first tuned demo checkpoint, if any."""
    builtin = builtin_models()
    tuned = spec.source.replace("-base", "-tuned") if spec.source.endswith("-base") else None
    for label, sp in builtin.items():
        if sp.source == tuned or (sp.source == spec.source and sp.adapter and not spec.adapter):
            return label, sp
    return next(((label, sp) for label, sp in builtin.items() if sp.source.endswith("-tuned")), None)


def _enable_b(spec: ModelSpec) -> None:
    st.session_state[KEY_USE_B] = True
    st.session_state[KEY_SPECS["B"]] = spec


pair = require_models()
if not pair.compare:
    sib = _sibling(pair.a.spec)
    st.info("This page compares two checkpoints. Turn on **Compare with checkpoint B** in the sidebar and pick B "
            "(for the demo models: each family's base as A and its tuned checkpoint as B, e.g. gpt2-world-base vs "
            "gpt2-world-tuned; for the real model, its grumpy LoRA).")
    if sib:
        st.button(f"Compare A with {sib[0]} as checkpoint B", on_click=_enable_b, args=(sib[1],), key="shift_enable_b")
    st.stop()

a, b = pair.a, pair.b
comp = compatibility(a, b)
if comp.message:
    st.warning(comp.message, icon="⚠️")
st.caption(f"A: **{pair.card_a.name}** → B: **{pair.card_b.name}**")


# ---------------------------------------------------------------------------------------------- cached engine
# Results are memoised in a small process-wide LRU keyed on (specs, prompts, settings) rather than with
# st.cache_data: a cache_data function that reports to a progress bar created outside it raises
# CacheReplayClosureError on the next cache hit (streamlit replays the bar's element calls).
_MEMO_MAX = 8


@st.cache_resource(show_spinner=False)
def _memo_store() -> tuple[OrderedDict, threading.Lock]:
    """The LRU and its lock, kept across reruns (a page's module globals are re-created on every run)."""
    return OrderedDict(), threading.Lock()


def _cached(key: tuple, compute):
    """compute() once per key (bounded LRU shared by all sessions; results are immutable)."""
    _memo, _memo_lock = _memo_store()
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    value = compute()
    with _memo_lock:
        _memo[key] = value
        while len(_memo) > _MEMO_MAX:
            _memo.popitem(last=False)
    return value


def _shift(spec_a: ModelSpec, spec_b: ModelSpec, prompts: tuple, responses: tuple, reference: str, n_tokens: int,
           top_n: int, _progress=None) -> ShiftResult:
    def compute() -> ShiftResult:
        lm_a, lm_b = load_cached(spec_a)[0], load_cached(spec_b)[0]
        return compute_shift(lm_a, lm_b, list(prompts), list(responses), reference=reference, n_tokens=n_tokens,
                             top_n=top_n, progress=_progress)
    return _cached(("shift", spec_a, spec_b, prompts, responses, reference, n_tokens, top_n), compute)


def _layer_kl(spec_a: ModelSpec, spec_b: ModelSpec, prompts: tuple, responses: tuple, reference: str,
              n_tokens: int, _progress=None) -> LayerKL:
    def compute() -> LayerKL:
        lm_a, lm_b = load_cached(spec_a)[0], load_cached(spec_b)[0]
        return layer_kl(lm_a, lm_b, list(prompts), list(responses), reference=reference, n_tokens=n_tokens,
                        progress=_progress)
    return _cached(("layer_kl", spec_a, spec_b, prompts, responses, reference, n_tokens), compute)


def _similarity(specs1: tuple, specs2: tuple, prompts: tuple, responses: tuple, reference: str, n_tokens: int,
                top_n: int, columns: str, _progress=None) -> Similarity:
    def compute() -> Similarity:
        p1 = tuple(load_cached(s)[0] for s in specs1)
        p2 = tuple(load_cached(s)[0] for s in specs2)
        return shift_similarity(p1, p2, list(prompts), list(responses), reference=reference, n_tokens=n_tokens,
                                top_n=top_n, columns=columns, progress=_progress)
    return _cached(("similarity", specs1, specs2, prompts, responses, reference, n_tokens, top_n, columns), compute)


# ---------------------------------------------------------------------------------------------- settings
ps = prompt_set_input("shift", default_builtin=default_set(pair.a, "persona_eval"))
if ps is None:
    st.stop()
has_resp = all(r.response for r in ps.rows)
c = st.columns(5)
reference = c[0].radio("Reference continuation", list(REF_LABELS), format_func=REF_LABELS.get,
                       index=list(REF_LABELS).index(R.default_reference(has_resp)), key="shift_reference",
                       help="Both checkpoints are teacher-forced on this text.")
n_tokens = c[1].number_input("Greedy tokens (N)", 1, 128, R.DEFAULTS["n_tokens"], key="shift_n_tokens",
                             disabled=reference != "greedy")
top_n = c[2].number_input("Top-N tokens per step", 5, 500, R.DEFAULTS["top_n"], key="shift_top_n",
                          help="Columns kept per step: B's (the reference model's) most likely tokens.")
max_prompts = c[3].number_input("Max prompts", 1, len(ps), min(len(ps), R.DEFAULTS["max_prompts"]), key="shift_max_prompts")
n_cols = c[4].number_input("Heatmap columns", 5, 200, R.DEFAULTS["n_cols"], key="shift_n_cols")
if reference == "response" and not has_resp:
    st.error("Some prompts in this set have no response: choose B's greedy output as the reference, or upload a set "
             "with a 'response' column.")
    st.stop()
rows = ps.rows[: int(max_prompts)]
prompts = tuple(r.prompt for r in rows)
responses = tuple(r.response for r in rows) if reference == "response" else tuple(None for _ in rows)
settings = R.shift_settings(reference, int(n_tokens), int(top_n), int(max_prompts), int(n_cols))
run_key = (a.spec, b.spec, ps.sha256, tuple(sorted(settings.items())))
if st.button("Run", type="primary", key="shift_run"):
    st.session_state["shift_ran"] = run_key
if st.session_state.get("shift_ran") != run_key:
    st.caption("Press Run to compute the shift.")
    st.stop()

with user_errors(), progress_bar("Computing the shift…") as report:
    res = _shift(a.spec, b.spec, prompts, responses, reference, int(n_tokens), int(top_n), _progress=report)
lk = None
if comp.lens_kl:
    with user_errors(), progress_bar("Per-layer lens KL…") as report:
        lk = _layer_kl(a.spec, b.spec, prompts, responses, reference, int(n_tokens), _progress=report)

m = st.columns(3)
m[0].metric("Mean KL(B‖A) per step", f"{res.mean_kl:.4f} nats")
m[1].metric("Prompts × steps", f"{len(res.prompts)} × {sum(len(p.tokens) for p in res.prompts)}")
m[2].metric("B tokens mapped to A" + (" (same tokenizer)" if res.same_tokenizer else " (PM-MinED)"),
            f"{res.mapped_share:.1%}")


def show(part: Report, name: str, table: str | None, key: str, export_key: str) -> None:
    """Draw a report figure with its export popover (its table named table)."""
    st.plotly_chart(part.figures[name], key=key)
    export_figure(part.figures[name], name if name.startswith("shift_") else f"shift_{name}", export_key, data=part.tables.get(table) if table else None)


st.subheader("Most promoted and suppressed tokens", anchor=False)
bars_slot = st.container()
st.subheader("Shift per step", anchor=False)
labels = [f"{i + 1}. {p.prompt[:70]}" for i, p in enumerate(res.prompts)]
pick = st.selectbox("Prompt", range(len(labels)), format_func=lambda i: labels[i], key="shift_pick")
sel = res.prompts[pick]
st.text(f"Prompt: {sel.prompt}\nContinuation: {sel.continuation}")
with user_errors():
    bundle = R.shift_report(res, lk, name_a=a.name, name_b=b.name, pick=pick, n_cols=int(n_cols))
    if comp.message:
        bundle.notes.insert(0, comp.message)
figures, tables = bundle.figures, bundle.tables
with bars_slot:
    show(bundle, "token_bars", "token_totals", "shift_bars", "shift_exp_bars")
show(bundle, "shift_heatmap", "shift_top_n", "shift_heatmap", "shift_exp_heatmap")
show(bundle, "kl_along_text", "kl_per_step", "shift_kl_text", "shift_exp_kl")

st.subheader("Where in depth did tuning act", anchor=False)
if lk is None:
    st.info("The per-layer lens KL needs A and B to share a tokenizer and a depth. " + comp.message)
else:
    show(bundle, "layer_kl", "layer_kl", "shift_layer_kl", "shift_exp_layer_kl")

# ---------------------------------------------------------------------------------------------- second pair
st.subheader("Do two model pairs shift alike?", anchor=False)
st.caption("Pair 1 is A → B above. Pick a second pair (another family, or another fine-tune): its shift is compared "
           "step by step with pair 1's on shared tokens, or on PM-MinED-mapped tokens when the vocabularies differ, "
           "against a control with the token correspondence shuffled.")
builtin = builtin_models()
options = list(builtin) + [OTHER]


def _pick(label: str, default: str, key: str) -> ModelSpec | None:
    idx = options.index(default) if default in options else len(builtin)
    choice = st.selectbox(label, options, index=idx, key=key)
    if choice == OTHER:
        src = st.text_input(f"{label}: hub id or local folder", key=f"{key}_other").strip()
        return ModelSpec(src) if src else None
    return builtin[choice]


sc = st.columns(3)
with sc[0]:
    spec_a2 = _pick("Second pair: base", "llama-world-base", "shift_a2")
with sc[1]:
    spec_b2 = _pick("Second pair: tuned", "llama-world-tuned", "shift_b2")
with sc[2]:
    columns = st.radio("Tokens compared", ["top", "all"], key="shift_sim_columns",
                       format_func={"top": "Union of both pairs' top-N", "all": "All mapped tokens"}.get)
sim_key = (run_key, spec_a2, spec_b2, columns)
if st.button("Compare shifts", key="shift_sim_run") and spec_a2 and spec_b2:
    st.session_state["shift_sim_ran"] = sim_key
sim = None
if st.session_state.get("shift_sim_ran") == sim_key:
    with user_errors():
        load_cached(spec_a2)
        load_cached(spec_b2)
    with user_errors(), progress_bar("Comparing the two pairs' shifts…") as report:
        sim = _similarity((a.spec, b.spec), (spec_a2, spec_b2), prompts, responses, reference, int(n_tokens),
                          int(top_n), columns, _progress=report)
if sim is not None:
    mc = st.columns(4)
    mc[0].metric("Pearson", f"{sim.pearson:.3f}", f"{sim.pearson - sim.control_pearson:+.3f} vs shuffled")
    mc[1].metric("Cosine", f"{sim.cosine:.3f}", f"{sim.cosine - sim.control_cosine:+.3f} vs shuffled")
    mc[2].metric("Aligned steps", f"{sim.n_steps}")
    mc[3].metric("Pair-1 tokens mapped", f"{sim.mapped_share:.1%}")
    with user_errors():
        part = R.similarity_report(sim, prompts, name_a=a.name, name_b=b.name, label_a2=spec_a2.label,
                                   label_b2=spec_b2.label, pick=pick, n_cols=int(n_cols))
    bundle.merge(part)
    show(part, "similarity", "similarity_per_prompt", "shift_sim_summary", "shift_exp_sim")
    show(part, "shift_heatmap_pairs", "shift_top_n_pairs", "shift_heatmap_pairs", "shift_exp_heatmap_pairs")
    settings = dict(settings, second_pair=[spec_a2.label, spec_b2.label], similarity_columns=columns)

st.divider()
export_bundle(figures, tables, page_metadata(PAGE, pair, settings, ps, bundle.notes), R.BUNDLE, key="shift_bundle")
