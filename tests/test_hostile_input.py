"""Hostile and broken input (issue #9, part 1): every case ends in a clear user-facing message or escaped text.

Each test asserts on what the person using the app sees: the sentence of the error (str(err), which the
pages show with st.error), the notes shown under a prompt set, the strings inside figure JSON (plotly
renders a subset of HTML in text, hover, annotations, tick and Sankey labels, titles), the exported
HTML and CSV, and the download name.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from analysis.errors import (IncompatibleModelsError, InputError, LogitscopeError, ModelLoadError, NumericalError,
                             PromptSetError, UnsupportedArchitectureError)
from analysis.loading import REPO_ROOT, ModelSpec, load_model, zoo_dir
from analysis.prompts import PromptRow, PromptSet, check_context, load_builtin, parse_prompt_file, prompt_set_from_text
from analysis.tiny import tiny_model
from components import exporting
from tests.model_folders import write_model_folder

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
HOSTILE = f"The capital of {IMG} is {SCRIPT}"
APP = str(REPO_ROOT / "app.py")
BASE, TUNED, LLAMA = "gpt2-world-base", "gpt2-world-tuned", "llama-world-base"

needs_zoo = pytest.mark.skipif(not all((zoo_dir() / n / "config.json").is_file() for n in (BASE, TUNED, LLAMA)),
                               reason="demo zoo not trained yet (python -m analysis.demo.train)")


# ============================================================================================ uploads
def _message(exc_info) -> str:
    return str(exc_info.value)


def test_binary_upload_says_binary_not_text():
    data = b"prompt\nPK\x03\x04\x00\x00\x08\x00binary zip bytes"
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("prompts.csv", data)
    msg = _message(e)
    assert "prompts.csv" in msg and "binary" in msg and "NUL byte" in msg and "line 2" in msg


def test_utf16_upload_says_save_as_utf8():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("prompts.txt", "hello\n".encode("utf-16"))
    assert "UTF-16" in _message(e) and "UTF-8" in _message(e)


def test_latin1_upload_names_the_byte_and_line():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("prompts.txt", "first\nsecond caf\xe9\n".encode("latin-1"))
    msg = _message(e)
    assert "not UTF-8" in msg and "0xE9" in msg and "line 2" in msg and "Save the file as UTF-8" in msg


def test_upload_over_the_size_cap_is_refused_with_both_sizes():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("big.txt", b"a\n" * 2_600_000)
    msg = _message(e)
    assert "big.txt is 5.2 MB" in msg and "the limit is 5.0 MB" in msg and "Split it" in msg


def test_size_cap_matches_the_server_upload_cap():
    """The engine's default cap is not larger than what the server accepts (maxUploadSize, in MB)."""
    import inspect
    import tomllib
    cfg = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    default = inspect.signature(parse_prompt_file).parameters["max_bytes"].default
    assert default <= cfg["server"]["maxUploadSize"] * 1024 * 1024


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_100k_rows_are_refused_with_the_limit(suffix):
    if suffix == ".txt":
        data = "".join(f"prompt {i}\n" for i in range(100_000))
    elif suffix == ".csv":
        data = "prompt\n" + "".join(f"prompt {i}\n" for i in range(100_000))
    else:
        data = "".join(f'{{"prompt": "p {i}"}}\n' for i in range(100_000))
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("many" + suffix, data.encode())
    msg = _message(e)
    assert "the limit is 10,000" in msg and "Split it into smaller sets" in msg
    assert ("100,000 prompts" in msg) or ("more than 10,000 prompts" in msg and "line" in msg)


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_a_million_character_prompt_is_refused_naming_the_line(suffix):
    big = "x" * 1_000_000
    data = {".txt": f"short\n{big}\n", ".csv": f"prompt\nshort\n{big}\n",
            ".jsonl": json.dumps({"prompt": "short"}) + "\n" + json.dumps({"prompt": big}) + "\n"}[suffix]
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("long" + suffix, data.encode())
    msg = _message(e)
    assert ("line 2" in msg if suffix != ".csv" else "line 3" in msg), msg
    assert "20,000" in msg and ("1,000,000 characters" in msg or "longer than" in msg)


def test_a_million_character_typed_prompt_is_refused():
    with pytest.raises(PromptSetError) as e:
        prompt_set_from_text("x" * 1_000_000)
    assert "Typed prompts, line 1" in _message(e) and "1,000,000 characters" in _message(e)


def test_csv_without_prompt_column_lists_the_columns_found():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("set.csv", b"text,target\nhello, world\n")
    msg = _message(e)
    assert "no 'prompt' column" in msg and "'text'" in msg and "'target'" in msg


def test_jsonl_without_prompt_field_names_the_line():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("set.jsonl", b'{"prompt": "ok"}\n{"text": "no prompt"}\n')
    msg = _message(e)
    assert "line 2" in msg and 'no "prompt" field' in msg and "'text'" in msg


def test_csv_row_with_extra_fields_is_refused_with_a_hint():
    with pytest.raises(PromptSetError) as e:
        parse_prompt_file("set.csv", b"prompt,target\na,b,c\n")
    assert "line 2" in _message(e) and "3 fields" in _message(e) and "Quote fields" in _message(e)


def test_extra_csv_columns_are_reported_in_notes_not_dropped_silently():
    ps = parse_prompt_file("set.csv", b"prompt,target,score,<b>x</b>\nhello, world,3,y\n")
    assert ps.prompts == ["hello"]
    assert any("Ignored unknown columns" in n and "score" in n and "<b>x</b>" in n for n in ps.notes), ps.notes


def test_extra_jsonl_fields_are_reported_in_notes():
    ps = parse_prompt_file("set.jsonl", b'{"prompt": "hello", "score": 3, "meta": {"a": 1}}\n')
    assert any("Ignored unknown fields" in n and "score" in n and "meta" in n for n in ps.notes), ps.notes


def test_hostile_prompt_text_is_kept_as_data():
    ps = parse_prompt_file("set.csv", f'prompt,target\n"{HOSTILE}",{IMG}\n'.encode())
    assert ps.prompts == [HOSTILE] and ps.targets == [IMG]


# ============================================================================================ models
def test_missing_local_folder_is_a_clear_message(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(tmp_path / "nope" / "model")))
    assert "No such folder" in _message(e) and "local model folder" in _message(e)


def test_unknown_hub_id_offline_says_to_pass_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec("no-such-org/no-such-model-xyz"))
    assert "Hugging Face Hub" in _message(e) and "local folder" in _message(e)


def test_hostile_model_id_is_refused(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(IMG))
    assert "No such folder" in _message(e)


def test_folder_with_config_but_no_weights(tmp_path):
    path = write_model_folder(tmp_path / "m", "gpt2", no_weights=True)
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(path)))
    assert "has a config.json but no weights" in _message(e)


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path):
    path = write_model_folder(tmp_path / "m", "gpt2", pickle_only=True)
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(path)))
    assert "only has pickle weights" in _message(e) and "explicitly allow pickle" in _message(e)


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import BertConfig
    path = tmp_path / "bert"
    path.mkdir()
    BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(path)
    (path / "model.safetensors").write_bytes(b"")  # never read: the architecture is refused first
    with pytest.raises(UnsupportedArchitectureError) as e:
        load_model(ModelSpec(str(path)))
    assert "Architecture 'bert'" in _message(e) and "not supported" in _message(e) and "Supported:" in _message(e)


def test_tiny_models_of_different_depth_or_width_are_clear_errors():
    """Lens compare needs the same depth; vectors and drift need the same width: a message, not a shape traceback."""
    from analysis import lens as L
    from analysis.persona_drift import persona_drift
    from analysis.steering_vectors import check_compatible, extract_vectors
    a, deep, wide = tiny_model("gpt2"), tiny_model("gpt2", layers=3), tiny_model("gpt2", d=48)
    with pytest.raises(IncompatibleModelsError) as e:
        L.lens_compare(a, deep, ["5 17 3"])
    assert "2 layers" in _message(e) and "3" in _message(e) and "same depth" in _message(e)
    rows = [PromptRow(i + 1, f"{7 if i % 2 else 9} {10 + i} 5", group="pos" if i % 2 else "neg") for i in range(8)]
    ps = PromptSet.from_rows("toy", rows)
    sv = extract_vectors(a, ps, positive="pos", negative="neg")
    with pytest.raises(IncompatibleModelsError) as e:
        check_compatible(sv, wide)
    assert "32-dimensional" in _message(e) and "width 48" in _message(e)
    with pytest.raises(IncompatibleModelsError) as e:
        persona_drift(a, wide, ps, sv)
    assert "width 48" in _message(e)


@needs_zoo
def test_gpt2_vs_llama_comparisons_are_clear_errors(zoo):
    from analysis import lens as L
    from analysis import shift
    a, llama = zoo[BASE], zoo[LLAMA]
    with pytest.raises(IncompatibleModelsError) as e:
        L.check_compatible(a, llama)
    assert "tokeniz" in _message(e).lower() or "vocab" in _message(e).lower(), _message(e)
    with pytest.raises(LogitscopeError) as e:
        shift.require_lens_compatible(a, llama)
    assert isinstance(e.value, IncompatibleModelsError), type(e.value)
    assert len(_message(e)) > 20 and "Traceback" not in _message(e)


# ============================================================================================ context, NaN
@needs_zoo
def test_prompt_longer_than_the_context_names_the_row(zoo):
    lm = zoo[BASE]
    ps = PromptSet.from_rows("set", [PromptRow(1, "short"), PromptRow(7, " Paris" * 400)])
    with pytest.raises(PromptSetError) as e:
        check_context(ps, lm.tokenizer, lm.context_length)
    msg = _message(e)
    assert "line 7" in msg and f"context of {lm.context_length}" in msg and "Shorten" in msg


@needs_zoo
def test_pages_engines_refuse_over_long_prompts_with_a_message(zoo):
    from analysis import flow
    from analysis import lens as L
    from analysis.steering import Steer, compare_generations
    lm = zoo[BASE]
    long = " Paris" * 400
    steer = Steer(1, np.ones(lm.adapter.d_model, dtype=np.float32), 1.0)
    for call in (lambda: L.lens_trace(lm, [long], k=3), lambda: L.lens_compare(lm, zoo[TUNED], [long]),
                 lambda: flow.logit_flow(lm, long), lambda: compare_generations(lm, long, steer, max_new_tokens=2)):
        with pytest.raises(InputError) as e:
            call()
        assert "context" in _message(e) and "128" in _message(e), _message(e)


@needs_zoo
def test_steering_with_alpha_1e30_is_a_numerical_error_message(zoo):
    from analysis.steering import Steer, steered_logits
    lm = zoo[BASE]
    v = np.ones(lm.adapter.d_model, dtype=np.float32)
    ids = [lm.tokenizer("The capital of France is")["input_ids"]]
    with pytest.raises(NumericalError) as e:
        steered_logits(lm, ids, Steer(2, v, 1e30))
    assert "alpha = 1e+30" in _message(e) and "smaller |alpha|" in _message(e)


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
    if not all((zoo_dir() / n / "config.json").is_file() for n in (BASE, TUNED, LLAMA)):
        pytest.skip("demo zoo not trained yet")
    return {n: load_model(ModelSpec(n, device="cpu", dtype="float32")) for n in (BASE, TUNED, LLAMA)}


@needs_zoo
def test_lens_figures_escape_hostile_prompt_and_tokens(zoo):
    from analysis import lens as L
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
    from analysis import flow
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
    from analysis.persona_drift import flag_data, persona_drift
    from analysis.steering import Steer, compare_generations, steering_sweep
    from analysis.steering_vectors import extract_vectors, monitor
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
    from analysis import shift
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
    from analysis import ood as O
    from analysis.ood_features import extract_features
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
    from analysis.neuron_ablation import ablate, build_units
    from analysis.neuron_scan import scan_entropy
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


# ============================================================================================ exports
def _hostile_figure() -> go.Figure:
    from components.charts.text import safe_text, token_label
    fig = go.Figure(go.Heatmap(z=[[1, 2]], x=[token_label(SCRIPT), token_label(IMG)], y=[0],
                               text=[[token_label(SCRIPT), token_label("</script><script>alert(2)</script>")]],
                               customdata=[[safe_text(HOSTILE), safe_text(SCRIPT)]],
                               hovertemplate="%{customdata}<extra></extra>", texttemplate="%{text}"))
    fig.update_layout(title=safe_text(HOSTILE))
    return fig


def test_exported_html_cannot_be_closed_by_user_text():
    html = exporting.figure_bytes(_hostile_figure(), "html").decode("utf-8")
    # plotly.js itself is inlined and legitimately contains '<script' in strings: look at the figure's own call.
    start = html.index("Plotly.newPlot(")
    call = html[start: html.index("</script>", start)]
    assert "alert(1)" in call or "alert" in call  # the payload is in the figure (escaped)
    assert "<script" not in call.lower() and "<img" not in call.lower() and "</script" not in call.lower()
    # Whole document: the only script-closing tags are the ones plotly writes (one per script element).
    assert html.lower().count("</script>") == html.lower().count("<script")


def test_exported_html_escapes_even_unescaped_figure_text():
    """Defence in depth: a figure built with raw text still cannot break out of the script element."""
    fig = go.Figure(go.Bar(x=[SCRIPT], y=[1]), layout={"title": "</script><script>alert(3)</script>"})
    html = exporting.figure_bytes(fig, "html").decode("utf-8")
    start = html.index("Plotly.newPlot(")
    call = html[start: html.index("</script>", start)]
    assert "alert(3)" in call and "</script" not in call.lower()


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
                                  "\t=1", "\r=1", "=1+1"])
def test_csv_cells_that_start_a_formula_are_neutralised(cell):
    import csv
    import io
    text = exporting.table_csv(pd.DataFrame({"prompt": [cell], cell: ["x"]})).decode()
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    assert header == ["prompt", "'" + cell], header  # a hostile column name too
    assert row == ["'" + cell, "x"], row


def test_csv_numbers_are_left_alone():
    text = exporting.table_csv(pd.DataFrame({"v": ["-1.5", "+2"], "n": [-1.5, 2.0]})).decode()
    assert "-1.5,-1.5" in text and "+2,2.0" in text


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path", "a/b\\c", "con", "NUL.txt",
                                  "\x00evil", IMG, SCRIPT, "." * 50, "x" * 500, "", "é/../ü", "-rf", ".bashrc"])
def test_export_names_cannot_escape_the_download_name(name):
    out = exporting.safe_filename(name, "csv")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.csv", out), out
    assert "/" not in out and "\\" not in out and ".." not in out and len(out) <= exporting.MAX_FILENAME_LEN
    assert out.split(".")[0].lower() not in {"con", "nul", "prn", "aux"}


def test_bundle_paths_stay_inside_the_zip_folders():
    import io
    import zipfile
    data = exporting.build_bundle({"../../evil": _hostile_figure()}, {"/etc/passwd": pd.DataFrame({"a": ["=1"]})},
                                  {"page": IMG}, formats=("html",))
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    fixed = {"metadata.json", exporting.BUNDLE_PLOTLYJS}  # the bundle's own files, never named by the user
    assert all(n.startswith(("figures/", "data/")) or n in fixed for n in names), names
    assert not any(".." in n or n.count("/") > 1 for n in names), names


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
