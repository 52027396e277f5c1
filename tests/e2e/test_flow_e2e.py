"""The logit flow page in Chromium: it runs, draws the source -> head -> final Sankey, and exports it."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.conftest import download as _download
from tests.e2e.conftest import download_bundle

pytestmark = pytest.mark.e2e


def test_flow_page_renders_the_sankey_and_exports_it(streamlit_server, page, goto_app, wait_for_app_idle,
                                                     save_screenshot):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, f"{streamlit_server}/logit_flow", timeout_ms=180_000)
    page.get_by_text("Press Run to compute the logit flow.").wait_for()
    n = page.get_by_label("Prompts to analyse", exact=True).and_(page.locator("input"))
    n.fill("2")
    n.press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Run").click()
    wait_for_app_idle(page, 180_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0, page.locator(
        "[data-testid='stAlertContentError']").all_inner_texts()
    sankey = page.locator(".js-plotly-plot .sankey")
    sankey.first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot .sankey-link").count() > 0
    assert page.get_by_text("Identities hold").first.is_visible()
    save_screenshot(page, "logit-flow")

    page.get_by_role("button", name="Export").first.click()
    name, data = _download(page, page.get_by_role("button", name="PNG", exact=True).first)
    assert name == "logit_flow_flow_A.png" and data.startswith(b"\x89PNG") and len(data) > 5_000
    name, data = _download(page, page.get_by_role("button", name="CSV", exact=True).first)
    assert name == "logit_flow_flow_A.csv" and b"block,head,position,token,dla" in data.splitlines()[0].replace(b'"', b"")
    page.keyboard.press("Escape")

    name, data = download_bundle(page, page, 300_000)
    assert name == "logit_flow.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("metadata.json"))
    assert {"figures/flow_A.png", "figures/flow_A.html", "data/flow_A.csv", "data/attention_grid_A.csv"} <= names
    assert meta["page"] == "logit_flow" and meta["settings"]["n_prompts"] == 2
    assert meta["settings"]["max_prompts"] == 2 and meta["settings"]["show_prompt"] == 1
    assert not errors, errors
