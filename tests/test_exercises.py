"""The checked exercises: every reference passes, typical wrong answers are caught, a stub is "not attempted",
and nothing a learner writes makes a check raise."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from t2i_helpers.exercises import nb01, nb05
from t2i_helpers.exercises.__main__ import ALL
from t2i_helpers.exercises.problem import NOT_ATTEMPTED


def test_the_self_test_passes_every_solution_and_catches_every_wrong_answer():
    done = subprocess.run(
        [sys.executable, "-m", "t2i_helpers.exercises", "--self-test"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    wrong = sum(len(e.wrong) for e in ALL.values())
    assert done.stdout.strip() == f"{len(ALL)} exercises: {len(ALL)} solutions pass, {wrong} wrong answers caught"
    assert len(ALL) == 18 and wrong >= len(ALL)


@pytest.mark.parametrize("notebook", ["nb01", "nb02", "nb03", "nb04", "nb05", "nb06"])
def test_every_notebook_has_at_least_three_exercises(notebook):
    assert len([name for name in ALL if name.startswith(notebook + ".")]) >= 3


def stub(*args): ...  # what a learner finds in the notebook


def unfinished(*args):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(ALL))
def test_an_untouched_stub_is_not_attempted_and_never_raises(name, capsys):
    exercise = ALL[name]
    for answer in (None, stub, unfinished) if exercise.takes_function else (None, ...):
        assert exercise.check(answer) is None
        assert NOT_ATTEMPTED in capsys.readouterr().out


def test_a_wrong_answer_gets_one_sentence_that_does_not_give_the_answer_away(capsys):
    assert nb01.q2.check(lambda images, text, k: np.argsort(images @ text)[:k]) is False
    said = capsys.readouterr().out.strip()
    assert len(said.splitlines()) == 1 and "normalize" in said
    expected = nb01.rank_by_cosine(nb01._IMAGES, nb01._TEXT, 3)
    assert not any(str(i) in said for i in expected)  # no index of the right answer in the message


def test_an_answer_that_raises_or_is_not_a_function_is_a_verdict_not_an_exception(capsys):
    assert nb01.q1.check(lambda x: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert nb01.q1.check("x / norm") is False
    assert "pass your function itself" in capsys.readouterr().out
    assert nb05.q2.check(lambda category: 42) is False  # not an (expression, params) pair
    assert "wrong shape or type" in capsys.readouterr().out


def test_hints_are_numbered_and_the_solution_is_the_reference(capsys):
    exercise = nb05.q3
    exercise.hint()
    exercise.hint()
    hints = capsys.readouterr().out
    assert "Hint 1:" in hints and "Hint 2:" in hints
    exercise.solution()
    assert "def rrf(" in capsys.readouterr().out
    nb05.q2.solution()
    assert "label == {category}" in capsys.readouterr().out
    assert nb05.q2.check(nb05.category_filter) is True


def test_the_notebooks_hint_blocks_are_the_packages_hints():
    """Each exercise's folded hints in its notebook (shown on the course site) say what `hint()` says."""
    shown = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb")):
        module = importlib.import_module(f"t2i_helpers.exercises.nb{path.name[:2]}")
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and (found := re.match(r"### ✏️ Exercise (\d)", text)):
                hints = getattr(module, f"q{found.group(1)}").hints
                assert "\n".join(f"{i}. {h}" for i, h in enumerate(hints, 1)) in text, (path.name, found.group(0))
                shown += 1
    assert shown == len(ALL)
