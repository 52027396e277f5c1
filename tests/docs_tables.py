"""The tables of docs/methods.md that are facts of the tree: which package, declaration and command each method
has, and the modules of every engine package. ``python -m tests.docs_tables`` prints them as they should read;
tests/test_code_health.py fails when the document says otherwise."""
from __future__ import annotations

from pathlib import Path

from components.methods import METHODS
from tests.paths import REPO

SHARED = ("core", "models", "prompts", "compute", "demo")


def modules_of(package: str) -> list[str]:
    """The module names of an analysis package (``analysis.lens`` -> ["comparison", "inputs", ...])."""
    folder = REPO / Path(*package.split("."))
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def method_table() -> str:
    """One row per registered method, in menu order (the section numbers of methods.md)."""
    lines = [_row(["§", "Method", "Engine package: modules", "Declaration", "CLI"]), "|---|---|---|---|---|"]
    for n, m in enumerate(METHODS.values(), start=1):
        folder = m.engine.replace(".", "/")
        mods = ", ".join(modules_of(m.engine))
        lines.append(_row([str(n), m.title, f"`{folder}/`: {mods}", f"`{m.module.__name__.replace('.', '/')}.py`",
                           f"`{m.command}`"]))
    return "\n".join(lines)


def shared_table() -> str:
    """The packages every method may import, and the demo world."""
    lines = [_row(["Package", "Modules"]), "|---|---|"]
    lines += [_row([f"`analysis/{p}/`", ", ".join(modules_of(f"analysis.{p}"))]) for p in SHARED]
    return "\n".join(lines)


if __name__ == "__main__":
    print(method_table(), shared_table(), sep="\n\n")
