"""Photos of the three sample people (data/portraits.py) written to a folder: alone, mirrored, and together."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from t2i_helpers.data.portraits import SAMPLES, group_photo, portraits, variants


def write_people(folder: Path, names: Sequence[str] = SAMPLES, flipped: bool = False) -> Path:
    """NAME.jpg for each of `names` (and NAME_flip.jpg, mirrored, if `flipped`) and group.jpg with them all."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = portraits()
    for name in names:
        cv2.imwrite(str(folder / f"{name}.jpg"), faces[name][..., ::-1])
        if flipped:
            cv2.imwrite(str(folder / f"{name}_flip.jpg"), variants(faces[name])["flip"][..., ::-1])
    group, _ = group_photo([faces[n] for n in names], height=300)
    cv2.imwrite(str(folder / "group.jpg"), group[..., ::-1])
    return folder
