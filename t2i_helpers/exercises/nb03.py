"""Exercises of notebook 03: recall@k and reciprocal rank on a worked example, choosing nprobe for 95% recall."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
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
_SHUFFLED = SWEEP.iloc[[4, 6, 1, 3, 0, 5, 2]].set_axis([3, 0, 6, 1, 5, 2, 4])  # any order, labels not positions


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


def _number(expected: float, what: str, hint_if: dict[float, str] | None = None):
    def compare(result) -> None:
        try:
            got = float(result)
        except (TypeError, ValueError):
            raise Wrong(f"return one number, not a {type(result).__name__}") from None
        if abs(got - expected) > 1e-9:
            why = next((why for value, why in (hint_if or {}).items() if abs(got - value) < 1e-9), f"{what} is off")
            raise Wrong(why)

    return compare


_RANKED, _RELEVANT = [7, 3, 9, 1, 4, 8], {3, 8, 5}
_PRECISION = "that is precision: divide by how many relevant images there are"
q1 = Exercise(
    "recall@k by hand",
    "Write `recall_at_k(ranked, relevant, k)`: `ranked` is a list of distinct ids, best first (it may be shorter "
    "than `k`), `relevant` a non-empty set of ids, `k >= 1`; return the share (a float from 0 to 1) of the "
    "relevant ids found among the first `k` of `ranked`.",
    [
        Case((_RANKED, _RELEVANT, 2), _number(1 / 3, "recall@2", {1 / 2: _PRECISION})),
        Case((_RANKED, _RELEVANT, 6), _number(2 / 3, "recall@6", {2 / 6: _PRECISION})),
        Case(([5, 6], {5}, 10), _number(1.0, "recall@10 of a short ranking", {0.1: "divide by |relevant|, not k"})),
        Case(([2, 4, 6, 8], {4, 6, 8, 10}, 1), _number(0.0, "recall@1 (the first id is not relevant)")),
        Case(([2, 4, 6, 8], {4, 6, 8, 10}, 2), _number(1 / 4, "recall@2")),
        Case(([1, 2, 3, 4, 5, 6, 7], {6, 7}, 5), _number(0.0, "recall@5 (the relevant ids come later)")),
        Case(([11, 12, 13], {11, 12, 13, 14, 15}, 3), _number(3 / 5, "recall@3", {1.0: _PRECISION})),
    ],
    [
        "Take the first k ids of the ranking and count how many are relevant.",
        "Recall divides by how many relevant images there are; precision would divide by k.",
    ],
    recall_at_k,
    wrong=[
        lambda r, rel, k: len(set(r[:k]) & set(rel)) / k,  # precision@k
        lambda r, rel, k: float(any(i in rel for i in r[:k])),  # hit rate
        lambda r, rel, k: len(set(r[: k + 1]) & set(rel)) / len(rel),  # one too many
        lambda r, rel, k: len(set(r) & set(rel)) / len(rel),  # k ignored
        lambda r, rel, k: len(set(r[:k]) & set(rel)) / min(k, len(rel)),  # capped at k
        lambda r, rel, k: len(set(r[:k]) & set(rel)) // len(rel),  # integer division
        lambda r, rel, k: len(set(r[1 : k + 1]) & set(rel)) / len(rel),  # skips the first
        lambda r, rel, k: len(set(r[:k]) & set(rel)) / len(r),  # divides by the ranking's length
    ],
    variants=[
        lambda r, rel, k: sum(1 for i in r[:k] if i in rel) / len(rel),
        lambda r, rel, k: float(np.isin(np.array(r[:k], dtype=int), list(rel)).sum() / len(rel)),
        lambda r, rel, k: len([i for i in rel if i in r[:k]]) / len(rel),
    ],
)


def _rr_index(ranked, relevant):
    hits = [ranked.index(i) for i in relevant if i in ranked]
    return 1 / (min(hits) + 1) if hits else 0


def _rr_next(ranked, relevant):
    return next((1 / rank for rank, i in enumerate(ranked, 1) if i in relevant), 0.0)


def _rr_numpy(ranked, relevant):
    found = np.flatnonzero(np.isin(np.array(ranked, dtype=int), list(relevant)))
    return 1.0 / (found[0] + 1) if found.size else 0.0


q2 = Exercise(
    "Reciprocal rank",
    "Write `reciprocal_rank(ranked, relevant)`: `ranked` is a list of distinct ids, best first (possibly empty), "
    "`relevant` a set of ids; return 1 / the rank of the first relevant id in `ranked`, ranks counted from 1 "
    "(a float), or 0 if no relevant id is in `ranked`.",
    [
        Case((_RANKED, _RELEVANT), _number(1 / 2, "the reciprocal rank", {1.0: "ranks count from 1, not 0"})),
        Case(([4, 2, 6], {9}), _number(0.0, "the reciprocal rank of a ranking with no relevant image")),
        Case(([3, 1], {3}), _number(1.0, "the reciprocal rank of a first hit")),
        Case(([5, 8, 6, 7], {7, 8}), _number(1 / 2, "the reciprocal rank (the first relevant id counts)")),
        Case(([], {1}), _number(0.0, "the reciprocal rank of an empty ranking")),
        Case(([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], {0}), _number(1 / 10, "the reciprocal rank of a last hit")),
    ],
    [
        "Walk down the ranking with `enumerate(ranked, start=1)`; stop at the first relevant id.",
        "A ranking with no relevant image scores 0.",
    ],
    reciprocal_rank,
    wrong=[
        lambda r, rel: next((1 / (i + 1) for i, x in enumerate(r[1:]) if x in rel), 0.0),  # skips the first
        lambda r, rel: next((1 / max(i, 1) for i, x in enumerate(r) if x in rel), 0.0),  # counts from 0
        lambda r, rel: sum(1 / i for i, x in enumerate(r, 1) if x in rel),  # sums every hit
        lambda r, rel: max((1 / i for i, x in enumerate(r, 1) if x in rel), default=0.0) / max(len(rel), 1),
        lambda r, rel: next((1 / i for i, x in reversed(list(enumerate(r, 1))) if x in rel), 0.0),  # the last hit
        lambda r, rel: next((float(i) for i, x in enumerate(r, 1) if x in rel), 0.0),  # the rank, not 1 / rank
        lambda r, rel: next((1 / (i + 2) for i, x in enumerate(r) if x in rel), 0.0),  # off by one
        lambda r, rel: 1 / (r.index(min(rel)) + 1) if min(rel) in r else 0.0,  # the smallest relevant id's rank
    ],
    variants=[_rr_index, _rr_next, _rr_numpy],
)


def _nprobe(sweep: pd.DataFrame, target: float):
    reaching = sweep[sweep["recall@10"] >= target]
    expected = int(reaching.nprobe.min())

    def compare(result) -> None:
        if isinstance(result, float) and not result.is_integer():
            raise Wrong(f"{result} is not an nprobe: return a value of the `nprobe` column")
        got = int(result)
        row = sweep[sweep.nprobe == got]
        if row.empty:
            raise Wrong(f"{got} is not an nprobe of the sweep: return a value of the `nprobe` column")
        if float(row["recall@10"].iloc[0]) < target:
            raise Wrong(f"nprobe {got} does not reach recall@10 {target} (reaching it exactly counts)")
        if got != expected:
            raise Wrong(f"nprobe {got} reaches the target, but a smaller (faster) one does too")

    return compare


def _nprobe_loop(sweep, target):
    for nprobe, recall in sorted(zip(sweep["nprobe"], sweep["recall@10"])):
        if recall >= target:
            return nprobe


def _nprobe_sorted(sweep, target):
    sweep.sort_values("ms", inplace=True)  # sorts the caller's table
    return int(sweep.loc[sweep["recall@10"] >= target, "nprobe"].iloc[0])


q3 = Exercise(
    "Choose nprobe for 95% recall",
    "Write `smallest_nprobe(sweep, target)`: `sweep` is a DataFrame like `nb03.SWEEP` (`nprobe`, `recall@10`, "
    "`ms`; rows in any order, any index; latency grows with nprobe), `target` a recall; return the cheapest "
    "`nprobe` (an int) whose recall@10 is at least `target` (reaching it exactly counts; one always does).",
    [Case((SWEEP, t), _nprobe(SWEEP, t)) for t in (0.95, 0.9, 0.99, 0.96, 1.0, 0.93)]
    + [Case((_SHUFFLED, t), _nprobe(_SHUFFLED, t)) for t in (0.91, 0.5)],
    [
        "Keep the rows whose recall@10 is at least the target.",
        "Latency grows with nprobe, so the cheapest is the smallest nprobe that remains.",
    ],
    smallest_nprobe,
    wrong=[
        lambda s, t: int(s.loc[s["recall@10"].idxmax(), "nprobe"]),  # the most recall, at any cost
        lambda s, t: int(s[s["recall@10"] <= t].nprobe.max()),  # just under the target
        lambda s, t: int(s[s["recall@10"] > t].nprobe.min()),  # a strict target
        lambda s, t: int(s[s["recall@10"] >= t].nprobe.iloc[0]),  # the first row, in the table's order
        lambda s, t: int(s.nprobe.iloc[s[s["recall@10"] >= t].ms.idxmin()]),  # an index label used as a position
        lambda s, t: int(s[s["recall@10"] >= t].nprobe.max()),  # the largest that reaches it
        lambda s, t: int(s[s["recall@10"] >= t].ms.min()),  # the latency, not the nprobe
        lambda s, t: int(s.nprobe.iloc[(s["recall@10"] - t).abs().argmin()]),  # the closest recall, under or over
    ],
    variants=[_nprobe_loop, _nprobe_sorted, lambda s, t: s.loc[s[s["recall@10"] >= t].ms.idxmin(), "nprobe"]],
)

EXERCISES = {"nb03.q1": q1, "nb03.q2": q2, "nb03.q3": q3}
