"""Search filters (when, where, which camera, words in the photo) as Milvus boolean expressions (notebook 06).

User text never changes what an expression means: names go in as string literals escaped here (`quote`), dates
as integers parsed here, and the text filter as a key of letters and digits only, so no quote, `%` or `_` of
the user's reaches Milvus. (Milvus >= 2.5 servers also take expression templates, `filter_params`; measured
here, milvus-lite 2.5.1 refuses `{name}` with a parse error and Milvus 2.3.5 predates them, so both get literals.)

Example:
    >>> Filters(after="2022-06", place="Lisbon").expression()
    'taken_at >= 1654041600 and array_contains(place_keys, "lisbon")'
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
import unicodedata

from ..data.exif import NO_TIME, name_key

_DAY = re.compile(r"([1-9]\d{3})(?:-(\d{2})(?:-(\d{2}))?)?")
DAY_PATTERN = r"^[1-9]\d{3}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$"  # what `parse_day` reads (API schema)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_KEY = re.compile(r"[\W_]+")  # what a text key drops: all but letters and digits
_ACCENTS = re.compile("[\u0300-\u036f]")  # combining accents of Latin, Greek and Cyrillic letters


def quote(text: str) -> str:
    """A Milvus expression string literal (json.dumps would write non-ASCII as \\uXXXX, which Milvus refuses)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def label_filter(category: str | None) -> str:
    """A Milvus boolean expression selecting one category, or "" for all."""
    if not category:
        return ""
    return "label == " + quote(category)


def text_key(text: str) -> str:
    """Text as the filter matches it: lowercase letters and digits without accents, nothing between ("Fresh
    Bäckerei" -> "freshbackerei"), so words are found also inside run-together OCR text ("FRESHBAKERY"), whether
    the sign or the user wrote the accent or not, and inside text with no spaces between words (Chinese).

    Only Latin, Greek and Cyrillic accents (U+0300-U+036F) are dropped: a Japanese voicing mark changes the sound.
    """
    bare = _ACCENTS.sub("", unicodedata.normalize("NFKD", text.casefold()))
    return _NOT_KEY.sub("", unicodedata.normalize("NFC", bare))


def _accented_key(text: str) -> str:
    """The text key as rows stored before keys dropped accents hold it (their `ocr_key` keeps "ä")."""
    return _NOT_KEY.sub("", text.casefold())


def parse_day(text: str, last: bool = False) -> dt.date:
    """`YYYY`, `YYYY-MM` or `YYYY-MM-DD` as its first day (or, with `last`, its last day); a day past the end
    of its month (2023-02-30) is the month's last day.

    Raises:
        ValueError: any other text, or a month or day that does not exist.
    """
    match = _DAY.fullmatch(text.strip())
    try:
        if not match:
            raise ValueError
        year, month, day = int(match[1]), int(match[2] or (12 if last else 1)), int(match[3] or 0)
        days = calendar.monthrange(year, month)[1]
        if not 0 <= day <= 31:
            raise ValueError
        return dt.date(year, month, min(day, days) if day else (days if last else 1))
    except (ValueError, calendar.IllegalMonthError):
        raise ValueError(f"{text!r} is not a date: write YYYY, YYYY-MM or YYYY-MM-DD, e.g. 2022-06") from None


def _seconds(day: dt.date) -> int:
    """Midnight starting `day`, in the stored wall-clock seconds (see `exif.photo_metadata`)."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


@dataclasses.dataclass(frozen=True)
class Filters:
    """What a search keeps: taken on or after `after`, on or before `before` (YYYY, YYYY-MM or YYYY-MM-DD,
    inclusive), at a `place` (a city, region or country), with a `camera` (make or model), with `text` in the
    photo, with every `person` named (one name, or several separated by commas: photos with all of them; the
    store finds their photos, `ImageStore.where`). Names match case-insensitively; None (or empty) is no filter;
    `after` later than `before` matches nothing.

    Raises:
        ValueError: a date that is not one, or a text filter without a letter or digit (one sentence).
    """

    after: str | None = None
    before: str | None = None
    place: str | None = None
    camera: str | None = None
    text: str | None = None
    person: str | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"the {field.name} filter must be text")
            value = " ".join(_CONTROL.sub(" ", value).split()) if value else ""
            object.__setattr__(self, field.name, value or None)
        if self.text is not None and not text_key(self.text):
            raise ValueError("the text filter has no letters or digits to look for")
        for day in (self.after, self.before):
            if day:
                parse_day(day)

    def __bool__(self) -> bool:
        return any(self.applied().values())

    def applied(self) -> dict[str, str]:
        """The filters that are set, by name, as given (for the CLI, the API's response and the app)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}

    def people(self) -> list[str]:
        """The names in the person filter (none without one)."""
        return [name.strip() for name in (self.person or "").split(",") if name.strip()]

    def merged(self, other: Filters) -> Filters:
        """These filters, with `other`'s where these have none."""
        return Filters(**{**other.applied(), **self.applied()})

    def expression(self) -> str:
        """The Milvus boolean expression these filters make ("" for none); without `person`, which needs the store."""
        terms = []
        if self.after or self.before:
            low = _seconds(parse_day(self.after)) if self.after else NO_TIME + 1
            terms.append(f"taken_at >= {low}")
            if self.before:
                terms.append(f"taken_at < {_seconds(parse_day(self.before, last=True)) + 86400}")
        if self.place:
            terms.append(f"array_contains(place_keys, {quote(name_key(self.place))})")
        if self.camera:
            terms.append(f"array_contains(camera_keys, {quote(name_key(self.camera))})")
        if self.text:  # also the key rows stored before keys dropped accents hold, where the text has accents
            keys = dict.fromkeys((text_key(self.text), _accented_key(self.text)))
            likes = [f'ocr_key like "%{key}%"' for key in keys]
            terms.append(likes[0] if len(likes) == 1 else f"({' or '.join(likes)})")
        return " and ".join(terms)


def where(category: str | None, filters: Filters | None) -> str:
    """The expression of a search in one `category` (or all) with `filters` (or none)."""
    return " and ".join(t for t in (label_filter(category), filters.expression() if filters else "") if t)
