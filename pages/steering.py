"""Steering and personas: build a persona/steering vector per layer, monitor prompts along it, steer, measure drift.

Wiring only: the widgets come from components.reports.steering.SteerSettings; each part (build, monitor, flag,
generate, sweep, drift) is that module's function, cached on the models, its prompt sets, the vectors and the settings
it reads (R.part_key); a part runs once its button was pressed (the declared ``parts``, as the CLI's --parts) and
the bundle is R.report of everything that ran. The link carries the settings the user changed, the parts that ran and
"steer.run=1" once the vectors were built here, so a fresh session opened from it rebuilds them and runs those parts.
"""
from __future__ import annotations

import re
import typing
from dataclasses import replace
from typing import Any

import streamlit as st

from analysis.core.errors import InputError
from analysis.core.loading import ModelSpec
from analysis.models.defaults import default_question, default_set
from analysis.prompts import PromptSet
from analysis.steering import (
    DEFAULT_LAYER_RULE,
    METHOD_LABELS,
    READ_RULE_LABELS,
    READ_RULES,
    Drift,
    Flagged,
    GenerationComparison,
    Monitoring,
    SteeringVectors,
    Sweep,
    check_compatible,
    load_vectors,
    save_vectors,
)
from components import card_views
from components import page_kit as kit
from components.charts.text import md_literal
from components.export_ui import export_bundle
from components.model_state import load_cached
from components.prompt_input import prompt_set_input
from components.reports import steering as R
from components.settings import field_of, fields_of, from_text, to_text
from components.settings_ui import sync_query, widget, widget_key
from components.shell import ensure_app_shell

ensure_app_shell()

KEY = R.KEY
S = R.SteerSettings
KEY_SV = f"{KEY}_vectors"  # the vectors built or loaded in this session
KEY_BUILT = f"{KEY}__built"  # True: built here (a link can rebuild them), False: loaded from a file
KEY_PARTS = f"{KEY}__parts_on"  # the parts that run (their button was pressed), a tuple
RUN_FLAG = f"{KEY}.run"  # in the link once the vectors were built (components.settings.RESERVED)


# ------------------------------------------------------------------------------------------ cached parts
def _lm(spec: ModelSpec):
    return load_cached(spec)[0]


@st.cache_data(max_entries=8, show_spinner=False)
def cached_build(spec: ModelSpec, sha256: str, key: tuple, _ps: PromptSet, _s: R.SteerSettings,
                 _progress=None) -> SteeringVectors:
    """R.build, cached on the model, the contrast set's hash and the build settings (``key``)."""
    return R.build(_lm(spec), _ps, _s, _progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_monitor(spec: ModelSpec, sha256: str, sv_fp: str, _ps: PromptSet, _sv: SteeringVectors,
                   _progress=None) -> Monitoring:
    """R.monitor_model, cached on the model, the prompts and the vectors."""
    return R.monitor_model(_lm(spec), _ps, _sv, _progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_flag(spec: ModelSpec, sha256: str, sv_fp: str, key: tuple, _ps: PromptSet, _sv: SteeringVectors,
                _s: R.SteerSettings, _progress=None) -> Flagged:
    """R.flag_part, cached on the model, the rows, the vectors and the flag settings."""
    return R.flag_part(_lm(spec), _ps, _sv, _s, _progress)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_generate(spec: ModelSpec, sv_fp: str, key: tuple, _sv: SteeringVectors,
                    _s: R.SteerSettings) -> GenerationComparison:
    """R.generate_part, cached on the model, the vectors and the generation settings."""
    return R.generate_part(_lm(spec), _sv, _s)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_sweep(spec: ModelSpec, sha256s: tuple, sv_fp: str, key: tuple, _targets: PromptSet, _controls: PromptSet,
                 _sv: SteeringVectors, _s: R.SteerSettings, _progress=None) -> Sweep:
    """R.sweep_part, cached on the model, both prompt sets, the vectors and the sweep settings."""
    return R.sweep_part(_lm(spec), _targets, _controls, _sv, _s, _progress)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_drift(specs: tuple, sha256: str, sv_fp: str, key: tuple, _ps: PromptSet, _sv: SteeringVectors,
                 _s: R.SteerSettings, _progress=None) -> Drift:
    """R.drift_part between A and B, cached."""
    return R.drift_part(kit.pair_from_specs(specs), _ps, _sv, _s, _progress)


# ------------------------------------------------------------------------------------------ settings on this page
drawn: dict[str, Any] = {}  # the settings whose widgets this run drew
derived: dict[str, Any] = {}  # the page defaults that come from the model, the vectors or the data


def draw(name: str, where: Any = None, **kw: Any) -> Any:
    """The widget of setting ``name`` (settings_ui.widget), its value remembered for the settings of this run."""
    drawn[name] = widget(S, name, KEY, where, **kw)
    return drawn[name]


def page_default(name: str, value: Any) -> None:
    """Start setting ``name``'s widget on a default from the model or the vectors (again when that default changes
    and the widget still holds the previous one)."""
    f = field_of(S, name)
    derived[name] = value
    kit.model_default(widget_key(KEY, name), to_text(f, value) if typing.get_origin(f.base) is tuple else value)


def layer_slider(name: str, sv: SteeringVectors) -> int:
    """A display layer (the histograms) as a slider over the vectors' layers, starting on the default layer."""
    f, k = field_of(S, name), widget_key(KEY, name)
    if k in st.session_state and st.session_state[k] not in sv.layers:
        del st.session_state[k]
    page_default(name, sv.default_layer())
    drawn[name] = st.select_slider(f.label, options=list(sv.layers), key=k, help=f.spec.help)
    return drawn[name]


def held(name: str) -> Any:
    """A setting whose widget is not on the page in this state: the value a link or an earlier run left, else the
    default."""
    f = field_of(S, name)
    value = st.session_state.get(widget_key(KEY, name), f.default)
    if isinstance(value, str) and typing.get_origin(f.base) is tuple:
        try:
            return from_text(f, value)
        except InputError:
            return f.default
    return tuple(value) if isinstance(value, list) else value


def _parts(value: Any) -> tuple[str, ...]:
    """Parts as text ("monitor,flag"), a list or a set -> the known ones in the page's order."""
    if isinstance(value, str):
        try:
            value = from_text(field_of(S, "parts"), value)
        except InputError:
            value = ()
    return tuple(p for p in R.PARTS if p in value)


def parts_on() -> tuple[str, ...]:
    """The parts whose button was pressed, or that a link turned on (apply_query puts "steer.parts" into the
    setting's widget key; no widget draws it), in the page's order; none at first."""
    linked = st.session_state.pop(widget_key(KEY, "parts"), None)
    if linked is not None:
        st.session_state[KEY_PARTS] = _parts(linked)
    return st.session_state.get(KEY_PARTS, ())


def turn_on(*parts: str) -> None:
    st.session_state[KEY_PARTS] = _parts(set(parts_on()) | set(parts))


def current() -> R.SteerSettings:
    """The settings of this run: the widgets drawn so far, the others as held."""
    values = {f.name: held(f.name) for f in fields_of(S)}
    values.update(drawn, parts=parts_on())
    return S(**values)


def group_name(g: str | None) -> str:
    return "(none)" if g is None else g


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
pair = kit.open_page(S, KEY)
lm = pair.a
L = lm.adapter.n_layers
ran: dict[str, PromptSet] = {}  # the prompt sets of the parts that ran (R.SteerSets' fields)
monitoring: dict[str, Monitoring] = {}
flagged, generations, sweep, drift = None, None, None, None
generations_b, sweep_b = None, None  # A's vector applied to B (compare mode)
vcard = None  # the vector card, once vectors are built or loaded

tab_build, tab_monitor, tab_steer, tab_drift = st.tabs(["Build", "Monitor", "Steer", "Drift"])

# ---------------------------------------------------------------- Build
with tab_build:
    st.caption(f"Vectors are built on checkpoint A ({lm.name}). A contrastive set has two groups (`group` field) or "
               "pairs (`label` = pair id); responses are optional.")
    ps = prompt_set_input("steer_build", default_builtin=default_set(pair.a, "persona_pairs"))
    c = st.columns(4)
    groups = ps.groups() if ps is not None else []
    pos_opts = groups or [None]
    derived["positive"] = pos_opts[0]
    positive = draw("positive", c[0], choices=pos_opts, format_func=group_name)
    neg_opts = [g for g in groups if g != positive] or [None]
    derived["negative"] = neg_opts[0]
    draw("negative", c[1], choices=neg_opts, format_func=group_name)
    draw("method", c[2])
    has_resp = ps is not None and all(r.response for r in ps.rows)
    draw("rule", c[3], choices=list(READ_RULES) if has_resp else ["last"])
    draw("seed")
    b = st.columns([1, 1, 2])
    build_clicked = b[0].button("Build vectors", type="primary", key="steer_build_btn", disabled=ps is None)
    run_all = b[1].button("Build and run every part", key=f"{KEY}_run", disabled=ps is None,
                          help="Build the vectors, then run Monitor, Flag rows, Generate, Run sweep and Measure drift "
                               "with the settings of each tab (what `python -m logitscope steer` runs by default).")
    # a link from a session that built its vectors ("steer.run=1") builds them again at once, with its settings
    linked = KEY_SV not in st.session_state and st.query_params.get(RUN_FLAG) == "1"
    if (build_clicked or run_all or linked) and ps is not None:
        chosen = current()
        with kit.user_errors(), kit.progress_bar("Reading activations…") as report:
            built = cached_build(lm.spec, ps.sha256, R.part_key(chosen, "build"), ps, chosen, _progress=report)
        st.session_state[KEY_SV] = built
        st.session_state[KEY_BUILT] = True
        if run_all:
            turn_on(*R.PARTS)
    up = st.file_uploader("Load saved vectors (.safetensors)", type=["safetensors"], key="steer_load")
    if up is not None and st.session_state.get("steer_loaded_name") != (up.name, up.size):
        with kit.user_errors():
            loaded = load_vectors(up.getvalue())
            check_compatible(loaded, lm)
        st.session_state[KEY_SV] = loaded
        st.session_state[KEY_BUILT] = False  # a file's vectors: a link cannot rebuild them
        st.session_state["steer_loaded_name"] = (up.name, up.size)
    sv = st.session_state.get(KEY_SV)
    if sv is not None:
        choice = sv.default_layer_choice()
        lo, hi = choice.window
        st.success(f"Vectors for layers {sv.layers[0]}..{sv.layers[-1]} from '{sv.prompt_set_name}' "
                   f"({METHOD_LABELS.get(sv.method, sv.method)}, {READ_RULE_LABELS.get(sv.position_rule, sv.position_rule)}"
                   f"; {sv.positive} vs {sv.negative}). Default layer {choice.layer}"
                   + (f": the best layer by held-out AUROC in the middle of the model (layers {lo}..{hi})."
                      if choice.in_window and choice.has_auroc else " (why below)."))
        st.caption(md_literal(choice.caption))
        st.download_button("Save vectors (.safetensors)", data=save_vectors(sv),
                           file_name=f"steering_{re.sub(r'[^A-Za-z0-9_-]+', '_', sv.model_name)}_{sv.method}.safetensors",
                           mime="application/octet-stream", key="steer_save", on_click="ignore")
        if not sv.n_test:
            st.caption("No held-out AUROC for these vectors (loaded from a file, or a group with fewer than 2 rows).")
        if sv.projections.size:
            layer_slider("hist_layer", sv)
        part = R.build_report(sv, drawn.get("hist_layer"))
        for name in ("separability", "contrast_projection"):
            kit.show(part, name, KEY, bundle=R.BUNDLE, optional=True)
        with kit.user_errors(stop=False):
            vcard = card_views.cached_vector_card(lm.spec, sv.fingerprint, sv)
            card_views.show_vector_card(R.vector_card_report(vcard, sv, drawn.get("hist_layer")), KEY, R.BUNDLE)

# ---------------------------------------------------------------- Monitor
with tab_monitor:
    st.caption("Projection h_l[last prompt token] · v_l/‖v_l‖ for each prompt of a set.")
    mps = prompt_set_input("steer_monitor", default_builtin=default_set(pair.a, "persona_eval"))
    if sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    elif mps is not None:
        if st.button("Run monitoring", type="primary", key="steer_monitor_btn"):
            turn_on("monitor")
        if "monitor" in parts_on():
            ran["monitor"] = mps
            ml = layer_slider("monitor_layer", sv)
            for label, lm_x, _card, col in kit.compare_columns(pair):
                tag = label.split(":")[0]
                with col:
                    st.markdown(f"**{label}**")
                    with kit.user_errors(), kit.progress_bar("Projecting…") as report:
                        monitoring[tag] = cached_monitor(lm_x.spec, mps.sha256, sv.fingerprint, mps, sv,
                                                         _progress=report)
                    kit.show(R.monitoring_report(monitoring[tag], ml, tag), f"monitoring_{tag}", KEY, bundle=R.BUNDLE)
    st.divider()
    st.subheader("Flag data", anchor=False)
    st.caption("Rows with responses ranked by (mean response activation under the dataset's response − under the "
               "model's own greedy response) · v̂: the rows that push checkpoint A toward the trait most come first.")
    fps = prompt_set_input("steer_flag", default_builtin=default_set(pair.a, "persona_pairs"), allow_typed=False)
    if sv is not None and fps is not None:
        c = st.columns(3)
        page_default("flag_layer", sv.default_layer())
        draw("flag_layer", c[0])
        draw("flag_rows", c[1])
        draw("flag_tokens", c[2])
        if st.button("Flag rows", key="steer_flag_btn"):
            turn_on("flag")
        if "flag" in parts_on():
            ran["flag"] = fps
            s = R.resolve(current(), lm, sv, ps)
            with kit.user_errors(), kit.progress_bar("Generating own responses…") as report:
                flagged = cached_flag(lm.spec, fps.sha256, sv.fingerprint, R.part_key(s, "flag"), fps, sv, s,
                                      _progress=report)
            kit.show(R.flag_report(flagged), "data_flagging", KEY, bundle=R.BUNDLE)

# ---------------------------------------------------------------- Steer
with tab_steer:
    if sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    else:
        on_b = f", and with A's vector on checkpoint B ({pair.b.name})" if pair.compare else ""
        st.caption(md_literal(f"Steering runs on checkpoint A ({lm.name}){on_b}: a hook on block l−1 adds alpha·v_l "
                              "to h_l."))
        c = st.columns(4)
        page_default("layer", sv.default_layer())
        draw("layer", c[0], help=f"0..{L}; {field_of(S, 'layer').spec.help}")
        draw("alpha", c[1])
        draw("positions", c[2])
        draw("preserve_norm", c[3])
        st.subheader("Generations", anchor=False)
        page_default("gen_prompt", default_question(lm))
        draw("gen_prompt")
        c = st.columns(3)
        draw("new_tokens", c[0])
        draw("temperature", c[1])
        draw("gen_seed", c[2])
        if st.button("Generate", type="primary", key="steer_gen_btn"):
            turn_on("generate")
        if "generate" in parts_on():
            s = R.resolve(current(), lm, sv, ps)
            with kit.user_errors(), st.spinner("Generating…"):
                generations = cached_generate(lm.spec, sv.fingerprint, R.part_key(s, "generate"), sv, s)
                if pair.compare:  # A's vector applied to B as well
                    generations_b = cached_generate(pair.b.spec, sv.fingerprint, R.part_key(s, "generate"), sv, s)
            gen_rep = R.generations_report(generations, generations_b, ("A", "B") if pair.compare else ("", ""))
            for which, gen, name in (("A", generations, "generations"), ("B", generations_b, "generations_B")):
                if gen is None:
                    continue
                if pair.compare:
                    st.markdown(f"**{which}: {md_literal((pair.card_a if which == 'A' else pair.card_b).name)}**")
                cols = st.columns(2)
                cols[0].markdown("**Unsteered**")
                cols[0].text(gen.unsteered.text)
                cols[1].markdown(f"**Steered** (layer {gen.layer}, alpha {gen.alpha:g})")
                cols[1].text(gen.steered.text)
                kit.show(gen_rep, name, KEY, bundle=R.BUNDLE)
        st.subheader("Sweep and global logit shift", anchor=False)
        st.caption("For each layer and alpha: the logit difference z(a) − z(b) at the last prompt token and "
                   "KL(clean ‖ steered) on target prompts, and the same shift on control prompts (a shift that is as "
                   "big on controls is global, not about the trait).")
        c = st.columns(4)
        page_default("sweep_layers", R.default_sweep_layers(sv, L))
        draw("sweep_layers", c[0])
        draw("sweep_alphas", c[1])
        tokens = R.trait_tokens(lm, sv, ps)
        page_default("token_a", tokens.token_a)
        page_default("token_b", tokens.token_b)
        tok_a = draw("token_a", c[2])
        tok_b = draw("token_b", c[3])
        if tokens.source == "none" and not (tok_a and tok_b):
            st.warning(md_literal(tokens.note))
        else:
            st.caption(md_literal(tokens.note))
        st.markdown("Target prompts")
        tps = prompt_set_input("steer_targets", default_builtin=default_set(pair.a, "persona_eval"))
        st.markdown("Control prompts")
        cps = prompt_set_input("steer_controls", default_builtin=default_set(pair.a, "facts"))
        draw("sweep_prompts")
        if st.button("Run sweep", type="primary", key="steer_sweep_btn",
                     disabled=tps is None or cps is None or not tok_a or not tok_b):
            turn_on("sweep")
        if "sweep" in parts_on() and tps is not None and cps is not None:
            ran["targets"], ran["controls"] = tps, cps
            s = R.resolve(current(), lm, sv, ps)
            with kit.user_errors(), kit.progress_bar("Sweeping…") as report:
                sweep = cached_sweep(lm.spec, (tps.sha256, cps.sha256), sv.fingerprint, R.part_key(s, "sweep"), tps,
                                     cps, sv, s, _progress=report)
                if pair.compare:  # A's vector applied to B as well
                    sweep_b = cached_sweep(pair.b.spec, (tps.sha256, cps.sha256), sv.fingerprint,
                                           R.part_key(s, "sweep"), tps, cps, sv, s, _progress=report)
            part = R.sweep_report(sweep, sweep_b, ("A", "B") if pair.compare else ("", ""))
            for name in ("steering_sweep", "steering_sweep_B", "targets_vs_controls", "targets_vs_controls_B"):
                kit.show(part, name, KEY, bundle=R.BUNDLE, optional=True)

# ---------------------------------------------------------------- Drift
with tab_drift:
    if not pair.compare:
        st.info("Drift compares two checkpoints: turn on “Compare with checkpoint B” in the sidebar and load the "
                "fine-tuned checkpoint as B (e.g. gpt2-world-tuned).")
    elif sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
    else:
        st.caption(f"Mean over prompts of (h_l^B − h_l^A) at the last prompt token, projected on v̂_l; B = {pair.b.name}, "
                   f"A = {lm.name}. Grey: the same along a random direction of the same norm.")
        dps = prompt_set_input("steer_drift", default_builtin=default_set(pair.a, "persona_eval"))
        draw("drift_seed")
        if st.button("Measure drift", type="primary", key="steer_drift_btn", disabled=dps is None):
            turn_on("drift")
        if "drift" in parts_on() and dps is not None:
            ran["drift"] = dps
            s = R.resolve(current(), lm, sv, ps)
            with kit.user_errors(), kit.progress_bar("Reading both checkpoints…") as report:
                drift = cached_drift(pair.specs(), dps.sha256, sv.fingerprint, R.part_key(s, "drift"), dps, sv, s,
                                     _progress=report)
            kit.show(R.drift_report(drift), "persona_drift", KEY, bundle=R.BUNDLE)

# ---------------------------------------------------------------- link and bundle
st.divider()
rep = None
if sv is not None:
    chosen = current()
    # the link carries what the user set; a default that comes from the model or the vectors stays None (a link
    # opened with another model or other vectors starts on theirs)
    sync_query(replace(chosen, **{n: None for n, v in derived.items() if getattr(chosen, n) == v}), KEY, KEY)
    if st.session_state.get(KEY_BUILT) and st.query_params.get(RUN_FLAG) != "1":
        st.query_params[RUN_FLAG] = "1"
    elif not st.session_state.get(KEY_BUILT) and RUN_FLAG in st.query_params:
        del st.query_params[RUN_FLAG]
    settings = R.resolve(chosen, lm, sv, ps)
    results = R.SteerResults(settings, sv, monitoring, flagged, generations, sweep, drift, ps, R.SteerSets(**ran),
                             R.notes_of(pair, settings), vcard, generations_b, sweep_b)
    with kit.user_errors():
        rep = R.report(results, settings)
if rep is not None and rep.figures:
    meta = kit.page_metadata(R.PAGE, pair, R.settings_metadata(settings, results, lm.name),
                         results.used[0] if results.used else None, rep.notes, R.inputs(results.contrast, results.sets))
    export_bundle(rep.figures, rep.tables, meta, R.BUNDLE, key=f"{KEY}_bundle")
else:
    st.caption("Build a vector to get figures to export.")
