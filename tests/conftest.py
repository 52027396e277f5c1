"""Suite-wide setup: hermetic, offline, frugal with CPU. Only generic fixtures belong here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Set before anything imports transformers / huggingface_hub / tokenizers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Under pytest-xdist (make test PYTEST_JOBS=2) one thread per worker: two workers of two threads each on a 2-core
# machine would oversubscribe the cores and make every small product wait for a time slice.
THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
os.environ.setdefault("MKL_NUM_THREADS", THREADS)

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:  # torch is a runtime dependency, but keep collection working if it is absent
    import torch  # noqa: E402

    torch.set_num_threads(min(int(THREADS), torch.get_num_threads()))
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


E2E = "tests/e2e"


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """make test PYTEST_JOBS=2's workers (-n 2 --dist loadfile) get whole files, and all of tests/e2e as one: every browser
    test shares one app server and one Chromium on one worker while the other worker runs the CPU-bound files (a
    file's module fixtures, such as a trace or a trained translator, are built once). pytest-xdist's loadgroup, made
    for this, does not group under pytest 9.2 (its marks never reach the scheduler)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndBrowser(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return E2E if path.startswith(E2E + "/") else path

    return FilesAndBrowser(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests first (stable otherwise): under xdist they are the longest scope, so one worker starts on
    them at once instead of finishing with them while the other idles."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one process keeps the plain order
        items.sort(key=lambda item: not item.nodeid.startswith(E2E + "/"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO_ROOT


@pytest.fixture
def seeded() -> int:
    """Seed python, numpy and torch with 0 for a deterministic test; returns the seed."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    if torch is not None:
        torch.manual_seed(0)
    return 0


@pytest.fixture(autouse=True, scope="session")
def _apptest_keeps_st_navigation():
    """Make AppTest rerun app.py like the real server does.

    app.py uses st.navigation, which switches Streamlit out of the old pages/-directory mode for
    good in a real server. AppTest resets that flag before every run and, because our layout has a
    pages/ folder, its reruns would execute the page file alone (no app.py, no sidebar). Keep the
    flag off after each PagesManager is built, as st.navigation leaves it in a real server.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover
        yield
        return
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    try:
        yield
    finally:
        PagesManager.__init__ = original


@pytest.fixture
def captured(monkeypatch):
    """What a page passes to export_bundle (figures, tables, metadata, name), recorded instead of drawing the
    button (AppTest cannot click a download): the page's bundle, as tests compare it with the CLI's or rerun it."""
    import components.export_ui as export_ui

    got: dict = {}

    def record(figures, tables, metadata, name, key, **kwargs):
        got.update(figures=dict(figures), tables=dict(tables), metadata=dict(metadata), name=name)

    monkeypatch.setattr(export_ui, "export_bundle", record)
    return got
