"""Steering and personas: build a persona/steering vector per layer, monitor prompts along it, steer, measure drift."""
from __future__ import annotations

import re

import streamlit as st

from analysis.errors import InputError
from analysis.loading import ModelSpec
from analysis.persona_drift import Drift, Flagged, flag_data, persona_drift
from analysis.prompts import PromptSet
from analysis.steering import (POSITION_RULES as STEER_RULES, RULE_LABELS as STEER_RULE_LABELS, GenerationComparison,
                               Steer, Sweep, compare_generations, steering_sweep)
from analysis.model_defaults import default_question, default_set
from analysis.steering_vectors import (DEFAULT_LAYER_RULE, METHOD_LABELS, METHODS, POSITION_RULES, RULE_LABELS,
                                       Monitoring, SteeringVectors, check_compatible, default_trait_tokens,
                                       extract_vectors, load_vectors, monitor, save_vectors)
from components.charts.text import md_literal
from components.export_ui import export_bundle, export_figure
from components.model_state import load_cached, require_models
from components.page_kit import compare_columns, model_default, page_metadata, user_errors
from components.prompt_input import prompt_set_input
from components.reports import Report
from components.reports import steering as R
from components.shell import ensure_app_shell

ensure_app_shell()

PAGE = R.PAGE
KEY_SV = "steer_vectors"
bundle = Report()
figures, tables = bundle.figures, bundle.tables


# ------------------------------------------------------------------------------------------ cached engine calls
@st.cache_data(max_entries=8, show_spinner=False)
def cached_build(spec: ModelSpec, ps_sha: str, positive: str | None, negative: str | None, method: str, rule: str,
                 seed: int, _ps: PromptSet, _progress=None) -> SteeringVectors:
    """extract_vectors, cached on the model, the prompt set's content hash and the settings."""
    lm = load_cached(spec)[0]
    return extract_vectors(lm, _ps, positive=positive, negative=negative, method=method, position_rule=rule,
                           seed=seed, progress=_progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_monitor(spec: ModelSpec, ps_sha: str, sv_fp: str, _ps: PromptSet, _sv: SteeringVectors,
                   _progress=None) -> Monitoring:
    """monitor, cached on the model, prompts and vectors."""
    return monitor(load_cached(spec)[0], _ps, _sv, progress=_progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_sweep(spec: ModelSpec, sv_fp: str, layers: tuple, alphas: tuple, targets: tuple, controls: tuple,
                 token_a: str, token_b: str, rule: str, preserve: bool, _sv: SteeringVectors, _progress=None) -> Sweep:
    """steering_sweep, cached on every setting."""
    lm = load_cached(spec)[0]
    for l in layers:
        lm.check_layer(l)
    return steering_sweep(lm, {l: _sv.vector(l) for l in layers}, alphas, targets, controls, token_a, token_b,
                          rule=rule, preserve_norm=preserve, progress=_progress)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_generations(spec: ModelSpec, sv_fp: str, prompt: str, layer: int, alpha: float, rule: str, preserve: bool,
                       max_new: int, temperature: float, seed: int, _sv: SteeringVectors) -> GenerationComparison:
    """compare_generations, cached on every setting."""
    lm = load_cached(spec)[0]
    lm.check_layer(layer)
    steer = Steer(layer, _sv.vector(layer), alpha, rule, preserve)
    return compare_generations(lm, prompt, steer, max_new_tokens=max_new, temperature=temperature, seed=seed)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_drift(spec_a: ModelSpec, spec_b: ModelSpec, ps_sha: str, sv_fp: str, seed: int, _ps: PromptSet,
                 _sv: SteeringVectors, _progress=None) -> Drift:
    """persona_drift between A and B, cached."""
    return persona_drift(load_cached(spec_a)[0], load_cached(spec_b)[0], _ps, _sv, seed=seed, progress=_progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_flag(spec: ModelSpec, ps_sha: str, sv_fp: str, layer: int, max_new: int, _ps: PromptSet,
                _sv: SteeringVectors, _progress=None) -> Flagged:
    """flag_data, cached."""
    return flag_data(load_cached(spec)[0], _ps, _sv, layer, max_new_tokens=max_new, progress=_progress)


# ------------------------------------------------------------------------------------------ helpers
def parse_numbers(text: str, what: str, kind=float) -> tuple:
    """'2, 4, 6' -> (2, 4, 6); InputError naming the bad item."""
    items = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if not items:
        raise InputError(f"Give at least one {what}, separated by commas (e.g. 2, 4).")
    out = []
    for t in items:
        try:
            out.append(kind(t) if kind is float else int(t))
        except ValueError:
            raise InputError(f"'{t}' is not a valid {what}; write {what}s separated by commas (e.g. 2, 4).") from None
    return tuple(out)


def first_n(ps: PromptSet, n: int) -> PromptSet:
    """The first n rows as a PromptSet of their own."""
    if len(ps) <= n:
        return ps
    return PromptSet.from_rows(f"{ps.name} (first {n})", ps.rows[:n])


def show(part: Report, keys: dict[str, str]) -> None:
    """Add a report part to the bundle and draw its figures ({name: widget key}) with their export popovers."""
    bundle.merge(part)
    for name, key in keys.items():
        st.plotly_chart(part.figures[name], width="stretch", key=f"chart-{key}")
        export_figure(part.figures[name], name, key=f"exp-{key}", data=part.tables.get(name))


def layer_default(key: str, sv: SteeringVectors, options: list[int] | None = None) -> None:
    """Start layer widget `key` on the vectors' default layer (again when the vectors change and it was not edited)."""
    if options is not None and key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    model_default(key, sv.default_layer())


def current_vectors(lm) -> SteeringVectors | None:
    """The vectors in this session, if they fit model A."""
    sv = st.session_state.get(KEY_SV)
    if sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
        return None
    with user_errors():
        check_compatible(sv, lm)
    return sv


# ------------------------------------------------------------------------------------------ page
st.title("Steering and personas")
st.caption("A direction per layer that separates two groups of prompts (e.g. a grumpy and a kind persona): how well "
           "it separates them, where prompts project on it, what adding alpha·v to the residual stream does, and how "
           "far a fine-tuned checkpoint moved along it. Layer 0 = embedding output, l = output of block l−1, L = last "
           "block's output before the final norm.")
with st.expander("Definitions", expanded=False):
    st.markdown(
        "- **Steering vector** v_l: mean(positive) − mean(negative) of h_l at the read position (or the PCA / "
        "logistic direction, scaled to the same separation).\n"
        "- **Held-out AUROC**: the vector is fitted on a seeded training split and the held-out rows are ranked by "
        "their projection on it (1 = the groups separate perfectly, 0.5 = chance).\n"
        "- **Cohen's d**: (mean projection of the positive rows − of the negative rows) / pooled standard deviation, "
        "on the whole contrast set.\n"
        f"- **Default layer** (every layer field starts there): {DEFAULT_LAYER_RULE}. On real models the AUROC often "
        "ties at 1.0 from layer 1 on, where v_l is too small to steer with; the window keeps the default in the "
        "middle of the model.\n"
        "- **Tokens a and b** of the logit difference: by default the most common first response tokens of the "
        "positive and the negative side of the contrast set.")
pair = require_models()
lm = pair.a
L = lm.adapter.n_layers
settings: dict = {"model_a": lm.name}
used_sets: list[PromptSet] = []

tab_build, tab_monitor, tab_steer, tab_drift = st.tabs(["Build", "Monitor", "Steer", "Drift"])

# ---------------------------------------------------------------- Build
with tab_build:
    st.caption(f"Vectors are built on checkpoint A ({lm.name}). A contrastive set has two groups (`group` field) or "
               "pairs (`label` = pair id); responses are optional.")
    ps = prompt_set_input("steer_build", default_builtin=default_set(pair.a, "persona_pairs"))
    c = st.columns(4)
    groups = ps.groups() if ps is not None else []
    pos_opts = groups or ["(none)"]
    positive = c[0].selectbox("Positive group", pos_opts, index=0, key="steer_pos")
    neg_opts = [g for g in groups if g != positive] or ["(none)"]
    negative = c[1].selectbox("Negative group", neg_opts, index=0, key="steer_neg")
    method = c[2].selectbox("Method", METHODS, format_func=METHOD_LABELS.get, key="steer_method")
    has_resp = ps is not None and all(r.response for r in ps.rows)
    rules = list(POSITION_RULES) if has_resp else ["last"]
    rule = c[3].selectbox("Read position", rules, format_func=RULE_LABELS.get, key="steer_rule",
                          help="Mean over response tokens needs a `response` on every row.")
    seed = st.number_input("Seed (held-out split)", value=0, step=1, key="steer_seed")
    if st.button("Build vectors", type="primary", key="steer_build_btn", disabled=ps is None):
        with user_errors(), st.spinner("Reading activations…"):
            sv = cached_build(lm.spec, ps.sha256, None if positive == "(none)" else positive,
                              None if negative == "(none)" else negative, method, rule, int(seed), ps)
        st.session_state[KEY_SV] = sv
    up = st.file_uploader("Load saved vectors (.safetensors)", type=["safetensors"], key="steer_load")
    if up is not None and st.session_state.get("steer_loaded_name") != (up.name, up.size):
        with user_errors():
            loaded = load_vectors(up.getvalue())
            check_compatible(loaded, lm)
        st.session_state[KEY_SV] = loaded
        st.session_state["steer_loaded_name"] = (up.name, up.size)
    sv = st.session_state.get(KEY_SV)
    if sv is not None:
        if ps is not None:  # a statement, not an expression: Streamlit's magic would print an expression's None
            used_sets.append(ps)
        settings.update(R.vector_settings(sv))
        choice = sv.default_layer_choice()
        best = choice.layer
        lo, hi = choice.window
        st.success(f"Vectors for layers {sv.layers[0]}..{sv.layers[-1]} from '{sv.prompt_set_name}' "
                   f"({METHOD_LABELS.get(sv.method, sv.method)}, {RULE_LABELS.get(sv.position_rule, sv.position_rule)}"
                   f"; {sv.positive} vs {sv.negative}). Default layer {best}"
                   + (f": the best layer by held-out AUROC in the middle of the model (layers {lo}..{hi})."
                      if choice.in_window and choice.has_auroc else " (why below)."))
        st.caption(md_literal(choice.caption))
        st.download_button("Save vectors (.safetensors)", data=save_vectors(sv),
                           file_name=f"steering_{re.sub(r'[^A-Za-z0-9_-]+', '_', sv.model_name)}_{sv.method}.safetensors",
                           mime="application/octet-stream", key="steer_save", on_click="ignore")
        if not sv.n_test:
            st.caption("No held-out AUROC for these vectors (loaded from a file, or a group with fewer than 2 rows).")
        pl = None
        if sv.projections.size:
            layer_default("steer_hist_layer", sv, list(sv.layers))
            pl = st.select_slider("Layer for the projection histogram", options=list(sv.layers), key="steer_hist_layer")
        part = R.build_report(sv, pl)
        show(part, {name: key for name, key in (("separability", "sep"), ("contrast_projection", "buildhist"))
                    if name in part.figures})

# ---------------------------------------------------------------- Monitor
with tab_monitor:
    sv = st.session_state.get(KEY_SV)
    st.caption("Projection h_l[last prompt token] · v_l/‖v_l‖ for each prompt of a set.")
    mps = prompt_set_input("steer_monitor", default_builtin=default_set(pair.a, "persona_eval"))
    if sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    elif mps is not None:
        if st.button("Run monitoring", type="primary", key="steer_monitor_btn"):
            st.session_state["steer_monitor_on"] = True
        if st.session_state.get("steer_monitor_on"):
            used_sets.append(mps)
            layer_default("steer_mon_layer", sv, list(sv.layers))
            ml = st.select_slider("Layer", options=list(sv.layers), key="steer_mon_layer")
            for label, lm_x, _card, col in compare_columns(pair):
                with col:
                    st.markdown(f"**{label}**")
                    with user_errors(), st.spinner("Projecting…"):
                        mon = cached_monitor(lm_x.spec, mps.sha256, sv.fingerprint, mps, sv)
                    tag = label.split(":")[0]
                    show(R.monitoring_report(mon, ml, tag), {f"monitoring_{tag}": f"mon{tag}"})
    st.divider()
    st.subheader("Flag data", anchor=False)
    st.caption("Rows with responses ranked by (mean response activation under the dataset's response − under the "
               "model's own greedy response) · v̂: the rows that push checkpoint A toward the trait most come first.")
    fps = prompt_set_input("steer_flag", default_builtin=default_set(pair.a, "persona_pairs"), allow_typed=False)
    if sv is not None and fps is not None:
        c = st.columns(3)
        layer_default("steer_flag_layer", sv)
        fl = c[0].number_input("Layer", min_value=0, step=1, key="steer_flag_layer")
        fn = c[1].number_input("Rows (first n)", min_value=1, value=min(16, len(fps)), step=1, key="steer_flag_n")
        fmax = c[2].number_input("Own response length (tokens)", min_value=1, max_value=128, value=16, step=1,
                                 key="steer_flag_max")
        if st.button("Flag rows", key="steer_flag_btn"):
            st.session_state["steer_flag_on"] = True
        if st.session_state.get("steer_flag_on"):
            sub = first_n(fps, int(fn))
            with user_errors(), st.spinner("Generating own responses…"):
                lm.check_layer(int(fl))
                flagged = cached_flag(lm.spec, sub.sha256, sv.fingerprint, int(fl), int(fmax), sub, sv)
            show(R.flag_report(flagged), {"data_flagging": "flag"})

# ---------------------------------------------------------------- Steer
with tab_steer:
    sv = st.session_state.get(KEY_SV)
    if sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    else:
        st.caption(f"Steering runs on checkpoint A ({lm.name}): a hook on block l−1 adds alpha·v_l to h_l.")
        c = st.columns(4)
        layer_default("steer_layer", sv)
        s_layer = c[0].number_input("Layer", min_value=0, step=1, key="steer_layer",
                                    help=f"0..{L}; default: {DEFAULT_LAYER_RULE}")
        s_alpha = c[1].number_input("alpha", value=R.DEFAULTS["alpha"], step=0.5, format="%g", key="steer_alpha")
        s_rule = c[2].selectbox("Positions", STEER_RULES, format_func=STEER_RULE_LABELS.get, key="steer_positions")
        s_keep = c[3].checkbox("Preserve norm", value=False, key="steer_preserve",
                               help="Rescale each steered h to its original norm.")
        settings.update(steer_layer=int(s_layer), alpha=float(s_alpha), positions=s_rule, preserve_norm=s_keep)
        st.subheader("Generations", anchor=False)
        model_default("steer_prompt", default_question(lm))
        g_prompt = st.text_area("Prompt", key="steer_prompt", height=80,
                                help="Default: from the model (the demo question on the demo models, else a question "
                                     "rendered with the tokenizer's chat template).")
        c = st.columns(3)
        g_max = c[0].number_input("New tokens", min_value=1, max_value=256, value=20, step=1, key="steer_max_new")
        g_temp = c[1].number_input("Temperature (0 = greedy)", min_value=0.0, value=0.0, step=0.1, key="steer_temp")
        g_seed = c[2].number_input("Seed", value=0, step=1, key="steer_gen_seed")
        if st.button("Generate", type="primary", key="steer_gen_btn"):
            st.session_state["steer_gen_on"] = True
        if st.session_state.get("steer_gen_on"):
            with user_errors(), st.spinner("Generating…"):
                lm.check_layer(int(s_layer))
                cmp = cached_generations(lm.spec, sv.fingerprint, g_prompt, int(s_layer), float(s_alpha), s_rule,
                                         bool(s_keep), int(g_max), float(g_temp), int(g_seed), sv)
            cols = st.columns(2)
            cols[0].markdown("**Unsteered**")
            cols[0].text(cmp.unsteered.text)
            cols[1].markdown(f"**Steered** (layer {cmp.layer}, alpha {cmp.alpha:g})")
            cols[1].text(cmp.steered.text)
            settings.update(gen_prompt=g_prompt)
            show(R.generations_report(cmp), {"generations": "gen"})
        st.subheader("Sweep and global logit shift", anchor=False)
        st.caption("For each layer and alpha: the logit difference z(a) − z(b) at the last prompt token and "
                   "KL(clean ‖ steered) on target prompts, and the same shift on control prompts (a shift that is as "
                   "big on controls is global, not about the trait).")
        c = st.columns(4)
        w_layers = c[0].text_input("Layers", value=", ".join(str(x) for x in R.default_sweep_layers(sv, L)),
                                   key="steer_sweep_layers")
        w_alphas = c[1].text_input("Alphas", value="-4, -2, 0, 2, 4, 8", key="steer_sweep_alphas")
        same_set = ps is not None and ps.sha256 == sv.prompt_set_sha256
        tokens = default_trait_tokens(lm, ps if same_set else None, sv.positive, sv.negative)
        model_default("steer_tok_a", tokens.token_a)
        model_default("steer_tok_b", tokens.token_b)
        tok_a = c[2].text_input("Token a (trait)", key="steer_tok_a",
                                help="Single token, with its leading space where the tokenizer has one.")
        tok_b = c[3].text_input("Token b", key="steer_tok_b")
        if tokens.source == "none" and not (tok_a and tok_b):
            st.warning(md_literal(tokens.note))
        else:
            st.caption(md_literal(tokens.note))
        st.markdown("Target prompts")
        tps = prompt_set_input("steer_targets", default_builtin=default_set(pair.a, "persona_eval"))
        st.markdown("Control prompts")
        cps = prompt_set_input("steer_controls", default_builtin=default_set(pair.a, "facts"))
        n_max = st.number_input("Prompts per set (first n)", min_value=1, value=12, step=1, key="steer_sweep_n")
        if st.button("Run sweep", type="primary", key="steer_sweep_btn",
                     disabled=tps is None or cps is None or not tok_a or not tok_b):
            st.session_state["steer_sweep_on"] = True
        if st.session_state.get("steer_sweep_on") and tps is not None and cps is not None:
            used_sets.extend([tps, cps])
            with user_errors(), st.spinner("Sweeping…"):
                layers = parse_numbers(w_layers, "layer", int)
                alphas = parse_numbers(w_alphas, "alpha")
                for l in layers:
                    lm.check_layer(l)
                sw = cached_sweep(lm.spec, sv.fingerprint, layers, alphas, tuple(tps.prompts[: int(n_max)]),
                                  tuple(cps.prompts[: int(n_max)]), tok_a, tok_b, s_rule, bool(s_keep), sv)
            settings.update(sweep_layers=list(layers), sweep_alphas=list(alphas), token_a=tok_a, token_b=tok_b)
            show(R.sweep_report(sw), {"steering_sweep": "sweep", "targets_vs_controls": "tvc"})

# ---------------------------------------------------------------- Drift
with tab_drift:
    sv = st.session_state.get(KEY_SV)
    if not pair.compare:
        st.info("Drift compares two checkpoints: turn on “Compare with checkpoint B” in the sidebar and load the "
                "fine-tuned checkpoint as B (e.g. gpt2-world-tuned).")
    elif sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    else:
        st.caption(f"Mean over prompts of (h_l^B − h_l^A) at the last prompt token, projected on v̂_l; B = {pair.b.name}, "
                   f"A = {lm.name}. Grey: the same along a random direction of the same norm.")
        dps = prompt_set_input("steer_drift", default_builtin=default_set(pair.a, "persona_eval"))
        d_seed = st.number_input("Random baseline seed", value=0, step=1, key="steer_drift_seed")
        if st.button("Measure drift", type="primary", key="steer_drift_btn", disabled=dps is None):
            st.session_state["steer_drift_on"] = True
        if st.session_state.get("steer_drift_on") and dps is not None:
            used_sets.append(dps)
            with user_errors(), st.spinner("Reading both checkpoints…"):
                drift = cached_drift(lm.spec, pair.b.spec, dps.sha256, sv.fingerprint, int(d_seed), dps, sv)
            show(R.drift_report(drift), {"persona_drift": "drift"})

st.divider()
if figures:
    settings["prompt_sets"] = R.prompt_sets_setting(used_sets)
    export_bundle(figures, tables, page_metadata(PAGE, pair, settings, used_sets[0] if used_sets else None),
                  R.BUNDLE, key="steer-bundle")
else:
    st.caption("Build a vector to get figures to export.")
