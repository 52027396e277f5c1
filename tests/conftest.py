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
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:  # torch is a runtime dependency, but keep collection working if it is absent
    import torch  # noqa: E402

    torch.set_num_threads(min(2, torch.get_num_threads()))
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


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
