"""Steering and personas: build a persona/steering vector per layer, monitor prompts along it, steer, measure drift.

Wiring only: the widgets come from components.reports.steering.SteerSettings; each part (build, monitor, flag,
generate, sweep, drift) is that module's part function, run through the page's cache (page_kit.memo: keyed on the
models, its prompt sets, the vectors and the settings it reads); a part runs once its button was pressed (the
declared ``parts``, as the CLI's --parts) and the bundle is R.report of everything that ran. The link carries the
settings the user changed, the parts that ran and "steer.run=1" once the vectors were built here, so a fresh
session opened from it rebuilds them and runs those parts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from analysis.models.defaults import default_question, default_set
from analysis.models.pair import ModelPair
from analysis.prompts import PromptSet
from analysis.steering import (
    DEFAULT_LAYER_RULE,
    METHOD_LABELS,
    READ_RULE_LABELS,
    READ_RULES,
    SteeringVectors,
    check_compatible,
    load_vectors,
    save_vectors,
)
from components import card_views
from components import page_kit as kit
from components.charts.text import md_literal
from components.export_ui import export_bundle
from components.page_settings import PageSettings
from components.prompt_input import prompt_set_input
from components.reports import steering as R
from components.settings import field_of
from components.settings_ui import sync_query
from components.shell import ensure_app_shell

KEY = R.KEY
S = R.SteerSettings
KEY_SV = f"{KEY}_vectors"  # the vectors built or loaded in this session
KEY_BUILT = f"{KEY}__built"  # True: built here (a link can rebuild them), False: loaded from a file
RUN_FLAG = f"{KEY}.run"  # in the link once the vectors were built (components.settings.RESERVED)
DEFINITIONS = (
    "- **Steering vector** v_l: mean(positive) − mean(negative) of h_l at the read position (or the PCA / logistic "
    "direction, scaled to the same separation).\n"
    "- **Held-out AUROC**: the vector is fitted on a seeded training split and the held-out rows are ranked by their "
    "projection on it (1 = the groups separate perfectly, 0.5 = chance).\n"
    "- **Cohen's d**: (mean projection of the positive rows − of the negative rows) / pooled standard deviation, on "
    "the whole contrast set.\n"
    f"- **Default layer** (every layer field starts there): {DEFAULT_LAYER_RULE}. On real models the AUROC often ties "
    "at 1.0 from layer 1 on, where v_l is too small to steer with; the window keeps the default in the middle of the "
    "model.\n"
    "- **Tokens a and b** of the logit difference: by default the most common first response tokens of the positive "
    "and the negative side of the contrast set.")


@dataclass
class Page:
    """What one run of the page gathers: the models, the settings drawn, the vectors, the inputs of the parts that
    ran and their results."""

    pair: ModelPair
    ps: PageSettings = field(default_factory=lambda: PageSettings(S, KEY))
    contrast: PromptSet | None = None
    sv: SteeringVectors | None = None
    inputs: dict[str, PromptSet] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def lm(self) -> Any:
        return self.pair.a

    def resolved(self) -> R.SteerSettings:
        """The settings as they run (the build's, and the defaults from the vectors, the model and the set)."""
        return R.resolve(self.ps.current(), self.lm, self.sv, self.contrast)

    def run_part(self, part: str, button: str, **kw: Any) -> bool:
        """Draw a part's button; whether the part runs (pressed now or before)."""
        if st.button(button, **kw):
            self.ps.turn_on(part)
        return part in self.ps.parts_on()

    def show_part(self, part: str, message: str, compute: Any, report: Any, figure: str) -> None:
        """Run one part through the memo under a progress bar, keep its result, and show its report."""
        with kit.user_errors(), kit.progress_bar(message) as progress:
            self.results[part] = compute(self.pair, self.inputs, self.sv, self.resolved(), progress, kit.memo)
        kit.show(report(self.results[part]), figure, KEY, bundle=R.BUNDLE)


def group_name(g: str | None) -> str:
    return "(none)" if g is None else g


# ------------------------------------------------------------------------------------------------------------ Build
def build_widgets(page: Page, ps: PromptSet | None) -> None:
    c = st.columns(4)
    groups = ps.groups() if ps is not None else []
    pos_opts = groups or [None]
    page.ps.derived["positive"] = pos_opts[0]
    positive = page.ps.draw("positive", c[0], choices=pos_opts, format_func=group_name)
    neg_opts = [g for g in groups if g != positive] or [None]
    page.ps.derived["negative"] = neg_opts[0]
    page.ps.draw("negative", c[1], choices=neg_opts, format_func=group_name)
    page.ps.draw("method", c[2])
    has_resp = ps is not None and all(r.response for r in ps.rows)
    page.ps.draw("rule", c[3], choices=list(READ_RULES) if has_resp else ["last"])
    page.ps.draw("seed")


def build_or_load(page: Page, ps: PromptSet | None) -> None:
    """Build the vectors (a button, or a link from a session that built them) or load them from a file."""
    b = st.columns([1, 1, 2])
    build_clicked = b[0].button("Build vectors", type="primary", key="steer_build_btn", disabled=ps is None)
    run_all = b[1].button("Build and run every part", key=f"{KEY}_run", disabled=ps is None,
                          help="Build the vectors, then run Monitor, Flag rows, Generate, Run sweep and Measure drift "
                               "with the settings of each tab (what `python -m logitscope steer` runs by default).")
    linked = KEY_SV not in st.session_state and st.query_params.get(RUN_FLAG) == "1"
    if (build_clicked or run_all or linked) and ps is not None:
        with kit.user_errors(), kit.progress_bar("Reading activations…") as report:
            st.session_state[KEY_SV] = R.build_part(page.pair, {"--prompts": ps}, page.ps.current(), report, kit.memo)
        st.session_state[KEY_BUILT] = True
        if run_all:
            page.ps.turn_on(*R.PARTS)
    up = st.file_uploader("Load saved vectors (.safetensors)", type=["safetensors"], key="steer_load")
    if up is not None and st.session_state.get("steer_loaded_name") != (up.name, up.size):
        with kit.user_errors():
            loaded = load_vectors(up.getvalue())
            check_compatible(loaded, page.lm)
        st.session_state[KEY_SV] = loaded
        st.session_state[KEY_BUILT] = False  # a file's vectors: a link cannot rebuild them
        st.session_state["steer_loaded_name"] = (up.name, up.size)


def show_vectors(page: Page) -> None:
    sv = page.sv
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
        page.ps.layer_slider("hist_layer", list(sv.layers), sv.default_layer())
    part = R.build_report(sv, page.ps.drawn.get("hist_layer"))
    for name in ("separability", "contrast_projection"):
        kit.show(part, name, KEY, bundle=R.BUNDLE, optional=True)
    with kit.user_errors(stop=False):
        page.results["card"] = R.card_part(page.pair, sv, kit.memo)
        card_views.show_vector_card(R.vector_card_report(page.results["card"], sv, page.ps.drawn.get("hist_layer")),
                                    KEY, R.BUNDLE)


def build_tab(page: Page) -> None:
    st.caption(f"Vectors are built on checkpoint A ({page.lm.name}). A contrastive set has two groups (`group` field) "
               "or pairs (`label` = pair id); responses are optional.")
    page.contrast = prompt_set_input("steer_build", default_builtin=default_set(page.pair.a, "persona_pairs"))
    build_widgets(page, page.contrast)
    build_or_load(page, page.contrast)
    page.sv = st.session_state.get(KEY_SV)
    if page.sv is not None:
        show_vectors(page)


# ---------------------------------------------------------------------------------------------------------- Monitor
def monitor_section(page: Page) -> None:
    st.caption("Projection h_l[last prompt token] · v_l/‖v_l‖ for each prompt of a set.")
    mps = prompt_set_input("steer_monitor", default_builtin=default_set(page.pair.a, "persona_eval"))
    if page.sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
        return
    if mps is None or not page.run_part("monitor", "Run monitoring", type="primary", key="steer_monitor_btn"):
        return
    page.inputs["--monitor-prompts"] = mps
    ml = page.ps.layer_slider("monitor_layer", list(page.sv.layers), page.sv.default_layer())
    with kit.user_errors(), kit.progress_bar("Projecting…") as report:
        monitoring = R.monitor_part(page.pair, page.inputs, page.sv, report, kit.memo)
    page.results["monitoring"] = monitoring
    for label, _lm, _card, col in kit.compare_columns(page.pair):
        tag = label.split(":")[0]
        with col:
            st.markdown(f"**{label}**")
            kit.show(R.monitoring_report(monitoring[tag], ml, tag), f"monitoring_{tag}", KEY, bundle=R.BUNDLE)


def flag_section(page: Page) -> None:
    st.subheader("Flag data", anchor=False)
    st.caption("Rows with responses ranked by (mean response activation under the dataset's response − under the "
               "model's own greedy response) · v̂: the rows that push checkpoint A toward the trait most come first.")
    fps = prompt_set_input("steer_flag", default_builtin=default_set(page.pair.a, "persona_pairs"), allow_typed=False)
    if page.sv is None or fps is None:
        return
    c = st.columns(3)
    page.ps.page_default("flag_layer", page.sv.default_layer())
    page.ps.draw("flag_layer", c[0])
    page.ps.draw("flag_rows", c[1])
    page.ps.draw("flag_tokens", c[2])
    if not page.run_part("flag", "Flag rows", key="steer_flag_btn"):
        return
    page.inputs["--flag-prompts"] = fps
    page.show_part("flagged", "Generating own responses…", R.flag_part, R.flag_report, "data_flagging")


# ------------------------------------------------------------------------------------------------------------ Steer
def steer_widgets(page: Page) -> None:
    c = st.columns(4)
    page.ps.page_default("layer", page.sv.default_layer())
    page.ps.draw("layer", c[0], help=f"0..{page.lm.adapter.n_layers}; {field_of(S, 'layer').spec.help}")
    page.ps.draw("alpha", c[1])
    page.ps.draw("positions", c[2])
    page.ps.draw("preserve_norm", c[3])


def generations_section(page: Page) -> None:
    st.subheader("Generations", anchor=False)
    page.ps.page_default("gen_prompt", default_question(page.lm))
    page.ps.draw("gen_prompt")
    c = st.columns(3)
    page.ps.draw("new_tokens", c[0])
    page.ps.draw("temperature", c[1])
    page.ps.draw("gen_seed", c[2])
    if not page.run_part("generate", "Generate", type="primary", key="steer_gen_btn"):
        return
    with kit.user_errors(), st.spinner("Generating…"):
        gen_a, gen_b = R.generate_part(page.pair, page.sv, page.resolved(), kit.memo)
    page.results.update(generations=gen_a, generations_b=gen_b)
    compare = page.pair.compare
    gen_rep = R.generations_report(gen_a, gen_b, ("A", "B") if compare else ("", ""))
    for which, gen, name in (("A", gen_a, "generations"), ("B", gen_b, "generations_B")):
        if gen is None:
            continue
        if compare:
            st.markdown(f"**{which}: {md_literal((page.pair.card_a if which == 'A' else page.pair.card_b).name)}**")
        cols = st.columns(2)
        cols[0].markdown("**Unsteered**")
        cols[0].text(gen.unsteered.text)
        cols[1].markdown(f"**Steered** (layer {gen.layer}, alpha {gen.alpha:g})")
        cols[1].text(gen.steered.text)
        kit.show(gen_rep, name, KEY, bundle=R.BUNDLE)


def sweep_widgets(page: Page) -> tuple[str, str]:
    c = st.columns(4)
    page.ps.page_default("sweep_layers", R.default_sweep_layers(page.sv, page.lm.adapter.n_layers))
    page.ps.draw("sweep_layers", c[0])
    page.ps.draw("sweep_alphas", c[1])
    tokens = R.trait_tokens(page.lm, page.sv, page.contrast)
    page.ps.page_default("token_a", tokens.token_a)
    page.ps.page_default("token_b", tokens.token_b)
    tok_a = page.ps.draw("token_a", c[2])
    tok_b = page.ps.draw("token_b", c[3])
    (st.warning if tokens.source == "none" and not (tok_a and tok_b) else st.caption)(md_literal(tokens.note))
    return tok_a, tok_b


def sweep_section(page: Page) -> None:
    st.subheader("Sweep and global logit shift", anchor=False)
    st.caption("For each layer and alpha: the logit difference z(a) − z(b) at the last prompt token and "
               "KL(clean ‖ steered) on target prompts, and the same shift on control prompts (a shift that is as "
               "big on controls is global, not about the trait).")
    tok_a, tok_b = sweep_widgets(page)
    st.markdown("Target prompts")
    tps = prompt_set_input("steer_targets", default_builtin=default_set(page.pair.a, "persona_eval"))
    st.markdown("Control prompts")
    cps = prompt_set_input("steer_controls", default_builtin=default_set(page.pair.a, "facts"))
    page.ps.draw("sweep_prompts")
    ready = tps is not None and cps is not None
    if not page.run_part("sweep", "Run sweep", type="primary", key="steer_sweep_btn",
                         disabled=not ready or not tok_a or not tok_b) or not ready:
        return
    page.inputs.update({"--targets": tps, "--controls": cps})
    with kit.user_errors(), kit.progress_bar("Sweeping…") as report:
        sweep, sweep_b = R.sweep_part(page.pair, page.inputs, page.sv, page.resolved(), report, kit.memo)
    page.results.update(sweep=sweep, sweep_b=sweep_b)
    part = R.sweep_report(sweep, sweep_b, ("A", "B") if page.pair.compare else ("", ""))
    for name in ("steering_sweep", "steering_sweep_B", "targets_vs_controls", "targets_vs_controls_B"):
        kit.show(part, name, KEY, bundle=R.BUNDLE, optional=True)


def steer_tab(page: Page) -> None:
    if page.sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
        return
    on_b = f", and with A's vector on checkpoint B ({page.pair.b.name})" if page.pair.compare else ""
    st.caption(md_literal(f"Steering runs on checkpoint A ({page.lm.name}){on_b}: a hook on block l−1 adds alpha·v_l "
                          "to h_l."))
    steer_widgets(page)
    generations_section(page)
    sweep_section(page)


# ------------------------------------------------------------------------------------------------------------ Drift
def drift_tab(page: Page) -> None:
    if not page.pair.compare:
        st.info("Drift compares two checkpoints: turn on “Compare with checkpoint B” in the sidebar and load the "
                "fine-tuned checkpoint as B (e.g. gpt2-world-tuned).")
        return
    if page.sv is None:
        st.info("Build a vector in the Build tab (or load a saved one) first.")
        return
    st.caption(f"Mean over prompts of (h_l^B − h_l^A) at the last prompt token, projected on v̂_l; B = "
               f"{page.pair.b.name}, A = {page.lm.name}. Grey: the same along a random direction of the same norm.")
    dps = prompt_set_input("steer_drift", default_builtin=default_set(page.pair.a, "persona_eval"))
    page.ps.draw("drift_seed")
    if not page.run_part("drift", "Measure drift", type="primary", key="steer_drift_btn", disabled=dps is None) \
            or dps is None:
        return
    page.inputs["--drift-prompts"] = dps
    page.show_part("drift", "Reading both checkpoints…", R.drift_part, R.drift_report, "persona_drift")


# ------------------------------------------------------------------------------------------------- link and bundle
def link_and_bundle(page: Page) -> None:
    st.divider()
    if page.sv is None:
        st.caption("Build a vector to get figures to export.")
        return
    chosen = page.ps.current()
    # the link carries what the user set; a default from the model or the vectors stays None (a link opened with
    # another model or other vectors starts on theirs)
    sync_query(page.ps.for_link(chosen), KEY, KEY)
    if st.session_state.get(KEY_BUILT) and st.query_params.get(RUN_FLAG) != "1":
        st.query_params[RUN_FLAG] = "1"
    elif not st.session_state.get(KEY_BUILT) and RUN_FLAG in st.query_params:
        del st.query_params[RUN_FLAG]
    settings = page.resolved()
    r = page.results
    results = R.SteerResults(settings, page.sv, r.get("monitoring", {}), r.get("flagged"), r.get("generations"),
                             r.get("sweep"), r.get("drift"), page.contrast, dict(page.inputs),
                             R.notes_of(page.pair, settings), r.get("card"), r.get("generations_b"), r.get("sweep_b"))
    with kit.user_errors():
        rep = R.report(results, settings)
    if not rep.figures:
        st.caption("Build a vector to get figures to export.")
        return
    meta = kit.page_metadata(R.PAGE, page.pair, R.settings_metadata(settings, results, page.lm.name),
                             results.used[0] if results.used else None, rep.notes, R.inputs_used(results))
    export_bundle(rep.figures, rep.tables, meta, R.BUNDLE, key=f"{KEY}_bundle")


def main() -> None:
    ensure_app_shell()
    st.title("Steering and personas")
    st.caption("A direction per layer that separates two groups of prompts (e.g. a grumpy and a kind persona): how "
               "well it separates them, where prompts project on it, what adding alpha·v to the residual stream does, "
               "and how far a fine-tuned checkpoint moved along it. Layer 0 = embedding output, l = output of block "
               "l−1, L = last block's output before the final norm.")
    with st.expander("Definitions", expanded=False):
        st.markdown(DEFINITIONS)
    page = Page(kit.open_page(S, KEY))
    tab_build, tab_monitor, tab_steer, tab_drift = st.tabs(["Build", "Monitor", "Steer", "Drift"])
    with tab_build:
        build_tab(page)
    with tab_monitor:
        monitor_section(page)
        st.divider()
        flag_section(page)
    with tab_steer:
        steer_tab(page)
    with tab_drift:
        drift_tab(page)
    link_and_bundle(page)


main()
