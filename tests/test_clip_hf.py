"""The transformers CLIP and SigLIP encoders and their fast towers, on random-weight models built here (offline).

Runs in the main venv (no torchvision needed); the open_clip path is tested in test_clip.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.images import read_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.models import clip, clip_archs, clip_towers
from t2i_helpers.models.encoders import load_encoder
from tests.clip_helpers import TEXTS, check_encoder, min_row_cosine, offline  # noqa: F401 (a fixture)


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


@pytest.fixture(scope="module")
def photos_and_captions(bundled):
    sample = bundled.sample(8, random_state=2)
    return [read_image(path)[1] for path in sample.path], [*sample.caption, "a red kangaroo", ""]


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """transformers CLIP ViT-B/32 with random weights, eager fp32: the reference for the fast towers."""
    return clip_archs.random_hf("ViT-B-32", backend="torch", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """SigLIP ViT-B/16 (the webli model's architecture) with random weights, eager fp32."""
    return clip_archs.random_hf("SigLIP-B-16", backend="torch", cache_dir=tmp_path_factory.mktemp("cache"))


# ---------------------------------------------------------------- loading


def test_hf_clip_from_a_local_folder(tiny_hf_clip: str, tmp_path) -> None:
    encoder = load_encoder(f"hf:{tiny_hf_clip}", batch_size=4, cache_dir=tmp_path)
    assert encoder.name == f"hf:{tiny_hf_clip}"
    check_encoder(encoder, 24)
    again = clip.HFCLIPEncoder(tiny_hf_clip, backend="torch")
    assert np.allclose(encoder.encode_texts(TEXTS), again.encode_texts(TEXTS), atol=1e-5)


def test_hf_siglip_from_a_local_folder(tmp_path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(text_config={**TEXT_TOWER, "pad_token_id": 1}, vision_config=VISION_TOWER)
    SiglipModel(config).save_pretrained(tmp_path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    save_tiny_tokenizer(tmp_path)
    encoder = clip.HFCLIPEncoder(str(tmp_path), backend="torch")
    assert encoder._text_kwargs["padding"] == "max_length"
    check_encoder(encoder, 32)


@pytest.mark.usefixtures("offline")
def test_hf_without_hub_fails_fast_and_clearly() -> None:
    with pytest.raises(clip.WeightsUnavailableError, match="conse-effnet-minilm"):
        load_encoder("hf:openai/clip-vit-base-patch32")


def test_random_architectures_are_the_real_sizes(b32, siglip) -> None:
    params = {e.name: sum(p.numel() for p in e.model.parameters()) / 1e6 for e in (b32, siglip)}
    assert 150 < params["hf-random:ViT-B-32"] < 153 and 202 < params["hf-random:SigLIP-B-16"] < 205
    assert (b32.dim, siglip.dim) == (512, 768)
    with pytest.raises(ValueError, match="unknown architecture"):
        clip_archs.random_hf("ViT-Q-99")


def test_image_size_is_the_side_the_image_processor_reads(b32, siglip, tiny_hf_clip, photos_and_captions) -> None:
    tiny = clip.HFCLIPEncoder(tiny_hf_clip, backend="torch")
    assert (b32.image_size, siglip.image_size, tiny.image_size) == (224, 224, 32)  # shortest_edge; SigLIP's square
    photos, _ = photos_and_captions
    for encoder in (b32, siglip, tiny):
        assert encoder.preprocess(photos[:2]).shape == (2, 3, encoder.image_size, encoder.image_size)


def test_big_jpegs_are_decoded_at_the_scale_the_encoder_reads(tiny_hf_clip, bundled, tmp_path) -> None:
    """Ingest and `embed_image` hand the encoder a JPEG decoded at 1/8 scale: 300x225 px, not 2400x1800."""
    folder = tmp_path / "photos" / "animals"
    folder.mkdir(parents=True)
    big = Image.fromarray(read_image(bundled.path.iloc[0])[1]).resize((2400, 1800))
    big.save(folder / "big.jpg", quality=90)
    encoder = clip.HFCLIPEncoder(tiny_hf_clip, backend="torch", cache_dir=tmp_path / "cache")
    seen, encode = [], encoder.encode_images
    encoder.encode_images = lambda images: seen.extend(np.shape(i) for i in images) or encode(images)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "t2i.db"), thumbnail_size=0), encoder)
    try:
        assert engine.index(folder.parent, progress=False).summary().startswith("added 1,")
        engine.embed_image(folder / "big.jpg")
    finally:
        engine.close()
    assert seen == [(225, 300, 3), (225, 300, 3)]  # min side 1800 // 8 = 225 >= image_size 32


# ---------------------------------------------------------------- padding


def test_clip_queries_are_padded_only_to_the_longest_in_the_batch(b32, photos_and_captions) -> None:
    _, captions = photos_and_captions
    ids, mask = b32.tokenize(["a red kangaroo"])
    assert ids.shape == (1, 5) and mask.all()  # [CLS] a red kangaroo [SEP], no padding
    one_by_one = np.concatenate([b32.encode_texts([c]) for c in captions])
    assert np.allclose(b32.encode_texts(captions), one_by_one, atol=1e-5)
    padded = b32.tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt")
    with torch.inference_mode():
        features = b32.model.get_text_features(padded["input_ids"], padded["attention_mask"]).pooler_output
    assert np.allclose(b32.encode_texts(captions), torch.nn.functional.normalize(features).numpy(), atol=1e-5)


def test_siglip_queries_keep_their_full_padding(siglip) -> None:
    (ids,) = siglip.tokenize(["a red kangaroo"])  # SigLIP's tokenizer gives no attention mask
    assert ids.shape == (1, 64)  # trained on texts padded to 64: never cut


# ---------------------------------------------------------------- fast towers follow eager fp32


@pytest.mark.parametrize("backend", ["autocast", "onnx"])
@pytest.mark.parametrize("model", ["b32", "siglip"])
def test_fast_towers_match_eager_fp32_per_row(model, backend, photos_and_captions, request) -> None:
    eager = request.getfixturevalue(model)
    photos, captions = photos_and_captions
    fast = eager.with_backend(backend)
    assert fast.backend == f"image={backend},text={backend}" and fast.model is eager.model
    assert min_row_cosine(fast.encode_images(photos), eager.encode_images(photos)) >= 0.999
    assert min_row_cosine(fast.encode_texts(captions), eager.encode_texts(captions)) >= 0.999


def test_int8_is_only_an_explicit_labelled_choice(b32, photos_and_captions) -> None:
    photos, captions = photos_and_captions
    assert all("int8" not in clip_towers.candidates(kind, b32.device) for kind in clip_towers.KINDS)
    int8 = b32.with_backend("image=torch,text=int8")
    assert int8.backend == "image=torch,text=int8"
    assert min_row_cosine(int8.encode_texts(captions), b32.encode_texts(captions)) >= 0.99
    assert np.array_equal(int8.encode_images(photos), b32.encode_images(photos))


def test_engine_info_names_the_backends_auto_picked(tiny_hf_clip, tmp_path) -> None:
    encoder = clip.HFCLIPEncoder(tiny_hf_clip, cache_dir=tmp_path / "cache")  # backend="auto"
    engine = SearchEngine.open(Config(uri=str(tmp_path / "t2i.db")), encoder)
    try:
        info = engine.info()
    finally:
        engine.close()
    assert info["encoder_backend"] == encoder.backend
    image, text = (part.partition("=") for part in encoder.backend.split(","))
    assert image[0] == "image" and image[2] in clip_towers.candidates("image", encoder.device)
    assert text[0] == "text" and text[2] in clip_towers.candidates("text", encoder.device)


def test_backend_names_are_checked(b32) -> None:
    assert clip_towers.parse_backend("text=onnx") == {"image": "auto", "text": "onnx"}
    for bad in ("fast", "image=onnx,text=fp8", "picture=onnx"):
        with pytest.raises(ValueError, match="backend must be one of"):
            b32.with_backend(bad)
    with pytest.raises(ValueError, match="CPU only"):
        clip_towers.build("onnx", b32._towers["text"], torch.device("cuda"), b32.cache_dir)


def test_a_tower_that_cannot_be_exported_says_so_and_leaves_no_file(tmp_path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(x)  # an operator ONNX has no form for

    tower = clip_towers.Tower("text", Unexportable(), (torch.ones(1, 3),), ("x",), {"x": {0: "n"}})
    with pytest.raises(RuntimeError, match="could not be exported to ONNX.*use backend 'torch' or 'autocast'"):
        clip_towers.build("onnx", tower, torch.device("cpu"), tmp_path)
    assert not list(tmp_path.iterdir())
