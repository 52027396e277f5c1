"""`python -m logitscope <command>` writes the same files as the page's bundle.

Each page is run under AppTest on the demo zoo with tiny built-in prompt sets (LOGITSCOPE_PROMPTS_DIR points at
truncated copies, so the page's default sets and the command's are the same small files); the page's
export_bundle call is captured (AppTest cannot click a download button) and the command line's output folder is
compared with it: the same figure and data file names, byte-identical table CSVs, and metadata.json with the same
keys, models, settings and prompt-set hash. The command runs in-process through analysis.cli.main (HTML figures);
one subprocess run proves the `python -m analysis` entry point and PNG export.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import ModelSpec
from components import exporting
from logitscope.cli import main
from tests.paths import REPO

APP = str(REPO / "app.py")
BASE, TUNED = "gpt2-world-base", "gpt2-world-tuned"
# rows kept of each built-in set: enough for every analysis (OOD needs >= 4 ID prompts to split, contrasts two groups)
KEEP = {"facts.jsonl": 12, "two_hop.jsonl": 3, "persona_pairs.jsonl": 12, "persona_eval.jsonl": 4,
        "corpus_sample.txt": 10, "induction.jsonl": 4, "ood_arithmetic.jsonl": 4, "ood_random_chars.jsonl": 4,
        "ood_scrambled.jsonl": 4, "changed_facts.jsonl": 5}
BUNDLE_KEYS = {"package_versions", "created_utc", "static_export", "files"}  # what build_bundle adds


@pytest.fixture(scope="module")
def tiny_prompts(tmp_path_factory):
    """A prompts folder with the first rows of each built-in set, used by the pages and the command line."""
    root = tmp_path_factory.mktemp("prompts")
    for name, n in KEEP.items():
        lines = (REPO / "data" / "prompts" / name).read_text(encoding="utf-8").splitlines()
        (root / name).write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_PROMPTS_DIR", str(root))
        yield root


def _page(page: str, compare: bool) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["logitscope_spec_A"] = ModelSpec(BASE)
    if compare:
        at.session_state["logitscope_use_B"] = True
        at.session_state["logitscope_spec_B"] = ModelSpec(TUNED)
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _cli(tmp_path: Path, *args: str, formats: str = "html") -> Path:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--formats", formats, "--quiet"]) == 0
    return out


def _plain(obj):
    """obj as metadata.json holds it (numpy values, tuples, NaN made JSON the way build_bundle does)."""
    return exporting.finite_or_none(json.loads(json.dumps(obj, default=exporting.json_default)))


def assert_same_bundle(out: Path, got: dict, formats=("html",)) -> None:
    """The folder holds exactly the page bundle's files, identical tables and the same metadata."""
    assert got, "the page did not reach its export_bundle call"
    figures, tables, meta = got["figures"], got["tables"], got["metadata"]
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    want = ({f"figures/{exporting.safe_filename(n)}.{fmt}" for n in figures for fmt in formats}
            | {f"data/{exporting.safe_filename(n)}.{ext}" for n in tables for ext in ("csv", "json")}
            | {e["file"] for sets in meta.get("inputs", {}).values() for e in sets}
            | {"metadata.json"} | ({exporting.BUNDLE_PLOTLYJS} if figures and "html" in formats else set()))
    assert files == want, (f"only the command line wrote {sorted(files - want)}; "
                           f"only the page's bundle has {sorted(want - files)}")
    for name, df in tables.items():
        path = out / "data" / f"{exporting.safe_filename(name)}.csv"
        assert path.read_bytes() == exporting.table_csv(df), f"table {name} differs from the page's"
    written = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert set(written) == set(meta) - {"prompt_files"} | BUNDLE_KEYS
    for path, data in meta.get("prompt_files", {}).items():  # the exact prompts, as the page ran them
        assert (out / path).read_bytes() == data
    assert written["page"] == meta["page"]
    assert written["settings"] == _plain(meta["settings"])
    assert written["models"] == _plain(meta["models"])
    assert written.get("prompt_set") == _plain(meta.get("prompt_set"))
    assert written["notes"] == _plain(meta["notes"])  # the engine's notes reach metadata.json from both
    assert sorted(written["files"]) == sorted(files - {"metadata.json"})


# ------------------------------------------------------------------------------------------ one test per page
def test_lens_compare_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("logit_lens", compare=True)
    at.radio(key="lens__prompts_source").set_value("Built-in").run()
    at.selectbox(key="lens__prompts_builtin").set_value("facts").run()
    at.button(key="lens_run").click().run()
    _ok(at)
    assert {"heatmap_A", "heatmap_B", "kl_a_b_heatmap"} <= set(captured["figures"])
    out = _cli(tmp_path, "lens", "--model", BASE, "--model-b", TUNED, "--prompts", "facts")
    assert_same_bundle(out, captured)


def test_flow_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("logit_flow", compare=False)
    at.button(key="flow_run").click().run()
    _ok(at)
    assert {"flow_A", "set_layers_A", "target_vs_competitor_A"} <= set(captured["figures"])
    out = _cli(tmp_path, "flow", "--model", BASE)
    assert_same_bundle(out, captured)


def test_shift_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("checkpoint_shift", compare=True)
    at.button(key="shift_run").click().run()
    _ok(at)
    assert {"token_bars", "shift_heatmap", "layer_kl"} <= set(captured["figures"])
    out = _cli(tmp_path, "shift", "--model", BASE, "--model-b", TUNED)
    assert_same_bundle(out, captured)


def test_ood_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("ood", compare=False)
    at.button(key="ood_run").click().run()
    _ok(at)
    assert {"metrics_A", "histograms_A", "map_A"} <= set(captured["figures"])
    out = _cli(tmp_path, "ood", "--model", BASE)
    assert_same_bundle(out, captured)


def test_neurons_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("confidence_neurons", compare=False)
    at.number_input(key="neurons_n_random").set_value(2).run()
    at.button(key="neurons_run").click().run()
    at.number_input(key="neurons_random_sets").set_value(1).run()
    at.button(key="neurons_run_ind").click().run()
    _ok(at)
    assert {"norm_vs_rho_A", "te_de_boxes_A", "induction_A"} <= set(captured["figures"])
    out = _cli(tmp_path, "neurons", "--model", BASE, "--n-random", "2", "--random-sets", "1")
    assert_same_bundle(out, captured)


def test_neurons_reads_old_and_new_ids_and_writes_only_the_new_form(tiny_prompts, tmp_path, capsys):
    """--neurons takes 'L0.N10' and the old '0.1'; metadata and tables say L0.N1, never 0.1 (read back as 0.1)."""
    import pandas as pd

    out = _cli(tmp_path, "neurons", "--model", BASE, "--parts", "ablate", "--neurons", "0.1, L0.N10", "--mode", "zero",
               "--n-random", "0", "--max-prompts", "2", "--no-set")
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["settings"]["neurons"] == "L0.N1, L0.N10" and meta["settings"]["as_set"] is False
    units = pd.read_csv(out / "data" / "ablation_summary_A.csv")["unit"]
    assert list(units) == ["L0.N1", "L0.N10"]
    assert main(["neurons", "--model", BASE, "--parts", "ablate", "--neurons", "L0.N1, 0-1", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2
    assert "'0-1' is not a neuron id" in capsys.readouterr().err


def test_steer_writes_the_page_bundle(tiny_prompts, captured, tmp_path):
    at = _page("steering", compare=True)
    at.button(key="steer_build_btn").click().run()
    at.button(key="steer_monitor_btn").click().run()
    at.number_input(key="steer_flag_tokens").set_value(4).run()
    at.button(key="steer_flag_btn").click().run()
    at.number_input(key="steer_new_tokens").set_value(4).run()
    at.button(key="steer_gen_btn").click().run()
    at.text_input(key="steer_sweep_alphas").set_value("0, 4").run()
    at.button(key="steer_sweep_btn").click().run()
    at.button(key="steer_drift_btn").click().run()
    _ok(at)
    assert {"separability", "monitoring_B", "data_flagging", "generations", "steering_sweep",
            "persona_drift"} <= set(captured["figures"])
    out = _cli(tmp_path, "steer", "--model", BASE, "--model-b", TUNED, "--flag-tokens", "4", "--new-tokens", "4",
               "--sweep-alphas", "0, 4")
    assert_same_bundle(out, captured)


# ------------------------------------------------------------------------------------------ the command line itself
def test_python_m_analysis_runs_and_writes_png(tiny_prompts, tmp_path):
    """The real entry point in a fresh interpreter, PNG included (or HTML with the reason when no browser)."""
    prompts = tmp_path / "two.txt"
    prompts.write_text("Braba Kadro lives in\nFate Trukeir lives in\n", encoding="utf-8")
    out = tmp_path / "lens"
    proc = subprocess.run([sys.executable, "-m", "logitscope", "lens", "--prompts", str(prompts), "--target", "none",
                           "--out", str(out), "--formats", "png,html"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "lens" in proc.stderr and "100%" in proc.stderr  # the progress bar
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["prompt_set"]["name"] == "two.txt" and meta["prompt_set"]["n_prompts"] == 2
    assert meta["models"]["A"]["name"] == BASE and meta["settings"]["target"] == "none"
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"heatmap_A.html", "mean_kl.html", "decision_depth.html"} <= figs
    if meta["static_export"]["available"]:
        png = (out / "figures" / "heatmap_A.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    else:
        assert meta["static_export"]["reason"]


def test_project_errors_print_a_message_and_exit_2(tiny_prompts, tmp_path, capsys):
    assert main(["lens", "--prompts", "no_such_set", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no_such_set" in err and "Traceback" not in err
    assert main(["shift", "--out", str(tmp_path / "y"), "--quiet"]) == 2  # shift needs --model-b
    assert "--model-b" in capsys.readouterr().err
    assert main(["lens", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_an_earlier_run_is_not_mixed_in_without_force(tiny_prompts, tmp_path, capsys):
    out = _cli(tmp_path, "lens", "--prompts", "changed_facts")
    (out / "figures" / "stale.html").write_text("old", encoding="utf-8")
    assert main(["lens", "--prompts", "changed_facts", "--out", str(out), "--formats", "html", "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["lens", "--prompts", "changed_facts", "--out", str(out), "--formats", "html", "--quiet",
                 "--force"]) == 0
    assert not (out / "figures" / "stale.html").exists()


@pytest.mark.parametrize("command", ["lens", "flow", "steer", "neurons", "shift", "ood"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--model" in text and "--prompts" in text and "--formats" in text


def test_reports_exporting_and_cli_never_import_streamlit():
    code = ("import sys; sys.modules['streamlit'] = None\n"
            "import components.reports, components.reports.lens, components.reports.flow, "
            "components.reports.steering, components.reports.neurons, components.reports.shift, "
            "components.reports.ood, components.exporting, logitscope.cli\n"
            "logitscope.cli.build_parser()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_engine_notes_reach_metadata_and_stderr(tmp_path, capsys):
    """A multi-token target's note (flow and lens) is in metadata.json and printed, not only shown on the page."""
    path = tmp_path / "multi.jsonl"
    path.write_text(json.dumps({"prompt": "Braba Kadro lives in", "target": " Liloru Liloru"}) + "\n",
                    encoding="utf-8")
    for command in ("flow", "lens"):
        out = tmp_path / command
        assert main([command, "--model", BASE, "--prompts", str(path), "--out", str(out), "--formats", "html",
                     "--quiet"]) == 0
        notes = json.loads((out / "metadata.json").read_text(encoding="utf-8"))["notes"]
        assert any("Liloru Liloru" in n for n in notes), (command, notes)
        assert "Liloru Liloru" in capsys.readouterr().err


def test_logitscope_app_passes_what_follows_to_streamlit_and_other_commands_refuse_unknown_flags(capsys):
    from analysis.core.paths import DATA_ROOT

    assert main(["app", "--print-command", "--server.port", "8502", "--server.headless", "true"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-5:] == [str(DATA_ROOT / "app.py"), "--server.port", "8502", "--server.headless", "true"]
    assert printed[1:4] == ["-m", "streamlit", "run"]
    with pytest.raises(SystemExit) as stop:
        main(["lens", "--model", "gpt2-world-base", "--out", "unused", "--server.port", "8502"])
    assert stop.value.code == 2 and "unrecognized arguments: --server.port 8502" in capsys.readouterr().err
