"""The layout rules of the engine, as functions over a source tree (tests/test_architecture.py runs them on the repo
and on small planted trees, so that each rule is shown to fail).

- ``cycles``: import cycles among analysis modules, counting every import (module- and function-level; importing a
  package counts as importing its ``__init__``, and a name that is a submodule counts as that submodule).
- ``layer_violations``: an analysis package importing a package it must not (``ALLOWED``; method packages import
  core, models, prompts and compute only, with the exceptions in ``EXCEPTIONS``).
- ``private_imports``: a private name (``_x``) taken from another project module outside tests, by import or as an
  attribute of an imported module.
- ``lazy_imports``: a function-level import in analysis/ that names a project module, or carries no
  ``# lazy: <reason>`` comment.
- ``registry_violations``: app.py or the CLI router naming a method's page file or command itself instead of
  iterating the registry (components.methods.METHODS).
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PROJECT = ("analysis", "components", "logitscope", "pages", "bench", "app")
METHODS = ("lens", "flow", "steering", "neurons", "shift", "ood")
BASE = ("core", "models", "prompts", "compute")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "prompts": {"core"},
    "models": {"core", "prompts"},
    "compute": {"core"},
    **{m: set(BASE) for m in METHODS},
    "demo": {"core", "models", "prompts"},
}
# The one exception: the shift's per-layer lens KL is the lens comparison (analysis.lens.lens_compare).
EXCEPTIONS = {("shift", "lens")}


def module_name(root: Path, path: Path) -> str:
    """'analysis.lens.results' for root/analysis/lens/results.py ('analysis.lens' for its __init__.py)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(root: Path, top: str) -> list[Path]:
    """Every .py file under root/top (or root/top.py)."""
    if (root / f"{top}.py").is_file():
        return [root / f"{top}.py"]
    return sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> Iterable[tuple[ast.stmt, str, list[str], bool]]:
    """(node, module, imported names, inside a function) of every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def visit(node: ast.AST, infunc: bool) -> Iterable:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.Import):
                for a in ch.names:
                    yield ch, a.name, [], infunc
            elif isinstance(ch, ast.ImportFrom) and ch.module and ch.level == 0:
                yield ch, ch.module, [a.name for a in ch.names], infunc
            yield from visit(ch, infunc or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    yield from visit(tree, False)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{analysis module: the analysis modules it imports}."""
    files = python_files(root, "analysis")
    known = {module_name(root, p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        me = module_name(root, path)
        edges = graph.setdefault(me, set())
        for _, module, names, _ in _imports(path):
            if not module.startswith("analysis"):
                continue
            target = module
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != me:
                edges.add(target)
            for n in names:
                if f"{module}.{n}" in known and f"{module}.{n}" != me:
                    edges.add(f"{module}.{n}")
    return graph


def cycles(root: Path) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), and modules importing themselves."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "analysis" else None


def layer_violations(root: Path) -> list[str]:
    """'analysis.x.y imports analysis.z.w' for every import across packages that ALLOWED (and EXCEPTIONS) forbid."""
    bad = []
    for path in python_files(root, "analysis"):
        me = module_name(root, path)
        mine = _package(me)
        if mine is None or mine not in ALLOWED:
            continue
        for node, module, names, _ in _imports(path):
            other = _package(module)
            others = list(names) if module == "analysis" and names else [other] if other else []
            for o in others:
                if o and o != mine and o not in ALLOWED[mine] and (mine, o) not in EXCEPTIONS:
                    bad.append(f"{me} imports {module} (line {node.lineno}): {mine}/ may import "
                               f"{', '.join(sorted(ALLOWED[mine])) or 'no other package'}")
    return bad


def private_imports(root: Path) -> list[str]:
    """Private names taken from another project module, outside tests."""
    bad = []
    for top in PROJECT:
        for path in python_files(root, top) if (root / top).exists() or (root / f"{top}.py").exists() else []:
            me = module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            aliases = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
                    for a in node.names:
                        if a.name.startswith("_") and not a.name.startswith("__") and node.module != me:
                            bad.append(f"{me}:{node.lineno} imports {a.name} from {node.module}")
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.split(".")[0] in PROJECT and a.asname:
                            aliases[a.asname] = a.name
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                        and node.attr.startswith("_") and not node.attr.startswith("__")):
                    bad.append(f"{me}:{node.lineno} uses {node.value.id}.{node.attr} of {aliases[node.value.id]}")
    return bad


def lazy_imports(root: Path) -> list[str]:
    """Function-level imports in analysis/ of project modules, or without a '# lazy:' reason."""
    bad = []
    for path in python_files(root, "analysis"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, module, _, infunc in _imports(path):
            if not infunc:
                continue
            where = f"{module_name(root, path)}:{node.lineno}"
            if module.split(".")[0] in PROJECT:
                bad.append(f"{where} imports {module} inside a function (a hidden cycle or a layering shortcut)")
            elif "# lazy:" not in lines[node.lineno - 1]:
                bad.append(f"{where} imports {module} inside a function without a '# lazy: <reason>' comment")
    return bad


def registry_violations(root: Path, pages: Iterable[str], commands: Iterable[str]) -> list[str]:
    """String literals in app.py and logitscope/cli.py that name a method's page file or CLI command: both must
    iterate components.methods.METHODS (the tools' commands, rerun and tuned_lens, are not methods)."""
    names = set(pages) | {Path(p).stem for p in pages} | set(commands)
    bad = []
    for rel in ("app.py", "logitscope/cli.py"):
        path = root / rel
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                bad.append(f"{rel}:{node.lineno} names {node.value!r}")
    return bad
