"""The logit lens page in Chromium: runs on the demo model, draws the heatmap, and exports PNG, SVG and the bundle."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from analysis.loading import zoo_models

from tests.e2e.conftest import download as _download

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
REAL_ZOO = "gpt2-world-base" in zoo_models()


@pytest.fixture
def lens_server(tmp_path_factory, serve_script):
    """The real app on the demo zoo; on a temporary zoo of tiny models only until the demo zoo exists."""
    if REAL_ZOO:
        with serve_script(REPO / "app.py", "lens-e2e-server") as url:
            yield url
        return
    from tests.model_folders import write_model_folder
    root = tmp_path_factory.mktemp("zoo")
    write_model_folder(root / "gpt2-world-base", "gpt2")
    old = os.environ.get("LOGITSCOPE_ZOO")
    os.environ["LOGITSCOPE_ZOO"] = str(root)
    try:
        with serve_script(REPO / "app.py", "lens-e2e-server") as url:
            yield url
    finally:
        if old is None:
            os.environ.pop("LOGITSCOPE_ZOO", None)
        else:
            os.environ["LOGITSCOPE_ZOO"] = old


def test_lens_page_runs_and_exports_png_svg_and_bundle(lens_server, page, goto_app, wait_for_app_idle,
                                                       save_screenshot):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, f"{lens_server}/logit_lens", timeout_ms=180_000)
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

    name, data = _download(page, page.get_by_role("button", name="Download bundle (zip)"), timeout_ms=300_000)
    assert name == "logit_lens.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("metadata.json"))
    assert "figures/heatmap_A.png" in names and "figures/heatmap_A.svg" in names, names
    assert any(n.startswith("data/") and n.endswith(".csv") for n in names)
    assert meta["page"] == "Logit lens" and meta["settings"]["top_k"] == 10 and "A" in meta["models"]
    assert page.locator("[data-testid='stException']").count() == 0
    assert not errors, errors
