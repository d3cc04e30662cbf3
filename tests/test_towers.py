"""The ONNX Runtime towers: int8 stays close to fp32 on real photos, backends by name, the keyed graph cache."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from t2i_helpers.config import default_data_dir
from t2i_helpers.data.datasets import split_by_image
from t2i_helpers.data.images import read_image
from t2i_helpers.measure.finetune import caption_recall
from t2i_helpers.models import onnx_towers as towers
from t2i_helpers.models.conse import ConSEEncoder, imagenet_classes
from t2i_helpers.models.encoders import load_encoder

# Lowest cosine between an int8 and the fp32 image embedding of one held-out photo, measured over the 157
# held-out bundled photos: lite0 0.980, lite1 0.987, lite2 0.990 (over all 785: 0.968, 0.981, 0.987). Measured
# again on a fresh setup on 2026-12-03 (the same code built the same graphs with onnxruntime 1.31 and 1.32, onnx
# 1.22 and 1.23, OpenCV 4.14 and 5.1): lite1 0.987, lite2 0.989, but lite0 0.961 on one photo (whale.png; the
# next lowest 0.983, the mean 0.998), so lite0's floor is 0.95.
IMAGE_FLOORS = {"lite0": 0.95, "lite1": 0.98, "lite2": 0.98}
NAMES = {"lite0": "conse-effnet-lite0-minilm", "lite1": "conse-effnet-lite1-minilm", "lite2": "conse-effnet-minilm"}


@pytest.fixture(scope="module")
def split(bundled):
    return split_by_image(bundled, test_fraction=0.2, seed=0)


@pytest.mark.parametrize("variant", IMAGE_FLOORS)
def test_int8_image_tower_stays_close_to_fp32_on_held_out_photos(variant, split):
    """Photos the int8 tower was not calibrated on: each one's embedding stays near its fp32 embedding."""
    images = [read_image(p)[1] for p in split[1].path]
    int8 = load_encoder(NAMES[variant], backend="onnx-int8", text_backend="torch")
    fp32 = load_encoder(NAMES[variant], backend="onnx", text_backend="torch")
    cosines = np.sum(int8.encode_images(images) * fp32.encode_images(images), axis=1)
    assert cosines.min() >= IMAGE_FLOORS[variant], f"photo {split[1].path.iloc[cosines.argmin()]}"
    assert cosines.mean() >= 0.995


def test_default_int8_towers_keep_caption_recall(encoder, bundled):
    """The promotion rule for the default: caption -> photo R@10 over all bundled photos within 0.01 of fp32."""
    int8 = ("onnx-int8", "onnx-int8")  # the default where the CPU has fast int8 products (test_cpu.py)
    if (encoder.backend, encoder.text_backend) != int8:
        encoder = load_encoder(backend=int8[0], text_backend=int8[1])
    fp32 = load_encoder(backend="onnx", text_backend="onnx")
    images = [read_image(p)[1] for p in bundled.path]
    captions = list(bundled.caption)
    before = caption_recall(fp32.encode_texts(captions), fp32.encode_images(images), (10,))["R@10"]
    after = caption_recall(encoder.encode_texts(captions), encoder.encode_images(images), (10,))["R@10"]
    assert abs(after - before) <= 0.01, (before, after)  # measured: 0.259 -> 0.268 (benchmarks/search.py)


def test_int8_text_tower_stays_close_to_fp32(encoder, bundled):
    """Captions and class prompts: measured lowest cosine to PyTorch MiniLM 0.975 (captions), 0.990 (classes)."""
    torch_text = load_encoder(backend="torch", text_backend="torch")
    texts = list(bundled.caption) + [f"a photo of a {c['name']}." for c in imagenet_classes()]
    cosines = np.sum(encoder.encode_texts(texts) * torch_text.encode_texts(texts), axis=1)
    assert cosines.min() >= 0.97
    assert cosines.mean() >= 0.99


def test_backends_are_chosen_by_name():
    lite0 = load_encoder("conse-effnet-lite0-minilm", backend="onnx", text_backend="onnx-int8")
    assert (lite0.backend, lite0.text_backend) == ("onnx", "onnx-int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        ConSEEncoder(backend="int4")
    with pytest.raises(ValueError, match="backend must be one of"):
        ConSEEncoder(text_backend="tensorrt")
    with pytest.raises(ValueError, match="run on the CPU"):
        ConSEEncoder(device="cuda", backend="onnx-int8")


def test_int8_without_the_bundled_photos_says_what_to_do(tmp_path, monkeypatch):
    cache = default_data_dir() / "cache"
    monkeypatch.setenv("T2I_DATA_DIR", str(tmp_path))  # no photos here
    with pytest.raises(RuntimeError, match="t2i data"):
        ConSEEncoder("lite0", backend="onnx-int8", text_backend="torch", cache_dir=cache)
    with pytest.warns(UserWarning, match="fp32 ONNX"):
        fallback = ConSEEncoder("lite0", text_backend="torch", cache_dir=cache)
    assert fallback.backend == "onnx"


def test_calibration_photos_are_fixed_and_never_held_out(split):
    photos = towers.calibration_photos()
    assert len(photos) == towers.CALIBRATION_PHOTOS and photos == towers.calibration_photos()
    held_out = {read_image(p)[0] for p in split[1].path}
    assert not held_out & {read_image(p)[0] for p in photos}


class MeanColor(torch.nn.Module):
    """A tiny image tower: uint8 pixels -> the mean of each channel."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.float().mean(dim=(1, 2))


def _builder(calls: list):
    def build(path):
        calls.append(path)
        towers.export_image_tower(MeanColor(), 8, path)

    return build


def _run(session) -> np.ndarray:
    return session.run(None, {"pixels": np.full((1, 8, 8, 3), 10, np.uint8)})[0]


def test_a_graph_is_built_once_then_taken_from_the_cache(tmp_path):
    key, calls = towers.GraphKey("tiny-fp32", {"weights": "a"}), []
    session = towers.cached_session(key, tmp_path, _builder(calls))
    np.testing.assert_allclose(_run(session), [[10, 10, 10]])
    assert key.path(tmp_path).exists() and key.digest in key.path(tmp_path).name
    assert session.get_modelmeta().custom_metadata_map["t2i_key"] == key.digest
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current graph is used without a word
        towers.cached_session(key, tmp_path, _builder(calls))
    assert len(calls) == 1
    assert list(tmp_path.iterdir()) == [key.path(tmp_path)]  # no partial files left


def test_a_deleted_graph_is_built_again(tmp_path):
    key, calls = towers.GraphKey("tiny-fp32", {"weights": "a"}), []
    towers.cached_session(key, tmp_path, _builder(calls))
    key.path(tmp_path).unlink()
    session = towers.cached_session(key, tmp_path, _builder(calls))
    assert len(calls) == 2 and key.path(tmp_path).exists()
    assert session.get_modelmeta().custom_metadata_map["t2i_key"] == key.digest


def test_other_sources_get_their_own_graph(tmp_path):
    old, new, calls = towers.GraphKey("tiny-fp32", {"weights": "a"}), towers.GraphKey("tiny-fp32", {"weights": "b"}), []
    towers.cached_session(old, tmp_path, _builder(calls))
    towers.cached_session(new, tmp_path, _builder(calls))
    assert len(calls) == 2 and old.path(tmp_path) != new.path(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([old.path(tmp_path), new.path(tmp_path)])
    towers.cached_session(old, tmp_path, _builder(calls))  # both stay usable: no rebuild going back
    assert len(calls) == 2
    assert old.derive("tiny-int8", photos=64).digest != new.derive("tiny-int8", photos=64).digest
    assert old.derive("tiny-int8", photos=64).digest != old.derive("tiny-int8", photos=32).digest


@pytest.mark.parametrize("damage", ["graph of other sources", "truncated", "not a graph"])
def test_a_stale_or_damaged_graph_is_rebuilt_never_used(tmp_path, damage):
    key, calls = towers.GraphKey("tiny-fp32", {"weights": "a"}), []
    towers.cached_session(key, tmp_path, _builder(calls))
    path = key.path(tmp_path)
    if damage == "graph of other sources":  # e.g. copied over by hand, or left by another version
        other = towers.GraphKey("tiny-fp32", {"weights": "b"})
        towers.cached_session(other, tmp_path / "other", _builder([]))
        shutil.copy(other.path(tmp_path / "other"), path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("not a graph")
    with pytest.warns(UserWarning, match="rebuilding it"):
        session = towers.cached_session(key, tmp_path, _builder(calls))
    assert len(calls) == 2
    assert session.get_modelmeta().custom_metadata_map["t2i_key"] == key.digest
    np.testing.assert_allclose(_run(session), [[10, 10, 10]])


def test_encoder_rebuilds_a_damaged_int8_text_graph(tmp_path, bundled):
    texts = list(bundled.caption[:20])
    first = ConSEEncoder("lite0", backend="torch", text_backend="onnx-int8", cache_dir=tmp_path)
    expected = first.encode_texts(texts)
    (graph,) = tmp_path.glob("minilm-int8-*.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="rebuilding it"):
        again = ConSEEncoder("lite0", backend="torch", text_backend="onnx-int8", cache_dir=tmp_path)
    np.testing.assert_allclose(again.encode_texts(texts), expected, atol=1e-6)
