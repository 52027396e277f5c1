"""The app starts under `streamlit run` and its home page renders in Chromium without an exception."""
from __future__ import annotations

import urllib.request

import pytest

from tests.e2e.conftest import download_bundle

pytestmark = pytest.mark.e2e


def test_health_endpoint_answers_ok(streamlit_server):
    with urllib.request.urlopen(f"{streamlit_server}/_stcore/health", timeout=5) as resp:  # noqa: S310
        assert resp.read().strip() == b"ok"


def test_home_page_loads_without_exception(streamlit_server, page, goto_app, save_screenshot):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, streamlit_server)
    shot = save_screenshot(page, "home")
    assert shot.stat().st_size > 0
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, "the home page shows an exception:\n" + "\n".join(
        exceptions.all_inner_texts()
    )
    assert page.locator("[data-testid='stMain']").count() == 1
    assert not errors, f"JavaScript errors on the home page: {errors}"


EXPORT_PROBE_APP = '''
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.export_ui import export_bundle, export_figure

fig = go.Figure(go.Bar(x=["a", "b"], y=[1, -2]), layout=dict(title="export_probe"))
st.plotly_chart(fig)
export_figure(fig, "probe figure", key="probe", data=pd.DataFrame({"x": ["a", "=b"], "y": [1, -2]}))
export_bundle({"probe": fig}, {"probe": pd.DataFrame({"y": [1]})}, {"model": "none"}, "probe", key="pb")
'''


def _download(page, button_name: str) -> tuple[str, bytes]:
    with page.expect_download(timeout=90_000) as info:
        page.get_by_role("button", name=button_name, exact=True).click()
    download = info.value
    with open(download.path(), "rb") as fh:
        return download.suggested_filename, fh.read()


def test_export_buttons_download_real_files(tmp_path, serve_script, page, goto_app, save_screenshot):
    script = tmp_path / "export_probe.py"
    script.write_text(EXPORT_PROBE_APP)
    with serve_script(script, "export-probe-server") as url:
        goto_app(page, url)
        page.get_by_role("button", name="Export").click()
        name, data = _download(page, "PNG")
        assert name == "probe_figure.png" and data.startswith(b"\x89PNG")
        save_screenshot(page, "export-popover")
        name, data = _download(page, "SVG")
        assert name == "probe_figure.svg" and b"<svg" in data[:200]
        name, data = _download(page, "HTML")
        assert name == "probe_figure.html" and b"export_probe" in data
        name, data = _download(page, "CSV")
        assert name == "probe_figure.csv" and b"'=b" in data and b",-2" in data
        page.keyboard.press("Escape")
        name, data = download_bundle(page, page, timeout_ms=120_000)
        assert name == "probe.zip" and data.startswith(b"PK")
        assert page.locator("[data-testid='stException']").count() == 0
