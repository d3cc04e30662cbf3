"""The checked exercises: every reference and correct variant passes, plausible wrong answers are caught, a stub is
"not attempted", feedback names the mistake, answers cannot change the test data, and nothing a learner writes
makes a check raise."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from t2i_helpers.exercises import nb01, nb02, nb04, nb05, nb06
from t2i_helpers.exercises.__main__ import ALL
from t2i_helpers.exercises.problem import NO_RETURN, NOT_ATTEMPTED, Exercise, run_self_test


def test_the_self_test_passes_every_solution_and_variant_and_catches_every_wrong_answer():
    done = subprocess.run(
        [sys.executable, "-m", "t2i_helpers.exercises", "--self-test"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    wrong = sum(len(e.wrong) for e in ALL.values())
    variants = sum(len(e.variants) for e in ALL.values())
    said = f"{len(ALL)} exercises: {len(ALL)} solutions pass, {variants} correct variants pass, {wrong} wrong answers"
    assert done.stdout.strip() == said + " caught"
    assert len(ALL) == 22 and wrong >= 6 * len(ALL) and variants >= 3 * len(ALL)


def test_the_self_test_fails_when_a_wrong_answer_passes_or_a_variant_is_rejected():
    weak = Exercise("weak", "", nb01.q3.cases[:1], [], nb01.new_ids, wrong=[nb01.new_ids] * 6, variants=[len] * 3)
    found = run_self_test({"weak": weak})
    assert found.caught == 0 and found.variants == 0 and len(found.problems) == 9


@pytest.mark.parametrize("notebook", ["nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07"])
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
    assert nb04.q3.check(lambda latencies_ms: 42) is False  # not a (p50, p95) pair
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
    assert "quote(category)" in capsys.readouterr().out
    assert nb05.q2.check(nb05.category_filter) is True


def test_a_function_that_forgot_return_is_told_so_not_called_unattempted(capsys):
    def normalize(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: F841 (the learner's slip)

    assert nb01.q1.check(normalize) is False
    assert NO_RETURN in capsys.readouterr().out


def test_scores_for_positions_and_a_sent_request_get_their_own_sentence(capsys):
    assert nb01.q2.check(lambda images, text, k: np.sort(images @ text)[::-1][:k]) is False
    assert "look like scores, not positions" in capsys.readouterr().out

    def sent(base_url, text, k, api_key):
        return httpx.get(f"{base_url}/search", params={"q": text, "k": k}, headers={"X-API-Key": api_key}, timeout=5)

    assert nb04.q1.check(sent) is False
    assert "build the request, do not send it" in capsys.readouterr().out


def test_an_answer_that_changes_its_input_changes_no_later_check():
    kept = copy.deepcopy([case.args for case in nb01.q2.cases + nb01.q3.cases + nb02.q2.cases])

    def grows(batch_ids, stored_ids):
        stored_ids.update(batch_ids)  # adds to the stored ids, then answers from the grown set
        return [i for i in batch_ids if i not in stored_ids]

    def shrinks(image_embeddings, text_embedding, top_k):
        image_embeddings /= np.linalg.norm(image_embeddings, axis=1, keepdims=True)
        text_embedding *= 0
        return list(range(top_k))

    empties = lambda table, budget_ms: table.drop(table.index, inplace=True)  # noqa: E731
    for exercise, answer in ((nb01.q3, grows), (nb01.q2, shrinks), (nb02.q2, empties)):
        assert exercise.check(answer) is False
        assert exercise.check(exercise.reference) is True
    now = [case.args for case in nb01.q2.cases + nb01.q3.cases + nb02.q2.cases]
    assert repr(now) == repr(kept)


def test_the_year_filter_is_checked_under_other_time_zones_and_the_zone_is_restored():
    before = os.environ.get("TZ")
    zones = {case.timezone for case in nb06.q3.cases}
    assert zones - {None}  # some cases run on a computer that is not on UTC
    local = [w for w in nb06.q3.wrong if "_local" in w.__code__.co_names]
    assert local and all(nb06.q3.verdict(w)[0] is False for w in local)  # local-time bounds are caught
    assert nb06.q3.verdict(nb06.year_filter)[0] is True
    assert os.environ.get("TZ") == before


def test_an_expression_is_judged_by_what_it_selects_and_a_template_fails_at_once(capsys):
    for equivalent in ("{0} <= taken_at < {1}", "taken_at < {1} and taken_at >= {0}"):
        assert nb06.q3.check(lambda y, e=equivalent: e.format(*nb06.year_filter(y).split()[2::4])) is True
    started = time.monotonic()
    assert nb05.q2.check(lambda category: "label == {c}") is False
    assert "refuses expression templates" in capsys.readouterr().out
    assert time.monotonic() - started < 5


def test_the_notebooks_hint_blocks_are_the_packages_hints_and_state_the_contract():
    """Each exercise's folded hints in its notebook (shown on the course site) say what `hint()` says, and its
    prompt states the contract the checker holds answers to."""
    shown = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb")):
        module = importlib.import_module(f"t2i_helpers.exercises.nb{path.name[:2]}")
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and (found := re.match(r"### ✏️ Exercise (\d)", text)):
                hints = getattr(module, f"q{found.group(1)}").hints
                assert "\n".join(f"{i}. {h}" for i, h in enumerate(hints, 1)) in text, (path.name, found.group(0))
                contract = getattr(module, f"q{found.group(1)}").contract
                assert " ".join(contract.split()) in " ".join(text.split()), (path.name, found.group(0))
                shown += 1
    assert shown == len(ALL)
