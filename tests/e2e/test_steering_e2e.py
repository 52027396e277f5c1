"""The steering page in a real browser: build a vector, steer a generation, download the vectors and the bundle."""
from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import download, download_bundle

pytestmark = pytest.mark.e2e


def _download(page, name: str) -> tuple[str, bytes]:
    return download(page, page.get_by_role("button", name=name, exact=True))


def test_build_steer_and_export(streamlit_server, page, goto_app, wait_for_app_idle, save_screenshot):
    goto_app(page, f"{streamlit_server}/steering")
    page.get_by_role("button", name="Build vectors").click()
    wait_for_app_idle(page, 120_000)
    page.get_by_text("Best layer by held-out AUROC").wait_for(timeout=60_000)
    assert page.get_by_text("None", exact=True).count() == 0  # nothing printed by Streamlit's magic
    assert "steer.run=1" in page.url  # the link rebuilds the vectors in a fresh session
    name, data = _download(page, "Save vectors (.safetensors)")
    assert name.endswith(".safetensors")
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"]["format"] == "logitscope-steering-vectors"
    page.get_by_role("tab", name="Steer").click()
    page.get_by_role("button", name="Generate").click()
    wait_for_app_idle(page, 120_000)
    page.get_by_text("Unsteered", exact=True).wait_for(timeout=60_000)
    save_screenshot(page, "steering-steer")
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    name, data = download_bundle(page, page, timeout_ms=300_000)
    assert name == "steering.zip" and data.startswith(b"PK")
