"""The tree stays easy to live in: the linter (ruff, configured in pyproject.toml: pyflakes, import order,
bugbear, simplify, pyupgrade, returns, complexity) and the type checker (mypy on analysis/) are clean, no file is
over 500 lines, and the engine (analysis/) never imports the UI (components/, pages/), streamlit, or the command
line."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

MAX_LINES = 500


def _tracked_python() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return [REPO / p for p in out if (REPO / p).is_file()]


def test_ruff_is_clean_on_the_whole_tree():
    pytest.importorskip("ruff")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy_is_clean_on_the_engine():
    """The type checker (mypy, configured in pyproject.toml) finds nothing in analysis/."""
    pytest.importorskip("mypy")
    # its cache outside the clone (as the venv): a fresh clone of the same tree checks in ~1 s instead of ~20 s
    cache = Path(os.environ.get("LOGITSCOPE_MYPY_CACHE", Path.home() / ".cache" / "logitscope" / "mypy"))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_file_is_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in _tracked_python()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these into smaller modules: {long}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_engine_never_imports_the_ui_streamlit_or_the_cli():
    bad = {}
    for path in sorted((REPO / "analysis").rglob("*.py")):
        hits = sorted(m for m in _imports(path)
                      if m.split(".")[0] in ("components", "pages", "streamlit", "logitscope", "app"))
        if hits:
            bad[str(path.relative_to(REPO))] = hits
    assert not bad, bad


def test_the_command_line_never_imports_streamlit():
    proc = subprocess.run([sys.executable, "-c", "import sys, logitscope.cli as c; c.build_parser(); "
                           "import components.methods; print('streamlit' in sys.modules)"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_every_test_docs_methods_cites_exists_where_it_says():
    """docs/methods.md names the test that checks each identity: each must exist in the file it names."""
    import re

    doc = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"tests/((?:\w+/)?test_\w+\.py)::(test_\w+)", doc))
    assert len(cited) > 100
    missing = sorted(f"{f}::{t}" for f, t in cited
                     if not (REPO / "tests" / f).is_file()
                     or not re.search(rf"^def {t}\(", (REPO / "tests" / f).read_text(encoding="utf-8"), re.M))
    assert not missing, missing


def test_the_module_tables_of_docs_methods_are_the_tree():
    """docs/methods.md's method and package tables are generated from the registry and the packages."""
    from tests.docs_tables import method_table, shared_table

    doc = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    for table in (method_table(), shared_table()):
        assert table in doc, "docs/methods.md is stale; paste the output of `python -m tests.docs_tables`:\n" + table


def test_every_method_package_is_named_after_its_declaration():
    """components/reports/<name>.py declares the method whose engine is analysis/<name>/."""
    from components.methods import METHODS

    missing = [m.engine for m in METHODS.values() if not (REPO / m.engine.replace(".", "/") / "__init__.py").is_file()]
    assert not missing, missing


def test_pages_keep_no_cache_of_their_own():
    """Results are cached by page_kit.memo (one st.cache_data keyed on each declared part) and models by the model
    cache: a page's own st.cache_data or st.cache_resource would keep results the registry cannot see."""
    bad = [str(p.relative_to(REPO)) for p in sorted((REPO / "pages").glob("*.py"))
           if "st.cache_data" in p.read_text(encoding="utf-8") or "st.cache_resource" in p.read_text(encoding="utf-8")]
    assert not bad, bad
