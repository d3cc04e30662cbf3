"""Reading the words in photos, offline: RapidOCR's PP-OCRv4 detector and recognizer, made fast (notebook 06).

`rapidocr-onnxruntime` ships the PP-OCRv4 text detector and recognizer as ONNX graphs inside its wheel. Its own
defaults detect text on the photo capped at 2,000 px (a 12 MP photo at ~2000x1500), run an angle classifier on
every crop, and recognize 6 crops at a time, one photo after the other. `TextReader` keeps the models and
changes how they are run (each measured in notebook 06 and docs/performance.md):

    detector input   the photo shrunk to DETECTOR_SIDE px on its longer side (as Immich does on its preview);
                     the text boxes found there are cut from the full photo, so the recognizer still reads
                     full-resolution letters
    int8 detector    static QDQ quantization calibrated on generated text photos, cached on disk like the int8
                     towers (`onnx_towers.cached_session`: rebuilt when its sources change, never used stale)
    angle classifier skipped (it only turns upside-down crops; phone photos are upright after EXIF orientation)
    recognition      the crops of a whole batch of photos at once, sorted by width, REC_BATCH at a time
    bounds           per photo: the input shrunk to MAX_INPUT_SIDE px, at most MAX_BOXES text boxes (the first in
                     reading order), and MAX_SECONDS of recognition (crops not reached by then are not read):
                     a text-dense 10,000 x 9,000 picture cannot hold the pass for a minute

Example:
    >>> read_texts([rgb_photo])            # -> ["FRESH BAKERY open 7-19"]
    >>> reader = TextReader(int8=False)    # hold one reader to reuse its sessions
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..config import default_data_dir
from ..data.images import shrink
from ..data.library import generate_library
from .onnx_towers import GraphKey, cached_session, file_digest, open_session, quantize_static_int8, quiet

DETECTOR_SIDE = 736  # the detector's input, longer side
REC_BATCH = 16  # crops per recognizer pass
MIN_SCORE = 0.5  # recognized text below this confidence is dropped (RapidOCR's text_score)
CALIBRATION_PHOTOS = 16  # generated text photos the int8 detector is calibrated on
MAX_INPUT_SIDE = 2000  # a larger photo is shrunk to this first (RapidOCR's own cap for detection)
MAX_BOXES = 150  # text boxes read per photo, the first in reading order (a receipt has ~40)
MAX_SECONDS = 10.0  # recognition time per photo (~0.06 s a box here): crops not reached by then are not read
REC_CHUNK = 4 * REC_BATCH  # crops given to the recognizer per call, the time checked between calls


class OcrError(RuntimeError):
    """Text could not be read (the OCR models are missing or a photo is not an RGB image)."""


def _package():
    """RapidOCR's package (imported on first use: it is only needed for `--ocr`)."""
    try:
        import rapidocr_onnxruntime
    except ImportError as err:
        raise OcrError("reading text in photos needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime") from err
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return rapidocr_onnxruntime


def model_path(name: str) -> Path:
    """One of the ONNX graphs inside RapidOCR's wheel: "det" or "rec"."""
    files = {
        "det": "ch_PP-OCRv4_det_infer.onnx",
        "rec": "ch_PP-OCRv4_rec_infer.onnx",
        "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    }
    path = Path(_package().__file__).parent / "models" / files[name]
    if not path.is_file():
        raise OcrError(f"RapidOCR's model {path} is missing: reinstall rapidocr-onnxruntime")
    return path


def detector_input(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB photo as the detector's input: BGR, longer side `side` (multiples of 32), scaled to [-1, 1], NCHW."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return (small[..., ::-1].astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[np.newaxis]


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The quadrilateral `box` (4 corners, clockwise from top left) of `image`, warped to an upright rectangle."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    out = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    return np.rot90(out) if height >= 1.5 * width else out  # a tall crop is vertical text


class TextReader:
    """RapidOCR's detector and recognizer, loaded once; `reader(images)` returns the words read per photo.

    Args:
        side: the detector input's longer side in pixels.
        int8: the int8 detector (built and cached on first use) instead of the fp32 graph.
        max_boxes: the most text boxes read in one photo.
        max_seconds: the most recognition time per photo of a call (on average over its photos).
        threads: ONNX Runtime threads per session (2: the machines the course runs on).
        cache_dir: where the int8 detector is cached (`<data_dir>/cache`).
    """

    def __init__(
        self,
        side: int = DETECTOR_SIDE,
        int8: bool = True,
        threads: int = 2,
        cache_dir: str | Path | None = None,
        max_boxes: int = MAX_BOXES,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        rapid = _package()
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess
        from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

        self.side, self.max_boxes, self.max_seconds = side, max_boxes, max_seconds
        self.cache_dir = Path(cache_dir) if cache_dir else default_data_dir() / "cache"
        self.detector = self._int8_detector(threads) if int8 else open_session(model_path("det"), threads)
        self.boxes = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6, use_dilation=True)
        self.recognizer = TextRecognizer(
            {"model_path": str(model_path("rec")), "intra_op_num_threads": threads, "inter_op_num_threads": 1}
            | {"rec_batch_num": REC_BATCH, "rec_img_shape": [3, 48, 320], "use_cuda": False, "use_dml": False}
        )
        self._sort = rapid.RapidOCR.sorted_boxes

    def _int8_detector(self, threads: int):
        """The int8 detector's session, quantized now unless a current one is cached."""
        key = GraphKey("ppocrv4-det-int8", {"weights": file_digest(model_path("det")), "side": self.side})
        key = key.derive("ppocrv4-det-int8", method="static QDQ, per-channel", photos=CALIBRATION_PHOTOS)
        return cached_session(
            key, self.cache_dir, lambda path: quantize_detector(model_path("det"), self.side, path), threads
        )

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        """Text boxes in `image` (RGB), in its own pixel coordinates, in reading order: at most `max_boxes`."""
        x = detector_input(image, self.side)
        pred = self.detector.run(None, {self.detector.get_inputs()[0].name: x})[0]
        boxes, _ = self.boxes(pred, image.shape[:2])
        kept = [box for box in boxes if min(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[0] - box[3])) > 3]
        return list(self._sort(np.array(kept)))[: self.max_boxes] if kept else []

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        """The words read in each RGB uint8 photo, in reading order, space-separated ("" where none)."""
        crops, owners = [], []
        for index, image in enumerate(images):  # checked first: a bad photo fails before any work is done
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise OcrError(f"photo {index} is not an RGB uint8 array (shape {getattr(image, 'shape', None)})")
        deadline = time.monotonic() + self.max_seconds * len(images)
        try:
            for index, image in enumerate(images):
                image = shrink(image, MAX_INPUT_SIDE)
                bgr = np.ascontiguousarray(image[..., ::-1])
                for box in self.detect(image):
                    crops.append(crop(bgr, box))
                    owners.append(index)
            results = []
            for lo in range(0, len(crops), REC_CHUNK):  # what is not reached by the deadline is not read
                if time.monotonic() > deadline:
                    break
                results += self.recognizer(crops[lo : lo + REC_CHUNK])[0]
        except Exception as err:  # onnxruntime's and RapidOCR's errors: one sentence, not their traceback
            raise OcrError(f"reading text failed in the OCR models ({type(err).__name__}: {err})") from None
        words: list[list[str]] = [[] for _ in images]
        for owner, (text, score, *_) in zip(owners, results):
            if score >= MIN_SCORE and text.strip():
                words[owner].append(text.strip())
        return [" ".join(found) for found in words]


def quantize_detector(fp32: Path, side: int, path: Path) -> None:
    """Static int8 (QDQ, per-channel weights) of the detector, calibrated on generated text photos at `side`."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        truth = generate_library(Path(tmp) / "photos", photos=CALIBRATION_PHOTOS, texts=CALIBRATION_PHOTOS, seed=7)
        inputs = [detector_input(cv2.imread(str(Path(tmp) / "photos" / f))[..., ::-1], side) for f in truth.file]
        opset13, prepared = Path(tmp) / "opset13.onnx", Path(tmp) / "prepared.onnx"
        # the graph is opset 12; per-channel QDQ needs DequantizeLinear's axis, new in opset 13
        onnx.save(version_converter.convert_version(onnx.load(str(fp32)), 13), str(opset13))
        with quiet():
            quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
            quantize_static_int8(prepared, path, ({"x": x} for x in inputs))


@functools.cache
def default_reader() -> TextReader:
    """The process's one fast reader (its sessions are loaded on first use)."""
    return TextReader()


def read_texts(images: Sequence[np.ndarray]) -> list[str]:
    """The words read in each RGB uint8 photo, in reading order, space-separated ("" where none)."""
    return default_reader()(images)
