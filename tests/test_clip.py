"""The CLIP-family encoders on tiny random models built here, so everything runs offline.

The open_clip tests need open_clip (and torchvision): they run in `.venv-clip` and are skipped elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_helpers import clip
from t2i_helpers.encoders import load_encoder

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


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No hub and an empty cache, whatever network and cache this machine has."""
    from huggingface_hub import constants

    monkeypatch.setattr(clip, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


# ---------------------------------------------------------------- open_clip


def test_tiny_openclip_embeds_any_image_and_text() -> None:
    pytest.importorskip("open_clip")
    encoder = load_encoder("openclip-tiny-random", batch_size=4)
    assert encoder.name == "openclip-tiny-random"
    check_encoder(encoder, clip._TINY_CONFIG["embed_dim"])


def test_tiny_openclip_is_deterministic_per_seed() -> None:
    pytest.importorskip("open_clip")
    a, b, c = clip.tiny_openclip(seed=0), clip.tiny_openclip(seed=0), clip.tiny_openclip(seed=1)
    assert np.array_equal(a.encode_texts(TEXTS), b.encode_texts(TEXTS))
    assert np.array_equal(a.encode_images(IMAGES[:2]), b.encode_images(IMAGES[:2]))
    assert not np.allclose(a.encode_texts(TEXTS), c.encode_texts(TEXTS))


def test_openclip_loads_a_local_weights_file(tmp_path, offline) -> None:
    pytest.importorskip("open_clip")
    tiny = clip.tiny_openclip(seed=3)
    torch.save(tiny.model.state_dict(), tmp_path / "weights.pt")
    encoder = clip.OpenCLIPEncoder(f"{clip.TINY_OPENCLIP}/{tmp_path / 'weights.pt'}")
    assert encoder.name == f"openclip:{clip.TINY_OPENCLIP}/{tmp_path}/weights.pt"
    assert np.allclose(encoder.encode_texts(TEXTS), tiny.encode_texts(TEXTS), atol=1e-6)


def test_openclip_without_hub_fails_fast_and_clearly(offline) -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(clip.WeightsUnavailableError, match="conse-effnet-minilm") as raised:
        load_encoder("openclip:ViT-B-32/openai")
    assert isinstance(raised.value, RuntimeError)
    assert "openclip:MODEL//path/to/weights" in str(raised.value) and "HF_HOME" in str(raised.value)


def test_openclip_unknown_model_is_not_called_a_download_error(offline) -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(RuntimeError) as raised:
        clip.OpenCLIPEncoder("NoSuchModel/openai")
    assert not isinstance(raised.value, clip.WeightsUnavailableError)


# ---------------------------------------------------------------- transformers


def save_tiny_tokenizer(folder) -> None:
    """A CLIP BPE tokenizer over single characters, written as vocab.json + merges.txt and saved."""
    from transformers import CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(folder)


TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
TEXT_TOWER = {**TOWER, "vocab_size": 100, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1}
VISION_TOWER = {**TOWER, "image_size": 32, "patch_size": 8}


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("tiny-clip")
    torch.manual_seed(0)
    config = CLIPConfig(text_config={**TEXT_TOWER, "pad_token_id": 1}, vision_config=VISION_TOWER, projection_dim=24)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    save_tiny_tokenizer(folder)
    return str(folder)


def test_hf_clip_from_a_local_folder(tiny_hf_clip: str) -> None:
    encoder = load_encoder(f"hf:{tiny_hf_clip}", batch_size=4)
    assert encoder.name == f"hf:{tiny_hf_clip}"
    check_encoder(encoder, 24)
    again = clip.HFCLIPEncoder(tiny_hf_clip)
    assert np.allclose(encoder.encode_texts(TEXTS), again.encode_texts(TEXTS), atol=1e-6)


def test_hf_siglip_from_a_local_folder(tmp_path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(text_config={**TEXT_TOWER, "pad_token_id": 1}, vision_config=VISION_TOWER)
    SiglipModel(config).save_pretrained(tmp_path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    save_tiny_tokenizer(tmp_path)
    encoder = clip.HFCLIPEncoder(str(tmp_path))
    assert encoder._text_kwargs["padding"] == "max_length"
    check_encoder(encoder, 32)


def test_hf_without_hub_fails_fast_and_clearly(offline) -> None:
    with pytest.raises(clip.WeightsUnavailableError, match="conse-effnet-minilm"):
        load_encoder("hf:openai/clip-vit-base-patch32")
