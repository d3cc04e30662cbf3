"""The package's modules import each other without circles, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t2i_helpers"


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports, by relative import anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return found


def test_no_import_circles():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported == trail[0]:
                circles.append(" -> ".join([*trail, imported]))
            elif imported not in trail and imported in graph:
                visit(imported, [*trail, imported])

    for module in graph:
        visit(module, [module])
    assert not circles, circles
