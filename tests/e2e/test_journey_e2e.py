"""The whole journey in Chromium against `streamlit run app.py`: demo base model as A, its tuned sibling as B,
an uploaded prompt set, every analysis page run in compare mode, and a bundle downloaded from each and checked.

One test, one browser page: the steps share the session (models, uploaded file), so their order matters.
Screenshots of every page go to test-artifacts/journey-*.png.
"""
from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import pytest

from analysis.core.paths import zoo_models
from tests.e2e.conftest import download_bundle as prepare_and_download

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BASE, TUNED = "gpt2-world-base", "gpt2-world-tuned"
N_UPLOADED = 4
LONG_MS = 240_000  # one analysis (or one bundle's static renders) on a loaded 2-core machine


def _facts_file(folder: Path) -> Path:
    """A small .jsonl upload: the first facts prompts with their targets (prompt, target, label, group)."""
    rows = [json.loads(line) for line in (REPO / "data/prompts/facts.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("target")][:N_UPLOADED]
    assert len(rows) == N_UPLOADED
    path = folder / "journey_facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _check_bundle(data: bytes) -> tuple[list[str], dict]:
    """The zip opens, holds metadata.json naming A = base and B = tuned, at least one figure and one data file."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        meta_name = next((n for n in names if n.rsplit("/", 1)[-1] == "metadata.json"), None)
        assert meta_name is not None, names
        meta = json.loads(zf.read(meta_name))
    models = meta.get("models", {})
    assert {w: models.get(w, {}).get("name") for w in ("A", "B")} == {"A": BASE, "B": TUNED}, models
    figures = [n for n in names if n.rsplit(".", 1)[-1] in ("png", "svg", "html", "pdf")]
    data_files = [n for n in names if n.rsplit(".", 1)[-1] in ("csv", "json") and n != meta_name]
    assert figures, names
    assert data_files, names
    pngs = [n for n in figures if n.endswith(".png")]
    if pngs:  # static export available: the PNG is a real image
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.read(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    return names, meta


def test_journey_every_page_in_compare_mode_with_bundles(streamlit_server, page, goto_app, wait_for_app_idle,
                                                         pick_in_sidebar, assert_no_errors,
                                                         save_screenshot, tmp_path):
    if not {BASE, TUNED} <= set(zoo_models()):
        pytest.skip(f"the demo zoo ({BASE}, {TUNED}) is not trained yet")
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    main = page.get_by_test_id("stMain")
    sidebar = page.get_by_test_id("stSidebar")
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def idle(timeout_ms: float = LONG_MS) -> None:
        wait_for_app_idle(page, timeout_ms)

    def no_errors(where: str) -> None:
        assert_no_errors(page, where)

    def pick(label: str, option: str) -> None:
        pick_in_sidebar(page, label, option)

    def visit(title: str, slug: str) -> None:
        """Go to a page through the sidebar navigation and wait for its title."""
        sidebar.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        expect(main.get_by_role("heading", name=title)).to_be_visible(timeout=LONG_MS)
        expect(page).to_have_url(re.compile(rf"^{re.escape(streamlit_server)}/{slug}(\?.*)?$"))  # + the view's query
        idle()
        no_errors(title)

    def set_number(label: str, value: int) -> None:
        box = main.get_by_label(label, exact=True).and_(page.locator("input"))
        box.fill(str(value))
        box.press("Enter")
        expect(box).to_have_value(str(value))
        idle()

    def download_bundle(expected_name: str, shot: str, result) -> tuple[list[str], dict]:
        """Screenshot with `result` (the page's main figure) in view, then download and check the bundle."""
        idle()
        result.evaluate("e => e.scrollIntoView({block: 'start'})")
        save_screenshot(page, f"journey-{shot}")
        file_name, data = prepare_and_download(page, main, timeout_ms=LONG_MS * 2)
        assert file_name == expected_name
        names, meta = _check_bundle(data)
        timings[shot] = time.monotonic() - t0
        return names, meta

    # 1. Open the app; A = the demo base model through the sidebar form.
    goto_app(page, streamlit_server, timeout_ms=LONG_MS)
    expect(sidebar.get_by_role("button", name="Load A")).to_be_visible()
    pick("Checkpoint A", BASE)
    sidebar.get_by_role("button", name="Load A").click()
    expect(main.get_by_text(f"Checkpoint A: {BASE}")).to_be_visible(timeout=LONG_MS)
    idle()

    # 2. B = the tuned checkpoint: the toggle, then B's form.
    sidebar.get_by_text("Compare with checkpoint B", exact=True).click()
    expect(sidebar.get_by_role("button", name="Load B")).to_be_visible(timeout=LONG_MS)
    idle()
    pick("Checkpoint B", TUNED)
    sidebar.get_by_role("button", name="Load B").click()
    expect(main.get_by_text(f"Checkpoint B: {TUNED}")).to_be_visible(timeout=LONG_MS)
    idle()
    expect(main.get_by_text(f"Checkpoint A: {BASE}")).to_be_visible()
    no_errors("Home")
    save_screenshot(page, "journey-home")

    # 3. Logit lens on an uploaded prompt set (A, B side by side and the A vs B KL).
    visit("Logit lens", "logit_lens")
    main.get_by_test_id("stRadioGroup").filter(has_text="Built-in").get_by_text("Upload", exact=True).click()
    expect(main.get_by_role("radio", name="Upload")).to_be_checked()
    idle()
    main.get_by_test_id("stFileUploader").locator("input[type='file']").set_input_files(str(_facts_file(tmp_path)))
    expect(main.get_by_text(f"{N_UPLOADED} prompts", exact=False).first).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Logit lens upload")
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_role("heading", name="A vs B on identical tokens")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Logit lens run")
    expect(main.get_by_role("heading", name=f"A: {BASE}")).to_be_visible()
    expect(main.get_by_role("heading", name=f"B: {TUNED}")).to_be_visible()
    expect(main.locator(".js-plotly-plot .heatmaplayer").nth(1)).to_be_attached(timeout=60_000)
    names, meta = download_bundle("logit_lens.zip", "logit-lens", main.get_by_role("heading", name=f"A: {BASE}"))
    assert meta["prompt_set"]["n_prompts"] == N_UPLOADED, meta.get("prompt_set")
    assert any("heatmap_B" in n for n in names) and any("kl_a_b" in n for n in names), names

    # 4. Logit flow (two_hop by default, 2 prompts).
    visit("Logit flow", "logit_flow")
    set_number("Prompts to analyse", 2)
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.locator(".js-plotly-plot .sankey").nth(1)).to_be_attached(timeout=LONG_MS)  # A and B side by side
    idle()
    no_errors("Logit flow")
    names, _ = download_bundle("logit_flow.zip", "logit-flow", main.get_by_role("tab", name="Flow"))
    assert any("flow_B" in n for n in names), names

    # 5. Steering: build vectors on A, then the A -> B persona drift.
    visit("Steering and personas", "steering")
    main.get_by_role("button", name="Build vectors").click()
    expect(main.get_by_text("Best layer by held-out AUROC", exact=False)).to_be_visible(timeout=LONG_MS)
    idle()
    main.get_by_role("tab", name="Drift").click()
    main.get_by_role("button", name="Measure drift").click()
    expect(main.locator(".js-plotly-plot").filter(has_text="Persona drift")).to_be_attached(timeout=LONG_MS)
    idle()
    no_errors("Steering")
    names, _ = download_bundle("steering.zip", "steering", main.get_by_role("button", name="Measure drift"))
    assert any("persona_drift" in n for n in names), names

    # 6. Confidence neurons: the scan runs on A and B, plus the A vs B comparison.
    visit("Confidence neurons", "confidence_neurons")
    expect(main.get_by_role("heading", name="A vs B")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Confidence neurons")
    names, _ = download_bundle("confidence_neurons.zip", "confidence-neurons",
                               main.get_by_role("tab", name="Scan"))
    assert any("_B" in n for n in names if n.startswith("figures/")), names

    # 7. Checkpoint shift: A -> B on 3 prompts.
    visit("Checkpoint shift", "checkpoint_shift")
    set_number("Max prompts", 3)
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_role("heading", name="Where in depth did tuning act")).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("Checkpoint shift")
    download_bundle("checkpoint_shift.zip", "checkpoint-shift",
                    main.get_by_role("heading", name="Most promoted and suppressed tokens"))

    # 8. OOD separability on the default sets, A and B.
    visit("OOD separability", "ood")
    main.get_by_role("button", name="Run", exact=True).click()
    expect(main.get_by_text("Best separation", exact=False).first).to_be_visible(timeout=LONG_MS)
    idle()
    no_errors("OOD separability")
    download_bundle("ood_separability.zip", "ood", main.get_by_text("Best separation", exact=False).first)

    assert not errors, errors
    print("journey timings (s, cumulative):", {k: round(v, 1) for k, v in timings.items()})
