"""Exercises of notebook 07: a threshold for a precision, pairwise precision and recall of a grouping, the photos
with everyone named."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import reduce

import numpy as np
import pandas as pd

from .problem import Case, Exercise, Wrong, as_array


def threshold_for_precision(distances: np.ndarray, same: np.ndarray, min_precision: float) -> float:
    """The threshold that calls the most same-person pairs one person (distance below it) while the precision of
    the pairs it calls one person stays at least `min_precision` (none called: precision 1)."""
    order = np.argsort(distances, kind="stable")
    d, s = np.asarray(distances, dtype=float)[order], np.asarray(same, dtype=bool)[order]
    best = d[0]  # below every pair: calls no pair one person
    for i in range(len(d)):
        if i + 1 < len(d) and d[i + 1] == d[i]:
            continue  # no threshold puts one of two equal distances below it and not the other
        if s[: i + 1].sum() / (i + 1) >= min_precision:
            best = (d[i] + d[i + 1]) / 2 if i + 1 < len(d) else d[i] + 1.0
    return float(best)


def pairwise_precision_recall(truth: Sequence, predicted: Sequence) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping against the truth (none together: precision 1, none alike: 1)."""
    together = alike = both = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        one_person, one_group = truth[i] == truth[j], predicted[i] == predicted[j]
        together += one_group
        alike += one_person
        both += one_person and one_group
    return (both / together if together else 1.0, both / alike if alike else 1.0)


def photos_with(faces: list[dict], names: Sequence[str]) -> set[int]:
    """The ids of the photos in which every one of `names` is, names compared as `str.casefold` compares them."""
    wanted = {name.casefold() for name in names}
    found: dict[int, set[str]] = {}
    for face in faces:
        found.setdefault(face["photo_id"], set()).add(face["name"].casefold())
    return {photo for photo, named in found.items() if wanted <= named}


def _shuffled(distances: list[float], same: list[bool], seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(distances))
    return np.asarray(distances)[order], np.asarray(same)[order]


_rng = np.random.default_rng(7)
_FACES_LIKE = (  # 40 same-person pairs and 120 others whose distances overlap, as faces of every size do
    np.concatenate([np.clip(_rng.normal(0.30, 0.15, 40), 0.01, 1.5), np.clip(_rng.normal(0.78, 0.1, 120), 0, 2)]),
    np.array([True] * 40 + [False] * 120),
)
_THRESHOLD_CASES = [
    (*_shuffled([0.05, 0.12, 0.3, 0.21, 0.8, 0.95, 0.77, 0.9], [True] * 4 + [False] * 4, 1), 1.0),
    # precision dips below the target and comes back: the best threshold is past the dip
    (*_shuffled([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [True, True, False, True, True, True, False, False], 2), 0.8),
    (*_shuffled([0.15, 0.2, 0.25, 0.9], [False, True, True, False], 3), 1.0),  # the nearest pair is two people
    (np.array([0.1, 0.2, 0.5, 0.5, 0.9]), np.array([True, True, True, False, False]), 1.0),  # a tie at the edge
    (*_shuffled([0.1, 0.3, 0.2, 0.25], [True] * 4, 4), 0.99),  # one person only: every pair
    (_FACES_LIKE[0].astype(np.float32), _FACES_LIKE[1], 0.95),
    (*_FACES_LIKE, 0.8),
]


def _kept(distances: np.ndarray, same: np.ndarray, threshold: float) -> tuple[int, int]:  # (called, rightly)
    called = np.asarray(distances, dtype=float) < threshold
    return int(called.sum()), int(np.asarray(same)[called].sum())


def _threshold(distances: np.ndarray, same: np.ndarray, target: float):
    best = _kept(distances, same, threshold_for_precision(distances, same, target))[1]

    def compare(result) -> None:
        got = as_array(result)
        if got.size != 1 or got.dtype.kind not in "iuf" or not np.isfinite(got).all():
            raise Wrong("return one number, the threshold")
        threshold = float(got.ravel()[0])
        called, right = _kept(distances, same, threshold)
        if called and right / called < target:
            raise Wrong(f"only {right} of the {called} pairs your threshold calls one person are: precision < {target}")
        if right < best:
            called_up, right_up = _kept(distances, same, np.nextafter(threshold, np.inf))  # just above it
            exactly = right_up > right and right_up / called_up >= target
            higher = "a higher threshold keeps the precision and calls more same-person pairs one person"
            raise Wrong("a pair exactly at your threshold is not below it" if exactly else higher)

    return compare


def _sorted(distances, same):
    order = np.argsort(distances, kind="stable")
    return np.asarray(distances, dtype=float)[order], np.asarray(same)[order]


def _reaching(same, target):  # the positions i where the first i + 1 pairs reach the precision
    return np.flatnonzero(np.cumsum(same) / np.arange(1, len(same) + 1) >= target)


def _past_last_kept(offset: float):  # 0: the last kept pair's own distance (it is not below it); 1e-9: past a tie
    def answer(distances, same, target):
        d, s = _sorted(distances, same)
        ok = _reaching(s, target)
        return d[ok[-1]] + offset if len(ok) else d[0]

    return answer


def _unsorted(distances, same, target):  # walks the pairs in the order given
    ok = _reaching(np.asarray(same), target)
    return float(distances[ok[-1]]) + 1e-9 if len(ok) else float(np.min(distances))


def _first_dip(distances, same, target):  # stops where the precision first falls below the target
    d, s = _sorted(distances, same)
    low = np.flatnonzero(np.cumsum(s) / np.arange(1, len(s) + 1) < target)
    end = low[0] if len(low) else len(d)  # the pairs before it are kept
    return d[0] if end == 0 else (d[end - 1] + d[end]) / 2 if end < len(d) else d[-1] + 1


def _recall_target(distances, same, target):  # the target read as a recall
    d = np.sort(np.asarray(distances, dtype=float)[np.asarray(same)])
    return d[max(0, int(np.ceil(target * len(d))) - 1)] + 1e-9


def _halfway(distances, same, target):  # halfway between the farthest same-person pair and the nearest other
    return (distances[same].max() + distances[~same].min()) / 2 if (~same).any() else distances.max() + 1


def _brute_force(distances, same, target):
    d = np.asarray(distances, dtype=float)
    best, best_right = float(d.min()), -1
    for t in [*np.unique(d), d.max() + 0.5]:
        called, right = _kept(d, same, t)
        if (not called or right / called >= target) and right > best_right:
            best, best_right = float(t), right
    return best


def _from_the_top(distances, same, target):
    for t in sorted({*distances.tolist(), float(np.max(distances)) + 1}, reverse=True):
        called = distances < t
        if not called.any() or same[called].mean() >= target:
            return t


def _pandas(distances, same, target):
    table = pd.DataFrame({"d": distances.astype(float), "same": same}).groupby("d").same.agg(["sum", "count"])
    table = table.cumsum()
    table["next"] = np.append(table.index[1:], table.index[-1] + 1)
    ok = table[table["sum"] / table["count"] >= target]
    return float(ok["next"].iloc[-1]) if len(ok) else float(table.index[0])


q1 = Exercise(
    "A threshold for a precision",
    "Write `threshold_for_precision(distances, same, min_precision)`: `distances` is a NumPy array of the cosine "
    "distances of face pairs (in any order, some may be equal), `same` a boolean array of the same length (whether "
    "each pair is one person; at least one is), `min_precision` a float from 0 to 1. A pair is called one person "
    "when its distance is below the threshold (strictly). Return the threshold (a float) that calls the most "
    "same-person pairs one person while the precision of the pairs called one person stays at least "
    "`min_precision`; calling no pair one person counts as precision 1.",
    [Case((d, s, t), _threshold(d, s, t)) for d, s, t in _THRESHOLD_CASES],
    [
        "Sort the pairs by distance: a threshold calls a prefix of them one person.",
        "Walk the whole list keeping the last prefix whose precision is high enough: precision can dip and recover.",
        "The threshold must lie above the last pair kept and at or below the next one: their midpoint works; no "
        "threshold can part two equal distances.",
    ],
    threshold_for_precision,
    wrong=[_past_last_kept(0.0), _first_dip, _unsorted, _recall_target, _halfway, _past_last_kept(1e-9)],
    variants=[_brute_force, _from_the_top, _pandas],
)


_GROUPINGS = [
    (["hopper", "hopper", "astronaut", "astronaut", "cameraman"], [7, 7, 3, 3, 9]),  # right, other labels
    (["a", "a", "b", "b"], [0, 0, 0, 0]),  # two people merged
    (["a", "a", "a", "a"], [0, 0, 1, 1]),  # one person split
    (["a", "a", "b"], [0, 1, 2]),  # every face alone
    (["a", "b", "c"], [0, 0, 1]),  # no two faces of one person
    ([1, 1, 2, 2, 3], [2, 2, 1, 3, 3]),  # the same numbers, meaning other things
    (["h"] * 6 + ["a", "a", "c"], [0, 0, 0, 0, 1, 1, 1, 1, 2]),  # one large person, unevenly split and merged
]


def _pairwise(truth: list, predicted: list):
    precision, recall = pairwise_precision_recall(truth, predicted)

    def compare(result) -> None:
        got = [float(v) for v in as_array(result).ravel()]
        if len(got) != 2:
            raise Wrong("return two numbers: (precision, recall)")
        p, r = got
        if abs(p - precision) < 1e-9 and abs(r - recall) < 1e-9:
            return
        if abs(p - recall) < 1e-9 and abs(r - precision) < 1e-9:
            raise Wrong("precision and recall are the other way round")
        if len(set(predicted)) == len(predicted) and abs(p - precision) > 1e-9:
            raise Wrong("a grouping that puts no two faces together has precision 1 (it merges no one)")
        which = "precision" if abs(p - precision) > 1e-9 else "recall"
        raise Wrong(f"the {which} is off: count each pair of two different faces once")

    return compare


def _self_pairs(truth, predicted):  # every face also paired with itself
    n = len(truth)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    together = sum(predicted[i] == predicted[j] for i, j in pairs)
    alike = sum(truth[i] == truth[j] for i, j in pairs)
    both = sum(truth[i] == truth[j] and predicted[i] == predicted[j] for i, j in pairs)
    return both / together, both / alike


def _rand(truth, predicted):  # pairs apart in both counted as right too
    pairs = list(itertools.combinations(range(len(truth)), 2))
    agree = sum((truth[i] == truth[j]) == (predicted[i] == predicted[j]) for i, j in pairs) / len(pairs)
    return agree, pairwise_precision_recall(truth, predicted)[1]


def _no_pairs_zero(truth, predicted):  # nothing put together read as precision 0
    together = sum(predicted[i] == predicted[j] for i, j in itertools.combinations(range(len(truth)), 2))
    precision, recall = pairwise_precision_recall(truth, predicted)
    return (precision if together else 0.0), recall


def _bcubed(truth, predicted):  # B-cubed, not pairwise
    n = range(len(truth))
    group = [[j for j in n if predicted[j] == predicted[i]] for i in n]
    person = [[j for j in n if truth[j] == truth[i]] for i in n]
    precision = np.mean([sum(truth[j] == truth[i] for j in group[i]) / len(group[i]) for i in n])
    recall = np.mean([sum(predicted[j] == predicted[i] for j in person[i]) / len(person[i]) for i in n])
    return precision, recall


def _ordered(truth, predicted):
    pairs = [(i, j) for i in range(len(truth)) for j in range(len(truth)) if i != j]
    together = [truth[i] == truth[j] for i, j in pairs if predicted[i] == predicted[j]]
    alike = [predicted[i] == predicted[j] for i, j in pairs if truth[i] == truth[j]]
    return (sum(together) / len(together) if together else 1.0, sum(alike) / len(alike) if alike else 1.0)


def _matrices(truth, predicted):
    t, p = np.asarray(truth), np.asarray(predicted)
    upper = np.triu(np.ones((len(t), len(t)), bool), k=1)
    one_person, one_group = (t[:, None] == t) & upper, (p[:, None] == p) & upper
    both = (one_person & one_group).sum()
    return (both / one_group.sum() if one_group.any() else 1.0, both / one_person.sum() if one_person.any() else 1.0)


def _counted(truth, predicted):
    def pairs(counts):
        return sum(n * (n - 1) // 2 for n in counts.values())

    both, together, alike = pairs(Counter(zip(truth, predicted))), pairs(Counter(predicted)), pairs(Counter(truth))
    return (both / together if together else 1.0, both / alike if alike else 1.0)


q2 = Exercise(
    "Pairwise precision and recall of a grouping",
    "Write `pairwise_precision_recall(truth, predicted)`: two lists of the same length (at least two faces), the "
    "true person of each face and the group a grouping put it in; the labels may be of any kind, and the two "
    "lists use different ones. Over every pair of two different faces, each pair counted once: precision = pairs "
    "in one group that are one person / pairs in one group; recall = pairs in one group that are one person / "
    "pairs that are one person. Return `(precision, recall)` as two floats; a grouping that puts no two faces "
    "together has precision 1.0, and a truth with no two faces of one person recall 1.0.",
    [Case((t, p), _pairwise(t, p)) for t, p in _GROUPINGS],
    [
        "Group labels are not person names: compare pairs (same group? same person?), never a label with a label.",
        "`itertools.combinations(range(len(truth)), 2)` gives each pair of two different faces once.",
        "Count three numbers: pairs in one group, pairs of one person, pairs that are both.",
    ],
    pairwise_precision_recall,
    wrong=[
        _self_pairs,
        lambda t, p: pairwise_precision_recall(t, p)[::-1],  # the other way round
        lambda t, p: (np.mean([a == b for a, b in zip(t, p)]),) * 2,  # compares the labels themselves
        _rand,
        _no_pairs_zero,
        _bcubed,
    ],
    variants=[_ordered, _matrices, _counted],
)


def _faces(*rows: tuple[int, str]) -> list[dict]:  # rows as the faces collection returns them
    return [{"id": 1000 + i, "photo_id": photo, "name": name} for i, (photo, name) in enumerate(rows)]


_LIBRARY = _faces(
    (1, "Anna"), (1, "Bob"), (2, "anna"), (3, "Bob"), (4, ""), (4, "ANNA"), (4, "Bob"), (4, "Grandma"),
    (5, "Grandma"), (6, "Anna"), (6, "Anna"), (7, "Ann"), (7, "Bob"), (8, "Jürgen Straße"), (9, "JÜRGEN STRASSE"),
    (9, "Bob"), (10, ""), (12_345_678_901, "Grandma"), (12_345_678_901, "Anna"),
)  # fmt: skip
_PEOPLE_QUERIES = [
    ["Anna"],
    ["Anna", "Bob"],
    ["bob", "ANNA", "grandma"],
    ["Anna", "Grandma"],
    ["Anna", "Nobody"],
    ["Bob", "jürgen strasse"],
    ["Jürgen Straße"],
    ["Ann"],
    ["Anna", "anna"],
]


def _photos(faces: list[dict], names: list[str]):
    expected = photos_with(faces, names)
    face_ids = {f["id"] for f in faces}

    def compare(result) -> None:
        if isinstance(result, str | dict) or not hasattr(result, "__iter__"):
            raise Wrong(f"return a set of photo ids, not a {type(result).__name__}")
        got = {int(i) for i in result}
        if got == expected:
            return
        if got and got <= face_ids:
            raise Wrong("these are face ids: return the `photo_id` of the photos")
        if got - expected:
            raise Wrong(f"for {names} your answer keeps photos in which not everyone named is (names casefolded)")
        raise Wrong(f"for {names} your answer misses photos in which everyone named is (names casefolded)")

    return compare


def _keyed(key):  # names compared by `key` instead of casefold: str (case counts), str.lower ("Straße" != "STRASSE")
    def answer(faces, names):
        by_photo = defaultdict(set)
        for f in faces:
            by_photo[f["photo_id"]].add(key(f["name"]))
        return {p for p, found in by_photo.items() if {key(n) for n in names} <= found}

    return answer


def _counts_faces(faces, names):  # as many matching faces as names: two faces of Anna pass for Anna and Bob
    wanted = {n.casefold() for n in names}
    counts = Counter(f["photo_id"] for f in faces if f["name"].casefold() in wanted)
    return {p for p, n in counts.items() if n >= len(names)}


def _substring(faces, names):  # "Ann" found inside "Anna"
    by_photo = defaultdict(list)
    for f in faces:
        by_photo[f["photo_id"]].append(f["name"].casefold())
    return {p for p, found in by_photo.items() if all(any(n.casefold() in x for x in found) for n in names)}


def _grouped(faces, names):
    table = pd.DataFrame(faces)
    table["key"] = table["name"].str.casefold()
    named = table.groupby("photo_id")["key"].agg(set)
    return [int(p) for p, found in named.items() if {n.casefold() for n in names} <= found]


q3 = Exercise(
    "The photos with everyone named",
    "Write `photos_with(faces, names)`: `faces` is a list of dicts, one per face, as the faces collection returns "
    "them (`{'id': face id, 'photo_id': int, 'name': str}`; `''` for a face no one named yet), `names` a non-empty "
    "list of names. Return the set of the ids of the photos in which every one of `names` is, names compared "
    "without regard to case, as `str.casefold()` compares them.",
    [Case((_LIBRARY, names), _photos(_LIBRARY, names)) for names in _PEOPLE_QUERIES],
    [
        "Collect the names found in each photo first: a dict from `photo_id` to a set of casefolded names.",
        "A photo qualifies when the set of wanted names is a subset of its names (`<=`): two faces of one person "
        "are still one name.",
    ],
    photos_with,
    wrong=[
        lambda faces, names: {f["photo_id"] for f in faces if f["name"].casefold() in {n.casefold() for n in names}},
        _keyed(str),
        _keyed(str.lower),
        _counts_faces,
        lambda faces, names: {f["photo_id"] for f in faces if f["name"].casefold() == names[0].casefold()},
        _substring,
        lambda faces, names: {f["id"] for f in faces if f["name"].casefold() in {n.casefold() for n in names}},
    ],
    variants=[
        lambda faces, names: reduce(
            set.intersection, ({f["photo_id"] for f in faces if f["name"].casefold() == n.casefold()} for n in names)
        ),
        _grouped,
        lambda faces, names: sorted(  # a list, photo by photo
            p
            for p in {f["photo_id"] for f in faces}
            if {n.casefold() for n in names} <= {f["name"].casefold() for f in faces if f["photo_id"] == p}
        ),
    ],
)

EXERCISES = {"nb07.q1": q1, "nb07.q2": q2, "nb07.q3": q3}
