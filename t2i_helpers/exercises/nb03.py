"""Exercises of notebook 03: recall@k and reciprocal rank on a worked example, choosing nprobe for 95% recall."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd

from .problem import Case, Exercise, Wrong

# A sweep like notebook 03's IVF study: recall@10 against exact search, and latency, per nprobe.
SWEEP = pd.DataFrame(
    {
        "nprobe": [1, 2, 4, 8, 16, 32, 64],
        "recall@10": [0.52, 0.68, 0.81, 0.91, 0.96, 0.99, 1.00],
        "ms": [0.4, 0.6, 0.9, 1.5, 2.8, 5.2, 10.1],
    }
)


def recall_at_k(ranked: Sequence[int], relevant: Collection[int], k: int) -> float:
    """The share of the relevant images found in the top `k` of a ranking."""
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def reciprocal_rank(ranked: Sequence[int], relevant: Collection[int]) -> float:
    """1 / the rank (counted from 1) of the first relevant image; 0 if none is in the ranking."""
    for rank, image_id in enumerate(ranked, start=1):
        if image_id in relevant:
            return 1.0 / rank
    return 0.0


def smallest_nprobe(sweep: pd.DataFrame, target: float) -> int:
    """The cheapest `nprobe` whose recall@10 reaches `target`."""
    return int(sweep[sweep["recall@10"] >= target].nprobe.min())


def _number(expected: float, what: str, hint_if: dict[float, str]):
    def compare(result) -> None:
        got = float(result)
        if abs(got - expected) > 1e-9:
            raise Wrong(next((why for value, why in hint_if.items() if abs(got - value) < 1e-9), f"{what} is off"))

    return compare


_RANKED, _RELEVANT = [7, 3, 9, 1, 4, 8], {3, 8, 5}
q1 = Exercise(
    "recall@k by hand",
    [
        Case((_RANKED, _RELEVANT, 2), _number(1 / 3, "recall@2", {1 / 2: "that is precision: divide by |relevant|"})),
        Case((_RANKED, _RELEVANT, 6), _number(2 / 3, "recall@6", {2 / 6: "that is precision: divide by |relevant|"})),
        Case(([5, 6], {5}, 10), _number(1.0, "recall@10 of a short ranking", {0.1: "divide by |relevant|, not k"})),
    ],
    [
        "Take the first k ids of the ranking and count how many are relevant.",
        "Recall divides by how many relevant images there are; precision would divide by k.",
    ],
    recall_at_k,
    wrong=[
        lambda r, rel, k: len(set(r[:k]) & set(rel)) / k,  # precision@k
        lambda r, rel, k: float(any(i in rel for i in r[:k])),  # hit rate
    ],
)

q2 = Exercise(
    "Reciprocal rank",
    [
        Case((_RANKED, _RELEVANT), _number(1 / 2, "the reciprocal rank", {1.0: "ranks count from 1, not 0"})),
        Case(([4, 2, 6], {9}), _number(0.0, "the reciprocal rank of a ranking with no relevant image", {})),
        Case(([3, 1], {3}), _number(1.0, "the reciprocal rank of a first hit", {})),
    ],
    [
        "Walk down the ranking with `enumerate(ranked, start=1)`; stop at the first relevant id.",
        "A ranking with no relevant image scores 0.",
    ],
    reciprocal_rank,
    wrong=[
        lambda r, rel: next((1 / (i + 1) for i, x in enumerate(r[1:]) if x in rel), 0.0),  # skips the first
        lambda r, rel: next((1 / max(i, 1) for i, x in enumerate(r) if x in rel), 0.0),  # counts from 0
    ],
)


def _nprobe(expected: int, target: float):
    def compare(result) -> None:
        got = int(result)
        row = SWEEP[SWEEP.nprobe == got]
        if row.empty:
            raise Wrong(f"{got} is not an nprobe of the sweep")
        if float(row["recall@10"].iloc[0]) < target:
            raise Wrong(f"nprobe {got} does not reach recall@10 {target}")
        if got != expected:
            raise Wrong(f"nprobe {got} reaches the target, but a smaller (faster) one does too")

    return compare


q3 = Exercise(
    "Choose nprobe for 95% recall",
    [Case((SWEEP, t), _nprobe(smallest_nprobe(SWEEP, t), t)) for t in (0.95, 0.9, 0.99)],
    [
        "Keep the rows whose recall@10 is at least the target.",
        "Latency grows with nprobe, so the cheapest is the smallest nprobe that remains.",
    ],
    smallest_nprobe,
    wrong=[
        lambda s, t: int(s.loc[s["recall@10"].idxmax(), "nprobe"]),  # the most recall, at any cost
        lambda s, t: int(s[s["recall@10"] <= t].nprobe.max()),  # just under the target
    ],
)

EXERCISES = {"nb03.q1": q1, "nb03.q2": q2, "nb03.q3": q3}
