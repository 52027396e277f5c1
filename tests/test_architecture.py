"""The engine's layout holds (tests/architecture_rules.py): no import cycles among analysis modules, each package
imports only the packages below it (method packages: core, models, prompts and compute; shift may use the lens
comparison), no private name crosses modules outside tests, and no function-level import hides a dependency. Each
rule is also run on a small planted tree where it must fail."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests import architecture_rules as A
from tests.paths import REPO


def test_no_import_cycles_among_analysis_modules():
    assert A.cycles(REPO) == []


def test_each_package_imports_only_the_layers_below_it():
    assert A.layer_violations(REPO) == []


def test_no_private_name_is_imported_across_modules_outside_tests():
    assert A.private_imports(REPO) == []


def test_function_level_imports_are_third_party_and_say_why():
    assert A.lazy_imports(REPO) == []


def _registry() -> tuple[list[str], list[str]]:
    from components.methods import METHODS

    return [m.page_file for m in METHODS.values()], [m.command for m in METHODS.values()]


def test_app_and_cli_iterate_the_one_registry():
    assert A.registry_violations(REPO, *_registry()) == []


def test_the_app_draws_a_page_and_the_cli_a_command_per_registered_method():
    from components.methods import METHODS
    from logitscope.cli import COMMANDS

    assert list(COMMANDS)[: len(METHODS)] == [m.command for m in METHODS.values()]
    src = (REPO / "app.py").read_text(encoding="utf-8")
    assert "METHODS.values()" in src
    for m in METHODS.values():
        assert (REPO / m.page_file).is_file(), m.page_file
        assert (REPO / "logitscope" / "commands" / f"{m.command}.py").is_file(), m.command


def test_a_planted_page_list_in_app_py_is_found(tmp_path):
    (tmp_path / "app.py").write_text('PAGES = [("pages/logit_lens.py", "Logit lens")]\n', encoding="utf-8")
    (tmp_path / "logitscope").mkdir()
    (tmp_path / "logitscope" / "cli.py").write_text('if args.command in ("flow", "shift"): pass\n', encoding="utf-8")
    found = A.registry_violations(tmp_path, *_registry())
    assert len(found) == 3 and "pages/logit_lens.py" in found[0], found


def test_every_analysis_package_is_in_the_layer_table():
    packages = {p.name for p in (REPO / "analysis").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(A.ALLOWED), packages ^ set(A.ALLOWED)


def test_every_method_package_exports_exactly_its_all():
    """Each package __init__ declares __all__, and every name in it is bound there (a submodule, or imported)."""
    for pkg in sorted(p for p in (REPO / "analysis").iterdir() if (p / "__init__.py").is_file()):
        tree = ast.parse((pkg / "__init__.py").read_text(encoding="utf-8"))
        names = [n for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                                          for t in n.targets)]
        assert names, f"analysis/{pkg.name}/__init__.py has no __all__"
        exported = ast.literal_eval(names[0].value)
        bound = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        modules = {p.stem for p in pkg.glob("*.py")} | {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
        missing = [n for n in exported if n not in bound and n not in modules]
        assert not missing, f"analysis.{pkg.name}.__all__ names what it does not bind: {missing}"
        assert exported == sorted(exported) or set(exported) <= modules, f"analysis.{pkg.name}.__all__ is not sorted"


# ------------------------------------------------------------------------------------------------- planted trees
def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for d in {p.parent for p in root.rglob("*.py")}:
        (d / "__init__.py").touch()
    return root


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    root = _tree(tmp_path, {"analysis/core/a.py": "from analysis.core.b import x\n",
                            "analysis/core/b.py": "def x():\n    from analysis.core import a\n    return a\n"})
    assert A.cycles(root) == [["analysis.core.a", "analysis.core.b"]]
    assert A.lazy_imports(root) and "analysis.core.b:2" in A.lazy_imports(root)[0]


def test_a_planted_cycle_through_a_package_init_is_found(tmp_path):
    root = _tree(tmp_path, {"analysis/lens/__init__.py": "from analysis.lens.trace import t\n",
                            "analysis/lens/trace.py": "import analysis.lens.helpers\nt = 1\n",
                            "analysis/lens/helpers.py": "from analysis.lens import t\n"})
    assert A.cycles(root) == [["analysis.lens", "analysis.lens.helpers", "analysis.lens.trace"]]


@pytest.mark.parametrize("src,pkg,target", [
    ("from analysis.lens import lens_trace\n", "ood", "analysis.lens"),  # a method importing another method
    ("from analysis import steering\n", "flow", "analysis"),
    ("from analysis.models.card import model_card\n", "core", "analysis.models.card"),  # core imports nothing above
    ("import analysis.lens.tuned\n", "compute", "analysis.lens.tuned"),
])
def test_a_planted_layer_violation_is_found(tmp_path, src, pkg, target):
    root = _tree(tmp_path, {f"analysis/{pkg}/x.py": src, "analysis/lens/tuned.py": "", "analysis/models/card.py": ""})
    found = A.layer_violations(root)
    assert len(found) == 1 and f"analysis.{pkg}.x imports {target}" in found[0], found


def test_the_named_exception_is_the_only_one(tmp_path):
    root = _tree(tmp_path, {"analysis/shift/x.py": "from analysis.lens import lens_compare\n",
                            "analysis/shift/y.py": "from analysis.flow import logit_flow\n"})
    found = A.layer_violations(root)
    assert len(found) == 1 and "analysis.shift.y" in found[0]


@pytest.mark.parametrize("src", ["from analysis.lens.stats import _layer_stats\n",
                                 "from analysis.lens import stats as S\nS._layer_stats()\n"])
def test_a_planted_private_import_is_found(tmp_path, src):
    root = _tree(tmp_path, {"components/x.py": src, "analysis/lens/stats.py": "def _layer_stats(): ...\n"})
    assert len(A.private_imports(root)) == 1


def test_a_private_import_inside_tests_is_allowed(tmp_path):
    root = _tree(tmp_path, {"tests/test_x.py": "from analysis.lens.stats import _layer_stats\n",
                            "analysis/lens/stats.py": "def _layer_stats(): ...\n"})
    assert A.private_imports(root) == []


def test_a_lazy_third_party_import_needs_its_reason(tmp_path):
    root = _tree(tmp_path, {"analysis/ood/maps.py": "def f():\n    import umap\n\n\ndef g():\n"
                                                    "    import umap  # lazy: slow to import\n"})
    found = A.lazy_imports(root)
    assert len(found) == 1 and "maps:2" in found[0]
