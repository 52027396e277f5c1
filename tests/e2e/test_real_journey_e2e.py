"""The compare journey on a real base and its real fine-tune, in Chromium: SmolLM2-135M-Instruct (from GGUF) as A,
its grumpy LoRA as B. The home cards show where the weights came from; the lens starts from the model's own default
fact; steering builds a grumpy-kind vector from the chat persona pairs (rendered with the chat template) at a
default layer outside the first third, and the drift view runs; checkpoint shift shows what the LoRA promotes.

Screenshots go to test-artifacts/real-*.png. Marked `real` (skip with -m "not real").
"""
from __future__ import annotations

import pytest

from analysis.models.real import REAL_LORA_LABEL, REAL_MODEL, REAL_MODEL_LABEL, real_model_dir

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.real,
    pytest.mark.skipif(not (real_model_dir() / "config.json").is_file(),
                       reason=f"the real model is not converted at {real_model_dir()} (run make setup)"),
]
LONG_MS = 300_000
NAME_B = f"{REAL_MODEL} + LoRA smollm2-grumpy-lora"


def test_real_base_vs_its_lora_fine_tune(streamlit_server, page, goto_app, wait_for_app_idle, save_screenshot,
                                         pick_in_sidebar, assert_no_errors):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 900})
    main = page.get_by_test_id("stMain")
    sidebar = page.get_by_test_id("stSidebar")

    def idle() -> None:
        wait_for_app_idle(page, LONG_MS)

    def no_errors(where: str) -> None:
        assert_no_errors(page, where)

    def pick(label: str, option: str) -> None:
        pick_in_sidebar(page, label, option)

    def visit(title: str) -> None:
        sidebar.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        expect(main.get_by_role("heading", name=title)).to_be_visible(timeout=LONG_MS)
        idle()
        no_errors(title)

    # Home: A = the real model, B = its LoRA; both cards side by side.
    goto_app(page, streamlit_server, timeout_ms=LONG_MS)
    pick("Checkpoint A", REAL_MODEL_LABEL)
    sidebar.get_by_role("button", name="Load A").click()
    expect(main.get_by_text(f"Checkpoint A: {REAL_MODEL}")).to_be_visible(timeout=LONG_MS)
    idle()
    sidebar.get_by_text("Compare with checkpoint B", exact=True).click()
    expect(sidebar.get_by_role("button", name="Load B")).to_be_visible(timeout=LONG_MS)
    idle()
    pick("Checkpoint B", REAL_LORA_LABEL)
    sidebar.get_by_role("button", name="Load B").click()
    expect(main.get_by_text(f"Checkpoint B: {NAME_B}")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Home")
    expect(main.get_by_text("Dequantised from the GGUF file", exact=False).first).to_be_visible()
    expect(main.get_by_text("tokenizer adds BOS: no", exact=False).first).to_be_visible()
    assert main.get_by_text("Self-check passed", exact=False).count() == 2
    save_screenshot(page, "real-home")

    # Logit lens: the typed default is the model's own fact, not the demo world's.
    visit("Logit lens")
    typed = main.get_by_label("Prompts, one per line", exact=True)
    expect(typed).to_have_value("The capital of France is")
    expect(main.get_by_label("Target token text", exact=True)).to_have_value(" Paris")
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_role("heading", name="A vs B on identical tokens")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Logit lens run")
    expect(main.locator(".js-plotly-plot .heatmaplayer").nth(1)).to_be_attached(timeout=60_000)
    main.get_by_role("heading", name=f"A: {REAL_MODEL}").evaluate("e => e.scrollIntoView({block: 'start'})")
    save_screenshot(page, "real-logit-lens", full_page=False)

    # Steering: the chat persona pairs by default; the default layer sits outside the first third of 30 blocks.
    visit("Steering and personas")
    main.get_by_role("button", name="Build vectors").click()
    expect(main.get_by_text("Best layer by held-out AUROC", exact=False)).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Steering build")
    caption = main.get_by_text("(default): best held-out AUROC", exact=False).first
    expect(caption).to_be_visible()
    layer = int(caption.inner_text().split("Layer ", 1)[1].split(" ", 1)[0])
    assert 10 <= layer <= 22, caption.inner_text()
    save_screenshot(page, "real-steering-build")
    main.get_by_role("tab", name="Drift").click()
    main.get_by_role("button", name="Measure drift").click()
    expect(main.locator(".js-plotly-plot").filter(has_text="Persona drift")).to_be_attached(timeout=LONG_MS)
    idle()
    no_errors("Steering drift")
    main.locator(".js-plotly-plot").filter(has_text="Persona drift").first.evaluate(
        "e => e.scrollIntoView({block: 'start'})")
    save_screenshot(page, "real-steering-drift", full_page=False)

    # Checkpoint shift on 2 chat questions: what did the LoRA promote?
    visit("Checkpoint shift")
    box = main.get_by_label("Max prompts", exact=True).and_(page.locator("input"))
    box.fill("2")
    box.press("Enter")
    idle()
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_role("heading", name="Most promoted and suppressed tokens")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Checkpoint shift")
    main.get_by_role("heading", name="Most promoted and suppressed tokens").evaluate(
        "e => e.scrollIntoView({block: 'start'})")
    save_screenshot(page, "real-checkpoint-shift", full_page=False)
    assert not errors, errors
