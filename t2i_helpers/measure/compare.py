"""Which encoder should I use? Measure each on the same photos and machine (taught in notebook 02).

For every candidate: embedding dim, parameter count, fp32 weights size, load time, image throughput
(batched, after warm-up; CLIP-family models also in eager fp32), single text query latency (p50/p95), the
backend each tower ran on, the size of its Milvus index, and retrieval quality on the real path (ingest into
milvus-lite, caption -> photo search). A CLIP model whose weights cannot load here (they need internet) is
measured for speed and size on the same architecture with random weights (`STAND_INS`, status "speed only"),
and its quality is open_clip's published Flickr30k R@10; other candidates that cannot load are listed as
skipped with the reason, never dropped.

Example:
    >>> table = compare_encoders(load_bundled(), cache="data/cache/compare.csv")
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data.images import read_image
from ..engine import SearchEngine
from ..models.encoders import Encoder, batched, load_encoder
from ..store.image_store import ImageStore
from .evaluate import rank
from .metrics import hit_rate_at_k, reciprocal_rank, relevance_matrix


class Candidate(NamedTuple):
    """An encoder to compare: a label for the table, a registry name and constructor arguments."""

    label: str
    name: str
    kwargs: dict = {}


FP32 = {"backend": "onnx", "text_backend": "onnx"}  # both ConSE towers on ONNX Runtime in fp32
INT8 = {"backend": "onnx-int8", "text_backend": "onnx-int8"}  # both int8: the default

CANDIDATES = [
    Candidate("ConSE Lite0 + MiniLM, fp32", "conse-effnet-lite0-minilm", FP32),
    Candidate("ConSE Lite0 + MiniLM, int8", "conse-effnet-lite0-minilm", INT8),
    Candidate("ConSE Lite1 + MiniLM, fp32", "conse-effnet-lite1-minilm", FP32),
    Candidate("ConSE Lite1 + MiniLM, int8", "conse-effnet-lite1-minilm", INT8),
    Candidate("ConSE Lite2 + MiniLM, fp32", "conse-effnet-minilm", FP32),
    Candidate("ConSE Lite2 + MiniLM, int8 (default)", "conse-effnet-minilm", INT8),
    Candidate("ConSE Lite2, T=5", "conse-effnet-minilm", {"top_t": 5}),
    Candidate("ConSE Lite2, name prompt only", "conse-effnet-minilm", {"prompts": ("a photo of a {name}.",)}),
    Candidate("ConSE Lite2, eager torch", "conse-effnet-minilm", {"backend": "torch", "text_backend": "torch"}),
    Candidate("CLIP ViT-B/32 (OpenAI)", "openclip:ViT-B-32/openai"),
    Candidate("CLIP ViT-B/16 (OpenAI)", "openclip:ViT-B-16/openai"),
    Candidate("CLIP ViT-L/14 (OpenAI)", "openclip:ViT-L-14/openai"),
    Candidate("CLIP ViT-B/32 (LAION-2B)", "openclip:ViT-B-32/laion2b_s34b_b79k"),
    Candidate("SigLIP ViT-B/16", "hf:google/siglip-base-patch16-224"),
    Candidate("Multilingual CLIP (XLM-R, LAION-5B)", "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"),
]

# open_clip's published zero-shot text->image retrieval results (R@1 / R@5 / R@10), not measured here.
PUBLISHED = pd.DataFrame(
    [
        ("CLIP ViT-B/32 (OpenAI)", 58.8, 83.6, 90.0, 30.4, 55.9, 66.9),
        ("CLIP ViT-B/16 (OpenAI)", 62.2, 85.7, 91.9, 33.1, 58.4, 69.0),
        ("CLIP ViT-L/14 (OpenAI)", 65.0, 87.2, 92.0, 36.5, 61.1, 71.1),
        ("CLIP ViT-B/32 (LAION-2B)", 66.8, 88.4, 93.1, 39.3, 65.4, 75.6),
        ("SigLIP ViT-B/16", 74.7, 92.3, 95.6, 47.8, 72.4, 81.0),
    ],
    columns=["encoder", "Flickr30k R@1", "Flickr30k R@5", "Flickr30k R@10", "COCO R@1", "COCO R@5", "COCO R@10"],
)

# When these cannot load (no hub), the same architecture with random weights (clip_archs) stands in for speed
# and size; LAION's ViT-B/32 differs from OpenAI's only in its activation (GELU vs QuickGELU).
STAND_INS = {
    "openclip:ViT-B-32/openai": "hf-random:ViT-B-32",
    "openclip:ViT-B-16/openai": "hf-random:ViT-B-16",
    "openclip:ViT-L-14/openai": "hf-random:ViT-L-14",
    "openclip:ViT-B-32/laion2b_s34b_b79k": "hf-random:ViT-B-32",
    "hf:google/siglip-base-patch16-224": "hf-random:SigLIP-B-16",
}
SPEED_ONLY = "speed only"  # the status of a row measured on a random-weight stand-in
LOAD_ERRORS = (ImportError, RuntimeError, OSError)  # what a candidate that cannot load here raises

QualityFn = Callable[[SearchEngine, pd.DataFrame], dict[str, float]]


def caption_quality(engine: SearchEngine, rows: pd.DataFrame, depth: int = 50) -> dict[str, float]:
    """Caption -> its own photo through Milvus: R@1/5/10 and MRR (a photo ranked below `depth` scores 0).

    Photos are matched by content id, so a file shipped twice counts as the same photo.
    """
    ranked, _ = rank(engine.store, engine.encoder.encode_texts(list(rows.caption)), depth)
    hits = relevance_matrix(ranked, [{read_image(p)[0]} for p in rows.path])
    return {
        **{f"R@{k}": float(hit_rate_at_k(hits, k).mean()) for k in (1, 5, 10)},
        "MRR": float(reciprocal_rank(hits).mean()),
    }


def parameter_count(encoder: Encoder) -> int:
    """Parameters of the torch modules an encoder holds (its towers)."""
    modules = [v for v in vars(encoder).values() if isinstance(v, torch.nn.Module)]
    return sum(p.numel() for m in modules for p in m.parameters())


def folder_mb(path: Path) -> float:
    """Size of a file or folder in MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def images_per_second(encode: Callable[[Sequence], np.ndarray], images: Sequence, budget_s: float = 10.0) -> float:
    """Images/s of `encode` over `images` in chunks of 16 after a warm-up chunk, stopping once `budget_s` is spent."""
    encode(images[:16])
    done, start = 0, time.perf_counter()
    for chunk in batched(images, 16):
        encode(chunk)
        done += len(chunk)
        if time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def measure(
    candidate: Candidate,
    rows: pd.DataFrame,
    quality: QualityFn,
    workdir: Path,
    n_images: int = 200,
    n_queries: int = 50,
    speed_only: bool = False,
) -> dict:
    """Everything in the comparison table for one candidate (raises if it cannot load).

    Args:
        speed_only: for a random-weight stand-in: no load time and no quality (its embeddings mean nothing);
            the index holds every photo's row with the vectors of the timed photos reused, so its size is that
            of a real index of this dimension.
    """
    start = time.perf_counter()
    encoder = load_encoder(candidate.name, cached=False, **candidate.kwargs)
    load_s = time.perf_counter() - start
    images = [read_image(p)[1] for p in rows.path[:n_images]]
    speed = {"images/s": images_per_second(encoder.encode_images, images)}
    if hasattr(encoder, "with_backend"):  # a CLIP-family encoder: the same model in eager fp32, for comparison
        speed["images/s (eager fp32)"] = images_per_second(encoder.with_backend("torch").encode_images, images)
    latencies = []
    for text in rows.caption[:n_queries]:
        start = time.perf_counter()
        encoder.encode_texts([text])
        latencies.append(time.perf_counter() - start)
    params = parameter_count(encoder)
    uri = workdir / f"{len(list(workdir.iterdir()))}.db"
    if speed_only:
        records = {read_image(r.path)[0]: r for r in rows.itertuples()}  # one row per distinct photo, as ingest
        store = ImageStore(Config(uri=str(uri)), encoder.name, encoder.dim)
        vectors = np.resize(encoder.encode_images(images[:16]), (len(records), encoder.dim))
        store.insert([{"id": i, **r._asdict()} for i, r in records.items()], vectors)
        store.flush()
        store.close()
        scores = {}
    else:
        engine = SearchEngine.open(Config(uri=str(uri)), encoder)
        engine.index(rows, progress=False)
        scores = quality(engine, rows)
        engine.close()
    return {
        "backend": getattr(encoder, "backend", ""),
        "dim": encoder.dim,
        "params (M)": params / 1e6,
        "weights (MB, fp32)": params * 4 / 1e6,
        "load (s)": np.nan if speed_only else load_s,
        **speed,
        "query p50 (ms)": 1000 * float(np.percentile(latencies, 50)),
        "query p95 (ms)": 1000 * float(np.percentile(latencies, 95)),
        "index (MB)": folder_mb(uri),
        **scores,
    }


def compare_encoders(
    rows: pd.DataFrame,
    quality: QualityFn = caption_quality,
    candidates: Sequence[Candidate] = CANDIDATES,
    cache: str | Path | None = None,
    refresh: bool = False,
) -> pd.DataFrame:
    """Measure every candidate on `rows`; one table row each, stand-ins and skipped ones with the reason.

    Args:
        rows: the photos (path, label, caption) to measure on.
        quality: scores an indexed engine on `rows` (default: caption -> photo R@1/5/10 and MRR).
        cache: a CSV: read if present (unless `refresh`), else written, so notebooks need not recompute.

    Returns:
        One row per candidate: status "ok", "speed only" (a random-weight stand-in) or "skipped", the reason,
        the measurements, and "Flickr30k R@10 (published)" where open_clip published one.
    """
    if cache and Path(cache).exists() and not refresh:
        return pd.read_csv(cache)
    table, stand_ins = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for candidate in candidates:
            row = {"encoder": candidate.label, "name": candidate.name, "status": "ok", "reason": ""}
            try:
                row.update(measure(candidate, rows, quality, Path(tmp)))
            except LOAD_ERRORS as err:
                row.update(status="skipped", reason=_first_line(err))
            stand_in = STAND_INS.get(candidate.name)
            if row["status"] == "skipped" and stand_in:
                try:
                    if stand_in not in stand_ins:  # measured once, even when two candidates share it
                        stand_ins[stand_in] = measure(
                            Candidate(stand_in, stand_in), rows, quality, Path(tmp), speed_only=True
                        )
                    row.update(stand_ins[stand_in], status=SPEED_ONLY)
                    row["reason"] += f" -- speed and size: the same architecture with random weights ({stand_in})"
                except LOAD_ERRORS as err:
                    row["reason"] += f" -- and its stand-in {stand_in} failed: {_first_line(err)}"
            table.append(row)
    published = PUBLISHED.set_index("encoder")["Flickr30k R@10"].rename("Flickr30k R@10 (published)")
    result = pd.DataFrame(table).join(published, on="encoder")
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(cache, index=False)
    return result


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def pareto_front(table: pd.DataFrame, quality: str, speed: str) -> pd.DataFrame:
    """The measured candidates that no other candidate beats on both `quality` and `speed` (higher is better)."""
    ok = table[table.status == "ok"]
    dominated = [
        any(
            (o[quality] >= r[quality]) & (o[speed] >= r[speed]) & ((o[quality] > r[quality]) | (o[speed] > r[speed]))
            for _, o in ok.iterrows()
        )
        for _, r in ok.iterrows()
    ]
    return ok[~np.array(dominated, dtype=bool)].sort_values(speed)
