"""Real faces that ship inside installed packages, changed and composed into group photos (notebook 07, tests).

Three people whose photos come with the libraries, so nothing is downloaded and every license is known:
matplotlib's `grace_hopper.jpg` and scikit-image's `astronaut` (Eileen Collins) and `camera` (the cameraman),
all public domain. Each is changed the ways a library sees one person again (mirrored, half size, darker,
cropped, turned) and pasted side by side into group photos whose true boxes are known.

Example:
    >>> people = portraits()                              # {"hopper": RGB array, "astronaut": ..., "cameraman": ...}
    >>> variants(people["hopper"])                        # five changed copies of one face
    >>> photo, boxes = group_photo([people["hopper"], people["astronaut"]], height=300)
    >>> truth = write_library("photos/")                  # the photos as JPEGs; who stands where in each
    >>> photo, boxes = phone_photo([changed(people["cameraman"], rng)], height=1500, rng=rng)   # 4032x3024
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .images import to_rgb_array

PHONE = (4032, 3024)  # a 12 MP phone photo's width and height
SAMPLES = ("hopper", "astronaut", "cameraman")


class PortraitError(RuntimeError):
    """The sample faces' packages are missing; the message says what to install."""


def portraits() -> dict[str, np.ndarray]:
    """The three people's photos as RGB uint8 arrays, by name (`SAMPLES`)."""
    try:
        from matplotlib import cbook
        from skimage import data
    except ImportError as err:
        raise PortraitError('the sample faces need scikit-image: pip install -e ".[faces]"') from err
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = cv2.imdecode(np.frombuffer(file.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    return {"hopper": to_rgb_array(hopper), "astronaut": data.astronaut(), "cameraman": to_rgb_array(data.camera())}


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """Five changed copies of one photo: mirrored, half size, darker, cropped (the middle 80%), turned 12 degrees."""
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0)
    return {
        "flip": np.ascontiguousarray(image[:, ::-1]),
        "half": cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "darker": (image.astype(np.float32) * 0.55).astype(np.uint8),
        "crop": np.ascontiguousarray(image[h // 10 : h - h // 10, w // 10 : w - w // 10]),
        "rotation": cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REFLECT),
    }


def group_photo(
    images: Sequence[np.ndarray], height: int = 320, gap: int = 16, background: int = 200
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Photos scaled to `height` and pasted left to right on a plain background; the photo and each one's
    (x, y, w, h) in it (where to look for its face)."""
    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height)) for im in images]
    width = sum(im.shape[1] for im in scaled) + gap * (len(scaled) + 1)
    canvas = np.full((height + 2 * gap, width, 3), background, np.uint8)
    boxes, x = [], gap
    for im in scaled:
        canvas[gap : gap + height, x : x + im.shape[1]] = im
        boxes.append((x, gap, im.shape[1], height))
        x += im.shape[1] + gap
    return canvas, boxes


def changed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One photo changed at random the ways a library sees a person again: mirrored or not, softer (fewer pixels),
    lighter or darker, warmer or cooler, turned up to 15 degrees either way."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    soft = rng.uniform(0.4, 1.0)
    image = cv2.resize(cv2.resize(image, (round(w * soft), round(h * soft)), interpolation=cv2.INTER_AREA), (w, h))
    light = rng.uniform(0.55, 1.25) * rng.uniform(0.9, 1.1, size=3)  # brightness, and a colour cast
    image = np.clip(image.astype(np.float32) * light, 0, 255).astype(np.uint8)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), 1.0)
    return cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)


def phone_photo(
    images: Sequence[np.ndarray], height: int, rng: np.random.Generator, size: tuple[int, int] = PHONE
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """`images` side by side (`group_photo`), `height` px high (less if they would not fit), at a random place of
    a `size` photo on a soft gradient of random colours; the photo and each one's (x, y, w, h) in it."""
    width = sum(im.shape[1] / im.shape[0] for im in images)
    height = min(height, int(size[0] / (width + 0.05 * (len(images) + 1))), int(size[1] / 1.1))  # gaps: 5%
    group, boxes = group_photo(images, height, gap=height // 20, background=int(rng.integers(120, 230)))
    corners = rng.integers(60, 230, size=(2, 2, 3)).astype(np.uint8)
    canvas = cv2.resize(corners, size, interpolation=cv2.INTER_LINEAR)
    x, y = (int(rng.integers(0, size[i] - group.shape[1 - i] + 1)) for i in (0, 1))
    canvas[y : y + group.shape[0], x : x + group.shape[1]] = group
    return canvas, [(bx + x, by + y, bw, bh) for bx, by, bw, bh in boxes]


def write_library(folder: str | Path, height: int = 320) -> pd.DataFrame:
    """Every sample person as it is and changed five ways, alone, and group photos of every two and all three,
    written to `folder` as JPEGs; the truth, one row per person in a photo: file, person, copy and the (x, y, w, h)
    they stand in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    people, rows = portraits(), []
    for person, image in people.items():
        for copy, photo in {"original": image, **variants(image)}.items():
            file = f"{person}.jpg" if copy == "original" else f"{person}_{copy}.jpg"
            cv2.imwrite(str(folder / file), photo[..., ::-1])
            rows.append((file, person, copy, 0, 0, photo.shape[1], photo.shape[0]))
    for size in (2, 3):
        for names in itertools.combinations(SAMPLES, size):
            photo, boxes = group_photo([people[n] for n in names], height)
            file = "group_" + "_".join(names) + ".jpg"
            cv2.imwrite(str(folder / file), photo[..., ::-1])
            rows += [(file, name, "group", *box) for name, box in zip(names, boxes)]
    return pd.DataFrame(rows, columns=["file", "person", "copy", "x", "y", "w", "h"])


def at_face_height(image: np.ndarray, face_height: int, target: int, background: int = 200) -> np.ndarray:
    """A photo whose face is `face_height` px high, scaled so the face is `target` px high and pasted on a plain
    canvas of at least 320 x 240 (how far away a person stands in a photo)."""
    scale = target / face_height
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((max(240, small.shape[0] + 40), max(320, small.shape[1] + 40), 3), background, np.uint8)
    canvas[20 : 20 + small.shape[0], 20 : 20 + small.shape[1]] = small
    return canvas
