"""CLIP-family encoders loaded through open_clip or transformers (taught in notebook 02).

These need model weights from the Hugging Face hub (or a local copy of them); without the hub, loading fails
at once with a `WeightsUnavailableError` that names the offline options.

Example:
    >>> enc = OpenCLIPEncoder("ViT-B-32/laion2b_s34b_b79k")  # or load_encoder("openclip:ViT-B-32/...")
    >>> enc.encode_texts(["a red kangaroo"]).shape
    (1, 512)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import getproxies

import numpy as np
import torch
from PIL import Image

from .config import DEFAULT_ENCODER
from .encoders import ImageLike, batched, l2_normalize, to_rgb_array

TINY_OPENCLIP = "openclip-tiny-random"
# A randomly initialized open_clip architecture small enough for unit tests; it uses the bundled BPE tokenizer.
_TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


class WeightsUnavailableError(RuntimeError):
    """Model weights had to be downloaded, but the Hugging Face hub could not be reached."""


class _TorchEncoder:
    """Batching, inference mode and normalization shared by the encoders below."""

    name: str
    dim: int

    def _prepare(self, name: str, model: torch.nn.Module, batch_size: int, device: str | None) -> None:
        self.name, self.batch_size = name, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.dim = int(self.encode_texts(["a photo"]).shape[1])

    def _embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed PIL images or arrays (gray, RGB, RGBA) as float32 `[n, dim]` rows of unit length."""
        return self._run(lambda batch: self._embed_images([Image.fromarray(to_rgb_array(i)) for i in batch]), images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as float32 `[n, dim]` rows of unit length."""
        return self._run(lambda batch: self._embed_texts(list(batch)), texts)

    def _run(self, embed: Callable[[Sequence], torch.Tensor], items: Sequence) -> np.ndarray:
        with torch.inference_mode():
            rows = [embed(batch).float().cpu().numpy() for batch in batched(items, self.batch_size)]
        return l2_normalize(np.concatenate(rows)) if rows else np.zeros((0, self.dim), np.float32)


class OpenCLIPEncoder(_TorchEncoder):
    """An open_clip model named `MODEL/PRETRAINED`, split at the first "/".

    PRETRAINED is a tag (`ViT-B-32/openai`) or a local weights file (`ViT-B-32//home/me/weights.bin`); a bare
    MODEL takes open_clip's first tag for it (`openai` where there is one). `hf-hub:ORG/REPO` and
    `local-dir:/path` are passed to open_clip whole.

    Example:
        >>> OpenCLIPEncoder("ViT-B-32/openai").name
        'openclip:ViT-B-32/openai'
    """

    def __init__(self, spec: str, batch_size: int = 32, device: str | None = None) -> None:
        open_clip = _import_open_clip()
        if spec.startswith(("hf-hub:", "local-dir:")):
            model_name, pretrained = spec, None
        else:
            model_name, _, pretrained = spec.partition("/")
            pretrained = pretrained or next(iter(open_clip.list_pretrained_tags_by_model(model_name)), None)
        local = spec.startswith("local-dir:") or (pretrained is not None and os.path.isfile(pretrained))
        with contextlib.nullcontext() if local else _hub_or_cache():
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model_name)
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self._prepare(f"openclip:{spec}", model, batch_size, device)

    @classmethod
    def from_parts(
        cls,
        name: str,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        batch_size: int = 32,
        device: str | None = None,
    ) -> OpenCLIPEncoder:
        """Wrap an open_clip model, its eval transform and its tokenizer that were built elsewhere."""
        encoder = cls.__new__(cls)
        encoder.preprocess, encoder.tokenizer = preprocess, tokenizer
        encoder._prepare(name, model, batch_size, device)
        return encoder

    def _embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        return self.model.encode_image(torch.stack([self.preprocess(image) for image in images]).to(self.device))

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class HFCLIPEncoder(_TorchEncoder):
    """A transformers CLIP or SigLIP model from a hub repo id or a local folder saved with `save_pretrained`.

    Example:
        >>> HFCLIPEncoder("openai/clip-vit-base-patch32").dim
        512
    """

    def __init__(self, repo_or_dir: str, batch_size: int = 32, device: str | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        with contextlib.nullcontext() if os.path.isdir(repo_or_dir) else _hub_or_cache():
            model = AutoModel.from_pretrained(repo_or_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(repo_or_dir)
            self.image_processor = AutoImageProcessor.from_pretrained(repo_or_dir)
        siglip = "siglip" in model.config.model_type  # SigLIP was trained on texts padded to full length
        self._text_kwargs = {
            "padding": "max_length" if siglip else True,
            "truncation": True,
            "max_length": model.config.text_config.max_position_embeddings,
        }
        self._prepare(f"hf:{repo_or_dir}", model, batch_size, device)

    def _embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.image_processor(images=images, return_tensors="pt").to(self.device)
        return _features(self.model.get_image_features(**inputs))

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(texts, return_tensors="pt", **self._text_kwargs).to(self.device)
        return _features(self.model.get_text_features(**inputs))


def _features(output: object) -> torch.Tensor:
    """transformers 4 returns the projected features; transformers 5 an output object holding them as pooler_output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def tiny_openclip(batch_size: int = 32, seed: int = 0) -> OpenCLIPEncoder:
    """A tiny, randomly initialized open_clip model for fast tests of the CLIP code path; never a default.

    Example:
        >>> tiny_openclip().dim
        32
    """
    open_clip = _import_open_clip()
    _register_tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_OPENCLIP, pretrained=None)
    tokenizer = open_clip.get_tokenizer(TINY_OPENCLIP)
    return OpenCLIPEncoder.from_parts(TINY_OPENCLIP, model, preprocess, tokenizer, batch_size)


@functools.cache
def _register_tiny_config() -> tempfile.TemporaryDirectory:
    folder = tempfile.TemporaryDirectory(prefix="t2i-openclip-")  # kept (cached) for the life of the process
    path = Path(folder.name) / f"{TINY_OPENCLIP}.json"
    path.write_text(json.dumps(_TINY_CONFIG))
    _import_open_clip().add_model_config(path)
    return folder


def _import_open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            "open_clip is not installed: `pip install -e '.[clip]'` (it needs torchvision), or `make setup-clip`"
        ) from error
    return open_clip


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or the HTTPS proxy in front of it) accepts a TCP connection."""
    from huggingface_hub import constants

    url = urlsplit(getproxies().get("https") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _hub_or_cache() -> Iterator[None]:
    """Load from the hub if it answers, else from the local cache only, failing fast with a clear message."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    offline = saved or not _hub_reachable()
    constants.HF_HUB_OFFLINE = offline  # skips huggingface_hub's retries (~45 s) when the hub is away
    try:
        yield
    except Exception as error:
        if offline and _is_missing_download(error):
            raise WeightsUnavailableError(
                "The model weights could not be downloaded (the Hugging Face hub is unreachable or HF_HUB_OFFLINE "
                "is set) and are not in the local cache. Offline options: the default offline encoder "
                f"{DEFAULT_ENCODER!r} (`load_encoder()`), a local weights file (`openclip:MODEL//path/to/weights`), "
                "a local transformers folder (`hf:/path/to/dir`), or HF_HOME pointing to a cache that has the weights."
            ) from error
        raise
    finally:
        constants.HF_HUB_OFFLINE = saved


def _is_missing_download(error: BaseException | None) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    while error is not None:
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, URLError)):
            return True
        error = error.__cause__ or error.__context__
    return False
