"""Ingest throughput: the model's own speed vs this project's pipeline vs the seed tutorial's naive loop.

In one run, on the same photos and encoder:
  (a) ceiling: the image tower's raw forward pass on pre-decoded, pre-processed tensors, best batch size and
      thread layout (fp32 and int8 ONNX measured in turns, best of `--rounds`);
  (b) the project's ingest (Towhee pipeline, threaded decode, batched forward and inserts) into a new
      milvus-lite file each time, flushed (for ONNX measured in the same turns as (a), best of `--rounds`);
  (c) the seed tutorial's way: decode one image, forward it alone, insert one row, for every image.
Each is measured for the default encoder's int8 ONNX Runtime image tower, the fp32 ONNX one and the eager
PyTorch one; `ratio b/a` and `ratio b/c` are the default (int8) encoder's, `ratio fast/a` is the fp32 ONNX
ceiling over the eager one, `ratio int8/fp32` the int8 ceiling over the fp32 ONNX one, and retrieval quality
(caption -> photo R@10 over all the bundled photos, exact search) is printed for each. All three use the same
(PyTorch) text tower here, so the R@10 differences are the image towers' alone; benchmarks/search.py compares
the text towers.

    .venv/bin/python benchmarks/ingest.py            # about 4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.data.images import read_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.finetune import caption_recall
from t2i_helpers.models.conse import ConSEEncoder
from t2i_helpers.models.cpu import describe
from t2i_helpers.store.image_store import ImageStore


def forward_ceiling(layouts: list[ConSEEncoder], images: list[np.ndarray], batch_sizes: list[int]) -> tuple[float, str]:
    """Best images/s of the image tower alone on pre-processed pixels, over batch sizes and thread layouts.

    A layout is an encoder: `workers` forward passes at a time (ONNX, one thread each), or one pass at a time
    on the runtime's own threads (`workers=1`, and eager PyTorch).
    """
    best = (0.0, "")
    for encoder in layouts:
        with ThreadPoolExecutor(encoder.workers) as pool:
            for size in batch_sizes:
                batches = [encoder.preprocess(images[i : i + size]) for i in range(0, len(images), size)]
                list(pool.map(encoder.logits, batches[: encoder.workers]))  # warm-up
                start = time.perf_counter()
                list(pool.map(encoder.logits, batches))
                rate = len(images) / (time.perf_counter() - start)
                layout = f"{encoder.backend}, {encoder.workers} pass(es) at a time, batch {size}"
                print(f"  forward {layout}: {rate:6.1f} images/s")
                best = max(best, (rate, layout))
    return best


def project_pipeline(encoder: ConSEEncoder, rows, folder: Path, batch_size: int) -> float:
    """Images/s of SearchEngine.index (the Towhee ingest pipeline) into a new milvus-lite file, flushed."""
    config = Config(uri=str(folder / f"pipeline-{encoder.backend}-{time.monotonic_ns()}.db"), batch_size=batch_size)
    engine = SearchEngine.open(config, encoder)
    start = time.perf_counter()
    report = engine.index(rows, progress=False)
    elapsed = time.perf_counter() - start
    assert engine.store.count() == report.added, "the pipeline lost rows"
    engine.close()
    return len(rows) / elapsed


def naive_loop(encoder: ConSEEncoder, rows, folder: Path) -> float:
    """Images/s of the seed tutorial's loop: one decode, one forward, one insert per image, then flush."""
    store = ImageStore(Config(uri=str(folder / f"naive-{encoder.backend}.db")), encoder.name, encoder.dim)
    start = time.perf_counter()
    for row in rows.itertuples():
        image_id, image = read_image(row.path)
        vector = encoder.encode_images([image])
        store.insert([{"id": image_id, "path": row.path, "label": row.label, "caption": row.caption}], vector)
    store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    return len(rows) / elapsed


def recall_at_10(encoder: ConSEEncoder, rows, images: list[np.ndarray]) -> float:
    """Caption -> its own photo R@10 with exact search over all the photos."""
    return caption_recall(encoder.encode_texts(list(rows.caption)), encoder.encode_images(images), (10,))["R@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="use the first N bundled photos (0: all)")
    parser.add_argument("--batch-size", type=int, default=Config().batch_size)
    parser.add_argument("--rounds", type=int, default=2, help="ONNX fp32 and int8 ceilings measured in turns")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from

    rows = load_bundled()
    rows = rows.head(args.images) if args.images else rows
    images = [read_image(p)[1] for p in rows.path]
    encoders, layouts = {}, {}
    for backend in ("torch", "onnx", "onnx-int8"):
        encoders[backend] = ConSEEncoder(backend=backend, text_backend="torch")
        layouts[backend] = [encoders[backend]]  # ONNX: one pass per core side by side (the default) ...
        if backend != "torch":  # ... or one pass at a time on the runtime's own threads
            layouts[backend].append(ConSEEncoder(backend=backend, text_backend="torch", workers=1))
    print(f"{len(rows)} bundled photos, encoder {encoders['torch'].name}, batch size {args.batch_size}")

    sizes = [1, 2, 4, 8, 16]
    ceilings = {"torch": forward_ceiling(layouts["torch"], images, sizes)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = {"torch": project_pipeline(encoders["torch"], rows, Path(tmp), args.batch_size)}
        for _ in range(args.rounds):  # ceilings and pipelines of fp32 and int8 ONNX in turns, best of the rounds
            for name in ("onnx", "onnx-int8"):  # each: so that a and b see the same load on a shared CPU
                ceilings[name] = max(ceilings.get(name, (0.0, "")), forward_ceiling(layouts[name], images, sizes))
                rate = project_pipeline(encoders[name], rows, Path(tmp), args.batch_size)
                pipelines[name] = max(pipelines.get(name, 0.0), rate)
        for name, encoder in encoders.items():
            rate, layout = ceilings[name]
            results[name] = {
                "a": rate,
                "b": pipelines[name],
                "c": naive_loop(encoder, rows, Path(tmp)),
                "r10": recall_at_10(encoder, rows, images),
            }
            r = results[name]
            print(
                f"{name}: (a) ceiling {r['a']:.1f} images/s ({layout}), (b) pipeline {r['b']:.1f}, "
                f"(c) naive {r['c']:.1f}, R@10 {r['r10']:.3f}"
            )

    base, fast, int8 = results["torch"], results["onnx"], results["onnx-int8"]
    print("\ndefault encoder (ONNX Runtime int8 image tower): a, b and c as above")
    print(f"ratio b/a = {int8['b'] / int8['a']:.2f}")
    print(f"ratio b/c = {int8['b'] / int8['c']:.2f}")
    print("int8 image tower against the fp32 ONNX one (forward ceilings, best batch and thread layout each)")
    print(f"ratio int8/fp32 = {int8['a'] / fast['a']:.2f}")
    difference = round(int8["r10"] - fast["r10"], 3) + 0.0  # + 0.0: never "-0.000"
    print(f"R@10 fp32 = {fast['r10']:.3f}, R@10 int8 = {int8['r10']:.3f}, difference = {difference:.3f}")
    print("fp32 ONNX tower against the eager PyTorch tower (the seed's kind of model call)")
    print(f"ratio fast/a = {fast['a'] / base['a']:.2f}")
    print(f"ratio fast_b/torch_c = {fast['b'] / base['c']:.2f}")
    print(f"ratio fast_b/fast_a = {fast['b'] / fast['a']:.2f}")
    print("eager PyTorch tower: a, b and c")
    print(f"ratio torch_b/torch_a = {base['b'] / base['a']:.2f}")
    print(f"ratio torch_b/torch_c = {base['b'] / base['c']:.2f}")
    print(
        f"R@10 torch = {base['r10']:.3f}, R@10 fast = {fast['r10']:.3f}, "
        f"difference = {abs(base['r10'] - fast['r10']):.3f}"
    )


if __name__ == "__main__":
    main()
