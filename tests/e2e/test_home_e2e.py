"""The real app in Chromium: the home page renders the demo model's card with a passing self-check."""
from __future__ import annotations

from playwright.sync_api import expect

from analysis.core.loading import DEFAULT_MODEL


def test_home_page_renders_the_model_card(streamlit_server, page, goto_app, save_screenshot):
    goto_app(page, streamlit_server)
    main = page.locator("[data-testid='stMain']")
    expect(main.get_by_text(f"Checkpoint A: {DEFAULT_MODEL}")).to_be_visible(timeout=60_000)
    expect(main.get_by_text("Self-check passed", exact=False)).to_be_visible()
    for label in ("Layers", "Width (d_model)", "Vocabulary", "Parameters", "Final norm"):
        expect(main.locator("[data-testid='stMetricLabel']", has_text=label).first).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    shot = save_screenshot(page, "home-model-card")
    assert shot.read_bytes().startswith(b"\x89PNG")
