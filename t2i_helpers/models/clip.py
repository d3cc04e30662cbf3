"""CLIP-family encoders loaded through open_clip or transformers (taught in notebook 02).

These need model weights from the Hugging Face hub (or a local copy of them); without the hub, loading fails
at once with a `WeightsUnavailableError` that names the offline options. Each tower runs on the backend that
was fastest on this machine (`backend="auto"`, see `clip_towers`), which the encoder names in `backend`.

Example:
    >>> enc = OpenCLIPEncoder("ViT-B-32/laion2b_s34b_b79k")  # or load_encoder("openclip:ViT-B-32/...")
    >>> enc.encode_texts(["a red kangaroo"]).shape
    (1, 512)
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import getproxies

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_ENCODER, default_data_dir
from ..data.images import ImageLike, to_rgb_array
from .clip_towers import HFTower, OpenCLIPText, Tower, select_runners
from .encoders import batched, l2_normalize

TYPICAL_QUERY = "a dog running on the beach"  # what "auto" times a text tower on: one short search query


class WeightsUnavailableError(RuntimeError):
    """Model weights had to be downloaded, but the Hugging Face hub could not be reached."""


class _TorchEncoder:
    """Batching, backends (see `clip_towers`) and normalization shared by the encoders below."""

    name: str
    dim: int
    backend: str  # per tower, e.g. "image=autocast,text=onnx"
    # What `from_parts` passes where its caller names nothing: the constructors' defaults.
    PART_DEFAULTS = {"batch_size": 32, "device": None, "backend": "auto", "cache_dir": None}
    image_size: int | None  # the shorter side (px) preprocessing reads; big JPEGs are decoded down to it

    def _prepare(
        self,
        name: str,
        model: torch.nn.Module,
        batch_size: int,
        device: str | None,
        backend: str,
        cache_dir: str | Path | None,
    ) -> None:
        self.name, self.batch_size = name, batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.cache_dir = Path(cache_dir) if cache_dir else default_data_dir() / "cache"
        self.image_size = self._image_side()
        blank = [Image.new("RGB", (256, 256))] * min(batch_size, 8)
        self._towers = {
            "image": self._tower("image", self._image_module(), (self._pixels(blank),), ("pixel_values",)),
            "text": self._tower("text", self._text_module(), self.tokenize([TYPICAL_QUERY]), self._text_inputs),
        }
        self._use(backend)
        self.dim = int(self.encode_texts(["a photo"]).shape[1])

    @staticmethod
    def _tower(kind: str, module: torch.nn.Module, example: tuple, names: tuple[str, ...]) -> Tower:
        varying = {0: "n", 1: "length"} if kind == "text" else {0: "n"}
        return Tower(kind, module, example, names, {name: varying for name in names})

    def _use(self, backend: str) -> None:
        self._runners = select_runners(self._towers, backend, self.device, self.cache_dir)
        self.backend = ",".join(f"{kind}={name}" for kind, (name, _) in self._runners.items())

    def with_backend(self, backend: str) -> _TorchEncoder:
        """The same model (weights shared, not copied) run by other backends, e.g. `"torch"` to compare against.

        Example:
            >>> tiny_openclip(backend="autocast").with_backend("torch").backend
            'image=torch,text=torch'
        """
        other = copy.copy(self)
        other._use(backend)
        return other

    def _image_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _text_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def _image_side(self) -> int | None:
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Texts as the text tower's input (token ids, and an attention mask where the model takes one)."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images (PIL or arrays: gray, RGB, RGBA) as the image tower's input, float pixels `[n, 3, size, size]`."""
        return self._pixels([Image.fromarray(to_rgb_array(image)) for image in images])

    def image_features(self, pixels: torch.Tensor) -> np.ndarray:
        """The image tower's features for preprocessed pixels, float32 `[n, dim]`, not normalized."""
        return self._forward("image", (pixels,))

    def text_features(self, tokens: tuple[torch.Tensor, ...]) -> np.ndarray:
        """The text tower's features for tokenized texts, float32 `[n, dim]`, not normalized."""
        return self._forward("text", tokens)

    def _forward(self, kind: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
        with torch.inference_mode():
            return self._runners[kind][1](*(x.to(self.device) for x in inputs)).float().cpu().numpy()

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed PIL images or arrays (gray, RGB, RGBA) as float32 `[n, dim]` rows of unit length."""
        rows = [self.image_features(self.preprocess(batch)) for batch in batched(images, self.batch_size)]
        return l2_normalize(np.concatenate(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as float32 `[n, dim]` rows of unit length."""
        rows = [self.text_features(self.tokenize(list(batch))) for batch in batched(texts, self.batch_size)]
        return l2_normalize(np.concatenate(rows)) if rows else np.zeros((0, self.dim), np.float32)


class OpenCLIPEncoder(_TorchEncoder):
    """An open_clip model named `MODEL/PRETRAINED`, split at the first "/".

    PRETRAINED is a tag (`ViT-B-32/openai`) or a local weights file (`ViT-B-32//home/me/weights.bin`); a bare
    MODEL takes open_clip's first tag for it (`openai` where there is one). `hf-hub:ORG/REPO` and
    `local-dir:/path` are passed to open_clip whole. Queries are cut after their end token where the text
    tower is causal (CLIP's is: padding after the end token cannot change its embedding); open_clip itself
    pads every query to 77 tokens, which made a one-query text embedding twice as slow.

    Args:
        spec: `MODEL/PRETRAINED` as above.
        batch_size: images or texts per forward pass.
        device: torch device; CUDA when available, else the CPU.
        backend: how each tower runs (`clip_towers`): "auto" (timed on this machine once, then cached),
            "torch" (eager fp32), "autocast" (bf16 on CPU, fp16 on CUDA), "onnx", "int8", or one per tower
            like "image=autocast,text=onnx".
        cache_dir: where ONNX graphs and the timings of "auto" are kept (`<data_dir>/cache`).

    Example:
        >>> OpenCLIPEncoder("ViT-B-32/openai").name
        'openclip:ViT-B-32/openai'
    """

    _text_inputs = ("input_ids",)

    def __init__(
        self,
        spec: str,
        batch_size: int = 32,
        device: str | None = None,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
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
        self.transform, self.tokenizer = preprocess, tokenizer
        self._prepare(f"openclip:{spec}", model, batch_size, device, backend, cache_dir)

    @classmethod
    def from_parts(
        cls, name: str, model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, **kwargs: object
    ) -> OpenCLIPEncoder:
        """Wrap an open_clip model, its eval transform and its tokenizer that were built elsewhere.

        Args:
            kwargs: `batch_size`, `device`, `backend` and `cache_dir` as for the constructor.
        """
        encoder = cls.__new__(cls)
        encoder.transform, encoder.tokenizer = preprocess, tokenizer
        options = cls.PART_DEFAULTS | kwargs
        encoder._prepare(name, model, **options)
        return encoder

    def _image_module(self) -> torch.nn.Module:
        return self.model.visual

    def _text_module(self) -> torch.nn.Module:
        self._causal_text = OpenCLIPText(self.model) if OpenCLIPText.fits(self.model) else None
        return self._causal_text or self.model.text

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])

    def _image_side(self) -> int | None:
        """The size of the transform's first resize: the shorter side (e.g. 224), or the larger of (h, w)."""
        for step in getattr(self.transform, "transforms", [self.transform]):
            size = getattr(step, "size", None)
            if size is not None:
                return int(size) if isinstance(size, int) else int(max(size))
        return None

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor]:
        """Token ids `[n, length]`, cut after the longest text's end token where the text tower allows it."""
        ids = self.tokenizer(list(texts))
        if self._causal_text is not None and len(texts):  # cut the padding after the longest query's end token
            ids = ids[:, : int(self._causal_text.end_positions(ids).max()) + 1]
        return (ids,)


class HFCLIPEncoder(_TorchEncoder):
    """A transformers CLIP or SigLIP model from a hub repo id or a local folder saved with `save_pretrained`.

    Queries are padded to the longest in their batch (a single query: not at all); SigLIP's to its full 64
    tokens, as it was trained. Arguments after the first are those of `OpenCLIPEncoder`.

    Example:
        >>> HFCLIPEncoder("openai/clip-vit-base-patch32").dim
        512
    """

    def __init__(
        self,
        repo_or_dir: str,
        batch_size: int = 32,
        device: str | None = None,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        with contextlib.nullcontext() if os.path.isdir(repo_or_dir) else _hub_or_cache():
            model = AutoModel.from_pretrained(repo_or_dir)
            tokenizer = AutoTokenizer.from_pretrained(repo_or_dir)
            image_processor = AutoImageProcessor.from_pretrained(repo_or_dir)
        options = {"batch_size": batch_size, "device": device, "backend": backend, "cache_dir": cache_dir}
        self._setup(f"hf:{repo_or_dir}", model, tokenizer, image_processor, **options)

    @classmethod
    def from_parts(
        cls, name: str, model: torch.nn.Module, tokenizer: Callable, image_processor: Callable, **kwargs: object
    ) -> HFCLIPEncoder:
        """Wrap a transformers model, its tokenizer and its image processor that were built elsewhere.

        Args:
            kwargs: `batch_size`, `device`, `backend` and `cache_dir` as for the constructor.
        """
        encoder = cls.__new__(cls)
        options = cls.PART_DEFAULTS | kwargs
        encoder._setup(name, model, tokenizer, image_processor, **options)
        return encoder

    def _setup(
        self, name: str, model: torch.nn.Module, tokenizer: Callable, image_processor: Callable, **options: object
    ) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor
        siglip = "siglip" in model.config.model_type  # SigLIP was trained on texts padded to full length
        self._text_kwargs = {
            "padding": "max_length" if siglip else True,
            "truncation": True,
            "max_length": model.config.text_config.max_position_embeddings,
        }
        self._text_inputs = tuple(n for n in ("input_ids", "attention_mask") if n in tokenizer.model_input_names)
        self._prepare(name, model, **options)

    def _image_module(self) -> torch.nn.Module:
        return HFTower(self.model.vision_model, getattr(self.model, "visual_projection", None))

    def _text_module(self) -> torch.nn.Module:
        return HFTower(self.model.text_model, getattr(self.model, "text_projection", None))

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _image_side(self) -> int | None:
        """The processor's resize: `shortest_edge` (CLIP), or the larger of height and width (SigLIP's square)."""
        size = getattr(self.image_processor, "size", None)
        if size is None or not getattr(self.image_processor, "do_resize", True):
            return None
        field = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        sides = [field("shortest_edge")] if field("shortest_edge") else [field("height"), field("width")]
        return int(max(sides)) if all(sides) else None

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Token ids `[n, length]` padded to the longest text (SigLIP: to 64), and the attention mask if used."""
        inputs = self.tokenizer(list(texts), return_tensors="pt", **self._text_kwargs)
        return tuple(inputs[name] for name in self._text_inputs)


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
