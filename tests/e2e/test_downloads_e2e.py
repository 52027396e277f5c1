"""Downloads survive reruns: the bundle is prepared once and then served as a static download, so a click that lands
while the page is rerunning still downloads (a deferred download's address changed between two runs and such a
click silently never started). Also: a page opened from its "Link to this view" in a new tab shows the same view."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.conftest import download

pytestmark = pytest.mark.e2e


def test_a_bundle_download_clicked_during_a_rerun_still_arrives(streamlit_server, page, goto_app, wait_for_app_idle):
    from playwright.sync_api import expect

    goto_app(page, f"{streamlit_server}/logit_lens", timeout_ms=180_000)
    page.get_by_role("button", name="Run", exact=True).click()
    wait_for_app_idle(page, 180_000)
    page.get_by_role("button", name="Prepare bundle (zip)", exact=True).click()
    button = page.get_by_role("button", name="Download bundle (zip)", exact=True)
    expect(button).to_be_visible(timeout=300_000)
    wait_for_app_idle(page, 300_000)
    app = page.locator("[data-testid='stApp']")
    # start a rerun (Streamlit's "r" shortcut) and click while it runs: the same results, the same static file
    page.locator("body").press("r")
    expect(app).to_have_attribute("data-test-script-state", "running", timeout=10_000)
    name, data = download(page, button, timeout_ms=60_000)
    assert name == "logit_lens.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta = json.loads(zf.read("metadata.json"))
        assert meta["page"] == "Logit lens" and meta["inputs"]["--prompts"][0]["file"] in zf.namelist()


def test_the_link_to_this_view_opens_the_same_view_in_a_new_tab(streamlit_server, browser, page, goto_app,
                                                               wait_for_app_idle):
    goto_app(page, f"{streamlit_server}/logit_lens", timeout_ms=180_000)
    page.get_by_role("spinbutton", name="Top-k").fill("4")
    page.get_by_role("spinbutton", name="Top-k").press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    wait_for_app_idle(page, 180_000)
    url = page.url
    assert "lens.top_k=4" in url and "lens.run=1" in url and "a=" in url
    other = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        goto_app(other, url, timeout_ms=180_000)
        other.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=120_000)  # ran at once, no click
        assert other.get_by_role("spinbutton", name="Top-k").input_value() == "4"
        assert other.locator("[data-testid='stException']").count() == 0
    finally:
        other.close()
