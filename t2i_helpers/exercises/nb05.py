"""Exercises of notebook 05: a near-duplicate threshold, a Milvus filter that user text cannot change, RRF."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from ..store.filters import quote
from . import sandbox
from .problem import Case, Exercise, Wrong, as_array

# Cosine similarities of image pairs, and whether a person judged each pair a near-duplicate.
SIMILARITY = np.array([0.999, 0.97, 0.995, 0.91, 0.993, 0.88, 0.96, 0.998, 0.94, 0.991])
IS_DUPLICATE = np.array([True, False, True, False, True, False, False, True, False, True])
# More judged pairs, where the gap between the two kinds lies elsewhere (and is narrow).
_PAIRS = [
    (np.array([0.80, 0.93, 0.79, 0.95, 0.60, 0.931]), np.array([False, True, False, True, False, True])),
    (np.array([0.99, 0.40, 0.985, 0.97, 0.30]), np.array([True, False, True, False, False])),
    (np.array([0.5, 0.7, 0.71, 0.2]), np.array([False, False, True, False])),
]


def duplicate_threshold(similarity: np.ndarray, is_duplicate: np.ndarray) -> float:
    """A threshold with every duplicate at or above it and every other pair below: halfway between the two."""
    return float((similarity[is_duplicate].min() + similarity[~is_duplicate].max()) / 2)


def category_filter(category: str) -> str:
    """A Milvus boolean expression selecting the images whose label is `category`, whatever its characters."""
    return "label == " + quote(category)


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


def _selects(category: str):
    expected = {i for i, label in enumerate(sandbox.LABELS) if label == category}

    def compare(result) -> None:
        if isinstance(result, tuple):
            raise Wrong("return one expression string: milvus-lite 2.5.1 has no filter_params, so escape the text")
        got = sandbox.selected(result)
        if got != expected:
            what = "more rows" if got > expected else "other rows" if got - expected else "fewer rows"
            raise Wrong(f"for the category {category!r} your expression selects {what} than the label equal to it")

    return compare


def _fused(rankings: Sequence[Sequence[int]], k: int | None = None):
    """Any order of ids with equal scores is right: the score at each place must be the sorted scores."""
    scores: dict[int, float] = defaultdict(float)
    for ranking in rankings:
        for rank, image_id in enumerate(ranking, start=1):
            scores[image_id] += 1.0 / ((60 if k is None else k) + rank)
    best = sorted(scores.values(), reverse=True)

    def compare(result) -> None:
        if isinstance(result, dict):
            raise Wrong("return the ids, best first, not their scores")
        got = [float(i) for i in as_array(list(result)).ravel()]
        if any(not i.is_integer() for i in got) or not set(map(int, got)) <= set(scores):
            raise Wrong("these look like scores, not ids: return the ids of the rankings, best first")
        got_ids = [int(i) for i in got]
        if len(got_ids) != len(set(got_ids)) or set(got_ids) != set(scores):
            raise Wrong("every id of every ranking appears once in the fused list")
        if not np.allclose([scores[i] for i in got_ids], best, rtol=0, atol=1e-12):
            raise Wrong("the right ids in the wrong order: sum 1 / (k + rank) with ranks from 1, best first")

    return compare


def _threshold_loop(similarity, is_duplicate):
    lowest_duplicate = min(s for s, d in zip(similarity, is_duplicate) if d)
    return lowest_duplicate  # exactly the least similar duplicate: it reaches the threshold, nothing else does


def _threshold_in_place(similarity, is_duplicate):
    highest_other = np.sort(similarity[~is_duplicate])[-1]
    similarity.sort()  # sorts the caller's array (the labels no longer line up with it)
    return np.nextafter(highest_other, 1.0)


q1 = Exercise(
    "A near-duplicate threshold",
    "Write `duplicate_threshold(similarity, is_duplicate)`: two NumPy arrays of the same length, the cosine "
    "similarity of each pair and whether a person judged it a near-duplicate (both kinds present, every duplicate "
    "more similar than every other pair); return a threshold (a float) that every duplicate reaches "
    "(`similarity >= threshold`) and no other pair does.",
    [Case((SIMILARITY, IS_DUPLICATE), _threshold(SIMILARITY, IS_DUPLICATE))]
    + [Case((s, d), _threshold(s, d)) for s, d in _PAIRS],
    [
        "The threshold must lie above the most similar non-duplicate and at or below the least similar duplicate.",
        "`similarity[is_duplicate].min()` and `similarity[~is_duplicate].max()`: take a value between them.",
    ],
    duplicate_threshold,
    wrong=[
        lambda s, d: float(s.mean()),  # the labels ignored
        lambda s, d: 0.995,  # a constant
        lambda s, d: float(np.median(s)),  # the labels ignored
        lambda s, d: float(s[~d].max()),  # the most similar other pair reaches it
        lambda s, d: float(s[d].mean()),  # some duplicates fall below
        lambda s, d: float((s[d].max() + s[~d].min()) / 2),  # the wrong ends
        lambda s, d: float((s.min() + s.max()) / 2),  # the labels ignored
        lambda s, d: float(s[d.astype(int)].min() + s[(~d).astype(int)].max()) / 2,  # labels used as positions
        lambda s, d: float(s[d].min()) + 1e-3,  # just above the least similar duplicate
    ],
    variants=[
        _threshold_loop,
        _threshold_in_place,
        lambda s, d: (max(x for x, y in zip(s, d) if not y) + min(x for x, y in zip(s, d) if y)) / 2,
    ],
)


def _filter_escaped(category):
    escaped = category.replace("\\", "\\\\").replace('"', '\\"')
    return f'label == "{escaped}"'


def _filter_single_quotes(category):
    escaped = category.replace("\\", "\\\\").replace("'", "\\'")
    return f"label == '{escaped}'"


_CATEGORIES = [
    "animals",
    'x" or id > 0 or "',
    "back\\slash",
    "ends with \\",
    "café",
    'say "cheese"',
    "it's",
    "animals%",
    "a_b",
    "ice cream",
    "tab\there",
    "zero\u200bwidth",
]

q2 = Exercise(
    "A filter expression user text cannot change",
    "Write `category_filter(category)`: `category` is any one line of user text (quotes, backslashes, accents, "
    "`%`, spaces, tabs); return one Milvus boolean expression string, for `client.search(..., filter=expression)` on "
    "milvus-lite, that selects exactly the images whose `label` equals `category`. It is checked by what it "
    "selects in a real milvus-lite collection, so any equivalent expression is right.",
    [Case((c,), _selects(c)) for c in _CATEGORIES],
    [
        "A Milvus string literal is in double quotes; inside it a backslash escapes the next character.",
        'Escape backslashes first (each `\\` becomes `\\\\`), then double quotes (each `"` becomes `\\"`).',
        "json.dumps escapes too, but writes é as \\u00e9, which Milvus reads as six characters: it selects nothing.",
    ],
    category_filter,
    wrong=[
        lambda c: f'label == "{c}"',  # the text changes the expression
        lambda c: ("label == {c}", {"c": c}),  # a template: milvus-lite refuses it
        lambda c: "label == {c}",  # a template in a string
        lambda c: f"label == {json.dumps(c)}",  # \\uXXXX for non-ASCII
        lambda c: f'label == "{c.replace(chr(34), chr(92) + chr(34))}"',  # quotes escaped, backslashes not
        lambda c: f'label == "{c.replace(chr(34), "")}"',  # quotes dropped
        lambda c: f"label == {c!r}",  # Python's repr
        lambda c: f'label like "{c}%"',  # a prefix, and LIKE's wildcards
        lambda c: f'label == "{c.casefold()}"',  # changes the text
    ],
    variants=[_filter_escaped, _filter_single_quotes, lambda c: f"label in [{quote(c)}]"],
)


def _rrf_counter(rankings, k=60):
    scores = Counter()
    for ranking in rankings:
        scores.update({image_id: 1 / (k + rank) for rank, image_id in enumerate(ranking, 1)})
    return [image_id for image_id, _ in scores.most_common()]


def _rrf_ties_by_id(rankings, k=60):
    scores = defaultdict(float)
    for ranking in rankings:
        for position, image_id in enumerate(ranking):
            scores[image_id] += 1 / (k + position + 1)
    return sorted(scores, key=lambda i: (-scores[i], i))  # equal scores: smaller id first


def _rrf_in_place(rankings, k=60):
    scores = {}
    while rankings:  # empties the caller's list
        for rank, image_id in enumerate(rankings.pop(), 1):
            scores[image_id] = scores.get(image_id, 0) + 1 / (k + rank)
    return sorted(scores, key=scores.get, reverse=True)


def _rrf_scored(rankings, k, rank_base=1, combine=sum):
    scores = defaultdict(list)
    for ranking in rankings:
        for rank, image_id in enumerate(ranking, rank_base):
            scores[image_id].append(1 / (k + rank))
    return sorted(scores, key=lambda i: -combine(scores[i]))


_FUSE = [
    ([[1, 2, 3], [3, 1, 4]], None),
    ([[5, 6], [7]], None),  # 5 and 7 tie: either first
    ([[1, 2, 3, 4], [4, 3, 5, 6]], 1),  # a small k: the top ranks weigh more than two appearances
    ([[10, 11, 12, 13, 14, 15], [16, 17, 14], [12, 18]], None),
    ([[8, 9], [9, 8], [20]], 2),  # 8 and 9 tie
    ([[1, 2, 3], [4, 5, 3]], 0),  # k = 0: 1 / rank, where the top ranks beat two appearances
]

q3 = Exercise(
    "Reciprocal rank fusion",
    "Write `rrf(rankings, k=60)`: `rankings` is a list of rankings, each a list of distinct ids best first; every "
    "id scores the sum of 1 / (k + rank) over the rankings it appears in (ranks counted from 1); return a list of "
    "every id once, highest score first. Ids with equal scores may come in either order.",
    [Case((r,) if k is None else (r, k), _fused(r, k)) for r, k in _FUSE],
    [
        "Give every id a score: for each ranking it appears in, add 1 / (k + its rank), ranks counting from 1.",
        "Sort the ids by score, highest first.",
    ],
    rrf,
    wrong=[
        lambda rs, k=60: sorted({i for r in rs for i in r}, key=lambda i: sum(r.index(i) for r in rs if i in r)),
        lambda rs, k=60: [i for r in rs for i in r],  # concatenated
        lambda rs, k=60: _rrf_scored(rs, k, rank_base=0),  # ranks from 0
        lambda rs, k=60: _rrf_scored(rs, k, combine=max),  # the best appearance only
        lambda rs, k=60: _rrf_scored(rs, 60),  # k ignored
        lambda rs, k=60: _rrf_scored(rs, k)[::-1],  # worst first
        lambda rs, k=60: _rrf_scored(rs, k, combine=lambda s: sum(s) / len(s)),  # the mean, not the sum
        lambda rs, k=60: _rrf_scored(rs, 0),  # 1 / rank, k ignored
        lambda rs, k=60: [
            s
            for s in sorted(
                (sum(1 / (k + r.index(i) + 1) for r in rs if i in r) for i in {i for r in rs for i in r}), reverse=True
            )
        ],  # the scores
    ],
    variants=[_rrf_counter, _rrf_ties_by_id, _rrf_in_place],
)

EXERCISES = {"nb05.q1": q1, "nb05.q2": q2, "nb05.q3": q3}
