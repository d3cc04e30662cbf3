"""One checked exercise: run the learner's answer on test cases, say what is wrong in one sentence (every notebook).

Example:
    >>> q1 = Exercise("Normalize rows", cases=[Case((x,), compare)], hints=[...], reference=normalize)
    >>> q1.check(my_normalize)        # prints "Correct!" or one sentence about what is wrong
    >>> q1.hint(); q1.solution()
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NOT_ATTEMPTED = "not attempted: replace the `...` (or the None) with your answer, then run the check again"


class Wrong(Exception):
    """Raised by a case's comparison: its message is the one sentence the learner sees."""


@dataclass(frozen=True)
class Case:
    """One test case: the arguments the answer is called with (none for a value answer), and a comparison that
    raises `Wrong` with a sentence when the answer's result is not right."""

    args: tuple
    compare: Callable[[Any], None]


@dataclass
class Exercise:
    """An exercise: its question, test cases, numbered hints and reference solution.

    Args:
        title: what the learner does, in a few words.
        cases: the test cases; a value exercise (not a function) has one case with `args=()`.
        hints: shown one at a time by `hint()`, then all again.
        reference: the reference solution (a function or a value), run by the self-test, shown by `solution()`.
        wrong: typical wrong answers, which the self-test makes sure `check` catches.
        takes_function: the answer is a function called with each case's args; otherwise a value.
    """

    title: str
    cases: Sequence[Case]
    hints: Sequence[str]
    reference: Any
    wrong: Sequence[Any] = ()
    takes_function: bool = True
    _hints_shown: int = field(default=0, repr=False)

    def verdict(self, answer: Any) -> tuple[bool | None, str]:
        """(True, "Correct!"), (False, what is wrong) or (None, not attempted); never raises."""
        if answer is None or answer is Ellipsis:
            return None, NOT_ATTEMPTED
        if self.takes_function and not callable(answer):
            return False, f"pass your function itself (e.g. `check(my_function)`), not a {type(answer).__name__}"
        for case in self.cases:
            try:
                result = answer(*case.args) if self.takes_function else answer
            except NotImplementedError:
                return None, NOT_ATTEMPTED
            except Exception as err:  # the learner's code failed: say how, in one line
                return False, f"your answer raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if result is None or result is Ellipsis:
                return None, NOT_ATTEMPTED
            try:
                case.compare(result)
            except Wrong as err:
                return False, str(err)
            except Exception as err:  # a result of the wrong shape or type
                return False, f"the answer has the wrong shape or type ({type(err).__name__}: {err})"
        return True, "Correct!"

    def check(self, answer: Any = None) -> bool | None:
        """Run `answer` on the test cases and print the verdict; True, False, or None when not attempted."""
        ok, message = self.verdict(answer)
        print(f"{self.title}: {'✓ ' if ok else ''}{message}")
        return ok

    def hint(self) -> None:
        """Print the next hint (numbered); after the last, all of them."""
        shown = self.hints[: self._hints_shown + 1] if self._hints_shown < len(self.hints) else self.hints
        self._hints_shown = min(self._hints_shown + 1, len(self.hints))
        print("\n".join(f"Hint {i}: {h}" for i, h in enumerate(shown, 1)))

    def solution(self) -> None:
        """Print the reference solution."""
        if callable(self.reference):
            print(textwrap.dedent(inspect.getsource(self.reference)))
        else:
            print(f"Solution: {self.reference!r}")


def same_array(expected: Any, what: str, atol: float = 1e-5) -> Callable[[Any], None]:
    """A comparison for numeric answers: shape first, then values, each wrong one in its own sentence."""
    import numpy as np

    want = np.asarray(expected)

    def compare(result: Any) -> None:
        got = np.asarray(result)
        if got.shape != want.shape:
            raise Wrong(f"{what} has shape {got.shape}; it should have one entry per input, like the input's shape")
        if not np.allclose(got, want, atol=atol):
            raise Wrong(f"{what} has the right shape but wrong values")

    return compare


def run_self_test(exercises: dict[str, Exercise]) -> tuple[int, int, int, list[str]]:
    """(exercises, solutions that pass, wrong answers caught, problems) over every exercise."""
    passed, caught, problems = 0, 0, []
    for name, exercise in exercises.items():
        ok, message = exercise.verdict(exercise.reference)
        passed += bool(ok)
        if not ok:
            problems.append(f"{name}: the reference solution fails: {message}")
        if not exercise.wrong:
            problems.append(f"{name}: no typical wrong answer to check against")
        for i, answer in enumerate(exercise.wrong):
            ok, message = exercise.verdict(answer)
            caught += ok is False
            if ok is not False:
                problems.append(f"{name}: wrong answer {i} is not caught ({message})")
        if exercise.verdict(None)[0] is not None:
            problems.append(f"{name}: an untouched stub is not 'not attempted'")
    return len(exercises), passed, caught, problems
