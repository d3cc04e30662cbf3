"""Phone-style test photos written with real EXIF: dates with and without offsets, GPS, cameras, broken headers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# (latitude, longitude) in all four hemispheres
LISBON, TOKYO, SYDNEY, RIO = (38.7167, -9.1333), (35.6895, 139.6917), (-33.8679, 151.2073), (-22.9064, -43.1822)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees, minutes = int(value), int(value * 60) % 60
    return float(degrees), float(minutes), round((value * 3600) % 60, 2)


def write_photo(
    path: Path,
    seed: int,
    taken: str | None = None,
    offset: str | None = None,
    gps: tuple[float, float] | None = None,
    camera: tuple[str, str] | None = None,
    mtime: float | None = None,
) -> Path:
    """A JPEG of noise (unique per `seed`) with the EXIF given: `taken` as "YYYY:MM:DD HH:MM:SS"."""
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
        if offset:
            exif.get_ifd(0x8769)[0x9011] = offset
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_broken_exif(path: Path, seed: int) -> Path:
    """A JPEG whose EXIF block is garbage after its header (an IFD offset pointing nowhere)."""
    write_photo(path, seed)
    data = path.read_bytes()
    garbage = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(range(40))
    segment = b"\xff\xe1" + (len(garbage) + 2).to_bytes(2, "big") + garbage
    path.write_bytes(data[:2] + segment + data[2:])
    return path


def write_library(folder: Path) -> dict[str, Path]:
    """Eight photos: dates with and without offsets, GPS in four hemispheres, two cameras, none, broken."""
    canon, pixel = ("Canon", "Canon EOS R5"), ("Google", "Pixel 7")
    return {
        "lisbon": write_photo(folder / "lisbon.jpg", 1, "2022:06:15 14:30:00", "+01:00", LISBON, canon),
        "lisbon_old": write_photo(folder / "lisbon_old.jpg", 2, "2019:12:31 23:59:59", "+00:00", LISBON, pixel),
        "tokyo": write_photo(folder / "tokyo.jpg", 3, "2022:07:01 08:00:00", "+09:00", TOKYO, pixel),
        "sydney": write_photo(folder / "sydney.jpg", 4, "2023:01:20 10:00:00", None, SYDNEY, canon),
        "rio": write_photo(folder / "rio.jpg", 5, "2022:06:30 22:00:00", "-03:00", RIO, None),
        "no_exif": write_photo(folder / "no_exif.jpg", 6, mtime=1_600_000_000),  # 2020-09-13 UTC
        "bad_date": write_photo(folder / "bad_date.jpg", 7, "2022:13:45 99:00:00", None, None, canon),
        "broken": write_broken_exif(folder / "broken.jpg", 8),
    }
