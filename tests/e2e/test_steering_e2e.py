"""The steering page in a real browser: build a vector, steer a generation, download the vectors and the bundle."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import download

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _zoo_env(tmp_path: Path):
    """The demo zoo if trained, else a stand-in zoo of tiny random folders (LOGITSCOPE_ZOO for the server)."""
    from analysis.loading import zoo_models
    if "gpt2-world-base" in zoo_models():
        yield
        return
    from tests.test_steering_page import NEEDED, standin_folder
    for seed, name in enumerate(NEEDED):
        standin_folder(tmp_path / name, seed)
    old = os.environ.get("LOGITSCOPE_ZOO")
    os.environ["LOGITSCOPE_ZOO"] = str(tmp_path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LOGITSCOPE_ZOO", None)
        else:
            os.environ["LOGITSCOPE_ZOO"] = old


def _download(page, name: str) -> tuple[str, bytes]:
    return download(page, page.get_by_role("button", name=name, exact=True))


def test_build_steer_and_export(tmp_path, serve_script, page, goto_app, wait_for_app_idle, save_screenshot):
    with _zoo_env(tmp_path), serve_script(REPO / "app.py", "steering-e2e-server") as url:
        goto_app(page, f"{url}/steering")
        page.get_by_role("button", name="Build vectors").click()
        wait_for_app_idle(page, 120_000)
        page.get_by_text("Best layer by held-out AUROC").wait_for(timeout=60_000)
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
        name, data = _download(page, "Download bundle (zip)")
        assert name == "steering.zip" and data.startswith(b"PK")
