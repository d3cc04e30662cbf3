"""Encoders: shapes, dtypes, normalization, image modes; the registry; ConSE's class table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i_helpers.data.images import read_image, to_rgb_array
from t2i_helpers.models.conse import imagenet_classes
from t2i_helpers.models.encoders import Encoder, available_encoders, l2_normalize, load_encoder

rng = np.random.default_rng(0)


def _unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.dtype == np.float32
    assert x.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


IMAGES = {
    "rgb": rng.integers(0, 255, (120, 90, 3), dtype=np.uint8),
    "rgba": rng.integers(0, 255, (64, 64, 4), dtype=np.uint8),
    "gray": rng.integers(0, 255, (50, 70), dtype=np.uint8),
    "tiny": np.full((1, 1, 3), 128, np.uint8),
    "huge": rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8),
    "pil-rgb": Image.new("RGB", (33, 300), (10, 200, 30)),
    "pil-palette": Image.new("P", (40, 40), 3),
    "pil-la": Image.new("LA", (40, 40), (100, 50)),
    "pil-16bit": Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)),
    "pil-cmyk": Image.new("CMYK", (40, 40), (0, 255, 255, 0)),
}


def test_default_encoder_is_the_offline_conse(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.name == "conse-effnet-minilm"
    assert encoder.dim == 384
    assert load_encoder() is encoder  # loaded once, then cached


@pytest.mark.parametrize("kind", IMAGES)
def test_encode_images_any_mode_and_size(encoder, kind):
    _unit_rows(encoder.encode_images([IMAGES[kind]]), 1, encoder.dim)


def test_encode_batches_match_single_images(encoder):
    images = [IMAGES["rgb"], IMAGES["rgba"], IMAGES["gray"]] * 4  # 12 images: more than one batch of 8
    together = encoder.encode_images(images)
    _unit_rows(together, 12, encoder.dim)
    one = encoder.encode_images([IMAGES["gray"]])
    np.testing.assert_allclose(together[2], one[0], atol=1e-4)


def test_encode_texts(encoder):
    texts = ["a red kangaroo", "émoji 🦘 kangourou", "x" * 5000]
    _unit_rows(encoder.encode_texts(texts), 3, encoder.dim)
    assert encoder.encode_texts([]).shape == (0, encoder.dim)
    assert encoder.encode_images([]).shape == (0, encoder.dim)


@pytest.mark.parametrize("text_backend", ["onnx-int8", "onnx", "torch"])
def test_a_text_embedding_does_not_depend_on_its_batch(text_backend, bundled):
    encoder = load_encoder(backend="onnx", text_backend=text_backend)
    texts = ["a red kangaroo", *bundled.caption[:40], "x " * 400]
    together = encoder.encode_texts(texts)
    np.testing.assert_allclose(together[0], encoder.encode_texts(texts[:1])[0], atol=1e-5)
    np.testing.assert_allclose(together[-1], encoder.encode_texts(texts[-1:])[0], atol=1e-5)


def test_text_and_image_share_a_space(encoder, bundled):
    """A photo is closer to its own caption than to the captions of unrelated photos, on average."""
    sample = bundled[bundled.label.isin(["animals", "vehicles", "food"])].sample(40, random_state=0)
    images = encoder.encode_images([Image.open(p) for p in sample.path])
    texts = encoder.encode_texts(list(sample.caption))
    sim = texts @ images.T
    off_diagonal = (sim.sum() - np.trace(sim)) / (sim.size - len(sim))
    assert np.diag(sim).mean() > off_diagonal + 0.05


def test_to_rgb_array_composites_alpha_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red; transparent black becomes white
    out = to_rgb_array(rgba)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        to_rgb_array(np.zeros((0, 5, 3), np.uint8))


def test_l2_normalize_keeps_zero_rows_finite():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_registry_names_and_errors():
    assert "conse-effnet-minilm" in available_encoders()
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("no-such-model")


def test_imagenet_class_table():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0]["name"] == "tench"
    assert all(c["definition"] for c in classes)


def test_lite0_variant_is_smaller_input():
    lite0 = load_encoder("conse-effnet-lite0-minilm")
    assert lite0.name == "conse-effnet-lite0-minilm"
    assert lite0.image_size == 224
    _unit_rows(lite0.encode_images([IMAGES["rgb"]]), 1, 384)


def test_fp32_onnx_towers_give_the_eager_torch_results(bundled):
    """The fp32 ONNX Runtime towers (scaling, pooling and normalizing inside the graphs) are the PyTorch models."""
    images = [read_image(p)[1] for p in bundled.path[:16]]
    fp32 = load_encoder(backend="onnx", text_backend="onnx")
    eager = load_encoder(backend="torch", text_backend="torch")
    assert fp32._session is not None and fp32._text_session is not None
    assert eager._session is None and eager._text_session is None
    pixels = fp32.preprocess(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 260, 260, 3)
    np.testing.assert_allclose(fp32.logits(pixels), eager.logits(pixels), atol=1e-3)
    np.testing.assert_allclose(fp32.encode_images(images), eager.encode_images(images), atol=1e-5)
    texts = list(bundled.caption[:50]) + ["x " * 400]  # one longer than MiniLM reads: cut the same way
    np.testing.assert_allclose(fp32.encode_texts(texts), eager.encode_texts(texts), atol=1e-5)
