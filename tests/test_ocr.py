"""Text read in photos by the real PP-OCRv4 models (t2i_helpers.models.ocr), on generated signs and receipts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from t2i_helpers.data.library import generate_library
from t2i_helpers.models.ocr import OcrError, TextReader


def _normal(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    """Six generated photos of printed text (signs, receipts, a screenshot) and their truth."""
    folder = tmp_path_factory.mktemp("signs")
    truth = generate_library(folder, photos=6, texts=6, size=(960, 720), seed=3)
    images = [np.asarray(Image.open(folder / name).convert("RGB")) for name in truth.file]
    return truth, images


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ocr-cache")


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_reads_every_printed_word(signs, cache, int8):
    truth, images = signs
    texts = TextReader(int8=int8, cache_dir=cache)(images)
    assert len(texts) == len(images)
    for words, text in zip(truth.words, texts):
        for word in words.split():
            assert _normal(word) in _normal(text), (word, text)  # also inside run-together text ("FRESHBAKERY")


def test_int8_detector_is_cached_and_reused(signs, cache):
    TextReader(cache_dir=cache)
    graphs = list(cache.glob("ppocrv4-det-int8-*.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    TextReader(cache_dir=cache)
    assert graphs[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_a_photo_without_text_reads_empty(cache):
    sky = np.zeros((600, 800, 3), np.uint8)
    sky[..., 2] = np.linspace(120, 250, 800, dtype=np.uint8)
    tiny = np.full((2, 3, 3), 255, np.uint8)
    assert TextReader(cache_dir=cache)([sky, tiny]) == ["", ""]


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3)), "photo.jpg"]
)
def test_bad_input_is_one_sentence(cache, bad):
    with pytest.raises(OcrError, match=r"^photo 0 is not an RGB uint8 array \(shape [^\n]*\)$"):
        TextReader(cache_dir=cache)([bad])
