"""A fresh server opened straight on a page's URL still shows that page inside the app shell.

Streamlit serves a deep link on a fresh server in its old pages/-directory mode (the page file
alone, without app.py); components.shell.ensure_app_shell reruns it through app.py.
"""
from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import REPO_ROOT


def test_a_deep_link_on_a_fresh_server_keeps_the_sidebar_model_picker(serve_script, page, goto_app,
                                                                      save_screenshot):
    with serve_script(REPO_ROOT / "app.py", "deep-link-server") as url:
        goto_app(page, f"{url}/logit_flow")
        sidebar = page.locator("[data-testid='stSidebar']")
        expect(sidebar.get_by_text("Checkpoint A").first).to_be_visible(timeout=60_000)
        expect(sidebar.get_by_role("button", name="Load A")).to_be_visible()
        # the navigation is app.py's (titled pages), not the pages/ folder's file names
        expect(sidebar.get_by_text("Logit flow").first).to_be_visible()
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.url.split("?")[0].rstrip("/").endswith("/logit_flow")  # the query holds the view
        save_screenshot(page, "deep-link-logit-flow")
