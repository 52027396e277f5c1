"""Checkpoint shift: what changed between checkpoint A and B (log p_B - log p_A), and whether two model pairs
changed alike (also across tokenizers, through the PM-MinED token map).

Wiring only: the widgets come from components.reports.shift.ShiftSettings, the computation is its cached ``compute``
(and ``compute_similarity`` for the second pair), keyed on the models, the prompt set and the settings that change
the computation, and the figures its ``report``.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from analysis.core.loading import ModelSpec
from analysis.models.catalog import builtin_models
from analysis.models.defaults import default_set
from analysis.shift import compatibility
from components import page_kit as kit
from components.export_ui import export_bundle
from components.model_state import KEY_SPECS, KEY_USE_B, load_cached
from components.prompt_input import prompt_set_input
from components.reports import shift as R
from components.settings import compute_key, field_of
from components.settings_ui import sync_query, widget, widget_key
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.ShiftSettings
OTHER = "Other: hub id or local folder…"


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


def _pick(label: str, default: str, key: str) -> ModelSpec | None:
    builtin = builtin_models()
    options = list(builtin) + [OTHER]
    idx = options.index(default) if default in options else len(builtin)
    choice = st.selectbox(label, options, index=idx, key=key)
    if choice == OTHER:
        src = st.text_input(f"{label}: hub id or local folder", key=f"{key}_other").strip()
        return ModelSpec(src) if src else None
    return builtin[choice]


def main() -> None:
    ensure_app_shell()
    st.title("Checkpoint shift")
    st.caption("What changed between checkpoint A and checkpoint B: the same text runs through both, teacher-forced on a "
               "reference continuation, and each step's shift is log p_B − log p_A (nats). Positive = B promotes the "
               "token. Layer 0 is the embedding output; layer L is the last block's output before the final norm.")
    pair = kit.open_page(S, KEY)
    if not pair.compare:
        sib = _sibling(pair.a.spec)
        st.info("This page compares two checkpoints. Turn on **Compare with checkpoint B** in the sidebar and pick B "
                "(for the demo models: each family's base as A and its tuned checkpoint as B, e.g. gpt2-world-base vs "
                "gpt2-world-tuned; for the real model, its grumpy LoRA).")
        if sib:
            st.button(f"Compare A with {sib[0]} as checkpoint B", on_click=_enable_b, args=(sib[1],), key=f"{KEY}_enable_b")
        st.stop()
    a, b = pair.a, pair.b
    comp = compatibility(a, b)
    if comp.message:
        st.warning(comp.message, icon="⚠️")
    st.caption(f"A: **{pair.card_a.name}** → B: **{pair.card_b.name}**")
    # ---------------------------------------------------------------------------------------------- settings
    ps = prompt_set_input(KEY, default_builtin=default_set(pair.a, "persona_eval"))
    if ps is None:
        st.stop()
    has_resp = all(r.response for r in ps.rows)
    data_reference = R.default_reference(has_resp)
    kit.model_default(widget_key(KEY, "reference"), data_reference)  # the set's default, again when the set changes it
    max_key, max_field = widget_key(KEY, "max_prompts"), field_of(S, "max_prompts")
    kit.model_default(max_key, min(len(ps), max_field.default))
    if st.session_state[max_key] > len(ps):  # a larger value kept from a bigger set (or a link): the whole set
        st.session_state[max_key] = len(ps)
    c = st.columns(5)
    reference = widget(S, "reference", KEY, c[0])
    n_tokens = widget(S, "n_tokens", KEY, c[1], disabled=reference != "greedy")
    top_n = widget(S, "top_n", KEY, c[2])
    max_prompts = int(c[3].number_input(max_field.label, min_value=int(max_field.spec.lo), max_value=len(ps), step=1,
                                        key=max_key, help=max_field.spec.help))
    columns_shown = widget(S, "columns_shown", KEY, c[4])
    settings = S(reference=None if reference == data_reference else reference, n_tokens=n_tokens, top_n=top_n,
                 max_prompts=max_prompts, columns_shown=columns_shown)
    with kit.user_errors():
        R.resolve_reference(ps, settings)  # 'response' on a set without responses: say so before Run
    run_clicked = st.button("Run", type="primary", key=f"{KEY}_run")
    kit.require_run(f"{KEY}_ran", (pair.specs(), ps.sha256, R.shift_key(settings)), run_clicked, "the shift")
    results = kit.compute(R, pair, {"--prompts": ps}, settings, "Computing the shift…")
    res = results.shift
    m = st.columns(3)
    m[0].metric("Mean KL(B‖A) per step", f"{res.mean_kl:.4f} nats")
    m[1].metric("Prompts × steps", f"{len(res.prompts)} × {sum(len(p.tokens) for p in res.prompts)}")
    m[2].metric("B tokens mapped to A" + (" (same tokenizer)" if res.same_tokenizer else " (PM-MinED)"),
                f"{res.mapped_share:.1%}")
    st.subheader("Most promoted and suppressed tokens", anchor=False)
    bars_slot = st.container()
    st.subheader("Shift per step", anchor=False)
    labels = [kit.prompt_label(i + 1, p.prompt) for i, p in enumerate(res.prompts)]
    show_prompt = widget(S, "show_prompt", KEY, choices=list(range(1, len(labels) + 1)),
                         format_func=lambda i: labels[i - 1])
    settings = replace(settings, show_prompt=show_prompt)
    sel = res.prompts[show_prompt - 1]
    st.text(f"Prompt: {sel.prompt}\nContinuation: {sel.continuation}")
    with kit.user_errors():
        rep = R.report(results, settings)
    with bars_slot:
        kit.show(rep, "token_bars", KEY, bundle=R.BUNDLE, table="token_totals")
    kit.show(rep, "shift_heatmap", KEY, bundle=R.BUNDLE, table="shift_top_n")
    kit.show(rep, "kl_along_text", KEY, bundle=R.BUNDLE, table="kl_per_step")
    st.subheader("Where in depth did tuning act", anchor=False)
    if results.layer_kl is None:
        st.info("The per-layer lens KL needs A and B to share a tokenizer and a depth; the warning at the top of the "
                "page says what differs.")
    else:
        kit.show(rep, "layer_kl", KEY, bundle=R.BUNDLE, table="layer_kl")
    # ---------------------------------------------------------------------------------------------- second pair
    st.subheader("Do two model pairs shift alike?", anchor=False)
    st.caption("Pair 1 is A → B above. Pick a second pair (another family, or another fine-tune): its shift is compared "
               "step by step with pair 1's on shared tokens, or on PM-MinED-mapped tokens when the vocabularies differ, "
               "against a control with the token correspondence shuffled.")
    sc = st.columns(3)
    with sc[0]:
        spec_a2 = _pick("Second pair: base", R.PAIR2[0], f"{KEY}_a2")
    with sc[1]:
        spec_b2 = _pick("Second pair: tuned", R.PAIR2[1], f"{KEY}_b2")
    similarity_columns = widget(S, "similarity_columns", KEY, sc[2])
    settings = replace(settings, similarity_columns=similarity_columns)
    sync_query(settings, KEY, KEY)
    sim_key = (pair.specs(), ps.sha256, compute_key(settings), spec_a2, spec_b2)
    if st.button("Compare shifts", key=f"{KEY}_sim_run") and spec_a2 and spec_b2:
        st.session_state[f"{KEY}_sim_ran"] = sim_key
    sim = None
    if st.session_state.get(f"{KEY}_sim_ran") == sim_key:
        with kit.user_errors():
            load_cached(spec_a2)
            load_cached(spec_b2)
        with kit.user_errors(), kit.progress_bar("Comparing the two pairs' shifts…") as report:
            second = (load_cached(spec_a2)[0], load_cached(spec_b2)[0])
            sim = R.compute_similarity(pair, second, {"--prompts": ps}, settings, report, kit.memo)
    if sim is not None:
        s2 = sim.similarity
        mc = st.columns(4)
        mc[0].metric("Pearson", f"{s2.pearson:.3f}", f"{s2.pearson - s2.control_pearson:+.3f} vs shuffled")
        mc[1].metric("Cosine", f"{s2.cosine:.3f}", f"{s2.cosine - s2.control_cosine:+.3f} vs shuffled")
        mc[2].metric("Aligned steps", f"{s2.n_steps}")
        mc[3].metric("Pair-1 tokens mapped", f"{s2.mapped_share:.1%}")
        with kit.user_errors():
            part = R.similarity_part(sim, results, settings)
        rep.merge(part)
        kit.show(part, "similarity", KEY, bundle=R.BUNDLE, table="similarity_per_prompt")
        kit.show(part, "shift_heatmap_pairs", KEY, bundle=R.BUNDLE, table="shift_top_n_pairs")
    st.divider()
    meta = R.settings_metadata(settings, results, sim)
    export_bundle(rep.figures, rep.tables, kit.page_metadata(R.PAGE, pair, meta, ps, rep.notes), R.BUNDLE,
                  key=f"{KEY}_bundle")


main()
