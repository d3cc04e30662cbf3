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
        _name(r) for extra in ("test", "notebooks", "distributed") for r in project["optional-dependencies"][extra]
    }
    lines = (ROOT / "environment.yml").read_text().splitlines()
    listed = {_name(line.split("- ", 1)[1]) for line in lines if line.startswith("      - ") and "-e ." not in line}
    assert listed == wanted
