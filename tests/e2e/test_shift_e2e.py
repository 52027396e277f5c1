"""The checkpoint-shift page in Chromium: enable checkpoint B, run A vs B, download the bundle and check the zip."""
from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import download_bundle
from tests.model_folders import write_model_folder

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
NAMES = ("gpt2-world-base", "gpt2-world-tuned")


def _zoo(tmp_path: Path) -> Path | None:
    """The real demo zoo when it is trained; else a stand-in zoo of two tiny folders under the same names."""
    real = REPO / "zoo"
    if all((real / n / "config.json").is_file() for n in NAMES):
        return None
    import torch
    from safetensors.torch import load_file, save_file
    zoo = tmp_path / "zoo"
    write_model_folder(zoo / NAMES[0], "llama")
    tuned = write_model_folder(zoo / NAMES[1], "llama")
    sd = load_file(tuned / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in sd.items()}, tuned / "model.safetensors",
              metadata={"format": "pt"})
    return zoo


@contextlib.contextmanager
def _server(request, tmp_path: Path, monkeypatch, serve_script) -> Iterator[str]:
    """The session's server when the demo zoo is trained (no second server start), else one on a stand-in zoo."""
    zoo = _zoo(tmp_path)
    if zoo is None:
        yield request.getfixturevalue("streamlit_server")
        return
    monkeypatch.setenv("LOGITSCOPE_ZOO", str(zoo))
    with serve_script(REPO / "app.py", "shift-e2e-server") as url:
        yield url


def test_shift_page_renders_a_vs_b_and_exports(request, tmp_path, monkeypatch, serve_script, page, goto_app,
                                               wait_for_app_idle, save_screenshot):
    with _server(request, tmp_path, monkeypatch, serve_script) as url:
        goto_app(page, url)  # through app.py: navigation and the sidebar model picker
        page.get_by_role("link", name="Checkpoint shift").first.click()
        wait_for_app_idle(page, 120_000)
        assert page.get_by_text("Compare with checkpoint B").count() >= 1  # the sidebar toggle is there
        page.get_by_text("Turn on", exact=False).first.wait_for()
        page.get_by_role("button", name=f"Compare A with {NAMES[1]} as checkpoint B").click()
        wait_for_app_idle(page, 120_000)
        max_prompts = page.get_by_role("spinbutton", name="Max prompts")
        max_prompts.fill("3")
        max_prompts.press("Enter")
        wait_for_app_idle(page)
        page.get_by_role("button", name="Run", exact=True).click()
        wait_for_app_idle(page, 180_000)
        assert page.locator("[data-testid='stException']").count() == 0
        charts = page.locator("[data-testid='stPlotlyChart']")
        charts.first.wait_for()
        assert charts.count() >= 4, charts.count()  # bars, heatmap, KL along the text, per-layer KL
        save_screenshot(page, "checkpoint_shift")
        file_name, data = download_bundle(page, page, timeout_ms=300_000)
        assert file_name == "checkpoint_shift.zip"
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            meta_name = next(n for n in names if n.endswith("metadata.json"))
            meta = json.loads(zf.read(meta_name))
        assert meta["page"] == "checkpoint_shift" and set(meta["models"]) == {"A", "B"}
        assert meta["settings"]["max_prompts"] == 3 and meta["settings"]["reference"] == "response"
        assert meta["settings"]["columns_shown"] == 15 and meta["settings"]["second_pair"] is None
        assert any(n.endswith(".png") and "token_bars" in n for n in names), names
        assert any(n.endswith(".csv") and "token_totals" in n for n in names), names
        assert any("shift_heatmap" in n for n in names) and any("layer_kl" in n for n in names), names
