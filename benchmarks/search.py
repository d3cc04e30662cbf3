"""Search latency at 1k and 10k images, and the ingest's peak memory.

Builds two milvus-lite collections through the real ingest pipeline: 1,000 and 10,000 photos, made from the
bundled photos and flipped / rotated / cropped / recoloured copies of them (written as JPEG files first).
Then, one query per call as a user types them (captions of the bundled photos, after warm-up), it measures:
  - end to end: `SearchEngine.search(text)` = text encoder + Towhee pipeline + Milvus;
  - the text encoder alone, and Milvus alone (`ImageStore.search` of a ready vector);
  - the floor: exact numpy search (matrix product + top-k) over the same vectors in memory.
Peak resident memory (RSS, this process plus milvus-lite's server process) is sampled during each ingest.

    .venv/bin/python benchmarks/search.py            # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from t2i_helpers.ann import latency_ms
from t2i_helpers.config import Config
from t2i_helpers.datasets import load_bundled
from t2i_helpers.encoders import load_encoder
from t2i_helpers.engine import SearchEngine

AUGMENTATIONS = {
    "flip": ImageOps.mirror,
    "rot90": lambda im: im.rotate(90, expand=True),
    "rot270": lambda im: im.rotate(270, expand=True),
    "crop": lambda im: im.crop((im.width // 8, im.height // 8, im.width * 7 // 8, im.height * 7 // 8)),
    "gray": ImageOps.grayscale,
    "invert": ImageOps.invert,
    "posterize": lambda im: ImageOps.posterize(im, 3),
    "solarize": lambda im: ImageOps.solarize(im, 128),
    "flip-crop": lambda im: ImageOps.mirror(im).crop((0, 0, im.width * 3 // 4, im.height)),
    "equalize": ImageOps.equalize,
    "small": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
    "flop": ImageOps.flip,
    "rot180": lambda im: im.rotate(180),
}


def rss_mb(pid: str = "self") -> float:
    """A process's resident memory in MB, from /proc (0 if it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), 0.0)


def child_pids(pid: str = "self") -> list[str]:
    """This process's children and their descendants (milvus-lite runs its server as a child)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        children += task.read_text().split()
    return children + [grandchild for child in children for grandchild in child_pids(child)]


def total_rss_mb() -> float:
    """Resident memory of this process plus its children, in MB."""
    return rss_mb() + sum(rss_mb(pid) for pid in child_pids())


class PeakMemory:
    """Samples the RSS of this process and its children every 20 ms while the `with` block runs."""

    def __enter__(self) -> PeakMemory:
        self.before, self._stop = total_rss_mb(), threading.Event()
        self.peak = self.before
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, total_rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_photos(bundled: pd.DataFrame, folder: Path, count: int) -> pd.DataFrame:
    """`count` photos: the bundled ones, then augmented copies written as JPEG files."""
    rows = bundled[["path", "label", "caption"]].to_dict("records")
    for name, augment in AUGMENTATIONS.items():
        for row in bundled.itertuples():
            if len(rows) >= count:
                return pd.DataFrame(rows)
            target = folder / f"{name}-{row.Index}.jpg"
            with Image.open(row.path) as image:
                rgb = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
                augment(rgb.convert("RGB")).convert("RGB").save(target, quality=90)
            rows.append({"path": str(target), "label": row.label, "caption": f"{row.caption} ({name})"})
    return pd.DataFrame(rows[:count])


def percentiles(ms: np.ndarray) -> str:
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", "--top-k", type=int, default=10)
    args = parser.parse_args()

    bundled = load_bundled()
    encoder = load_encoder()
    queries = list(bundled.caption.sample(args.queries, random_state=0))
    print(f"encoder {encoder.name}, {len(queries)} single-text queries per measurement, top_k {args.top_k}")
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(bundled, Path(tmp), 10_000)
        for size in (1_000, 10_000):
            measure(encoder, photos.head(size), queries, Path(tmp) / f"search-{size}.db", args.top_k)


def measure(encoder, photos: pd.DataFrame, queries: list[str], uri: Path, top_k: int) -> None:
    """Ingest `photos` into a new collection, then print the latencies of single queries against it."""
    engine = SearchEngine.open(Config(uri=str(uri)), encoder)
    with PeakMemory() as memory:
        start = time.perf_counter()
        report = engine.index(photos, progress=False)
        seconds = time.perf_counter() - start
    print(
        f"\n{len(photos)} photos: {report.summary()} in {seconds:.1f} s ({len(photos) / seconds:.0f} images/s); "
        f"RSS (with milvus-lite's process) {memory.before:.0f} MB before, peak {memory.peak:.0f} MB during the ingest"
    )
    matrix = np.array([r["embedding"] for r in engine.store.scan(["embedding"])], np.float32)
    vectors = list(encoder.encode_texts(queries))
    end_to_end = latency_ms(lambda q: engine.search(q, top_k=top_k), queries, warmup=10)
    text_only = latency_ms(lambda q: encoder.encode_texts([q]), queries, warmup=10)
    milvus = latency_ms(lambda v: engine.store.search(v[None, :], top_k=top_k), vectors, warmup=10)
    exact = latency_ms(lambda v: np.argpartition(-(matrix @ v), top_k)[:top_k], vectors, warmup=10)
    print(f"  end to end (encoder + Towhee + Milvus): {percentiles(end_to_end)}")
    print(f"  text encoder alone:                     {percentiles(text_only)}")
    print(f"  Milvus search alone:                    {percentiles(milvus)}")
    print(f"  exact numpy search (floor):             {percentiles(exact)}")
    engine.close()


if __name__ == "__main__":
    main()
