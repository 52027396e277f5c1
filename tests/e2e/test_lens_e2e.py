"""The logit lens page in Chromium: runs on the demo model, draws the heatmap, and exports PNG, SVG and the bundle."""
from __future__ import annotations

import io
import json
import zipfile
from xml.etree import ElementTree

import pytest

from tests.e2e.conftest import download as _download
from tests.e2e.conftest import download_bundle

pytestmark = pytest.mark.e2e


def test_lens_page_runs_and_exports_png_svg_and_bundle(streamlit_server, page, goto_app, wait_for_app_idle,
                                                       save_screenshot):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, f"{streamlit_server}/logit_lens", timeout_ms=180_000)
    page.get_by_text("Press Run to compute the lens.").wait_for()
    page.get_by_role("button", name="Run", exact=True).click()
    wait_for_app_idle(page, 180_000)
    assert page.locator("[data-testid='stException']").count() == 0
    alerts = page.locator("[data-testid='stAlertContentError']")
    assert alerts.count() == 0, alerts.all_inner_texts()
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 4  # heatmap, target lines, mean KL, decision depth
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    save_screenshot(page, "logit-lens")

    page.get_by_role("button", name="Export").first.click()
    name, data = _download(page, page.get_by_role("button", name="PNG", exact=True).first)
    assert name == "logit_lens_heatmap_A.png" and data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
    name, data = _download(page, page.get_by_role("button", name="SVG", exact=True).first)
    assert name == "logit_lens_heatmap_A.svg"
    root = ElementTree.fromstring(data)
    assert root.tag.endswith("svg")
    page.keyboard.press("Escape")

    name, data = download_bundle(page, page, timeout_ms=300_000)
    assert name == "logit_lens.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("metadata.json"))
    assert "figures/heatmap_A.png" in names and "figures/heatmap_A.svg" in names, names
    assert any(n.startswith("data/") and n.endswith(".csv") for n in names)
    assert meta["page"] == "Logit lens" and meta["settings"]["top_k"] == 10 and "A" in meta["models"]
    assert page.locator("[data-testid='stException']").count() == 0
    assert not errors, errors
