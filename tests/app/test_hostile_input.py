"""Hostile and broken input (issue #9, part 1): every case ends in a clear user-facing message or escaped text.

Each test asserts on what the person using the app sees: the sentence of the error (str(err), which the
pages show with st.error), the notes shown under a prompt set, the exported HTML and CSV, and the download
name. This file covers the engine's inputs (uploads, model folders, over-long prompts, numerical errors) and
the exports; the figures and the pages themselves are in tests/app/test_hostile_pages.py.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis.core.errors import (
    IncompatibleModelsError,
    InputError,
    LogitscopeError,
    ModelLoadError,
    NumericalError,
    PromptSetError,
    UnsupportedArchitectureError,
)
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import REPO_ROOT
from analysis.models.tiny import tiny_model
from analysis.prompts import PromptRow, PromptSet, check_context, parse_prompt_file, prompt_set_from_text
from components import exporting
from tests.hostile_fixtures import BASE, HOSTILE, IMG, LLAMA, SCRIPT, TUNED, needs_zoo, zoo_models
from tests.model_folders import write_model_folder


@pytest.fixture(scope="module")
def zoo():
    return zoo_models()


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
    import analysis.lens as L
    from analysis.steering import check_compatible, extract_vectors, persona_drift
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
    import analysis.lens as L
    import analysis.shift as shift
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
    import analysis.flow as flow
    import analysis.lens as L
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
