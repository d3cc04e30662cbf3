"""Exercises of notebook 06: EXIF GPS as signed degrees, a year filter on the stored time, words in OCR text."""

from __future__ import annotations

import calendar
import math
import os
import re
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from . import sandbox
from .problem import Case, Exercise, Wrong

# Where a bound computed in local time goes wrong: 5 h behind UTC in January, and 5 h 30 min ahead.
TIME_ZONES = ("America/New_York", "Asia/Kolkata")


def degrees(dms: tuple[float, float, float], ref: str) -> float:
    """EXIF GPS (degrees, minutes, seconds) and its reference (N, S, E, W) as signed decimal degrees."""
    value = dms[0] + dms[1] / 60 + dms[2] / 3600
    return -value if ref in ("S", "W") else value


def year_filter(year: int) -> str:
    """A Milvus expression for the photos taken in `year`: `taken_at` holds the wall-clock time as UTC seconds."""
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    return f"taken_at >= {start} and taken_at < {end}"


def contains_word(text: str, word: str) -> bool:
    """Whether OCR `text` holds `word`, ignoring case, spaces and punctuation (also in "FRESHBAKERY")."""

    def key(s: str) -> str:
        return re.sub(r"[\W_]+", "", s.casefold())

    return key(word) in key(text)


def _degrees(dms, ref):
    expected = degrees(tuple(float(x) for x in dms), ref)

    def compare(result) -> None:
        got = float(result)
        if abs(got - expected) > 1e-6:
            if abs(got + expected) < 1e-6:
                raise Wrong(f"the right size with the wrong sign for {ref!r}: south and west are negative")
            raise Wrong("minutes are 1/60 of a degree and seconds 1/3600")

    return compare


def _year(year: int):
    expected = {
        i
        for i, t in enumerate(sandbox.TIMES)
        if calendar.timegm((year, 1, 1, 0, 0, 0)) <= t < calendar.timegm((year + 1, 1, 1, 0, 0, 0))
    }

    def compare(result) -> None:
        if isinstance(result, tuple):
            raise Wrong("return one expression string: milvus-lite 2.5.1 has no filter_params")
        got = sandbox.selected(result)
        if got == expected:
            return
        zone = os.environ.get("TZ")
        year_said = f"{year} (on a computer set to {zone})" if zone else str(year)
        early, late = min(sandbox.TIMES[i] for i in expected), max(sandbox.TIMES[i] for i in expected)
        if got - expected and all(sandbox.TIMES[i] > late for i in got - expected):
            raise Wrong(f"for {year_said} your filter keeps photos taken after the year ended (mind < and <=, and UTC)")
        if got - expected and all(sandbox.TIMES[i] < early for i in got - expected):
            raise Wrong(f"for {year_said} your filter keeps photos taken before the year began (mind UTC)")
        raise Wrong(
            f"for {year_said} your filter misses photos taken in it, or keeps others (UTC bounds, end excluded)"
        )

    return compare


_WORD_CASES = [
    ("FRESHBAKERY open 7-19", "bakery", True),
    ("Gelato & Co.", "gelateria", False),
    ("espresso 1.20", "ESPRESSO", True),
    ("the sign said B-A-R", "bar", True),
    ("Fresh  Bakery!", "fresh bakery", True),
    ("ice_cream 2x1", "icecream", True),
    ("open 7-19", "720", False),
    ("Open 7-19", "7 19", True),
    ("Café Noir", "CAFÉ", True),
    ("STOP", "stop sign", False),
    ("barber", "Bar", True),
]


def _contains(text: str, word: str, expected: bool):
    def compare(result) -> None:
        if not isinstance(result, bool | int) and type(result).__name__ != "bool_":
            raise Wrong(f"return True or False, not a {type(result).__name__}")
        if bool(result) != expected:
            found = "finds" if result else "misses"
            raise Wrong(
                f"your answer {found} {word!r} in {text!r}: compare both with case, spaces and punctuation dropped"
            )

    return compare


def _degrees_fractions(dms, ref):
    d, m, s = (Fraction(x).limit_denominator(10**6) for x in dms)
    value = d + m / 60 + s / 3600
    return float(-value if ref in "SW" else value)


def _degrees_weights(dms, ref):
    sign = {"N": 1, "E": 1, "S": -1, "W": -1}[ref]
    return sign * sum(x / w for x, w in zip(dms, (1, 60, 3600)))


q1 = Exercise(
    "EXIF GPS as signed degrees",
    "Write `degrees(dms, ref)`: `dms` is EXIF's (degrees, minutes, seconds), three non-negative numbers (ints, "
    "floats or fractions; any of them may have a fractional part), `ref` one of 'N', 'S', 'E', 'W'; return the "
    "signed decimal degrees as a float (south and west negative).",
    [
        Case(((33.0, 52.0, 4.08), "S"), _degrees((33.0, 52.0, 4.08), "S")),
        Case(((9.0, 8.0, 0.0), "W"), _degrees((9.0, 8.0, 0.0), "W")),
        Case(((139.0, 41.0, 30.12), "E"), _degrees((139.0, 41.0, 30.12), "E")),
        Case(((48, 51.5, 0), "N"), _degrees((48, 51.5, 0), "N")),
        Case(((Fraction(0), Fraction(7), Fraction(3012, 100)), "W"), _degrees((0, 7, 30.12), "W")),
        Case(((12.25, 0.0, 0.0), "S"), _degrees((12.25, 0.0, 0.0), "S")),
    ],
    [
        "A degree has 60 minutes and a minute 60 seconds: degrees + minutes / 60 + seconds / 3600.",
        "EXIF stores the size; the reference says the sign: S and W are negative.",
    ],
    degrees,
    wrong=[
        lambda d, r: d[0] + d[1] / 60 + d[2] / 3600,  # no sign
        lambda d, r: d[0] + d[1] / 100 + d[2] / 10000,  # decimal minutes
        lambda d, r: -(d[0] + d[1] / 60 + d[2] / 3600) if r == "S" else d[0] + d[1] / 60 + d[2] / 3600,  # W forgot
        lambda d, r: (-d[0] if r in "SW" else d[0]) + d[1] / 60 + d[2] / 3600,  # only the degrees negated
        lambda d, r: (1 if r in "SW" else -1) * (d[0] + d[1] / 60 + d[2] / 3600),  # signs the wrong way round
        lambda d, r: (-1 if r in "SW" else 1) * (d[0] + d[1] / 3600 + d[2] / 60),  # minutes and seconds swapped
        lambda d, r: (-1 if r in "SW" else 1) * (int(d[0]) + int(d[1]) / 60 + d[2] / 3600),  # drops fractions
        lambda d, r: (-1 if r in "SW" else 1) * round(d[0] + d[1] / 60 + d[2] / 3600, 2),  # rounded
        lambda d, r: (-1 if r in "SW" else 1) * (d[0] + d[1] / 60),  # seconds ignored
    ],
    variants=[
        _degrees_fractions,
        _degrees_weights,
        lambda d, r: math.copysign(
            float(d[0]) + float(d[1]) / 60 + float(d[2]) / 3600, -1.0 if r in ("S", "W") else 1.0
        ),
    ],
)


def _key_alnum(s):
    return "".join(ch for ch in s.lower() if ch.isalnum())


q2 = Exercise(
    "A word in OCR text",
    "Write `contains_word(text, word)`: `text` is what OCR read on a photo and `word` what a person typed (with "
    "at least one letter or digit); return True when `word` appears in `text` once both are lower-cased and "
    "stripped of everything but letters and digits (so also inside run-together text: 'bakery' is in "
    "'FRESHBAKERY'), else False.",
    [Case((text, word), _contains(text, word, found)) for text, word, found in _WORD_CASES],
    [
        "OCR joins words (FRESHBAKERY) and keeps punctuation: compare keys, not raw strings.",
        "re.sub(r'[\\W_]+', '', s.casefold()) keeps letters and digits only; then `in`.",
    ],
    contains_word,
    wrong=[
        lambda t, w: w in t,  # raw text
        lambda t, w: w.lower() in t.lower().split(),  # whole words only
        lambda t, w: w.lower() in t.lower(),  # punctuation and spaces kept
        lambda t, w: w.lower().replace(" ", "") in t.lower().replace(" ", ""),  # only spaces dropped
        lambda t, w: re.sub(r"\W+", "", w.lower()) in re.sub(r"\W+", "", t.lower()),  # "_" kept
        lambda t, w: w.lower() in re.sub(r"[\W_]+", "", t.lower()),  # the word not stripped
        lambda t, w: "".join(filter(str.isalpha, w.lower())) in "".join(filter(str.isalpha, t.lower())),  # digits
        lambda t, w: re.search(rf"\b{re.escape(w)}\b", t, re.IGNORECASE) is not None,  # word boundaries
        lambda t, w: re.sub(r"[^a-z0-9]", "", t.lower()).startswith(re.sub(r"[^a-z0-9]", "", w.lower())),
    ],
    variants=[
        lambda t, w: _key_alnum(w) in _key_alnum(t),
        lambda t, w: bool(re.search(re.escape(re.sub(r"[\W_]", "", w)), re.sub(r"[\W_]", "", t), re.IGNORECASE)),
        lambda t, w: re.sub(r"[\W_]+", "", w.casefold()) in re.sub(r"[\W_]+", "", t.casefold()),
    ],
)


def _year_timegm(year):
    return f"{calendar.timegm((year, 1, 1, 0, 0, 0))} <= taken_at < {calendar.timegm((year + 1, 1, 1, 0, 0, 0))}"


def _year_inclusive_end(year):
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) - timedelta(seconds=1)
    return f"taken_at <= {int(end.timestamp())} and taken_at >= {int(start.timestamp())}"


def _year_arithmetic(year):
    start = (datetime(year, 1, 1) - datetime(1970, 1, 1)).days * 86400
    days = 366 if calendar.isleap(year) else 365
    return f"taken_at >= {start} and taken_at < {start + days * 86400}"


def _local(year: int) -> int:
    return int(datetime(year, 1, 1).timestamp())  # local midnight: what the stored times are not


q3 = Exercise(
    "A year filter on the photo's time",
    "Write `year_filter(year)`: `year` is an int; return one Milvus boolean expression string that selects the "
    "photos taken in `year`. `taken_at` holds a photo's wall-clock time as seconds since 1970 read as UTC (a photo "
    "taken at 2022-01-01 00:00 on its camera's clock is stored as 2022-01-01T00:00Z), so the year starts at "
    "`YYYY-01-01T00:00Z` (included) and ends at the next year's (excluded), on every computer, whatever its time "
    "zone. It is checked by what it selects in a real milvus-lite collection, so any equivalent expression "
    "(clauses in either order, Milvus's range form `a <= taken_at < b`) is right.",
    [Case((y,), _year(y)) for y in (2022, 2019)]
    + [Case((y,), _year(y), timezone=zone) for y, zone in ((2020, TIME_ZONES[0]), (2023, TIME_ZONES[1]))],
    [
        "The first second of the year in UTC: `datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()` "
        "(without tzinfo, `datetime` uses this computer's time zone).",
        "The end is the first second of the next year, excluded (`<`): 2020 had 366 days.",
        "Milvus takes `taken_at >= a and taken_at < b` or the range form `a <= taken_at < b`.",
    ],
    year_filter,
    wrong=[
        lambda y: f"taken_at >= {int(datetime(y, 1, 1, tzinfo=UTC).timestamp())}",  # no end
        lambda y: f"taken_at >= {_local(y)} and taken_at < {_local(y + 1)}",  # this computer's time zone
        lambda y: (
            f"taken_at >= {int(time.mktime((y, 1, 1, 0, 0, 0, 0, 0, -1)))} and taken_at < "
            f"{int(time.mktime((y + 1, 1, 1, 0, 0, 0, 0, 0, -1)))}"
        ),  # mktime: local time too
        lambda y: f"{calendar.timegm((y, 1, 1, 0, 0, 0))} <= taken_at <= {calendar.timegm((y + 1, 1, 1, 0, 0, 0))}",
        lambda y: (
            f"taken_at > {calendar.timegm((y, 1, 1, 0, 0, 0))} and taken_at < {calendar.timegm((y + 1, 1, 1, 0, 0, 0))}"
        ),  # the first second excluded
        lambda y: (
            f"taken_at >= {calendar.timegm((y, 1, 1, 0, 0, 0))} and taken_at < "
            f"{calendar.timegm((y, 1, 1, 0, 0, 0)) + 365 * 86400}"
        ),  # every year 365 days
        lambda y: (
            f"taken_at >= {calendar.timegm((y, 1, 1, 0, 0, 0))} and taken_at < {calendar.timegm((y, 12, 31, 0, 0, 0))}"
        ),  # ends a day early
        lambda y: f"taken_at >= {(y - 1970) * 31536000} and taken_at < {(y - 1969) * 31536000}",  # no leap days
        lambda y: (
            "taken_at >= {start} and taken_at < {end}",
            {"start": calendar.timegm((y, 1, 1, 0, 0, 0)), "end": calendar.timegm((y + 1, 1, 1, 0, 0, 0))},
        ),
    ],
    variants=[_year_timegm, _year_inclusive_end, _year_arithmetic],
)

EXERCISES = {"nb06.q1": q1, "nb06.q2": q2, "nb06.q3": q3}
