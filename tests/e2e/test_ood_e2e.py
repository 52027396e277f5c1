"""OOD page in Chromium: it renders, runs the study on the default sets and downloads the bundle."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.conftest import download_bundle

pytestmark = pytest.mark.e2e
MODEL = "gpt2-world-base"


def test_ood_page_runs_the_study_and_downloads_the_bundle(streamlit_server, page, goto_app, wait_for_app_idle,
                                                          save_screenshot):
    from analysis.core.paths import zoo_models
    if MODEL not in zoo_models():
        pytest.skip(f"{MODEL} is not in zoo/ yet")
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    goto_app(page, f"{streamlit_server}/ood")
    expect(page.get_by_role("heading", name="OOD separability")).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    wait_for_app_idle(page, timeout_ms=300_000)
    expect(page.get_by_text("Best separation", exact=False).first).to_be_visible(timeout=60_000)
    expect(page.locator("[data-testid='stPlotlyChart']").nth(4)).to_be_attached(timeout=120_000)
    wait_for_app_idle(page, timeout_ms=120_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Something went wrong").count() == 0
    save_screenshot(page, "ood-page")

    file_name, data = download_bundle(page, page, timeout_ms=300_000)
    assert file_name == "ood_separability.zip"
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert any(n.endswith("metadata.json") for n in names)
    assert any("metrics_A" in n and n.endswith(".png") for n in names)
    assert any("metrics_all_A" in n and n.endswith(".csv") for n in names)
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(next(n for n in names if n.endswith("metadata.json"))))
    assert meta["page"] == "OOD separability"
    settings = meta["settings"]  # the declared settings (components.reports.ood), the views resolved
    assert settings["layer"] == "best" and settings["view"] == "all OOD" and settings["poolings"] == ["last", "mean"]
    assert not errors, errors
