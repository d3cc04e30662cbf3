"""The open_clip encoders and their fast towers, on random-weight models built here, so everything runs offline.

These need open_clip (and torchvision): they run in `.venv-clip` and are skipped elsewhere. The transformers
path is tested in test_clip_hf.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from t2i_helpers.data.images import read_image
from t2i_helpers.models import clip, clip_archs, clip_towers
from t2i_helpers.models.encoders import load_encoder
from tests.clip_helpers import IMAGES, TEXTS, check_encoder, min_row_cosine, offline  # noqa: F401 (a fixture)

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """open_clip's ViT-B-32 with random weights, eager fp32: the reference the fast towers must follow."""
    return clip_archs.random_openclip("ViT-B-32", backend="torch", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def photos_and_captions(bundled):
    sample = bundled.sample(8, random_state=1)
    return [read_image(path)[1] for path in sample.path], [*sample.caption, "a red kangaroo", ""]


# ---------------------------------------------------------------- the encoder


def test_tiny_openclip_embeds_any_image_and_text(tmp_path) -> None:
    encoder = load_encoder("openclip-tiny-random", batch_size=4, cache_dir=tmp_path)
    assert encoder.name == "openclip-tiny-random"
    check_encoder(encoder, clip_archs._TINY_CONFIG["embed_dim"])


def test_tiny_openclip_is_deterministic_per_seed() -> None:
    a, b, c = (clip_archs.tiny_openclip(seed=s, backend="torch") for s in (0, 0, 1))
    assert np.array_equal(a.encode_texts(TEXTS), b.encode_texts(TEXTS))
    assert np.array_equal(a.encode_images(IMAGES[:2]), b.encode_images(IMAGES[:2]))
    assert not np.allclose(a.encode_texts(TEXTS), c.encode_texts(TEXTS))


@pytest.mark.usefixtures("offline")
def test_openclip_loads_a_local_weights_file(tmp_path) -> None:
    tiny = clip_archs.tiny_openclip(seed=3, backend="torch")
    torch.save(tiny.model.state_dict(), tmp_path / "weights.pt")
    encoder = clip.OpenCLIPEncoder(f"{clip_archs.TINY_OPENCLIP}/{tmp_path / 'weights.pt'}", backend="torch")
    assert encoder.name == f"openclip:{clip_archs.TINY_OPENCLIP}/{tmp_path}/weights.pt"
    assert np.allclose(encoder.encode_texts(TEXTS), tiny.encode_texts(TEXTS), atol=1e-6)


@pytest.mark.usefixtures("offline")
def test_openclip_without_hub_fails_fast_and_clearly() -> None:
    with pytest.raises(clip.WeightsUnavailableError, match="conse-effnet-minilm") as raised:
        load_encoder("openclip:ViT-B-32/openai")
    assert isinstance(raised.value, RuntimeError)
    assert "openclip:MODEL//path/to/weights" in str(raised.value) and "HF_HOME" in str(raised.value)


@pytest.mark.usefixtures("offline")
def test_openclip_unknown_model_is_not_called_a_download_error() -> None:
    with pytest.raises(RuntimeError) as raised:
        clip.OpenCLIPEncoder("NoSuchModel/openai")
    assert not isinstance(raised.value, clip.WeightsUnavailableError)


def test_image_size_is_the_side_open_clips_transform_reads(b32, photos_and_captions) -> None:
    photos, _ = photos_and_captions
    tiny = clip_archs.tiny_openclip(backend="torch")
    assert (b32.image_size, tiny.image_size) == (224, clip_archs._TINY_CONFIG["vision_cfg"]["image_size"])
    for encoder in (b32, tiny):
        assert encoder.preprocess(photos[:2]).shape == (2, 3, encoder.image_size, encoder.image_size)


# ---------------------------------------------------------------- queries are not padded to 77


def test_queries_stop_at_their_end_token_and_embed_as_if_padded(b32, photos_and_captions) -> None:
    _, captions = photos_and_captions
    assert clip_towers.OpenCLIPText.fits(b32.model)
    (one,) = b32.tokenize(["a red kangaroo"])
    assert one.shape == (1, 5)  # start, three words, end: not 77
    (batch,) = b32.tokenize(captions)
    assert batch.shape[1] == int((b32.tokenizer(captions) != 0).sum(axis=1).max()) < 77  # the longest caption
    with torch.inference_mode():
        padded = torch.nn.functional.normalize(b32.model.encode_text(b32.tokenizer(captions)), dim=-1).numpy()
    assert np.allclose(b32.encode_texts(captions), padded, atol=1e-5)  # open_clip's own, padded to 77
    one_by_one = np.concatenate([b32.encode_texts([c]) for c in captions])
    assert np.allclose(b32.encode_texts(captions), one_by_one, atol=1e-5)


def test_image_tower_is_open_clips_own(b32, photos_and_captions) -> None:
    photos, _ = photos_and_captions
    with torch.inference_mode():
        own = torch.nn.functional.normalize(b32.model.encode_image(b32.preprocess(photos)), dim=-1).numpy()
    assert np.allclose(b32.encode_images(photos), own, atol=1e-6)


# ---------------------------------------------------------------- fast towers follow eager fp32


@pytest.mark.parametrize("backend", ["autocast", "onnx"])
def test_fast_towers_match_eager_fp32_per_row(b32, photos_and_captions, backend) -> None:
    photos, captions = photos_and_captions
    fast = b32.with_backend(backend)
    assert fast.backend == f"image={backend},text={backend}" and fast.model is b32.model  # weights shared
    assert min_row_cosine(fast.encode_images(photos), b32.encode_images(photos)) >= 0.999
    assert min_row_cosine(fast.encode_texts(captions), b32.encode_texts(captions)) >= 0.999
    assert b32.backend == "image=torch,text=torch"  # the reference is left as it was


def test_onnx_graphs_are_exported_once_and_never_stale(tmp_path) -> None:
    first = clip_archs.tiny_openclip(seed=0, backend="onnx", cache_dir=tmp_path)
    graphs = sorted(tmp_path.glob("*.onnx"))
    assert len(graphs) == 2 and not list(tmp_path.glob("*.part"))  # one per tower, written whole
    stamps = [g.stat().st_mtime_ns for g in graphs]
    again = clip_archs.tiny_openclip(seed=0, backend="onnx", cache_dir=tmp_path)
    assert [g.stat().st_mtime_ns for g in sorted(tmp_path.glob("*.onnx"))] == stamps  # reused, not re-exported
    assert np.array_equal(again.encode_texts(TEXTS), first.encode_texts(TEXTS))
    other = clip_archs.tiny_openclip(seed=1, backend="onnx", cache_dir=tmp_path)  # other weights: new graphs
    assert len(list(tmp_path.glob("*.onnx"))) == 4
    eager = clip_archs.tiny_openclip(seed=1, backend="torch", cache_dir=tmp_path)
    assert min_row_cosine(other.encode_texts(TEXTS), eager.encode_texts(TEXTS)) >= 0.9999
    with torch.no_grad():
        eager.model.token_embedding.weight.mul_(-1.0)  # weights changed in place after loading
    changed = eager.with_backend("onnx")
    assert len(list(tmp_path.glob("*.onnx"))) == 5  # a new text graph; the unchanged image tower's is reused
    assert min_row_cosine(changed.encode_texts(TEXTS), eager.encode_texts(TEXTS)) >= 0.9999
    assert min_row_cosine(changed.encode_texts(TEXTS), other.encode_texts(TEXTS)) < 0.99


def test_auto_times_once_and_remembers_the_choice(tmp_path, monkeypatch) -> None:
    encoder = clip_archs.tiny_openclip(cache_dir=tmp_path)  # backend="auto" is the default
    image, text = (part.split("=")[1] for part in encoder.backend.split(","))
    assert image in clip_towers.candidates("image", encoder.device)
    assert text in clip_towers.candidates("text", encoder.device)
    timings = json.loads((tmp_path / "clip-backends.json").read_text())
    assert sorted(entry["backend"] for entry in timings.values()) == sorted([image, text])
    assert all(entry["ms"][entry["backend"]] == min(entry["ms"].values()) for entry in timings.values())

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(clip_towers, "time_ms", no_timing)
    assert clip_archs.tiny_openclip(cache_dir=tmp_path).backend == encoder.backend  # read from the cache
