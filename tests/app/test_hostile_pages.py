"""Hostile input in what the app draws (issue #9, part 1): user text reaches the screen escaped, never as HTML.

The strings inside figure JSON are checked (plotly renders a subset of HTML in text, hover, annotations, tick
and Sankey labels, titles) for every chart module; the pages and components are scanned for raw-HTML calls;
and the pages run under AppTest with a hostile typed prompt. Uploads, model folders and exports are in
tests/app/test_hostile_input.py.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.paths import REPO_ROOT, zoo_dir
from analysis.models.tiny import tiny_model
from analysis.prompts import PromptSet, load_builtin
from tests.hostile_fixtures import APP, BASE, HOSTILE, IMG, SCRIPT, TUNED, needs_zoo, zoo_models

# ============================================================================================ figures escape
_ALLOWED_TAG = re.compile(r"</?(br|extra|b|i|em|sup|sub)\s*/?>", re.IGNORECASE)


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def unescaped(fig: go.Figure) -> list[str]:
    """Strings of the figure's JSON in which a '<' is not one of plotly's own formatting tags."""
    return [s for s in _strings(json.loads(fig.to_json())) if "<" in _ALLOWED_TAG.sub("", s)]


def carries_escaped_text(fig: go.Figure) -> bool:
    return any("&lt;" in s for s in _strings(json.loads(fig.to_json())))


def check_figures(figs: dict[str, go.Figure], must_carry: set[str]) -> None:
    bad = {name: unescaped(f)[:3] for name, f in figs.items() if unescaped(f)}
    assert not bad, f"unescaped '<' in figure strings: {bad}"
    missing = [n for n in must_carry if not carries_escaped_text(figs[n])]
    assert not missing, f"these figures should show the hostile text (escaped) but do not: {missing}"


@pytest.fixture(scope="module")
def zoo():
    return zoo_models()


@needs_zoo
def test_lens_figures_escape_hostile_prompt_and_tokens(zoo):
    import analysis.lens as L
    from components.charts import lens as C
    a, b = zoo[BASE], zoo[TUNED]
    tr = L.lens_trace(a, [HOSTILE, SCRIPT], k=5, target_mode=L.TARGET_TEXT, targets=[" <", IMG])
    tb = L.lens_trace(b, [HOSTILE, SCRIPT], k=5, target_mode=L.TARGET_NEXT)
    traces = {f"A: {IMG}": tr, f"B: {SCRIPT}": tb}
    cmp = L.lens_compare(a, b, [HOSTILE])
    cmp = dataclasses.replace(cmp, model_a=IMG, model_b=SCRIPT)
    figs = {"heatmap": C.lens_heatmap(tr, 0, "probability", 40, title=HOSTILE),
            "heatmap_kl": C.lens_heatmap(tb, 1, "kl", 40),
            "target": C.target_lines(tr, [0, 1]), "target_next": C.target_lines(tb, [0], 3),
            "mean_kl": C.mean_kl_figure(traces), "depth": C.decision_depth_histogram(traces),
            "cmp_heat": C.compare_heatmap(cmp, 0), "cmp_mean": C.compare_mean_figure(cmp)}
    check_figures(figs, {"heatmap", "heatmap_kl", "target", "mean_kl", "depth", "cmp_heat"})


@needs_zoo
def test_flow_figures_escape_hostile_prompt_and_tokens(zoo):
    import analysis.flow as flow
    from components.charts import flow as C
    r = flow.logit_flow(zoo[BASE], HOSTILE, target="<", competitor=">")
    a = r.view("target")
    xl = C.position_labels(r.tokens)
    figs = {"sankey": C.flow_sankey(r.tokens, a.sources, r.target, threshold=0.0, title=HOSTILE),
            "grid": C.grid_heatmap(a.attn_grid, xl, HOSTILE), "layers": C.layer_bars(a.attn, a.mlp, HOSTILE),
            "heads": C.head_heatmap(a.heads, HOSTILE),
            "contrast": C.contrast_bars(r.view("target"), r.view("competitor"), r.target, r.competitor, title=HOSTILE),
            "mlp_pos": C.grid_heatmap(a.mlp_at_pos, xl, "MLP"), "aligned": C.grid_heatmap(a.attn_grid,
                                                                                        C.aligned_labels(len(xl)), "x")}
    check_figures(figs, {"sankey", "grid", "layers", "heads", "contrast", "mlp_pos"})


@needs_zoo
def test_steering_figures_escape_hostile_groups_prompts_and_tokens(zoo):
    from analysis.steering import (
        Steer,
        compare_generations,
        extract_vectors,
        flag_data,
        monitor,
        persona_drift,
        steering_sweep,
    )
    from components.charts import steering as C
    a, b = zoo[BASE], zoo[TUNED]
    pairs = load_builtin("persona_pairs")
    names = pairs.groups()[:2]
    rename = {names[0]: SCRIPT, names[1]: IMG}
    rows = [dataclasses.replace(r, prompt=f"{IMG} {r.prompt}", group=rename[r.group],
                                response=(r.response or " ok") + SCRIPT)
            for r in pairs.rows if r.group in rename][:16]
    ps = PromptSet.from_rows(HOSTILE, rows)
    sv = extract_vectors(a, ps, positive=SCRIPT, negative=IMG)
    layer = sv.default_layer()
    mon = monitor(a, ps, sv)
    sw = steering_sweep(a, {layer: sv.vector(layer)}, (-2.0, 0.0, 2.0), [HOSTILE], [SCRIPT], "<", ">")
    gen = compare_generations(a, HOSTILE, Steer(layer, sv.vector(layer), 4.0), max_new_tokens=4)
    drift = dataclasses.replace(persona_drift(a, b, ps, sv, n_random=2), model_a=IMG, model_b=SCRIPT)
    flagged = flag_data(a, PromptSet.from_rows("f", rows[:4]), sv, layer, max_new_tokens=3)
    figs = {"separability": C.separability_figure(sv), "build_hist": C.build_projection_figure(sv, layer),
            "monitor": C.monitoring_figure(mon, layer), "sweep": C.sweep_figure(sw),
            "tvc": C.targets_vs_controls_figure(sw), "generations": C.generations_figure(gen),
            "drift": C.drift_figure(drift), "flagged": C.flagged_figure(flagged)}
    check_figures(figs, set(figs))


@needs_zoo
def test_shift_figures_escape_hostile_prompt_tokens_and_names(zoo):
    import analysis.shift as shift
    from components.charts import shift as C
    a, b = zoo[BASE], zoo[TUNED]
    res = shift.compute_shift(a, b, [HOSTILE], [SCRIPT + IMG], n_tokens=8, top_n=20)
    lk = shift.layer_kl(a, b, [HOSTILE], [SCRIPT], n_tokens=4)
    ps = res.prompts[0]
    figs = {"bars": C.token_bars(res.totals, k=10, title=f"{IMG} → {SCRIPT}"),
            "heatmap": C.shift_heatmap(ps, n_cols=10, title=HOSTILE, label_1=IMG, label_2=SCRIPT,
                                       second=ps.top_shift[:, :10]),
            "kl": C.kl_along_text(ps, title=HOSTILE), "layer_kl": C.layer_kl_line([(IMG, lk)], title=SCRIPT)}
    check_figures(figs, set(figs))


@needs_zoo
def test_ood_figures_escape_hostile_prompts_and_set_names(zoo):
    import analysis.ood as O
    from analysis.ood import extract_features
    from components.charts import ood as C
    lm = zoo[BASE]
    ids = [f"{IMG} The capital of city {i} is" for i in range(8)]
    far = [f"{SCRIPT} zq{i} xv{i} {i * 7}" for i in range(6)]
    study = O.run_study(lm, ids, {SCRIPT: far}, id_name=IMG, layers=[1, 2])
    feats = {n: extract_features(lm, p) for n, p in ((IMG, ids), (SCRIPT, far))}
    figs = {"heat": C.metrics_heatmap(study), "by_layer": C.auroc_by_layer(study),
            "hist": C.score_histograms(study, study.best_score, study.best_layer),
            "roc": C.roc_curves(study, study.best_score, study.best_layer),
            "cmp": C.compare_auroc_by_layer(study, study, IMG, SCRIPT)}
    figs["map"] = C.projection_map(O.project_2d(feats[IMG], {SCRIPT: feats[SCRIPT]}, 1, id_name=IMG))
    check_figures(figs, {"heat", "by_layer", "hist", "roc", "map"})


def test_neuron_figures_escape_titles_and_labels():
    from analysis.neurons import ablate, build_units, scan_entropy
    from components.charts import neurons as C
    lm = tiny_model("gpt2")
    scan = scan_entropy(lm.adapter)
    units = build_units(lm, [(lm.adapter.n_layers - 1, 0)], mode="mean", reference=["5 17 3 9"])
    res = ablate(lm, ["5 17 3 9 22"], units, mode="mean")
    figs = {"scan": C.scan_scatter(scan, "rho", title=HOSTILE), "spectrum": C.spectrum_figure(scan, int(scan.top[0])),
            "boxes": C.ablation_boxes(res, title=HOSTILE), "mediation": C.mediation_scatter(res)}
    check_figures(figs, {"boxes"})


def test_the_escape_check_itself_catches_raw_html():
    """The check above can fail: a figure with a raw payload in a hover is caught."""
    fig = go.Figure(go.Bar(x=["a"], y=[1], customdata=[IMG], hovertemplate="%{customdata}<extra></extra>"))
    assert unescaped(fig)
    fig = go.Figure(go.Bar(x=["a"], y=[1]), layout={"title": "<"})
    assert unescaped(fig)


# ============================================================================================ no raw HTML in pages
_ALLOWED_UNSAFE: set[str] = set()  # constant strings allowed with unsafe_allow_html=True (none today)


def _unsafe_html_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        flag = kw.get("unsafe_allow_html")
        if flag is None or (isinstance(flag, ast.Constant) and flag.value is False):
            continue
        args = list(node.args) + [v for k, v in kw.items() if k in ("body", "text")]
        constant = bool(args) and all(isinstance(a, ast.Constant) and a.value in _ALLOWED_UNSAFE for a in args)
        if not constant:
            bad.append(f"{path.name}:{node.lineno}")
    return bad


def test_no_page_or_component_renders_html_from_non_constant_text():
    files = [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "pages").glob("*.py")),
             *sorted((REPO_ROOT / "components").rglob("*.py"))]
    bad = [b for f in files for b in _unsafe_html_calls(f)]
    # Also catch st.html / components.html, which always render HTML.
    for f in files:
        text = f.read_text()
        for m in re.finditer(r"\bst\.html\(|components\.v1\.html\(|\bst\.components\.v1\.html\(", text):
            bad.append(f"{f.relative_to(REPO_ROOT)}:{text.count(chr(10), 0, m.start()) + 1} (st.html)")
    assert not bad, f"unsafe_allow_html / st.html with non-constant text at {bad}"


def test_the_unsafe_html_scan_can_fail(tmp_path):
    p = tmp_path / "probe.py"
    p.write_text("import streamlit as st\nx = input()\nst.markdown(x, unsafe_allow_html=True)\n"
                 "st.markdown('<b>constant</b>', unsafe_allow_html=False)\n")
    assert _unsafe_html_calls(p) == ["probe.py:3"]


# ============================================================================================ AppTest
@pytest.fixture
def app() -> AppTest:
    if not (zoo_dir() / BASE / "config.json").is_file():
        pytest.skip("demo zoo not trained yet")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


def _chart_specs(at: AppTest) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def _assert_page_safe(at: AppTest) -> None:
    assert not at.exception, at.exception
    specs = _chart_specs(at)
    assert specs, "no chart was drawn"
    for spec in specs:
        fig = go.Figure(json.loads(spec))
        assert not unescaped(fig), unescaped(fig)[:3]
    assert any("&lt;" in s for s in specs), "the hostile prompt does not reach any chart"
    # Text elsewhere (e.g. the lens page's warning that quotes the typed target) goes through Streamlit's
    # markdown, which shows raw HTML as text unless allow_html is set: no element may set it.
    html_on = [el.value for el in at.markdown if el.proto.allow_html]
    assert not html_on, html_on


@needs_zoo
def test_lens_page_with_a_hostile_typed_prompt(app):
    app.switch_page("pages/logit_lens.py")
    app.run()
    app.text_area(key="lens__prompts_typed").set_value(HOSTILE)
    app.text_input(key="lens_target_text").set_value(IMG)
    app.run()
    app.button(key="lens_run").click().run()
    assert not app.error, [e.value for e in app.error]
    _assert_page_safe(app)


@needs_zoo
def test_flow_page_with_a_hostile_typed_prompt(app):
    app.switch_page("pages/logit_flow.py")
    app.run()
    source = [r for r in app.radio if r.key and r.key.endswith("__prompts_source")]
    assert source, [r.key for r in app.radio]
    source[0].set_value("Typed").run()
    typed = [t for t in app.text_area if t.key and t.key.endswith("__prompts_typed")]
    assert typed, [t.key for t in app.text_area]
    typed[0].set_value(HOSTILE)
    app.text_input(key="flow_target").set_value(IMG)
    app.run()
    app.button(key="flow_run").click().run()
    assert not app.error, [e.value for e in app.error]
    _assert_page_safe(app)


@needs_zoo
def test_over_long_typed_prompt_on_the_lens_page_is_an_error_message_not_a_traceback(app):
    app.switch_page("pages/logit_lens.py")
    app.run()
    app.text_area(key="lens__prompts_typed").set_value(" Paris" * 400)
    app.run()
    app.button(key="lens_run").click().run()
    assert not app.exception, app.exception
    assert any("context" in e.value and "128" in e.value for e in app.error), [e.value for e in app.error]


def test_sidebar_shows_a_message_for_a_model_folder_that_does_not_exist(tmp_path):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    from components.model_state import OTHER
    at.selectbox(key="model_choice_A").set_value(OTHER)
    at.text_input(key="model_other_A").set_value(str(tmp_path / "missing" / IMG))
    form_buttons = [b for b in at.button if "Load A" in (b.label or "")]
    form_buttons[0].click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Checkpoint A:") and "No such folder" in e for e in errors), errors


def test_sidebar_shows_one_line_for_a_model_folder_with_a_lying_header(tmp_path):
    """A safetensors header that declares a [10^6, 10^6] tensor: the app says so in one line and keeps working."""
    import json
    import struct

    from components.model_state import OTHER
    from tests.model_folders import write_model_folder

    folder = write_model_folder(tmp_path / "liar", "llama")
    raw = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k.endswith("embed_tokens.weight"))
    header[name] = {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.selectbox(key="model_choice_A").set_value(OTHER)
    at.text_input(key="model_other_A").set_value(str(folder))
    [b for b in at.button if "Load A" in (b.label or "")][0].click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Checkpoint A:") and name in e and "\n" not in e for e in errors), errors
