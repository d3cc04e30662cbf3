"""One checked exercise: run the learner's answer on test cases, say what is wrong in one sentence (every notebook).

Every call gets fresh deep copies of its case's data (an answer that changes its input in place changes nothing
for the next case, the next answer or the reference), and a case may run under another time zone.

Example:
    >>> q1 = Exercise("Normalize rows", "Write normalize(x)...", cases=[Case((x,), compare)], hints=[...],
    ...               reference=normalize)
    >>> q1.check(my_normalize)        # prints "Correct!" or one sentence about what is wrong
    >>> q1.hint(); q1.solution()
"""

from __future__ import annotations

import contextlib
import copy
import dis
import inspect
import os
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NOT_ATTEMPTED = "not attempted: replace the `...` (or the None) with your answer, then run the check again"
NO_RETURN = "your function returned None: did you forget `return`?"
_STUB_CODE = {"RESUME", "NOP", "RETURN_VALUE", "RETURN_CONST", "LOAD_CONST", "CACHE"}


class Wrong(Exception):
    """Raised by a case's comparison: its message is the one sentence the learner sees."""


@dataclass(frozen=True)
class Case:
    """One test case: the arguments the answer is called with (none for a value answer), a comparison that
    raises `Wrong` with a sentence when the answer's result is not right, and the time zone (`TZ`) to run in."""

    args: tuple
    compare: Callable[[Any], None]
    timezone: str | None = None


@dataclass
class Exercise:
    """An exercise: its question and contract, test cases, numbered hints and reference solution.

    Args:
        title: what the learner does, in a few words.
        contract: the question as the notebook states it (inputs, output, ties, bounds); the notebook quotes it.
        cases: the test cases; a value exercise (not a function) has one case with `args=()`.
        hints: shown one at a time by `hint()`, then all again.
        reference: the reference solution (a function or a value), run by the self-test, shown by `solution()`.
        wrong: plausible wrong answers, which the self-test makes sure `check` catches.
        variants: correct answers in other styles, which the self-test makes sure `check` accepts.
        raised: feedback for an answer that raises one of these exception types (e.g. it sent a request).
        takes_function: the answer is a function called with each case's args; otherwise a value.
    """

    title: str
    contract: str
    cases: Sequence[Case]
    hints: Sequence[str]
    reference: Any
    wrong: Sequence[Any] = ()
    variants: Sequence[Any] = ()
    raised: Mapping[type[BaseException], str] = field(default_factory=dict)
    takes_function: bool = True
    _hints_shown: int = field(default=0, repr=False)

    def verdict(self, answer: Any) -> tuple[bool | None, str]:
        """(True, "Correct!"), (False, what is wrong) or (None, not attempted); never raises."""
        if answer is None or answer is Ellipsis:
            return None, NOT_ATTEMPTED
        if self.takes_function and not callable(answer):
            return False, f"pass your function itself (e.g. `check(my_function)`), not a {type(answer).__name__}"
        if self.takes_function and is_stub(answer):
            return None, NOT_ATTEMPTED
        for case in self.cases:
            try:
                with local_time(case.timezone):
                    result = answer(*copy.deepcopy(case.args)) if self.takes_function else copy.deepcopy(answer)
            except NotImplementedError:
                return None, NOT_ATTEMPTED
            except Exception as err:  # the learner's code failed: say how, in one line
                said = next((why for kind, why in self.raised.items() if isinstance(err, kind)), None)
                return False, said or f"your answer raised {type(err).__name__}: {first_line(err)}"
            if result is None:
                return False, NO_RETURN
            try:
                with local_time(case.timezone):
                    case.compare(result)
            except Wrong as err:
                return False, str(err)
            except Exception as err:  # a result of the wrong shape or type
                return False, f"the answer has the wrong shape or type ({type(err).__name__}: {first_line(err)})"
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


def is_stub(function: Callable) -> bool:
    """Whether a function's body does nothing (`...`, `pass`, a docstring): the notebook's untouched stub."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    for step in dis.get_instructions(code):
        if step.opname not in _STUB_CODE or (step.opname in ("LOAD_CONST", "RETURN_CONST") and step.argval):
            return False
    return True


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    return str(err).splitlines()[0] if str(err) else ""


@contextlib.contextmanager
def local_time(timezone: str | None) -> Iterator[None]:
    """Run the block with the process's local time zone set to `timezone` (e.g. "America/New_York"); None: as is."""
    if timezone is None:
        yield
        return
    before = os.environ.get("TZ")
    os.environ["TZ"] = timezone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def as_array(result: Any) -> np.ndarray:
    """A result (list, tuple, NumPy array or torch tensor) as a NumPy array."""
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().cpu().numpy()
    return np.asarray(result)


def positions(result: Any, count: int) -> list[int]:
    """A result that should be positions (indices) into `count` items, as ints; `Wrong` when they are not."""
    got = as_array(result).ravel()
    if got.dtype.kind == "f" and not np.all(np.mod(got, 1) == 0):
        raise Wrong("these look like scores, not positions: return the indices of the items (argsort gives them)")
    if got.dtype.kind not in "iuf":
        raise Wrong(f"return positions (integers), not {got.dtype} values")
    if any(i < 0 or i >= count for i in got):
        raise Wrong(f"a position is out of range: positions count from 0 to {count - 1}")
    return [int(i) for i in got]


def same_array(expected: Any, what: str, atol: float = 1e-5) -> Callable[[Any], None]:
    """A comparison for numeric answers: shape first, then values, each wrong one in its own sentence."""
    want = np.asarray(expected)

    def compare(result: Any) -> None:
        got = as_array(result)
        if got.shape != want.shape:
            raise Wrong(f"{what} has shape {got.shape}; it should have the input's shape, {want.shape}")
        if not np.allclose(got.astype(float), want, atol=atol):
            raise Wrong(f"{what} has the right shape but wrong values")

    return compare


@dataclass
class SelfTest:
    """What `run_self_test` found: counts, and a sentence for each problem."""

    exercises: int = 0
    solutions: int = 0
    variants: int = 0
    caught: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary `python -m t2i_helpers.exercises --self-test` prints."""
        return (
            f"{self.exercises} exercises: {self.solutions} solutions pass, {self.variants} correct variants pass, "
            f"{self.caught} wrong answers caught"
        )


MIN_WRONG, MIN_VARIANTS = 6, 3


def run_self_test(exercises: dict[str, Exercise]) -> SelfTest:
    """Every reference and correct variant passes, every wrong answer is caught, a stub is not attempted, and the
    reference still passes after all of them ran (no answer changed the exercise's data)."""
    found = SelfTest(exercises=len(exercises))
    for name, exercise in exercises.items():
        ok, message = exercise.verdict(exercise.reference)
        found.solutions += bool(ok)
        if not ok:
            found.problems.append(f"{name}: the reference solution fails: {message}")
        if len(exercise.wrong) < MIN_WRONG or len(exercise.variants) < MIN_VARIANTS:
            found.problems.append(f"{name}: fewer than {MIN_WRONG} wrong answers or {MIN_VARIANTS} correct variants")
        for i, answer in enumerate(exercise.variants):
            ok, message = exercise.verdict(answer)
            found.variants += bool(ok)
            if not ok:
                found.problems.append(f"{name}: correct variant {i} is rejected ({message})")
        for i, answer in enumerate(exercise.wrong):
            ok, message = exercise.verdict(answer)
            found.caught += ok is False
            if ok is not False:
                found.problems.append(f"{name}: wrong answer {i} is not caught ({message})")
        if exercise.verdict(None)[0] is not None:
            found.problems.append(f"{name}: an untouched stub is not 'not attempted'")
        if not exercise.verdict(exercise.reference)[0]:
            found.problems.append(f"{name}: the reference fails after the other answers ran: they changed its data")
    return found
