"""Export of figures, tables and bundles (components/exporting.py, components/export_ui.py)."""
from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from components import exporting
from components.exporting import ExportError

HAS_BROWSER, _WHY = exporting.static_export_available()
needs_browser = pytest.mark.skipif(not HAS_BROWSER, reason=_WHY)


@pytest.fixture(scope="module")
def fig() -> go.Figure:
    """A small heatmap with a title and axis labels, like the lens pages draw."""
    f = go.Figure(go.Heatmap(z=[[0.1, 0.9], [0.5, -0.3]], x=["tok_a", "tok_b"], y=["L0", "L1"]))
    f.update_layout(title="lens_heatmap_title", width=400, height=300)
    return f


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Hide every browser: a dead LOGITSCOPE_CHROME-free search, no fixed paths, empty PATH."""
    monkeypatch.delenv("LOGITSCOPE_CHROME", raising=False)
    monkeypatch.setattr(exporting, "BROWSER_CANDIDATES", ())
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.fixture(scope="module", autouse=True)
def _close_browser_after_module():
    yield
    exporting.close_browser()


# --------------------------------------------------------------------------- figures


@needs_browser
def test_png_bytes_carry_png_signature(fig):
    data = exporting.figure_bytes(fig, "png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


@needs_browser
def test_png_default_scale_doubles_layout_size(fig):
    data = exporting.figure_bytes(fig, "png")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 600)


@needs_browser
def test_svg_parses_as_xml_with_svg_root_and_title(fig):
    data = exporting.figure_bytes(fig, "svg")
    root = ET.fromstring(data)
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    assert b"lens_heatmap_title" in data


@needs_browser
def test_pdf_starts_with_pdf_magic(fig):
    assert exporting.figure_bytes(fig, "pdf").startswith(b"%PDF")


@needs_browser
def test_static_export_reuses_one_browser_and_is_fast_when_warm(fig):
    import time

    exporting.figure_bytes(fig, "png")  # warm
    start = time.perf_counter()
    for _ in range(3):
        exporting.figure_bytes(fig, "svg")
    assert (time.perf_counter() - start) / 3 < 5.0


@needs_browser
def test_concurrent_exports_each_get_their_own_figure():
    import threading

    out: dict[int, bytes] = {}

    def work(i: int) -> None:
        f = go.Figure(go.Bar(x=["a"], y=[i]), layout={"title": f"thread_{i}_title"})
        out[i] = exporting.figure_bytes(f, "svg")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(f"thread_{i}_title".encode() in out[i] for i in range(4))


@needs_browser
def test_export_recovers_after_the_browser_dies_or_idles_out(fig, monkeypatch):
    import os
    import signal
    import time

    exporting.figure_bytes(fig, "png")
    os.kill(exporting._RENDERER._kaleido.subprocess.pid, signal.SIGKILL)
    assert exporting.figure_bytes(fig, "png").startswith(b"\x89PNG")  # restarted transparently

    monkeypatch.setattr(exporting, "IDLE_CLOSE_S", 0.2)
    exporting.figure_bytes(fig, "svg")
    deadline = time.monotonic() + 20
    while exporting._RENDERER._kaleido is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exporting._RENDERER._kaleido is None, "idle browser was not closed"
    monkeypatch.setattr(exporting, "IDLE_CLOSE_S", 300.0)
    assert exporting.figure_bytes(fig, "pdf").startswith(b"%PDF")


@needs_browser
def test_static_export_accepts_figure_dict(fig):
    assert exporting.figure_bytes(fig.to_dict(), "png").startswith(b"\x89PNG")


def test_html_is_self_contained_and_contains_the_plot(fig):
    html = exporting.figure_bytes(fig, "html").decode("utf-8")
    assert "<html" in html[:200].lower()
    assert "lens_heatmap_title" in html and "tok_a" in html
    assert "Plotly.newPlot" in html
    assert not re.search(r"<script[^>]+src=[\"']https?://", html), "must work offline"


def test_unknown_figure_format_is_a_clear_error(fig):
    with pytest.raises(ExportError, match="Unknown figure format"):
        exporting.figure_bytes(fig, "bmp")


def test_missing_browser_raises_clear_error(fig, no_browser):
    with pytest.raises(ExportError) as info:
        exporting.figure_bytes(fig, "png")
    assert str(info.value) == exporting.NO_BROWSER_MESSAGE
    assert "chromium" in str(info.value) and "LOGITSCOPE_CHROME" in str(info.value)
    assert exporting.static_export_available() == (False, exporting.NO_BROWSER_MESSAGE)


def test_nonexistent_logitscope_chrome_raises_clear_error(fig, monkeypatch, tmp_path):
    monkeypatch.setenv("LOGITSCOPE_CHROME", str(tmp_path / "no-such-chrome"))
    with pytest.raises(ExportError, match="Static export .PNG/SVG/PDF. needs Chrome or Chromium"):
        exporting.figure_bytes(fig, "svg")


def test_export_error_is_a_logitscope_error():
    from analysis.core.errors import LogitscopeError

    assert issubclass(ExportError, LogitscopeError)


# --------------------------------------------------------------------------- tables


def test_csv_neutralises_formula_cells_but_keeps_negative_numbers():
    df = pd.DataFrame(
        {
            "token": ["=HYPERLINK(\"x\")", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain", "-0.5"],
            "logit": [-1.5, 2.0, -3.25, 0.0, 1.0, -7.0, 3.0, 4.0],
            "rank": [-1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    out = pd.read_csv(io.BytesIO(exporting.table_csv(df)), keep_default_na=False)
    assert out["token"].tolist() == [
        "'=HYPERLINK(\"x\")", "'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "plain", "-0.5"
    ]
    assert out["logit"].tolist() == df["logit"].tolist()
    assert out["rank"].tolist() == df["rank"].tolist()
    text = exporting.table_csv(df).decode()
    assert ",-1.5,-1\r\n" in text  # numbers written bare, not quoted or prefixed


def test_csv_quotes_embedded_line_breaks():
    df = pd.DataFrame({"t": ["a\nb", "c\rd"]})
    out = pd.read_csv(io.BytesIO(exporting.table_csv(df)))
    assert out["t"].tolist() == ["a\nb", "c\rd"]


def test_csv_neutralises_header_and_keeps_index():
    df = pd.DataFrame({"=cmd": [1]}, index=pd.Index(["row"], name="prompt"))
    text = exporting.table_csv(df).decode()
    assert text.splitlines()[0] == "prompt,'=cmd"


def test_json_records_with_nan_as_null():
    df = pd.DataFrame({"a": [1.0, np.nan, np.inf], "b": ["x", None, "=y"]})
    records = json.loads(exporting.table_json(df))
    assert records == [
        {"a": 1.0, "b": "x"},
        {"a": None, "b": None},
        {"a": None, "b": "=y"},
    ]


# --------------------------------------------------------------------------- file names

HOSTILE = [
    "../../etc/passwd",
    "<img src=x onerror=alert(1)>",
    "",
    "con",
    "Ünïcödé 名前 ✓",
    "..",
    ".hidden",
    "-rf",
    "a/b\\c:d*e?f\"g|h",
    "x" * 500,
    "name\x00with\nnull",
]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("ext", ["png", "", ".csv", "../zip"])
def test_safe_filename_is_portable_and_never_empty(text, ext):
    name = exporting.safe_filename(text, ext)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert not name.startswith((".", "-"))
    assert "/" not in name and "\\" not in name and ".." not in name
    assert 0 < len(name) <= exporting.MAX_FILENAME_LEN
    stem = name.split(".")[0].lower()
    assert stem not in {"con", "prn", "aux", "nul"}


def test_safe_filename_examples():
    assert exporting.safe_filename("../../etc/passwd", "png") == "etc_passwd.png"
    assert exporting.safe_filename("", "csv") == "export.csv"
    assert exporting.safe_filename("con", "txt") == "con_.txt"
    assert exporting.safe_filename("Logit lens: Ünïcode", "svg") == "Logit_lens_Unicode.svg"


# --------------------------------------------------------------------------- bundle


def _bundle(fig, formats=("png", "svg", "html")):
    tables = {"lens/top-k": pd.DataFrame({"token": ["=x", "y"], "p": [0.25, np.nan]})}
    meta = {"model_a": "zoo/gpt2-base", "settings": {"layers": np.int64(4), "alpha": float("nan")}}
    return zipfile.ZipFile(io.BytesIO(exporting.build_bundle({"lens heatmap": fig}, tables, meta, formats)))


def test_package_versions_name_the_stack():
    versions = exporting.package_versions()
    for pkg in ("python", "torch", "plotly", "kaleido", "streamlit", "pandas", "numpy"):
        assert versions[pkg], pkg


@needs_browser
def test_bundle_holds_every_figure_format_data_and_metadata(fig):
    with _bundle(fig) as zf:
        names = set(zf.namelist())
        assert {
            "figures/lens_heatmap.png",
            "figures/lens_heatmap.svg",
            "figures/lens_heatmap.html",
            "data/lens_top-k.csv",
            "data/lens_top-k.json",
            "metadata.json",
        } <= names
        meta = json.loads(zf.read("metadata.json"))
        assert zf.read("figures/lens_heatmap.png").startswith(b"\x89PNG")
        assert json.loads(zf.read("data/lens_top-k.json"))[1]["p"] is None
    assert meta["model_a"] == "zoo/gpt2-base"
    assert meta["settings"] == {"layers": 4, "alpha": None}
    assert meta["package_versions"]["plotly"] and meta["package_versions"]["torch"]
    assert meta["static_export"]["available"] is True
    assert meta["created_utc"]
    assert set(meta["files"]) == names - {"metadata.json"}


def test_bundle_without_browser_still_has_html_data_and_reason(fig, no_browser):
    with _bundle(fig, formats=("png", "svg")) as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("metadata.json"))
    assert "figures/lens_heatmap.html" in names
    assert not any(n.endswith((".png", ".svg")) for n in names)
    assert {"data/lens_top-k.csv", "data/lens_top-k.json"} <= names
    assert meta["static_export"]["available"] is False
    assert "Chromium" in meta["static_export"]["reason"]
    assert meta["package_versions"]["plotly"]


def test_bundle_names_never_collide(fig, no_browser):
    data = exporting.build_bundle({"a/b": fig, "a b": fig}, {}, {}, ("html",))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        figs = sorted(n for n in zf.namelist() if n.startswith("figures/"))
    assert figs == ["figures/a_b-2.html", "figures/a_b.html"]


def test_bundle_metadata_is_strict_json(fig, no_browser):
    with _bundle(fig, formats=("html",)) as zf:
        text = zf.read("metadata.json").decode()
    assert "NaN" not in text
    json.loads(text)


# --------------------------------------------------------------------------- streamlit UI


def test_export_ui_renders_buttons_without_error():
    from streamlit.testing.v1 import AppTest

    def script():
        import pandas as pd
        import plotly.graph_objects as go

        from components.export_ui import export_bundle, export_figure

        f = go.Figure(go.Bar(x=["a"], y=[1]))
        export_figure(f, "bar chart", key="bar", data=pd.DataFrame({"x": ["a"], "y": [1]}))
        export_bundle({"bar": f}, {"bar": pd.DataFrame({"y": [1]})}, {"m": 1}, "bundle", key="b")

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception


def test_bundle_html_figures_share_one_offline_plotlyjs(fig, no_browser):
    """Each figure's HTML loads ../plotly.min.js, stored once: the zip stays small however many figures."""
    single = exporting.figure_bytes(fig, "html")
    data = exporting.build_bundle({f"f{i}": fig for i in range(6)}, {}, {}, ("html",))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names.count(exporting.BUNDLE_PLOTLYJS) == 1
        js = zf.read(exporting.BUNDLE_PLOTLYJS)
        assert len(js) > 1_000_000 and b"plotly" in js[:5000].lower()
        for n in names:
            if n.endswith(".html"):
                page = zf.read(n).decode()
                assert f'src="../{exporting.BUNDLE_PLOTLYJS}"' in page and len(page) < len(single) / 10
    one_compressed = len(zlib.compress(single))
    assert len(data) < 2 * one_compressed, (len(data), one_compressed)  # six figures cost about one plotly.js
