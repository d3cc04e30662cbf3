"""Image and text encoders behind one small protocol, picked by name (taught in notebooks 01 and 02).

Every encoder maps images and texts into one vector space and returns L2-normalized float32 rows, so the
inner product of an image row and a text row is their cosine similarity.

Example:
    >>> enc = load_encoder()                       # the offline default, "conse-effnet-minilm"
    >>> enc.encode_texts(["a red kangaroo"]).shape
    (1, 384)
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..config import DEFAULT_ENCODER
from ..data.images import ImageLike

_BILINGUAL = "t2i_helpers.models.multilingual"
# name -> (module, factory, keyword arguments). Modules are imported only when an encoder is loaded.
_BUILTIN: dict[str, tuple[str, str, dict]] = {
    "conse-effnet-minilm": ("t2i_helpers.models.conse", "ConSEEncoder", {"variant": "lite2"}),
    "conse-effnet-lite0-minilm": ("t2i_helpers.models.conse", "ConSEEncoder", {"variant": "lite0"}),
    "conse-effnet-lite1-minilm": ("t2i_helpers.models.conse", "ConSEEncoder", {"variant": "lite1"}),
    # the default with the static text tower (models/static_tower.py): it searches the default's collections
    "conse-effnet-static-minilm": ("t2i_helpers.models.conse", "ConSEEncoder", {"text_backend": "static"}),
    "openclip-tiny-random": ("t2i_helpers.models.clip_archs", "tiny_openclip", {}),
    # Queries in other languages (measure/languages.py, benchmarks/languages.py): the same image side, other
    # text towers. "pow0.5": the top classes' weights raised to 0.5 before they are summed.
    "conse-effnet-minilm-pow0.5": ("t2i_helpers.models.conse", "ConSEEncoder", {"power": 0.5}),
    "conse-effnet-use": ("t2i_helpers.models.use_tower", "UseConSEEncoder", {}),
    "conse-effnet-use-pow0.5": ("t2i_helpers.models.use_tower", "UseConSEEncoder", {"power": 0.5}),
    # both spaces stored side by side; routed and fused queries search the same vectors (one name)
    "conse-effnet-minilm-use-pow0.5": (_BILINGUAL, "BilingualConSEEncoder", {"queries": "routed", "power": 0.5}),
    "conse-effnet-minilm-use-pow0.5-fused": (_BILINGUAL, "BilingualConSEEncoder", {"queries": "fused", "power": 0.5}),
}
# prefix -> (module, factory): the rest of the name is the factory's first argument.
_PREFIXES: dict[str, tuple[str, str]] = {
    "conse-head:": ("t2i_helpers.models.conse", "with_head"),
    "openclip:": ("t2i_helpers.models.clip", "OpenCLIPEncoder"),
    "hf:": ("t2i_helpers.models.clip", "HFCLIPEncoder"),
    "openclip-random:": ("t2i_helpers.models.clip_archs", "random_openclip"),  # random weights: speed and tests only
    "hf-random:": ("t2i_helpers.models.clip_archs", "random_hf"),
}


@runtime_checkable
class Encoder(Protocol):
    """What every encoder offers: a name, a dimension and two batched, normalized encode functions."""

    name: str
    dim: int

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed images (PIL images or RGB uint8 arrays) as float32 `[n, dim]`, rows of unit length."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as float32 `[n, dim]`, rows of unit length."""
        ...


def available_encoders() -> list[str]:
    """Names `load_encoder` accepts as they are, plus the `openclip:` and `hf:` prefixes."""
    return [*_BUILTIN, "conse-head:HEAD.npz", "openclip:MODEL/PRETRAINED", "hf:REPO_ID_OR_DIR"]


def load_encoder(name: str | None = None, *, cached: bool = True, **kwargs: object) -> Encoder:
    """Load an encoder by name; the same name and arguments return the same loaded object.

    Args:
        name: a built-in name (see `available_encoders()`), `conse-head:PATH.npz` (the default encoder with a
            trained projection head, notebook 02), `openclip:ViT-B-32/openai` (any open_clip
            model/pretrained pair, or model/path-to-weights), or `hf:openai/clip-vit-base-patch32` (any
            transformers CLIP/SigLIP repo id or local folder). None gives the offline default.
        cached: False loads a new copy (e.g. to time loading), bypassing the per-process cache.
        **kwargs: passed to the encoder's constructor (e.g. `batch_size=16`, `device="cuda"`).

    Returns:
        A loaded encoder.
    """
    key = (name or DEFAULT_ENCODER, tuple(sorted(kwargs.items())))
    return _load(*key) if cached else _load.__wrapped__(*key)


@functools.lru_cache(maxsize=8)
def _load(name: str, kwargs: tuple[tuple[str, object], ...]) -> Encoder:
    if name in _BUILTIN:
        module, factory, defaults = _BUILTIN[name]
        return getattr(importlib.import_module(module), factory)(**{**defaults, **dict(kwargs)})
    for prefix, (module, factory) in _PREFIXES.items():
        if name.startswith(prefix):
            return getattr(importlib.import_module(module), factory)(name[len(prefix) :], **dict(kwargs))
    raise ValueError(f"unknown encoder {name!r}; choose one of {available_encoders()}")


def encode_images_with_classes(encoder: Encoder, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[dict]]:
    """Embeddings `[n, dim]` and what the image model said of each image (`{}` where the encoder does not say:
    only ConSE encoders build their vectors from image classes), as the store keeps it (notebook 02)."""
    if hasattr(encoder, "encode_images_with_classes"):
        return encoder.encode_images_with_classes(images)
    return encoder.encode_images(images), [{} for _ in images]


def resize_center_crop(rgb: np.ndarray, size: int, resize_to: int | None = None) -> np.ndarray:
    """Resize the short side to `resize_to` (default `size`), then take the central `size`x`size` square."""
    resize_to = resize_to or size
    h, w = rgb.shape[:2]
    scale = resize_to / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
