"""The generated phone-style library (t2i_helpers.data.library): its files carry the EXIF its ground truth says."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from t2i_helpers.data.exif import DATE_TAKEN, EXIF_IFD, GPS_IFD, MAKE, MODEL, OFFSET_TAKEN
from t2i_helpers.data.library import CITIES, generate_library


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    return folder, generate_library(folder, photos=60, texts=20, size=(480, 360), seed=1)


def _degrees(dms, ref) -> float:
    value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    return -value if ref in ("S", "W") else value


def test_every_photo_carries_the_exif_of_its_truth(library):
    folder, truth = library
    assert len(truth) == 60 and truth.file.is_unique
    for row in truth.itertuples():
        with Image.open(folder / row.file) as image:
            assert image.format == "JPEG"
            exif = image.getexif()
        dates = exif.get_ifd(EXIF_IFD)
        if pd.isna(row.taken_at):
            assert not dict(exif)
            continue
        local, offset = row.taken_at[:19], row.taken_at[19:]
        assert dates[DATE_TAKEN] == local.replace("-", ":").replace("T", " ")
        assert dates.get(OFFSET_TAKEN, "") == offset
        camera = (None, None) if pd.isna(row.make) else (row.make, row.model)
        assert (exif.get(MAKE), exif.get(MODEL)) == camera
        gps = exif.get_ifd(GPS_IFD)
        if pd.isna(row.city):
            assert not gps
        else:
            assert _degrees(gps[2], gps[1]) == pytest.approx(row.lat, abs=1e-3)
            assert _degrees(gps[4], gps[3]) == pytest.approx(row.lon, abs=1e-3)


def test_the_library_has_what_people_remember(library):
    _, truth = library
    assert set(truth.kind) == {"photo", "sign", "receipt", "screenshot"}
    assert (
        truth.taken_at.isna().any() and truth.taken_at.str.len().eq(25).any() and truth.taken_at.str.len().eq(19).any()
    )
    assert set(truth.make.dropna()) == {"Apple", "Canon"}
    words = " ".join(truth.words).split()
    assert len(words) == len(set(words)) >= 20  # each printed word on one photo only
    hemispheres = {(c.lat > 0, c.lon > 0) for c in CITIES}
    assert len(hemispheres) == 4


def test_the_same_seed_writes_the_same_library(tmp_path, library):
    _, truth = library
    again = generate_library(tmp_path, photos=60, texts=20, size=(480, 360), seed=1)
    assert again.fillna("").equals(truth.fillna(""))
