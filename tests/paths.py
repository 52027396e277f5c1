"""Where things are, for tests at any depth: the repository root, the app and the AppTest scripts under tests/apps."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TEST_APPS = REPO / "tests" / "apps"
