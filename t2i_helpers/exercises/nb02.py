"""Exercises of notebook 02: batching, picking an encoder under a latency budget, the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .problem import Case, Exercise, Wrong

# A measured-style table: R@10 and query latency per encoder (made up for the exercise, shaped like notebook 02's).
TABLE = pd.DataFrame(
    {
        "encoder": ["tiny", "small", "base", "large", "huge", "slow-but-weak"],
        "R@10": [0.41, 0.55, 0.63, 0.71, 0.74, 0.50],
        "query_ms": [2.0, 4.5, 9.0, 21.0, 48.0, 30.0],
    }
)


def best_under_budget(table: pd.DataFrame, budget_ms: float) -> str:
    """The encoder with the highest R@10 among those whose query latency is within `budget_ms`."""
    fast_enough = table[table.query_ms <= budget_ms]
    return str(fast_enough.loc[fast_enough["R@10"].idxmax(), "encoder"])


def pareto_front(table: pd.DataFrame) -> list[str]:
    """The encoders no other encoder beats on both R@10 (higher) and latency (lower), fastest first."""
    front, best = [], float("-inf")
    for name, recall in table.sort_values("query_ms")[["encoder", "R@10"]].itertuples(index=False):
        if recall > best:
            front.append(name)
            best = recall
    return front


def batched(items: Sequence, size: int) -> list[Sequence]:
    """Consecutive slices of at most `size` items, in order (one model call per slice)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _named(expected: str, budget_ms: float):
    latency = dict(zip(TABLE.encoder, TABLE.query_ms))

    def compare(result) -> None:
        if result not in latency:
            raise Wrong(f"{result!r} is not an encoder of the table: return a name from its `encoder` column")
        if latency[result] > budget_ms:
            raise Wrong(f"{result!r} answers in {latency[result]} ms, over the budget: filter by latency first")
        if result != expected:
            raise Wrong(f"{result!r} fits the budget, but another encoder that fits has a higher R@10")

    return compare


def _front(expected: list[str]):
    def compare(result) -> None:
        got = list(result)
        if set(got) - set(TABLE.encoder):
            raise Wrong("return encoder names from the table's `encoder` column")
        if "slow-but-weak" in got:
            raise Wrong("'slow-but-weak' is beaten on both counts (a faster encoder has a higher R@10)")
        if set(got) != set(expected):
            raise Wrong("an encoder that nothing beats on both counts is missing")
        if got != expected:
            raise Wrong("the right encoders; list them fastest first")

    return compare


def _slices(items: Sequence, size: int):
    expected = [list(items[i : i + size]) for i in range(0, len(items), size)]

    def compare(result) -> None:
        got = [list(chunk) for chunk in result]
        if any(len(chunk) > size for chunk in got):
            raise Wrong(f"a slice holds more than {size} items")
        if [x for chunk in got for x in chunk] != list(items):
            raise Wrong("the slices, joined, are not the items in their order: every item once, none lost")
        if got != expected:
            raise Wrong("fill every slice but the last")

    return compare


q1 = Exercise(
    "Batches for the model",
    [Case((list(range(10)), 4), _slices(list(range(10)), 4)), Case((list("abc"), 5), _slices(list("abc"), 5))],
    ["`range(0, len(items), size)` gives each slice's start.", "The last slice may be shorter: never drop it."],
    batched,
    wrong=[
        lambda items, size: [items[i : i + size] for i in range(0, len(items) - size + 1, size)],  # drops the rest
        lambda items, size: [items[i : i + size] for i in range(len(items))],  # overlapping windows
    ],
)

q2 = Exercise(
    "Pick the encoder under a latency budget",
    [Case((TABLE, budget), _named(best_under_budget(TABLE, budget), budget)) for budget in (3.0, 10.0, 60.0)],
    [
        "First keep the rows with `query_ms <= budget_ms`, then take the best R@10 among them.",
        "`frame.loc[frame['R@10'].idxmax(), 'encoder']` is the name on the row with the highest R@10.",
    ],
    best_under_budget,
    wrong=[
        lambda t, b: str(t.loc[t["R@10"].idxmax(), "encoder"]),  # ignores the budget
        lambda t, b: str(t[t.query_ms <= b].sort_values("query_ms").encoder.iloc[0]),  # the fastest, not the best
    ],
)

q3 = Exercise(
    "The Pareto front: encoders nothing beats on both counts",
    [Case((TABLE,), _front(pareto_front(TABLE)))],
    [
        "Sort by latency. Walking from the fastest, an encoder is on the front if its R@10 beats every faster one.",
        "Keep the best R@10 seen so far; an encoder joins the front only when it raises that best.",
    ],
    pareto_front,
    wrong=[
        lambda t: list(t.sort_values("query_ms").encoder),  # every encoder
        lambda t: list(t.sort_values("R@10", ascending=False).encoder[:3]),  # the three best
    ],
)


EXERCISES = {"nb02.q1": q1, "nb02.q2": q2, "nb02.q3": q3}
