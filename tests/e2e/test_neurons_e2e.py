"""The confidence-neurons page in Chromium: the scan runs on the demo model, states its verdict, and exports."""
from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest

from tests.e2e.conftest import download as _download
from tests.e2e.conftest import download_bundle

pytestmark = pytest.mark.e2e


def test_scan_runs_states_its_verdict_and_exports(streamlit_server, page, goto_app, wait_for_app_idle, save_screenshot):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, f"{streamlit_server}/confidence_neurons", timeout_ms=180_000)
    wait_for_app_idle(page, 180_000)
    assert page.locator("[data-testid='stException']").count() == 0
    alerts = page.locator("[data-testid='stAlertContentError']")
    assert alerts.count() == 0, alerts.all_inner_texts()
    page.get_by_text("median", exact=False).first.wait_for(timeout=60_000)  # the scan's verdict names the median rho
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 4
    save_screenshot(page, "confidence-neurons-scan")

    page.get_by_role("button", name="Export").first.click()
    name, data = _download(page, page.get_by_role("button", name="CSV", exact=True).first)
    assert name == "neurons_norm_vs_rho_A.csv"
    header = data.decode("utf-8").splitlines()[0]
    assert "rho" in header and "norm" in header and "neuron" in header
    ids = pd.read_csv(io.BytesIO(data))["neuron"]  # read back as strings 'L<block>.N<index>', never as floats
    assert ids.map(lambda x: isinstance(x, str)).all() and ids.str.fullmatch(r"L\d+\.N\d+").all(), ids.head()
    page.keyboard.press("Escape")

    name, data = download_bundle(page, page, timeout_ms=300_000)
    assert name == "confidence_neurons.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("metadata.json"))
    assert any(n.startswith("figures/norm_vs_rho_A") for n in names), names
    assert any(n.startswith("data/scan_A") for n in names), names
    assert meta["page"] == "confidence_neurons" and meta["settings"]["processing"] is True
    assert meta["settings"]["parts"] == [] and meta["settings"]["k_used"]["A"] >= 1
    assert not errors, errors
