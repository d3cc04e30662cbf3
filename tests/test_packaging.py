"""environment.yml must list exactly what pyproject.toml asks pip for (conda cannot be run here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {
        _name(r)
        for extra in ("test", "notebooks", "server", "distributed")
        for r in project["optional-dependencies"][extra]
    }
    lines = (ROOT / "environment.yml").read_text().splitlines()
    listed = {_name(line.split("- ", 1)[1]) for line in lines if line.startswith("      - ") and "-e ." not in line}
    assert listed == wanted


def test_the_readme_is_a_short_front_door_and_every_docs_page_is_on_the_site():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    toc = (ROOT / "_toc.yml").read_text()
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    assert all(f"file: docs/{page}\n" in toc or f"root: docs/{page}\n" in toc for page in pages), pages
    assert all(f"docs/{page}.md" in readme for page in pages if page != "index")
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert all(f"file: notebooks/{name}\n" in toc and f"notebooks/{name}.ipynb" in readme for name in notebooks)
