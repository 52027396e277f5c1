"""End-to-end harness: the real app under `streamlit run`, driven by Playwright in headless Chromium.

Fixtures: `streamlit_server` (session; base URL), `browser` (session), `page` (per test).
Helper fixtures (each returns a function): `goto_app(page, url)` opens a page and waits for the
script to finish, `wait_for_app_idle(page)` waits after an interaction, `save_screenshot(page,
name)` writes test-artifacts/<name>.png.
The browser is Debian's chromium (or $LOGITSCOPE_CHROME); Playwright never downloads its own.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
SERVER_START_TIMEOUT_S = 90.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e carries the e2e marker (select or skip with -m)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


# --------------------------------------------------------------------------- helpers


def _save_screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page to test-artifacts/<name>.png (gitignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "screenshot"
    path = ARTIFACTS / f"{stem}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _pick_in_sidebar(page, label: str, option: str) -> None:
    """Choose `option` in the sidebar selectbox labelled `label` and wait until it shows."""
    from playwright.sync_api import expect

    box = page.get_by_test_id("stSidebar").get_by_role("combobox", name=label, exact=True)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(box).to_have_value(option)


def _assert_no_errors(page, where: str) -> None:
    """No exception block and no st.error in the main area (the message names `where` and the errors' text)."""
    main = page.get_by_test_id("stMain")
    assert main.get_by_test_id("stException").count() == 0, f"{where}: exception shown"
    alerts = main.get_by_test_id("stAlertContentError")
    assert alerts.count() == 0, f"{where}: {alerts.all_inner_texts()}"


SETTLE_MS = 750


def _wait_for_app_idle(page, timeout_ms: float = 60_000) -> None:
    """Block until Streamlit is connected and has finished running the script (no "Running...").

    Idle must hold for SETTLE_MS: a run can be followed at once by another one (a widget whose
    options changed sends its new value back), and a click in the gap between the two can carry
    a deferred download id that the second run has already replaced.
    """
    from playwright.sync_api import expect

    app = page.locator("[data-testid='stApp']")
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = max(1_000.0, (deadline - time.monotonic()) * 1000)
        expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=left)
        # The script state goes initial -> running -> notRunning; reruns go back through running.
        expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=left)
        expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=left)
        expect(page.locator("[data-testid='stSkeleton']")).to_have_count(0, timeout=left)
        page.wait_for_timeout(SETTLE_MS)
        if app.get_attribute("data-test-script-state") == "notRunning" or time.monotonic() > deadline:
            return


def _goto_app(page, url: str, timeout_ms: float = 90_000) -> None:
    """Open url and wait until the app's script has run to the end."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    _wait_for_app_idle(page, timeout_ms)


def download(page, button, timeout_ms: float = 300_000) -> tuple[str, bytes]:
    """Click ``button`` (a locator) and return (suggested file name, bytes) of the download it starts.

    Bundles render every figure (kaleido) before the download starts: on a loaded 2-core machine that
    takes minutes, hence the generous default.
    """
    with page.expect_download(timeout=timeout_ms) as info:
        button.click()
    d = info.value
    with open(d.path(), "rb") as fh:
        return d.suggested_filename, fh.read()


def download_bundle(page, scope, timeout_ms: float = 300_000) -> tuple[str, bytes]:
    """Prepare the page's bundle (it renders every figure: minutes on a loaded 2-core machine), then download it."""
    from playwright.sync_api import expect

    prepare = scope.get_by_role("button", name="Prepare bundle (zip)", exact=True)
    prepare.scroll_into_view_if_needed()
    prepare.click()
    button = scope.get_by_role("button", name="Download bundle (zip)", exact=True)
    expect(button).to_be_visible(timeout=timeout_ms)
    _wait_for_app_idle(page, timeout_ms)
    button.scroll_into_view_if_needed()
    return download(page, button, timeout_ms)


def chromium_path() -> str | None:
    """The Chromium executable for Playwright: $LOGITSCOPE_CHROME, /usr/bin/chromium, or PATH."""
    explicit = os.environ.get("LOGITSCOPE_CHROME")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else shutil.which(explicit)
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no server log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return resp.status == 200 and resp.read().strip() == b"ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def run_streamlit(script: Path, log_name: str = "streamlit-server") -> Iterator[str]:
    """Serve `script` with `streamlit run` on a free loopback port from the repo root; yield the URL."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = ARTIFACTS / f"{log_name}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(f"{base}/_stcore/health"):
            if proc.poll() is not None:
                pytest.fail(
                    f"streamlit exited with code {proc.returncode} before becoming healthy.\n"
                    f"--- {log_path} ---\n{_tail(log_path)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"streamlit did not answer {base}/_stcore/health within "
                    f"{SERVER_START_TIMEOUT_S:.0f} s.\n--- {log_path} ---\n{_tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def streamlit_server() -> Iterator[str]:
    """The app (app.py) served for the whole session; yields its base URL (http://127.0.0.1:PORT)."""
    if not (REPO_ROOT / "app.py").exists():
        pytest.skip("app.py does not exist yet: nothing to serve for the end-to-end tests")
    with run_streamlit(REPO_ROOT / "app.py") as base:
        yield base


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its children
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium (Debian's) driven by Playwright for the whole session."""
    exe = chromium_path()
    if not exe:
        msg = "no Chromium found (run `make setup`, or set LOGITSCOPE_CHROME)"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context and page (1400x900); a failing test leaves a screenshot."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):  # the screenshot is a courtesy
                _save_screenshot(pg, f"FAILED-{request.node.name}")
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Expose each phase's report as item.rep_<phase> (used for screenshots on failure)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def save_screenshot():
    """save_screenshot(page, name) -> Path of test-artifacts/<name>.png."""
    return _save_screenshot


@pytest.fixture
def wait_for_app_idle():
    """wait_for_app_idle(page, timeout_ms=60000): connected, script not running, no skeletons."""
    return _wait_for_app_idle


@pytest.fixture
def goto_app():
    """goto_app(page, url, timeout_ms=90000): open url and wait for the script to finish."""
    return _goto_app


@pytest.fixture
def pick_in_sidebar():
    """pick_in_sidebar(page, label, option): choose an option of a sidebar selectbox."""
    return _pick_in_sidebar


@pytest.fixture
def assert_no_errors():
    """assert_no_errors(page, where): no exception and no st.error on the page."""
    return _assert_no_errors


@pytest.fixture
def serve_script():
    """serve_script(path, log_name) -> context manager serving another Streamlit script; yields URL."""
    return run_streamlit
