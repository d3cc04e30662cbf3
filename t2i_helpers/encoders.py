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
from PIL import Image

from .config import DEFAULT_ENCODER

ImageLike = Image.Image | np.ndarray

# name -> (module, factory, keyword arguments). Modules are imported only when an encoder is loaded.
_BUILTIN: dict[str, tuple[str, str, dict]] = {
    "conse-effnet-minilm": ("t2i_helpers.conse", "ConSEEncoder", {"variant": "lite2"}),
    "conse-effnet-lite0-minilm": ("t2i_helpers.conse", "ConSEEncoder", {"variant": "lite0"}),
    "conse-effnet-lite1-minilm": ("t2i_helpers.conse", "ConSEEncoder", {"variant": "lite1"}),
    "openclip-tiny-random": ("t2i_helpers.clip_archs", "tiny_openclip", {}),
}
# prefix -> (module, factory): the rest of the name is the factory's first argument.
_PREFIXES: dict[str, tuple[str, str]] = {
    "conse-head:": ("t2i_helpers.conse", "with_head"),
    "openclip:": ("t2i_helpers.clip", "OpenCLIPEncoder"),
    "hf:": ("t2i_helpers.clip", "HFCLIPEncoder"),
    "openclip-random:": ("t2i_helpers.clip_archs", "random_openclip"),  # random weights: speed and tests only
    "hf-random:": ("t2i_helpers.clip_archs", "random_hf"),
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


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any PIL image or array (gray, RGB, RGBA, 16-bit) as RGB uint8 `[h, w, 3]`; alpha goes onto white.

    Example:
        >>> to_rgb_array(np.zeros((4, 4), np.uint8)).shape
        (4, 4, 3)
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = Image.fromarray(np.asarray(image, dtype=np.float64) / 257.0)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
    else:
        array = np.asarray(image)
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or 0 in array.shape:
        raise ValueError(f"not an image array: shape {array.shape}")
    if array.shape[2] in (2, 4):  # with alpha: composite on white
        alpha = array[:, :, -1:].astype(np.float32) / 255.0
        color = array[:, :, :-1].astype(np.float32)
        array = (color * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


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
