"""Checkpoint shift: what changed between checkpoint A and B (log p_B - log p_A), and whether two model pairs
changed alike (also across tokenizers, through the PM-MinED token map)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pandas as pd
import streamlit as st

from analysis.loading import ModelSpec, zoo_models
from analysis.shift import (
    LayerKL,
    ShiftResult,
    Similarity,
    compatibility,
    compute_shift,
    layer_kl,
    shift_similarity,
)
from components.charts.shift import kl_along_text, layer_kl_line, shift_heatmap, similarity_summary, token_bars
from components.export_ui import export_bundle, export_figure
from components.model_state import KEY_SPECS, KEY_USE_B, load_cached, require_models
from components.page_kit import page_metadata, progress_bar, user_errors
from components.prompt_input import prompt_set_input
from components.shell import ensure_app_shell

ensure_app_shell()

PAGE = "checkpoint_shift"
OTHER = "Other: hub id or local folder…"
REF_LABELS = {"response": "The prompt set's response", "greedy": "B's greedy output"}

st.title("Checkpoint shift")
st.caption("What changed between checkpoint A and checkpoint B: the same text runs through both, teacher-forced on a "
           "reference continuation, and each step's shift is log p_B − log p_A (nats). Positive = B promotes the "
           "token. Layer 0 is the embedding output; layer L is the last block's output before the final norm.")


def _sibling(source: str) -> str | None:
    """The tuned sibling of a demo base checkpoint (gpt2-world-base -> gpt2-world-tuned), if it exists."""
    zoo = zoo_models()
    if source.endswith("-base") and source.replace("-base", "-tuned") in zoo:
        return source.replace("-base", "-tuned")
    return next((z for z in zoo if z.endswith("-tuned")), None)


def _enable_b(source: str) -> None:
    st.session_state[KEY_USE_B] = True
    st.session_state[KEY_SPECS["B"]] = ModelSpec(source)


pair = require_models()
if not pair.compare:
    sib = _sibling(pair.a.spec.source)
    st.info("This page compares two checkpoints. Turn on **Compare with checkpoint B** in the sidebar and pick B "
            "(for the demo models: each family's base as A and its tuned checkpoint as B, e.g. gpt2-world-base vs "
            "gpt2-world-tuned).")
    if sib:
        st.button(f"Compare A with {sib} as checkpoint B", on_click=_enable_b, args=(sib,), key="shift_enable_b")
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


# ---------------------------------------------------------------------------------------------- tables
def heatmap_frame(res: ShiftResult, second: tuple | None = None) -> pd.DataFrame:
    """Long table of every prompt's per-step top-N shifts (and the second pair's mapped shift)."""
    rows = []
    for i, p in enumerate(res.prompts):
        for t in range(len(p.tokens)):
            for r in range(p.top_ids.shape[1]):
                row = {"prompt": i, "step": t, "step_token": p.tokens[t], "rank": r + 1,
                       "token": p.top_tokens[t][r], "token_id": int(p.top_ids[t, r]),
                       "shift_nats": float(p.top_shift[t, r]), "p_a": float(np.exp(p.top_logp_a[t, r])),
                       "p_b": float(np.exp(p.top_logp_b[t, r]))}
                if second is not None:
                    row["second_pair_shift_nats"] = float(second[i][t, r])
                rows.append(row)
    return pd.DataFrame(rows)


def totals_frame(res: ShiftResult) -> pd.DataFrame:
    """Per-token totals over the set, most promoted first."""
    t = res.totals
    return pd.DataFrame({"token": list(t.tokens), "token_id": t.ids, "steps_in_top_n": t.count,
                         "probability_moved": t.mass, "total_shift_nats": t.total,
                         "mean_shift_nats": t.mean})


def kl_frame(res: ShiftResult) -> pd.DataFrame:
    """Per-step KL(B||A) and the reference token's probabilities, every prompt."""
    rows = []
    for i, p in enumerate(res.prompts):
        for t, tok in enumerate(p.tokens):
            rows.append({"prompt": i, "prompt_text": p.prompt, "step": t, "token": tok, "kl_b_a_nats": float(p.kl[t]),
                         "logp_a": float(p.logp_a[t]), "logp_b": float(p.logp_b[t])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- settings
ps = prompt_set_input("shift", default_builtin="persona_eval")
if ps is None:
    st.stop()
has_resp = all(r.response for r in ps.rows)
c = st.columns(5)
reference = c[0].radio("Reference continuation", list(REF_LABELS), format_func=REF_LABELS.get,
                       index=0 if has_resp else 1, key="shift_reference",
                       help="Both checkpoints are teacher-forced on this text.")
n_tokens = c[1].number_input("Greedy tokens (N)", 1, 128, 12, key="shift_n_tokens",
                             disabled=reference != "greedy")
top_n = c[2].number_input("Top-N tokens per step", 5, 500, 100, key="shift_top_n",
                          help="Columns kept per step: B's (the reference model's) most likely tokens.")
max_prompts = c[3].number_input("Max prompts", 1, len(ps), min(len(ps), 20), key="shift_max_prompts")
n_cols = c[4].number_input("Heatmap columns", 5, 200, 30, key="shift_n_cols")
if reference == "response" and not has_resp:
    st.error("Some prompts in this set have no response: choose B's greedy output as the reference, or upload a set "
             "with a 'response' column.")
    st.stop()
rows = ps.rows[: int(max_prompts)]
prompts = tuple(r.prompt for r in rows)
responses = tuple(r.response for r in rows) if reference == "response" else tuple(None for _ in rows)
settings = {"reference": reference, "n_tokens": int(n_tokens), "top_n": int(top_n), "max_prompts": int(max_prompts),
            "heatmap_columns": int(n_cols)}
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

figures: dict = {}
tables: dict = {}
m = st.columns(3)
m[0].metric("Mean KL(B‖A) per step", f"{res.mean_kl:.4f} nats")
m[1].metric("Prompts × steps", f"{len(res.prompts)} × {sum(len(p.tokens) for p in res.prompts)}")
m[2].metric("B tokens mapped to A" + (" (same tokenizer)" if res.same_tokenizer else " (PM-MinED)"),
            f"{res.mapped_share:.1%}")

st.subheader("Most promoted and suppressed tokens", anchor=False)
fig = token_bars(res.totals, k=15, title=f"Most promoted and suppressed tokens: {a.name} → {b.name}")
st.plotly_chart(fig, key="shift_bars")
figures["token_bars"], tables["token_totals"] = fig, totals_frame(res)
export_figure(fig, "shift_token_bars", "shift_exp_bars", data=tables["token_totals"])

st.subheader("Shift per step", anchor=False)
labels = [f"{i + 1}. {p.prompt[:70]}" for i, p in enumerate(res.prompts)]
pick = st.selectbox("Prompt", range(len(labels)), format_func=lambda i: labels[i], key="shift_pick")
sel = res.prompts[pick]
st.text(f"Prompt: {sel.prompt}\nContinuation: {sel.continuation}")
fig = shift_heatmap(sel, n_cols=int(n_cols), label_1=f"{a.name} → {b.name}",
                    title=f"Logit shift per step (log p_B − log p_A, nats), prompt {pick + 1}")
st.plotly_chart(fig, key="shift_heatmap")
figures["shift_heatmap"], tables["shift_top_n"] = fig, heatmap_frame(res)
export_figure(fig, "shift_heatmap", "shift_exp_heatmap", data=tables["shift_top_n"])

fig = kl_along_text(sel)
st.plotly_chart(fig, key="shift_kl_text")
figures["kl_along_text"], tables["kl_per_step"] = fig, kl_frame(res)
export_figure(fig, "shift_kl_along_text", "shift_exp_kl", data=tables["kl_per_step"])

st.subheader("Where in depth did tuning act", anchor=False)
if lk is None:
    st.info("The per-layer lens KL needs A and B to share a tokenizer and a depth. " + comp.message)
else:
    fig = layer_kl_line([(f"{a.name} vs {b.name}", lk)])
    st.plotly_chart(fig, key="shift_layer_kl")
    figures["layer_kl"] = fig
    tables["layer_kl"] = pd.DataFrame({"layer": np.arange(len(lk.mean)), "mean_lens_kl_a_b_nats": lk.mean})
    export_figure(fig, "shift_layer_kl", "shift_exp_layer_kl", data=tables["layer_kl"])

# ---------------------------------------------------------------------------------------------- second pair
st.subheader("Do two model pairs shift alike?", anchor=False)
st.caption("Pair 1 is A → B above. Pick a second pair (another family, or another fine-tune): its shift is compared "
           "step by step with pair 1's on shared tokens, or on PM-MinED-mapped tokens when the vocabularies differ, "
           "against a control with the token correspondence shuffled.")
zoo = zoo_models()
options = zoo + [OTHER]


def _pick(label: str, default: str, key: str) -> ModelSpec | None:
    idx = options.index(default) if default in options else len(zoo)
    choice = st.selectbox(label, options, index=idx, key=key)
    if choice == OTHER:
        src = st.text_input(f"{label}: hub id or local folder", key=f"{key}_other").strip()
        return ModelSpec(src) if src else None
    return ModelSpec(choice)


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
    fig = similarity_summary(sim, title=f"Shift similarity: {a.name}→{b.name} vs {spec_a2.label}→{spec_b2.label}")
    st.plotly_chart(fig, key="shift_sim_summary")
    figures["similarity"] = fig
    tables["similarity_per_prompt"] = pd.DataFrame({
        "prompt": list(prompts), "pearson": sim.pearson_by_prompt, "cosine": sim.cosine_by_prompt,
        "control_pearson": sim.control_pearson_by_prompt, "control_cosine": sim.control_cosine_by_prompt})
    export_figure(fig, "shift_similarity", "shift_exp_sim", data=tables["similarity_per_prompt"])
    p1 = sim.pair1.prompts[pick]
    fig = shift_heatmap(p1, n_cols=int(n_cols), second=sim.second_on_first[pick], label_1=f"{a.name} → {b.name}",
                        label_2=f"{spec_a2.label} → {spec_b2.label} (same tokens, mapped)",
                        title=f"Both pairs' shifts on pair 1's columns, prompt {pick + 1} (nats)")
    st.plotly_chart(fig, key="shift_heatmap_pairs")
    figures["shift_heatmap_pairs"] = fig
    tables["shift_top_n_pairs"] = heatmap_frame(sim.pair1, sim.second_on_first)
    export_figure(fig, "shift_heatmap_pairs", "shift_exp_heatmap_pairs", data=tables["shift_top_n_pairs"])
    settings = dict(settings, second_pair=[spec_a2.label, spec_b2.label], similarity_columns=columns)

st.divider()
export_bundle(figures, tables, page_metadata(PAGE, pair, settings, ps), "checkpoint_shift", key="shift_bundle")
