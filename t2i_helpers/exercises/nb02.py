"""Exercises of notebook 02: batching, picking an encoder under a latency budget, the Pareto front, the languages
below a share of English."""

from __future__ import annotations

import itertools
import math
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
# The same rows shuffled, under index labels that are not their positions (as after a filter or a sort).
_SHUFFLED = TABLE.iloc[[3, 0, 5, 2, 4, 1]].set_axis([7, 2, 0, 9, 4, 1])
# Ties: two encoders as fast as each other, two as good as each other.
_TIES = pd.DataFrame(
    {
        "encoder": ["b", "a", "c", "f", "d", "e"],
        "R@10": [0.50, 0.60, 0.60, 0.65, 0.70, 0.70],
        "query_ms": [5.0, 5.0, 8.0, 12.0, 12.0, 20.0],
    },
    index=[10, 11, 12, 13, 14, 15],
)


def best_under_budget(table: pd.DataFrame, budget_ms: float) -> str:
    """The encoder with the highest R@10 among those whose query latency is within `budget_ms`."""
    fast_enough = table[table.query_ms <= budget_ms]
    return str(fast_enough.loc[fast_enough["R@10"].idxmax(), "encoder"])


def pareto_front(table: pd.DataFrame) -> list[str]:
    """The encoders no other encoder beats on both R@10 (higher) and latency (lower), fastest first."""
    front, best = [], float("-inf")
    ordered = table.sort_values(["query_ms", "R@10"], ascending=[True, False])
    for name, recall in ordered[["encoder", "R@10"]].itertuples(index=False):
        if recall > best:
            front.append(name)
            best = recall
    return front


def batched(items: Sequence, size: int) -> list[Sequence]:
    """Consecutive slices of at most `size` items, in order (one model call per slice)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _named(table: pd.DataFrame, budget_ms: float):
    latency = dict(zip(table.encoder, table.query_ms))
    recall = dict(zip(table.encoder, table["R@10"]))
    best = max(r for name, r in recall.items() if latency[name] <= budget_ms)

    def compare(result) -> None:
        if not isinstance(result, str) or result not in latency:
            raise Wrong(f"{result!r} is not an encoder of the table: return a name from its `encoder` column")
        if latency[result] > budget_ms:
            raise Wrong(f"{result!r} answers in {latency[result]} ms, over the budget: filter by latency first")
        if recall[result] != best:
            raise Wrong(f"{result!r} fits the budget, but another encoder that fits has a higher R@10")

    return compare


def _front(table: pd.DataFrame):
    rows = list(table[["encoder", "R@10", "query_ms"]].itertuples(index=False))
    dominated = {
        a.encoder
        for a in rows
        for b in rows
        if b.query_ms <= a.query_ms and b._1 >= a._1 and (b.query_ms, b._1) != (a.query_ms, a._1)
    }
    expected = [r.encoder for r in sorted(rows, key=lambda r: r.query_ms) if r.encoder not in dominated]

    def compare(result) -> None:
        got = [str(name) for name in result]
        if set(got) - set(table.encoder):
            raise Wrong("return encoder names from the table's `encoder` column")
        if len(got) != len(set(got)):
            raise Wrong("an encoder appears twice")
        if set(got) & dominated:
            raise Wrong("an encoder on your front is beaten: another is at least as fast and at least as good")
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
        if any(not chunk for chunk in got):
            raise Wrong(f"an empty slice (with {len(items)} items in slices of {size}): every slice holds an item")
        if [x for chunk in got for x in chunk] != list(items):
            raise Wrong(
                f"the slices, joined, are not the items in their order ({len(items)} items in slices of "
                f"{size}): every item once, none lost"
            )
        if got != expected:
            raise Wrong("fill every slice but the last")

    return compare


def _batched_generator(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batched_popping(items, size):
    slices = []
    while items:
        slices.append([items.pop(0) for _ in range(min(size, len(items)))])  # empties the caller's list
    return slices


def _batched_islice(items, size):
    iterator = iter(items)
    return list(iter(lambda: list(itertools.islice(iterator, size)), []))


_BATCH_CASES = [(10, 4), (3, 5), (12, 4), (12, 3), (0, 3), (1, 1), (7, 1), (6, 6), (7, 6)]

q1 = Exercise(
    "Batches for the model",
    "Write `batched(items, size)`: `items` is a list (possibly empty) and `size >= 1`; return the consecutive "
    "slices of `items`, in order, every slice holding exactly `size` items but the last, which holds the rest "
    "(none empty, none lost); slices may be lists, tuples or a generator's items.",
    [Case((list(range(n)), size), _slices(list(range(n)), size)) for n, size in _BATCH_CASES],
    ["`range(0, len(items), size)` gives each slice's start.", "The last slice may be shorter: never drop it."],
    batched,
    wrong=[
        lambda items, size: [items[i : i + size] for i in range(0, len(items) - size + 1, size)],  # drops the rest
        lambda items, size: [items[i : i + size] for i in range(len(items))],  # overlapping windows
        lambda items, size: [items[i * size : (i + 1) * size] for i in range(len(items) // size + 1)],  # an empty
        lambda items, size: [items[i * size : (i + 1) * size] for i in range(len(items) // size)],  # drops the rest
        lambda items, size: [items[i : i + size] for i in range(0, len(items) + 1, size)],  # an empty one at the end
        lambda items, size: [items[i : i + size] for i in range(1, len(items), size)],  # loses the first item
        lambda items, size: [items[i : i + size - 1] for i in range(0, len(items), size)],  # one short each
        lambda items, size: [items[i : i + size] for i in range(0, len(items), size)][::-1],  # reversed
        lambda items, size: (
            [list(c) for c in __import__("numpy").array_split(items, math.ceil(len(items) / size))] if items else []
        ),  # balanced slices
    ],
    variants=[
        _batched_generator,
        _batched_popping,
        _batched_islice,
        lambda items, size: [tuple(items[i : i + size]) for i in range(0, len(items), size)],
    ],
)


def _best_sorted(table, budget_ms):
    return table[table.query_ms <= budget_ms].sort_values("R@10", ascending=False).encoder.iloc[0]


def _best_loop(table, budget_ms):
    best_name, best_recall = None, -1.0
    for name, recall, ms in zip(table["encoder"], table["R@10"], table["query_ms"]):
        if ms <= budget_ms and recall > best_recall:
            best_name, best_recall = name, recall
    return best_name


def _best_in_place(table, budget_ms):
    table.drop(table[table.query_ms > budget_ms].index, inplace=True)  # changes the caller's table
    return table.nlargest(1, "R@10").encoder.item()


q2 = Exercise(
    "Pick the encoder under a latency budget",
    "Write `best_under_budget(table, budget_ms)`: `table` is a DataFrame with the columns `encoder`, `R@10` and "
    "`query_ms` (rows in any order, any index); return the name (a str) of the encoder with the highest R@10 "
    "among those with `query_ms <= budget_ms` (the budget is inclusive; at least one fits). If two that fit "
    "share the highest R@10, either is right.",
    [Case((TABLE, b), _named(TABLE, b)) for b in (3.0, 10.0, 60.0, 9.0, 21.0)]
    + [Case((_SHUFFLED, b), _named(_SHUFFLED, b)) for b in (9.0, 30.0)]
    + [Case((_TIES, b), _named(_TIES, b)) for b in (5.0, 20.0)],
    [
        "First keep the rows with `query_ms <= budget_ms`, then take the best R@10 among them.",
        "`frame.loc[frame['R@10'].idxmax(), 'encoder']` is the name on the row with the highest R@10.",
    ],
    best_under_budget,
    wrong=[
        lambda t, b: str(t.loc[t["R@10"].idxmax(), "encoder"]),  # ignores the budget
        lambda t, b: str(t[t.query_ms <= b].sort_values("query_ms").encoder.iloc[0]),  # the fastest, not the best
        lambda t, b: str(t[t.query_ms < b].sort_values("R@10").encoder.iloc[-1]),  # a strict budget
        lambda t, b: str(t.encoder.iloc[t[t.query_ms <= b]["R@10"].idxmax()]),  # an index label used as a position
        lambda t, b: str(t[t.query_ms <= b].sort_values("R@10").encoder.iloc[0]),  # the worst that fits
        lambda t, b: str(t[t.query_ms >= b].sort_values("R@10").encoder.iloc[-1]),  # over the budget
        lambda t, b: str(t.sort_values("query_ms")[t.sort_values("query_ms").query_ms <= b].encoder.iloc[-1]),
        lambda t, b: t[t.query_ms <= b]["R@10"].idxmax(),  # the row's label, not its name
    ],
    variants=[
        _best_sorted,
        _best_loop,
        _best_in_place,
        lambda t, b: t.query("query_ms <= @b").nlargest(1, "R@10")["encoder"].iloc[0],
    ],
)


def _front_pairs(table):
    rows = list(zip(table["encoder"], table["R@10"], table["query_ms"]))
    return [
        a
        for a, ra, ma in sorted(rows, key=lambda r: r[2])
        if not any(mb <= ma and rb >= ra and (mb, rb) != (ma, ra) for _, rb, mb in rows)
    ]


def _front_cummax(table):
    ordered = table.sort_values(["query_ms", "R@10"], ascending=[True, False])
    before = ordered["R@10"].cummax().shift(fill_value=-1.0)
    return ordered.encoder[ordered["R@10"] > before].tolist()


def _front_from_best(table):
    front, fastest = [], math.inf
    for name, ms in table.sort_values(["R@10", "query_ms"], ascending=[False, True])[["encoder", "query_ms"]].values:
        if ms < fastest:
            front.append(name)
            fastest = ms
    return front[::-1]


q3 = Exercise(
    "The Pareto front: encoders nothing beats on both counts",
    "Write `pareto_front(table)`: `table` is a DataFrame like `nb02.TABLE` (rows in any order, any index; no two "
    "rows share both numbers). An encoder is beaten when another is at least as fast and at least as good, and "
    "better on one of the two; return the names of the encoders nothing beats, as a list, fastest first.",
    [
        Case((TABLE,), _front(TABLE)),
        Case((_SHUFFLED,), _front(_SHUFFLED)),
        Case((_TIES,), _front(_TIES)),
        Case((TABLE.iloc[[0]],), _front(TABLE.iloc[[0]])),
    ],
    [
        "Sort by latency. Walking from the fastest, an encoder is on the front if its R@10 beats every faster one.",
        "Keep the best R@10 seen so far; an encoder joins the front only when it raises that best.",
        "Two encoders equally fast: only the better one can be on the front (sort by R@10 too).",
    ],
    pareto_front,
    wrong=[
        lambda t: list(t.sort_values("query_ms").encoder),  # every encoder
        lambda t: list(t.sort_values("R@10", ascending=False).encoder[:3]),  # the three best
        lambda t: [
            n
            for n, r in zip(
                t.sort_values("query_ms").encoder, t.sort_values("query_ms")["R@10"].cummax().diff().fillna(1)
            )
            if r >= 0
        ],  # ties in R@10 kept
        lambda t: [n for n, r, best in _walk(t.sort_values("query_ms")) if r > best],  # sorted by latency only
        lambda t: _front_pairs(t)[::-1],  # slowest first
        lambda t: [t.sort_values("query_ms").encoder.iloc[0], t.sort_values("R@10").encoder.iloc[-1]],  # the ends
        lambda t: [n for n, r, prev in _walk(t.sort_values("query_ms"), running=False) if r > prev],  # vs previous
        lambda t: [n for n, r, best in _walk(t.sort_values(["query_ms", "R@10"])) if r >= best],  # >= the best
    ],
    variants=[_front_pairs, _front_cummax, _front_from_best],
)


def _walk(table, running: bool = True):
    """(name, R@10, the best (or, not running, the previous) R@10 before it) along the table's rows."""
    best = float("-inf")
    for name, recall in zip(table.encoder, table["R@10"]):
        yield name, recall, best
        best = max(best, recall) if running else recall


# Caption -> photo R@10 per language for two text towers (made up for the exercise, shaped like notebook 02's).
LANGUAGES = pd.DataFrame(
    {"english-only": [0.28, 0.07, 0.09, 0.03, 0.02, 0.05], "multilingual": [0.28, 0.24, 0.22, 0.15, 0.20, 0.14]},
    index=["en", "de", "fr", "ja", "zh_CN", "ar"],
)
# Other rows and order: English not first nor best, and a language exactly at half of English (not below it).
_LANGUAGES_SHUFFLED = pd.DataFrame(
    {"english-only": [0.05, 0.30, 0.15, 0.01, 0.32], "multilingual": [0.10, 0.26, 0.13, 0.20, 0.29]},
    index=["ko", "en", "pl", "th", "nl"],
)


def below_target(table: pd.DataFrame, column: str, share: float) -> list[str]:
    """The languages whose R@10 in `column` is below `share` times that column's English R@10, worst first."""
    recall = table[column]
    low = recall[recall < share * recall["en"]]
    return sorted(low.index, key=lambda language: (low[language], language))


def _languages(table: pd.DataFrame, column: str, share: float):
    recall = table[column]
    expected = sorted((lang for lang in recall.index if recall[lang] < share * recall["en"]), key=recall.get)

    def compare(result) -> None:
        got = [str(name) for name in result]
        if set(got) - set(table.index):
            raise Wrong("return language codes from the table's index (e.g. 'de'), not numbers")
        if set(got) != set(expected):
            raise Wrong(
                f"not the languages below {share} of English in {column!r}: compare each with that share of the "
                "same column's 'en' row (strictly below)"
            )
        if got != expected:
            raise Wrong("the right languages; list them worst first (the lowest R@10 first)")

    return compare


def _below_loop(table, column, share):
    target = share * table.loc["en", column]
    found = [(recall, language) for language, recall in table[column].items() if recall < target]
    return [language for _, language in sorted(found)]


def _below_ratio(table, column, share):
    ratio = table[column] / table.loc["en", column]
    return ratio[ratio < share].sort_values(kind="stable").index.tolist()


q4 = Exercise(
    "Which languages stay below a share of English?",
    "Write `below_target(table, column, share)`: `table` is a DataFrame of R@10 with one row per language (its "
    "index: language codes, 'en' among them, in any order) and one column per encoder; return the languages (a "
    "list of codes) whose R@10 in `column` is strictly below `share` times the English R@10 of the same column, "
    "the lowest R@10 first (no two of them tie).",
    [
        Case((LANGUAGES, c, s), _languages(LANGUAGES, c, s))
        for c in ("english-only", "multilingual")
        for s in (0.75, 0.5)
    ]
    + [Case((_LANGUAGES_SHUFFLED, c, 0.5), _languages(_LANGUAGES_SHUFFLED, c, 0.5)) for c in _LANGUAGES_SHUFFLED],
    [
        "The target is relative: `share * table.loc['en', column]`, one number per column.",
        "Keep the rows of `table[column]` below it, then sort them by value: `.sort_values().index`.",
    ],
    below_target,
    wrong=[
        lambda t, c, s: t[c][t[c] < s].sort_values().index.tolist(),  # an absolute threshold
        lambda t, c, s: t[c][t[c] <= s * t.loc["en", c]].sort_values().index.tolist(),  # at the target counts
        lambda t, c, s: t[c][t[c] < s * t[c].iloc[0]].sort_values().index.tolist(),  # the first row as English
        lambda t, c, s: t[c][t[c] < s * t[c].max()].sort_values().index.tolist(),  # the best language as English
        lambda t, c, s: t[c][t[c] < s * t.loc["en", c]].sort_values(ascending=False).index.tolist(),  # best first
        lambda t, c, s: t[c][t[c] < s * t.loc["en", c]].index.tolist(),  # in table order
        lambda t, c, s: t[c][t[c] < s * t.loc["en", c]].sort_values().tolist(),  # the values, not the languages
        lambda t, c, s: t[c][t[c] < s * t.loc["en"].max()].sort_values().index.tolist(),  # another column's English
    ],
    variants=[
        _below_loop,
        _below_ratio,
        lambda t, c, s: t[t[c] < s * t.at["en", c]].sort_values(c).index.tolist(),
    ],
)

EXERCISES = {"nb02.q1": q1, "nb02.q2": q2, "nb02.q3": q3, "nb02.q4": q4}
