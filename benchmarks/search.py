"""Search latency at 1k and 10k images, the text towers compared, and the ingest's peak memory.

Builds two milvus-lite collections through the real ingest pipeline: 1,000 and 10,000 photos, made from the
bundled photos and flipped / rotated / cropped / recoloured copies of them (written as JPEG files first).
Then, one query per call as a user types them (captions of the bundled photos, after warm-up), it measures:
  - end to end, today's path and the new one, query by query in turns (so that both see the same load):
      now:  the encoder as it was before issue 15 (PyTorch MiniLM via sentence-transformers), the query
            cleaned twice as the CLI and the widget did (`prepare_query`, then `search` of its text);
      fast: the default encoder (int8 ONNX MiniLM), `SearchEngine.search(text)`;
    both through the same Towhee search pipeline and Milvus collection;
  - the same two calls without Towhee (text encoder then `ImageStore.search`, in the calling thread): the
    difference is what the Towhee pipeline adds per query; and the new path through a one-node pipeline (the
    two operators fused: one thread hand-off fewer);
  - each text tower alone (PyTorch, ONNX fp32, ONNX int8), and Milvus alone (`ImageStore.search`);
  - the floor: exact numpy search (matrix product + top-k) over the same vectors in memory.
Before that, caption -> photo R@10 over the bundled photos (exact search) for each text tower against the same
fp32 image embeddings, and for the default encoder (int8 towers) against today's (fp32 image tower, PyTorch
MiniLM). Peak resident memory (RSS, this process plus milvus-lite's server process) is sampled during each ingest.

    .venv/bin/python benchmarks/search.py            # about 4 minutes on 2 CPU cores
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

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.data.images import read_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.ann import latency_ms
from t2i_helpers.measure.finetune import caption_recall
from t2i_helpers.models.conse import ConSEEncoder
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.pipelines.operators import pipe
from t2i_helpers.pipelines.search import prepare_query

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


def in_turns(calls: dict, queries: list, warmup: int = 10) -> dict[str, np.ndarray]:
    """Milliseconds per call of each of `calls` (name -> function of one query), taking turns query by query."""
    for query in queries[:warmup]:
        for call in calls.values():
            call(query)
    times = {name: [] for name in calls}
    for query in queries:
        for name, call in calls.items():
            start = time.perf_counter()
            call(query)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: np.array(ms) for name, ms in times.items()}


def text_towers(bundled: pd.DataFrame, now: ConSEEncoder, fast: ConSEEncoder) -> None:
    """Each text tower's caption -> photo R@10 over the bundled photos and its latency; then both encoders' R@10."""
    captions, images = list(bundled.caption), [read_image(p)[1] for p in bundled.path]
    fp32_images = now.encode_images(images)
    towers = {"torch": now, "onnx": ConSEEncoder(backend="onnx", text_backend="onnx"), "onnx-int8": fast}
    r10 = {name: caption_recall(e.encode_texts(captions), fp32_images, (10,))["R@10"] for name, e in towers.items()}
    print(
        "text towers against the same fp32 image embeddings: "
        + ", ".join(f"R@10 {n} = {r:.3f}" for n, r in r10.items())
    )
    ms = in_turns({name: (lambda q, e=e: e.encode_texts([q])) for name, e in towers.items()}, captions[:200])
    for name in towers:
        print(f"  text tower alone, {name + ':':10s}                            {percentiles(ms[name])}")
    fast_r10 = caption_recall(fast.encode_texts(captions), fast.encode_images(images), (10,))["R@10"]
    difference = round(fast_r10 - r10["torch"], 3) + 0.0  # + 0.0: never "-0.000"
    print("default encoder (int8 towers) against today's (fp32 image tower, PyTorch MiniLM)")
    print(f"R@10 now = {r10['torch']:.3f}, R@10 fast = {fast_r10:.3f}, difference = {difference:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", "--top-k", type=int, default=10)
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from

    bundled = load_bundled()
    fast = load_encoder()  # the default: int8 image and text towers
    now = ConSEEncoder(backend="onnx", text_backend="torch")  # the default encoder before issue 15
    queries = list(bundled.caption.sample(args.queries, random_state=0))
    print(f"encoder {fast.name}, {len(queries)} single-text queries per measurement, top_k {args.top_k}")
    text_towers(bundled, now, fast)
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(bundled, Path(tmp), 10_000)
        for size in (1_000, 10_000):
            measure(fast, now, photos.head(size), queries, Path(tmp) / f"search-{size}.db", args.top_k)


def measure(fast, now, photos: pd.DataFrame, queries: list[str], uri: Path, top_k: int) -> None:
    """Ingest `photos` into a new collection, then print the latencies of single queries against it."""
    engine = SearchEngine.open(Config(uri=str(uri)), fast)
    with PeakMemory() as memory:
        start = time.perf_counter()
        report = engine.index(photos, progress=False)
        seconds = time.perf_counter() - start
    print(
        f"\n{len(photos)} photos: {report.summary()} in {seconds:.1f} s ({len(photos) / seconds:.0f} images/s); "
        f"RSS (with milvus-lite's process) {memory.before:.0f} MB before, peak {memory.peak:.0f} MB during the ingest"
    )
    store = engine.store
    todays = SearchEngine(engine.config, now, store)  # same collection: the encoders share name and image space

    def direct(encoder, text: str):
        return store.search(encoder.encode_texts([prepare_query(text, encoder).text]), top_k=top_k)[0]

    one_node = (  # the search pipeline with its two operators fused into one: one thread hand-off fewer
        pipe.input("text", "top_k")
        .map(("text", "top_k"), "hits", lambda text, k: store.search(fast.encode_texts([text]), top_k=k)[0])
        .output("hits")
    )
    ms = in_turns(
        {
            "now": lambda q: todays.search(prepare_query(q, now).text, top_k=top_k),
            "fast": lambda q: engine.search(q, top_k=top_k),
            "now, no Towhee": lambda q: direct(now, q),
            "fast, no Towhee": lambda q: direct(fast, q),
            "fast, one node": lambda q: one_node(prepare_query(q, fast).text, top_k).get()[0],
        },
        queries,
    )
    matrix = np.array([r["embedding"] for r in store.scan(["embedding"])], np.float32)
    vectors = list(fast.encode_texts(queries))
    milvus = latency_ms(lambda v: store.search(v[None, :], top_k=top_k), vectors, warmup=10)
    exact = latency_ms(lambda v: np.argpartition(-(matrix @ v), top_k)[:top_k], vectors, warmup=10)
    towhee = {path: np.median(ms[path]) - np.median(ms[f"{path}, no Towhee"]) for path in ("now", "fast")}
    print(f"  end to end, today's path (PyTorch MiniLM + Towhee + Milvus): {percentiles(ms['now'])}")
    print(f"  end to end, new path (int8 MiniLM + Towhee + Milvus):        {percentiles(ms['fast'])}")
    print(f"  today's path without Towhee:                                 {percentiles(ms['now, no Towhee'])}")
    print(f"  new path without Towhee:                                     {percentiles(ms['fast, no Towhee'])}")
    print(f"  new path, the pipeline's two operators fused in one:         {percentiles(ms['fast, one node'])}")
    print(f"  what Towhee adds at p50: today's path {towhee['now']:.2f} ms, new path {towhee['fast']:.2f} ms")
    print(f"  Milvus search alone:                                         {percentiles(milvus)}")
    print(f"  exact numpy search (floor):                                  {percentiles(exact)}")
    if len(photos) == 10_000:
        print(f"ratio query_fast/query_now = {np.median(ms['fast']) / np.median(ms['now']):.2f}")
    engine.close()


if __name__ == "__main__":
    main()
