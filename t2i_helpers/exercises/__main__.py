"""`python -m t2i_helpers.exercises --self-test`: every reference solution and correct variant passes, every wrong
answer is caught."""

from __future__ import annotations

import argparse
import sys

from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07
from .problem import run_self_test

ALL = {
    **nb01.EXERCISES,
    **nb02.EXERCISES,
    **nb03.EXERCISES,
    **nb04.EXERCISES,
    **nb05.EXERCISES,
    **nb06.EXERCISES,
    **nb07.EXERCISES,
}


def main(argv: list[str] | None = None) -> int:
    """Run the self-test; returns 0 when every solution and variant passes and every wrong answer is caught."""
    parser = argparse.ArgumentParser(prog="python -m t2i_helpers.exercises", description=__doc__)
    parser.add_argument("--self-test", action="store_true", required=True, help="check the exercises themselves")
    parser.parse_args(argv)
    found = run_self_test(ALL)
    for problem in found.problems:
        print(problem, file=sys.stderr)
    print(found.line())
    return 0 if not found.problems else 1


if __name__ == "__main__":
    sys.exit(main())
