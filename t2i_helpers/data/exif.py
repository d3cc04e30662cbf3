"""What a photo's header says: when it was taken, with which camera, where (offline), for filters (notebook 06).

Read from the EXIF block Pillow already parsed while opening the file (`Image.getexif()`), so indexing decodes
nothing more. The time is EXIF DateTimeOriginal with its OffsetTimeOriginal when the camera wrote one; a photo
without it gets its file's modification time, marked `taken_from="file"`, as photo apps do. The place is the
GPS position reverse-geocoded offline by `reverse-geocode` (GeoNames cities, shipped in the package), with the
city it lies in where that is another (`places.containing_city`: "Mitte, Berlin, State of Berlin, Germany").

Example:
    >>> with Image.open("IMG_0001.JPG") as pil:
    ...     photo_metadata(pil.getexif(), mtime_ns=0)["place"]
    'Lisbon, Lisbon, Portugal'
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

from PIL import Image

from .images import header_exif, register_heif
from .places import MAX_NAME_CHARS, containing_city, name_key

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL = 0x010F, 0x0110
DATE_TAKEN, OFFSET_TAKEN = 0x9003, 0x9011  # DateTimeOriginal, OffsetTimeOriginal
NO_TIME = -(1 << 62)  # taken_at of a photo whose time is not known
NO_OFFSET = -(1 << 15)  # taken_offset (minutes east of UTC) where the photo did not say
MAX_OFFSET = 14 * 60  # UTC offsets run from -12:00 to +14:00: one beyond +-14:00 (or with minutes >= 60) is none
INT64_MAX = (1 << 63) - 1  # the largest stored integer (Milvus INT64); a file time clamped to it is no time
MIN_POPULATION = 15_000  # the nearest town of at least this size names the place (a district otherwise)
_DATE = re.compile(r"(\d{4}):(\d\d):(\d\d)[ T](\d\d):(\d\d):(\d\d)")
_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")


def photo_metadata(exif: Image.Exif | None, mtime_ns: int) -> dict:
    """The fields stored beside a photo's vector, from its parsed EXIF (None: the format has none).

    Returns:
        taken_at (the local wall-clock time as seconds since 1970, `NO_TIME` if not known), taken_offset
        (minutes east of UTC, `NO_OFFSET` if not known), taken_from ("exif", "file" or "none"), camera and
        place (shown), camera_keys and place_keys (lowercase names a filter matches). A broken tag is read as
        missing: the photo is still indexed.
    """
    exif = exif if exif is not None else Image.Exif()
    taken = _taken(exif)
    if taken is not None:
        (taken_at, offset), source = taken, "exif"
    elif (file_time := _file_time(mtime_ns)) is not None:
        (taken_at, offset), source = file_time, "file"
    else:
        taken_at, offset, source = NO_TIME, NO_OFFSET, "none"
    return {
        "taken_at": taken_at,
        "taken_offset": offset,
        "taken_from": source,
        **_camera(exif),
        **_place(exif),
    }


def header_metadata(source: str | Path | bytes, mtime_ns: int) -> dict:
    """`photo_metadata` of a file (a path, or its bytes) from its header only, no pixels decoded; a file that
    cannot be opened has only its file time."""
    register_heif()
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as pil:
            exif = header_exif(pil)
    except Exception:  # an unreadable header is a photo without EXIF, not a failed index
        exif = None
    return photo_metadata(exif, mtime_ns)


def taken_iso(taken_at: int, offset: int, source: str) -> str | None:
    """The stored time as ISO 8601 (with its UTC offset where known), or None where the time is not known.

    Any stored value is shown or is None, never an error: a row stored before offsets were checked may hold one
    beyond +-14:00 (shown without it), and a time beyond year 9999 has no ISO form (None).
    """
    if source not in ("exif", "file") or taken_at == NO_TIME:
        return None
    try:
        local = dt.datetime.fromtimestamp(taken_at, dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None
    if valid_offset(offset):
        local = local.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
    return local.isoformat()


def valid_offset(minutes: int) -> bool:
    """Whether `minutes` east of UTC is a real offset (within +-14:00), not `NO_OFFSET` or a broken tag's."""
    return -MAX_OFFSET <= minutes <= MAX_OFFSET


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="ignore")
    return " ".join(str(value).replace("\x00", " ").split()) if value is not None else ""


def _taken(exif: Image.Exif) -> tuple[int, int] | None:
    """(local wall-clock seconds, offset minutes) from DateTimeOriginal and OffsetTimeOriginal, or None."""
    try:
        details = exif.get_ifd(EXIF_IFD)
        match = _DATE.match(_text(details.get(DATE_TAKEN)))
        if not match:
            return None
        local = dt.datetime(*map(int, match.groups()), tzinfo=dt.UTC)
        offset = _OFFSET.fullmatch(_text(details.get(OFFSET_TAKEN)))
        minutes = NO_OFFSET
        if offset and int(offset[3]) < 60:  # "+99:99" or "-24:00" is a broken tag: no offset
            minutes = (1 if offset[1] == "+" else -1) * (int(offset[2]) * 60 + int(offset[3]))
        return int(local.timestamp()), minutes if valid_offset(minutes) else NO_OFFSET
    except Exception:  # a broken IFD or an impossible date (month 13) is no date
        return None


def _file_time(mtime_ns: int) -> tuple[int, int] | None:
    """(local wall-clock seconds, offset minutes) of a file's modification time, or None where it has none: not
    known (negative), beyond what is stored (`INT64_MAX`, after 2262-04-11) or past what Python's dates hold."""
    if not 0 <= mtime_ns < INT64_MAX:
        return None
    try:
        local = dt.datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    except (OverflowError, OSError, ValueError):
        return None
    return int(local.replace(tzinfo=dt.UTC).timestamp()), int(local.utcoffset().total_seconds() // 60)


def _camera(exif: Image.Exif) -> dict:
    make, model = _text(exif.get(MAKE))[:MAX_NAME_CHARS], _text(exif.get(MODEL))[:MAX_NAME_CHARS]
    shown = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    bare = model[len(make) :].strip() if model.lower().startswith(make.lower()) else model  # "EOS R5"
    keys = {name_key(name) for name in (make, make.split(" ")[0], model, bare, shown)} - {""}
    return {"camera": shown, "camera_keys": sorted(keys)}


def _degrees(value, ref: object) -> float:
    degrees, minutes, seconds = (float(v) for v in value)
    sign = -1 if _text(ref).upper() in ("S", "W") else 1
    return sign * (degrees + minutes / 60 + seconds / 3600)


def _place(exif: Image.Exif) -> dict:
    try:
        gps = exif.get_ifd(GPS_IFD)
        lat, lon = _degrees(gps[2], gps.get(1)), _degrees(gps[4], gps.get(3))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("out of range")
    except Exception:  # no GPS, or a broken one: no place
        return {"place": "", "place_keys": []}
    import reverse_geocode  # loads GeoNames' cities (~0.5 s) on the first photo with a position

    found = reverse_geocode.get((lat, lon), min_population=MIN_POPULATION)
    city = containing_city(lat, lon, found["country_code"], found["population"])  # Mitte: Berlin
    names = [found.get("city", ""), city, found.get("state", ""), found.get("country", "")]
    return {
        "place": ", ".join(dict.fromkeys(n for n in names if n)),
        "place_keys": sorted({name_key(n) for n in names} - {""}),
    }
