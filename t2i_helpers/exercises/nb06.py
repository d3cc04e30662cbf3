"""Exercises of notebook 06: EXIF GPS as signed degrees, a year filter user input cannot change, words in OCR text."""

from __future__ import annotations

import re
from datetime import datetime

from .problem import Case, Exercise, Wrong


def degrees(dms: tuple[float, float, float], ref: str) -> float:
    """EXIF GPS (degrees, minutes, seconds) and its reference (N, S, E, W) as signed decimal degrees."""
    value = dms[0] + dms[1] / 60 + dms[2] / 3600
    return -value if ref in ("S", "W") else value


def year_filter(year: int) -> tuple[str, dict[str, int]]:
    """A Milvus filter for photos taken in `year` (`taken_at` in seconds), as an expression template and params."""
    start, end = datetime(year, 1, 1).timestamp(), datetime(year + 1, 1, 1).timestamp()
    return "taken_at >= {start} and taken_at < {end}", {"start": int(start), "end": int(end)}


def contains_word(text: str, word: str) -> bool:
    """Whether OCR `text` holds `word`, ignoring case, spaces and punctuation (also in "FRESHBAKERY")."""

    def key(s: str) -> str:
        return re.sub(r"[\W_]+", "", s.casefold())

    return key(word) in key(text)


def _degrees(dms, ref):
    expected = degrees(dms, ref)

    def compare(result) -> None:
        if abs(float(result) - expected) > 1e-6:
            if abs(float(result) + expected) < 1e-6:
                raise Wrong("the right size with the wrong sign: south and west are negative")
            raise Wrong("minutes are 1/60 of a degree and seconds 1/3600")

    return compare


def _year(year: int):
    start, end = year_filter(year)[1].values()

    def compare(result) -> None:
        expression, params = result
        if str(start) in expression or str(year) in expression:
            raise Wrong("the numbers are inside the expression: put {placeholders} there and the numbers in params")
        bounds = sorted(int(v) for v in params.values())
        if bounds != [start, end]:
            raise Wrong("the bounds should be the first second of the year and the first second of the next one")
        if not re.fullmatch(r"\s*taken_at\s*>=\s*\{\w+\}\s+and\s+taken_at\s*<\s*\{\w+\}\s*", expression):
            raise Wrong("compare `taken_at` with both bounds: taken_at >= {start} and taken_at < {end}")

    return compare


_WORD_CASES = [("FRESHBAKERY open 7-19", "bakery", True), ("Gelato & Co.", "gelateria", False),
               ("espresso 1.20", "ESPRESSO", True), ("the sign said B-A-R", "bar", True)]  # fmt: skip


def _contains(expected: bool):
    def compare(result) -> None:
        if bool(result) != expected:
            raise Wrong("lower-case both and drop everything but letters and digits before looking for the word")

    return compare


q1 = Exercise(
    "EXIF GPS as signed degrees",
    [
        Case(((33.0, 52.0, 4.08), "S"), _degrees((33.0, 52.0, 4.08), "S")),
        Case(((9.0, 8.0, 0.0), "W"), _degrees((9.0, 8.0, 0.0), "W")),
        Case(((139.0, 41.0, 30.12), "E"), _degrees((139.0, 41.0, 30.12), "E")),
    ],  # fmt: skip
    [
        "A degree has 60 minutes and a minute 60 seconds: degrees + minutes / 60 + seconds / 3600.",
        "EXIF stores the size; the reference says the sign: S and W are negative.",
    ],
    degrees,
    wrong=[lambda d, r: d[0] + d[1] / 60 + d[2] / 3600, lambda d, r: d[0] + d[1] / 100 + d[2] / 10000],
)

q3 = Exercise(
    "A year filter user input cannot change",
    [Case((y,), _year(y)) for y in (2022, 2019)],
    [
        "Milvus expression templates: the expression holds {start} and {end}, `filter_params` holds the numbers.",
        "datetime(year, 1, 1).timestamp() is the first second of the year; the end is the next year's, excluded.",
    ],
    year_filter,
    wrong=[
        lambda y: (f"taken_at >= {int(datetime(y, 1, 1).timestamp())}", {}),
        lambda y: (
            "taken_at >= {a} and taken_at <= {b}",
            {"a": int(datetime(y, 1, 1).timestamp()), "b": int(datetime(y, 12, 31).timestamp())},
        ),
    ],  # fmt: skip
)

q2 = Exercise(
    "A word in OCR text",
    [Case((text, word), _contains(found)) for text, word, found in _WORD_CASES],
    [
        "OCR joins words (FRESHBAKERY) and keeps punctuation: compare keys, not raw strings.",
        "re.sub(r'[\\W_]+', '', s.casefold()) keeps letters and digits only; then `in`.",
    ],
    contains_word,
    wrong=[lambda t, w: w in t, lambda t, w: w.lower() in t.lower().split()],
)

EXERCISES = {"nb06.q1": q1, "nb06.q2": q2, "nb06.q3": q3}
