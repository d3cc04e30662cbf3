"""Exercises of notebook 05: a near-duplicate threshold, a Milvus filter that user text cannot change, RRF."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .problem import Case, Exercise, Wrong

# Cosine similarities of image pairs, and whether a person judged each pair a near-duplicate.
SIMILARITY = np.array([0.999, 0.97, 0.995, 0.91, 0.993, 0.88, 0.96, 0.998, 0.94, 0.991])
IS_DUPLICATE = np.array([True, False, True, False, True, False, False, True, False, True])


def duplicate_threshold(similarity: np.ndarray, is_duplicate: np.ndarray) -> float:
    """A threshold with every duplicate at or above it and every other pair below: halfway between the two."""
    return float((similarity[is_duplicate].min() + similarity[~is_duplicate].max()) / 2)


def category_filter(category: str) -> tuple[str, dict[str, str]]:
    """A Milvus filter for images of `category`, as an expression template and its parameters."""
    return "label == {category}", {"category": category}


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[int]:
    """Reciprocal rank fusion: each id scores the sum of 1 / (k + rank) over the rankings; best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, image_id in enumerate(ranking, start=1):
            scores[image_id] = scores.get(image_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda i: -scores[i])


def _threshold(similarity: np.ndarray, is_duplicate: np.ndarray):
    def compare(result) -> None:
        t = float(result)
        if (similarity[is_duplicate] < t).any():
            raise Wrong("some judged duplicates fall below your threshold: it is too high")
        if (similarity[~is_duplicate] >= t).any():
            raise Wrong("some pairs judged different reach your threshold: it is too low")

    return compare


_ATTACK = 'x" or id > 0 or "'


def _template(category: str):
    def compare(result) -> None:
        expression, params = result
        if category in expression or _ATTACK in expression:
            raise Wrong("the user's text is inside the expression: put a {placeholder} there and the text in params")
        match = re.fullmatch(r"\s*label\s*==\s*\{(\w+)\}\s*", expression)
        if not match:
            raise Wrong("the expression should compare the `label` field with one {placeholder}: label == {name}")
        if params.get(match.group(1)) != category:
            raise Wrong("params must map the placeholder's name to the category, unchanged")

    return compare


def _fused(rankings: Sequence[Sequence[int]]):
    expected = rrf(rankings)

    def compare(result) -> None:
        got = [int(i) for i in result]
        if set(got) != set(expected):
            raise Wrong("every id of every ranking appears once in the fused list")
        if got != expected:
            raise Wrong("the right ids in the wrong order: sum 1 / (k + rank) with ranks from 1, best first")

    return compare


q1 = Exercise(
    "A near-duplicate threshold",
    [Case((SIMILARITY, IS_DUPLICATE), _threshold(SIMILARITY, IS_DUPLICATE))],
    [
        "The threshold must lie above the most similar non-duplicate and at or below the least similar duplicate.",
        "`similarity[is_duplicate].min()` and `similarity[~is_duplicate].max()`: take a value between them.",
    ],
    duplicate_threshold,
    wrong=[lambda s, d: float(s.mean()), lambda s, d: 0.995],
)

q2 = Exercise(
    "A filter expression user text cannot change",
    [Case((c,), _template(c)) for c in ("animals", _ATTACK)],
    [
        "Milvus 2.5 expression templates: `filter='label == {c}'`, `filter_params={'c': category}`.",
        'Formatting the text into the string (f\'label == "{category}"\') lets a category like x" or id > 0 or " '
        "change what the filter means.",
    ],
    category_filter,
    wrong=[lambda c: (f'label == "{c}"', {}), lambda c: ("label == {c}", {"c": c.strip('"')})],
)

q3 = Exercise(
    "Reciprocal rank fusion",
    [Case(([[1, 2, 3], [3, 1, 4]],), _fused([[1, 2, 3], [3, 1, 4]])), Case(([[5, 6], [7]],), _fused([[5, 6], [7]]))],
    [
        "Give every id a score: for each ranking it appears in, add 1 / (k + its rank), ranks counting from 1.",
        "Sort the ids by score, highest first.",
    ],
    rrf,
    wrong=[
        lambda rs: sorted({i for r in rs for i in r}, key=lambda i: sum(r.index(i) for r in rs if i in r)),
        lambda rs: [i for r in rs for i in r],
    ],
)

EXERCISES = {"nb05.q1": q1, "nb05.q2": q2, "nb05.q3": q3}
