"""Reading filters out of a query: a place, a year or month, "quoted words", a named person (notebooks 06, 07).

"a dog on the beach in Lisbon 2022" searches "a dog on the beach" among the photos taken in Lisbon in 2022, as
photo apps read their search box, and so does "ein Hund am Strand in Lissabon 2022": months are CLDR's (`babel`)
in the languages of `places.LANGUAGES`, a place may be named as those languages name it (`places.other_names`).
Only places stored in the collection count, and only where the user wrote them as a place: after a preposition
of place ("in", "bei", "à", "en", "em"...), or capitalized and not right after a German article (German
capitalizes every noun: "ein Foto vom Essen" is food, not the city). "a turkey" never means Turkey, and "in
Turkey" only does in a collection that has photos taken there. CLDR has no prepositions or articles, so those few
words are listed here. A person is read too: a name given with `t2i people name`, written capitalized ("Anna at
the beach" -> photos with Anna; "a rose" is never Rose). The filters read are returned to be shown; `--literal`
(and the API's and app's equivalents) skips this reading.

Example:
    >>> understand('the "gelateria" sign in Lisbon june 2022', {"lisbon", "portugal"})
    Understood(text='the sign', filters=Filters(after='2022-06', before='2022-06', place='Lisbon', ...))
    >>> understand("ein Hund am Strand in Lissabon im Juni 2022", {"lisbon", "portugal"}).filters.place
    'Lisbon'
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

from ..data.places import LANGUAGES, name_key, other_names
from ..store.filters import Filters

# Words after which a name is a place, and a month or year a time: "in Lisbon", "im Juni 2022", "en juin 2022".
# Left out: those that are English words too ("a", "no", "da") and "de"/"von" (of: "ein Foto von Essen").
PREPOSITIONS = {
    "en": {"in", "at", "from", "near", "during"},
    "de": {"in", "im", "bei", "nach", "aus", "nahe"},
    "fr": {"à", "au", "aux", "en", "dans", "vers", "près"},
    "es": {"en", "cerca"},
    "it": {"in", "nel", "nella", "vicino"},
    "pt": {"em", "perto"},
    "nl": {"in", "bij", "te", "nabij", "uit", "naar"},
}
LINKS = {"de", "a", "di"}  # "près de", "cerca de", "perto de", "vicino a"
# German capitalizes every noun: a capitalized word right after a German article (or contraction) is a noun.
ARTICLES = {"der", "die", "das", "dem", "den", "des", "ein", "eine", "einem", "einen", "einer", "eines"}
ARTICLES |= {"vom", "zum", "zur", "beim", "am"}
_PREPOSITIONS = set().union(*PREPOSITIONS.values())
COMPANY = {"with", "and", "&"}  # dropped before a person's name: "Anna with Bob" -> both, nothing left over
MAX_PLACE_WORDS = 4  # "rio de janeiro", "new york city"; and the words of a person's name
_QUOTED = re.compile(r'"([^"]*)"|\u201c([^\u201d]*)\u201d')
_YEAR = r"(?:19|20)\d\d"
_WORD = re.compile(r"\S+")
_PUNCTUATION = ",.;:!?"


class Understood(NamedTuple):
    """What is left of a query to search by meaning ("" for none), and the filters read from it."""

    text: str
    filters: Filters


def understand(text: str, places: set[str], people: set[str] = frozenset()) -> Understood:
    """Read quoted words, a month or year, a stored place (`places`, as `places.name_key` writes them) and the named
    people (`people`, casefolded) out of `text`."""
    quoted = [a or b for a, b in _QUOTED.findall(text)]
    text = _QUOTED.sub(" ", text)
    found: dict[str, str] = {}
    if any(q.strip() for q in quoted):
        found["text"] = " ".join(q.strip() for q in quoted if q.strip())
    months, when_pattern = _months()
    when = when_pattern.search(text)
    if when:
        month = months[_bare(when[1])] if when[1] else None
        found["after"] = found["before"] = f"{when[2]}-{month:02d}" if month else when[2]
        text = _drop_preposition(text[: when.start()]) + " " + text[when.end() :]
    words = _WORD.findall(text)
    place = _find_place(words, places)
    if place:
        start, end, found["place"] = place
        words = words[: start - _preposition_before(words, start)] + words[end:]
    names = []
    while person := _find_name(words, people):
        start, end = person
        names.append(" ".join(w.strip(_PUNCTUATION) for w in words[start:end]))
        start -= bool(start and words[start - 1].lower() in COMPANY)
        words = words[:start] + words[end:]
    if names:
        found["person"] = ", ".join(names)
    return Understood(" ".join(" ".join(words).split()), Filters(**found))


def _find_name(words: list[str], people: set[str]) -> tuple[int, int] | None:
    """(start, end) of the longest run of capitalized words that is a person's name."""
    for size in range(min(MAX_PLACE_WORDS, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            run = [w.strip(_PUNCTUATION) for w in words[start : start + size]]
            if run[0][:1].isupper() and " ".join(run).casefold() in people:
                return start, start + size
    return None


def _bare(word: str) -> str:
    """A month name as looked up: lowercase, accents and a final dot dropped ("Févr." -> "fevr")."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return bare.casefold().rstrip(".")


@functools.cache
def _months() -> tuple[dict[str, int], re.Pattern]:
    """Month names and abbreviations in `LANGUAGES` (CLDR's, from babel) -> month number, and the pattern of a
    month and year or a year alone ("Juni 2022", "févr. 2022", "junio de 2022", "2022")."""
    from babel.dates import get_month_names

    names = {
        name.casefold().rstrip("."): number
        for language in LANGUAGES
        for width in ("wide", "abbreviated")
        for context in ("format", "stand-alone")
        for number, name in get_month_names(width, context, locale=language).items()
    }
    months = {**names, **{_bare(name): number for name, number in names.items()}}
    spelled = "|".join(sorted(map(re.escape, months), key=len, reverse=True))
    return months, re.compile(rf"\b(?:({spelled})\.?\s+(?:(?:de|del)\s+)?)?({_YEAR})\b", re.IGNORECASE)


def stored_place(name: str, places: set[str]) -> str | None:
    """The stored place (one of `places`) that `name` means: `name` itself where it is stored, else the stored
    place's name when `name` is what another language calls it ("Lissabon" -> "Lisbon"); None for neither."""
    key = name_key(name)
    if key in places or not places:
        return name if key in places else None
    return other_names(frozenset(places)).get(key)


def _drop_preposition(text: str) -> str:
    words = text.split()
    return " ".join(words[:-1] if words and words[-1].lower() in _PREPOSITIONS else words)


def _preposition_before(words: list[str], start: int) -> int:
    """How many words before `start` say that a place follows: 1 ("in"), 2 ("près de") or 0."""
    before = [w.lower() for w in words[max(0, start - 2) : start]]
    if before and before[-1] in _PREPOSITIONS:
        return 1
    if len(before) == 2 and before[1] in LINKS and before[0] in _PREPOSITIONS:
        return 2
    return 0


def _find_place(words: list[str], places: set[str]) -> tuple[int, int, str] | None:
    """(start, end, name) of the longest run of words that names a stored place and is written as one: after a
    preposition before capitalized, and by the names stored before those other languages give them (looked up
    only then)."""
    stored = frozenset(places)
    if not stored:  # nothing to find: and no loading GeoNames' other names (~1.3 s a process) to look it up
        return None
    after_preposition = [bool(_preposition_before(words, i)) for i in range(len(words))]
    capitalized = [w[:1].isupper() and not (i and words[i - 1].lower() in ARTICLES) for i, w in enumerate(words)]
    for written in (after_preposition, capitalized):
        for lookup in (lambda key: key if key in stored else None, lambda key: other_names(stored).get(key)):
            for size in range(min(MAX_PLACE_WORDS, len(words)), 0, -1):
                for start in (i for i in range(len(words) - size + 1) if written[i]):
                    typed = " ".join(w.strip(_PUNCTUATION) for w in words[start : start + size])
                    name = lookup(name_key(typed))
                    if name is not None:
                        return start, start + size, typed if name == name_key(typed) else name
    return None
