"""Shared by the hostile-input tests (tests/app/test_hostile_input.py, tests/app/test_hostile_pages.py): the hostile
strings, the app and demo-zoo names, and the zoo's checkpoints loaded once per test run."""
from __future__ import annotations

import functools

import pytest

from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import REPO_ROOT, zoo_dir

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
HOSTILE = f"The capital of {IMG} is {SCRIPT}"
APP = str(REPO_ROOT / "app.py")
BASE, TUNED, LLAMA = "gpt2-world-base", "gpt2-world-tuned", "llama-world-base"


def zoo_ready() -> bool:
    """Whether the three demo checkpoints are trained (python -m analysis.demo.train)."""
    return all((zoo_dir() / n / "config.json").is_file() for n in (BASE, TUNED, LLAMA))


needs_zoo = pytest.mark.skipif(not zoo_ready(), reason="demo zoo not trained yet (python -m analysis.demo.train)")


@functools.cache
def _load_zoo() -> dict:
    return {n: load_model(ModelSpec(n, device="cpu", dtype="float32")) for n in (BASE, TUNED, LLAMA)}


def zoo_models() -> dict:
    """The three demo checkpoints (float32, CPU), loaded once for both test files; skips if the zoo is not trained."""
    if not zoo_ready():
        pytest.skip("demo zoo not trained yet")
    return _load_zoo()
