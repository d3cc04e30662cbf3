"""The package's layout: wings that import only the wings below them, no import circle, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "t2i_helpers"
# Bottom to top, as the README's "how the package is laid out" says; a module may import only its own layer and
# the layers before it. config, engine and cli are the top-level entrances.
LAYERS = ["config", "data", "models", "store", "pipelines", "engine", "measure", "explore", "serve", "exercises", "cli"]


def _modules() -> dict[str, Path]:
    """Every module by dotted name inside the package, e.g. 'store.image_store'; packages by their name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports by relative import anywhere in the file (inside functions too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            for alias in node.names:
                dotted = ".".join([*base, *([node.module] if node.module else [])])
                submodule = ".".join(filter(None, [dotted, alias.name]))
                found.add(submodule if submodule in modules else dotted)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_circles():
    graph = _graph()
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


def test_every_wing_imports_only_the_wings_below_it():
    graph = _graph()
    layer = {name: LAYERS.index(name.split(".")[0]) for name in graph if name}
    upward = [f"{a} -> {b}" for a, imported in graph.items() if a for b in imported if b and layer[b] > layer[a]]
    assert not upward, upward
    assert set(layer) >= {"config", "engine", "cli"}  # every top-level name is a known layer (KeyError otherwise)


def test_the_layout_stays_readable():
    top_modules = [p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    wings = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert len(top_modules) <= 6, top_modules
    assert len(wings) >= 5, wings
    assert sorted(p.name for p in wings) == sorted(set(LAYERS) - {"config", "engine", "cli"})
    for wing in wings:
        docstring = ast.get_docstring(ast.parse((wing / "__init__.py").read_text(encoding="utf-8")))
        assert docstring and "notebook" in docstring, f"{wing.name}/__init__.py needs its one-paragraph docstring"
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


@pytest.mark.parametrize(
    "name", ["Config", "SearchEngine", "load_encoder", "ImageStore", "load_source", "load_bundled"]
)
def test_the_top_level_names_still_import(name):
    import t2i_helpers

    assert getattr(t2i_helpers, name).__name__ == name
