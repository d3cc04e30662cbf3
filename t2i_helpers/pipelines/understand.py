"""Reading filters out of a query: a place, a year or month, "quoted words", a named person (notebooks 06, 07).

"a dog on the beach in Lisbon 2022" searches "a dog on the beach" among the photos taken in Lisbon in 2022, as
photo apps read their search box. Only places stored in the collection count, and only where the user wrote
them as a place (capitalized, or after "in", "at", "from", "near"): "a turkey" never means Turkey, and "in
Turkey" only does in a collection that has photos taken there. A person is read the same way: a name given with
`t2i people name`, written capitalized ("Anna at the beach" -> photos with Anna; "a rose" is never Rose). The
filters read are returned to be shown; `--literal` (and the API's and app's equivalents) skips this reading.

Example:
    >>> understand('the "gelateria" sign in Lisbon june 2022', {"lisbon", "portugal"})
    Understood(text='the sign', filters=Filters(after='2022-06', before='2022-06', place='Lisbon', ...))
"""

from __future__ import annotations

import calendar
import re
from typing import NamedTuple

from ..data.exif import name_key
from ..store.filters import Filters

PREPOSITIONS = {"in", "at", "from", "near", "during"}
COMPANY = {"with", "and", "&"}  # dropped before a person's name: "Anna with Bob" -> both, nothing left over
MAX_PLACE_WORDS = 4  # "rio de janeiro", "new york city"
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_QUOTED = re.compile(r'"([^"]*)"|\u201c([^\u201d]*)\u201d')
_YEAR = r"(?:19|20)\d\d"
_WHEN = re.compile(rf"\b(?:({'|'.join(sorted(_MONTHS, key=len, reverse=True))})\.?\s+)?({_YEAR})\b", re.IGNORECASE)
_WORD = re.compile(r"\S+")


class Understood(NamedTuple):
    """What is left of a query to search by meaning ("" for none), and the filters read from it."""

    text: str
    filters: Filters


def understand(text: str, places: set[str], people: set[str] = frozenset()) -> Understood:
    """Read quoted words, a month or year, a stored place (`places`, as `exif.name_key` writes them) and the named
    people (`people`, casefolded) out of `text`."""
    quoted = [a or b for a, b in _QUOTED.findall(text)]
    text = _QUOTED.sub(" ", text)
    found: dict[str, str] = {}
    if any(q.strip() for q in quoted):
        found["text"] = " ".join(q.strip() for q in quoted if q.strip())
    when = _WHEN.search(text)
    if when:
        month = _MONTHS[when[1].lower()] if when[1] else None
        found["after"] = found["before"] = f"{when[2]}-{month:02d}" if month else when[2]
        text = _drop_preposition(text[: when.start()]) + " " + text[when.end() :]
    words = _WORD.findall(text)
    place = _find_place(words, places)
    if place:
        start, end = place
        found["place"] = " ".join(w.strip(",.;:!?") for w in words[start:end])
        if start and words[start - 1].lower() in PREPOSITIONS:
            start -= 1
        words = words[:start] + words[end:]
    names = []
    while person := _find_name(words, people):
        start, end = person
        names.append(" ".join(w.strip(",.;:!?") for w in words[start:end]))
        start -= bool(start and words[start - 1].lower() in COMPANY)
        words = words[:start] + words[end:]
    if names:
        found["person"] = ", ".join(names)
    return Understood(" ".join(" ".join(words).split()), Filters(**found))


def _find_name(words: list[str], people: set[str]) -> tuple[int, int] | None:
    """(start, end) of the longest run of capitalized words that is a person's name."""
    for size in range(min(MAX_PLACE_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            run = [w.strip(",.;:!?") for w in words[start : start + size]]
            if run[0][:1].isupper() and " ".join(run).casefold() in people:
                return start, start + size
    return None


def _drop_preposition(text: str) -> str:
    words = text.split()
    return " ".join(words[:-1] if words and words[-1].lower() in PREPOSITIONS else words)


def _find_place(words: list[str], places: set[str]) -> tuple[int, int] | None:
    """(start, end) of the longest run of words that names a stored place and is written as one."""
    for size in range(min(MAX_PLACE_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            name = name_key(" ".join(w.strip(",.;:!?") for w in words[start : start + size]))
            if name not in places:
                continue
            after_preposition = start > 0 and words[start - 1].lower() in PREPOSITIONS
            if after_preposition or words[start][:1].isupper():
                return start, start + size
    return None
