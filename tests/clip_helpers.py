"""What the CLIP-family tests share: awkward images, short texts and checks on embedding rows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i_helpers.models import clip

RNG = np.random.default_rng(0)
IMAGES = [
    RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8),  # RGB
    RNG.integers(0, 256, (50, 30, 4), dtype=np.uint8),  # RGBA
    RNG.integers(0, 256, (20, 20), dtype=np.uint8),  # grayscale
    Image.new("RGB", (64, 48), "red"),
    np.full((1, 1, 3), 200, np.uint8),
    np.zeros((3000, 2000, 3), np.uint8),
]
TEXTS = ["a red kangaroo", "a fire truck", ""]


def assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def check_encoder(encoder, dim: int) -> None:
    assert encoder.dim == dim
    assert_unit_rows(encoder.encode_images(IMAGES), len(IMAGES), dim)
    assert_unit_rows(encoder.encode_texts(TEXTS), len(TEXTS), dim)
    assert encoder.encode_images([]).shape == (0, dim)
    assert encoder.encode_texts([]).shape == (0, dim)


def min_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine between matching rows of two sets of unit-length embeddings."""
    return float((a * b).sum(axis=1).min())


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No hub and an empty cache, whatever network and cache this machine has."""
    from huggingface_hub import constants

    monkeypatch.setattr(clip, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
