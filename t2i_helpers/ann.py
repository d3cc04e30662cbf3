"""Exact or approximate? The ANN index study: recall against exact search vs query latency (notebook 03).

An approximate index (IVF, HNSW) answers faster than an exact scan by looking at part of the collection; what
it loses is measured as recall@k against the exact top k (`neighbour_recall`), which is a property of the
index alone and says nothing about whether the exact top k were right answers (that is `evaluate`'s job).

The study loads one bare collection (id, embedding) into Milvus, then for each index type drops and rebuilds
the index, reloads and sweeps its search parameter (milvus-lite 2.5 builds FLAT, IVF_FLAT and AUTOINDEX, and
ignores the search parameter). The same sweeps run on faiss in this process (`backend="faiss"`) show what the
index itself costs, without Milvus around it, HNSW included.

Example:
    >>> vectors = synthetic_embeddings(image_embeddings, 100_000)
    >>> table = index_study(vectors, text_embeddings, standard_sweeps(len(vectors)))
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException
from tqdm.auto import tqdm

from .encoders import l2_normalize
from .evaluate import release_lite
from .metrics import exact_top_k

COLLECTION = "ann_study"
# Index types to probe: what milvus-lite builds here, and what needs a Milvus server (standalone or cluster).
INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "HNSW_SQ", "AUTOINDEX", "DISKANN", "SCANN")


class IndexSweep(NamedTuple):
    """One index build and the search parameters to try on it, e.g. HNSW M=16 with ef 10..320."""

    index_type: str
    build_params: dict
    search_params: tuple[dict, ...] = ({},)

    @property
    def label(self) -> str:
        """e.g. `HNSW M=16, efConstruction=100`."""
        params = ", ".join(f"{k}={v}" for k, v in self.build_params.items())
        return f"{self.index_type} {params}".strip()


def standard_sweeps(n: int, hnsw_m: Sequence[int] = (8, 16, 32)) -> list[IndexSweep]:
    """FLAT; IVF_FLAT with nlist a power of two near sqrt(n) (and at least 39 vectors per list, as faiss
    asks) and nprobe 1..64; HNSW with each M in `hnsw_m` (efConstruction 100) and ef 10..320."""
    nlist = int(2 ** np.floor(np.log2(min(np.sqrt(n), n / 39))))
    nprobes = [p for p in (1, 2, 4, 8, 16, 32, 64) if p <= nlist]
    efs = tuple({"ef": ef} for ef in (10, 20, 40, 80, 160, 320))
    return [
        IndexSweep("FLAT", {}),
        IndexSweep("IVF_FLAT", {"nlist": nlist}, tuple({"nprobe": p} for p in nprobes)),
        *[IndexSweep("HNSW", {"M": m, "efConstruction": 100}, efs) for m in hnsw_m],
    ]


def synthetic_embeddings(base: np.ndarray, n: int, noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """`n` unit vectors shaped like `base`: each is a random mix of two base rows plus Gaussian noise.

    Row = normalize(w * a + (1 - w) * b + noise * g / sqrt(dim)), a and b random rows of `base`, w ~ U(0, 1),
    g ~ N(0, I): the noise vector has length about `noise`. The result spreads over the region the real
    embeddings occupy, instead of forming n / len(base) tight clumps around copies.
    """
    rng = np.random.default_rng(seed)
    base = np.asarray(base, dtype=np.float32)
    a, b = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    w = rng.random((n, 1), dtype=np.float32)
    g = rng.standard_normal((n, base.shape[1]), dtype=np.float32)
    return l2_normalize(w * base[a] + (1 - w) * base[b] + noise * g / np.sqrt(base.shape[1]))


def neighbour_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found top k & exact top k| / k: what an approximate index lost."""
    k = exact.shape[1]
    return float(np.mean([len(set(f[:k]) & set(e)) / k for f, e in zip(found, exact)]))


@contextlib.contextmanager
def quiet_milvus() -> Iterator[None]:
    """Silence pymilvus's and milvus-lite's error logs while failures are expected (and reported)."""
    loggers = [logging.getLogger(name) for name in ("pymilvus", "milvus_lite")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Bench:
    """A bare collection (id = row number, embedding) holding `vectors`, for index experiments.

    Use as a context manager; with no `uri` it lives in a temporary milvus-lite file, removed afterwards.
    """

    def __init__(self, vectors: np.ndarray, uri: str | None = None, batch_size: int = 1000, progress=False):
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self._tmp = None if uri else tempfile.TemporaryDirectory(prefix="t2i-ann-")
        self.uri = uri or str(Path(self._tmp.name) / "ann.db")
        self.client = MilvusClient(uri=self.uri)
        if self.client.has_collection(COLLECTION):
            self.client.drop_collection(COLLECTION)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.vectors.shape[1])
        self.client.create_collection(COLLECTION, schema=schema, consistency_level="Strong")
        start = time.perf_counter()
        for lo in tqdm(range(0, len(self.vectors), batch_size), desc="insert", disable=not progress):
            rows = [{"id": i, "embedding": v} for i, v in enumerate(self.vectors[lo : lo + batch_size].tolist(), lo)]
            self.client.insert(COLLECTION, rows)
        self.client.flush(COLLECTION)
        self.insert_s = time.perf_counter() - start

    def build(self, index_type: str, build_params: dict) -> float:
        """Replace the index, wait for it and load the collection; returns the seconds it took."""
        start = time.perf_counter()
        self.client.release_collection(COLLECTION)
        for name in self.client.list_indexes(COLLECTION):
            self.client.drop_index(COLLECTION, name)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type=index_type, metric_type="COSINE", params=build_params)
        self.client.create_index(COLLECTION, index)
        self.client.load_collection(COLLECTION)
        return time.perf_counter() - start

    def search(self, queries: np.ndarray, top_k: int, params: dict) -> np.ndarray:
        """Row ids `[n_queries, top_k]` (-1 pads), in calls of 256 queries."""
        found = np.full((len(queries), top_k), -1, dtype=np.int64)
        for lo in range(0, len(queries), 256):
            results = self.client.search(
                COLLECTION,
                data=queries[lo : lo + 256].tolist(),
                limit=top_k,
                search_params={"metric_type": "COSINE", "params": params},
            )
            for row, hits in enumerate(results, lo):
                found[row, : len(hits)] = [h["id"] for h in hits]
        return found

    def search_one(self, query: np.ndarray, top_k: int, params: dict) -> None:
        """One query, as a user's search sends it."""
        search_params = {"metric_type": "COSINE", "params": params}
        self.client.search(COLLECTION, data=[query.tolist()], limit=top_k, search_params=search_params)

    def close(self) -> None:
        """Drop the collection's file (temporary) and stop milvus-lite's server for it."""
        self.client.close()
        if self._tmp is not None:
            release_lite(self.uri)
            self._tmp.cleanup()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaissBench:
    """The same experiments on faiss in this process: what the index itself costs, without Milvus around it
    (Milvus's index library, Knowhere, builds on faiss and hnswlib; this also covers HNSW, which milvus-lite lacks)."""

    def __init__(self, vectors: np.ndarray) -> None:
        import faiss

        self.faiss, self.vectors, self.index = faiss, np.ascontiguousarray(vectors, dtype=np.float32), None

    def build(self, index_type: str, build_params: dict) -> float:
        """Build FLAT, IVF_FLAT or HNSW (inner product: cosine on unit vectors); returns the seconds it took."""
        faiss, dim, start = self.faiss, self.vectors.shape[1], time.perf_counter()
        if index_type == "FLAT":
            self.index = faiss.IndexFlatIP(dim)
        elif index_type == "IVF_FLAT":
            self.quantizer = faiss.IndexFlatIP(dim)  # the IVF index points to it: keep it alive
            nlist = build_params.get("nlist", 128)
            self.index = faiss.IndexIVFFlat(self.quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.train(self.vectors)
        elif index_type == "HNSW":
            self.index = faiss.IndexHNSWFlat(dim, build_params.get("M", 16), faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = build_params.get("efConstruction", 200)
        else:
            raise ValueError(f"the faiss bench builds FLAT, IVF_FLAT or HNSW, not {index_type}")
        self.index.add(self.vectors)
        return time.perf_counter() - start

    def _set(self, params: dict) -> None:
        if "nprobe" in params:
            self.index.nprobe = params["nprobe"]
        if "ef" in params:
            self.index.hnsw.efSearch = params["ef"]

    def search(self, queries: np.ndarray, top_k: int, params: dict) -> np.ndarray:
        """Row ids `[n_queries, top_k]`."""
        self._set(params)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)[1]

    def search_one(self, query: np.ndarray, top_k: int, params: dict) -> None:
        """One query."""
        self._set(params)
        self.index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), top_k)

    def __enter__(self) -> FaissBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.index = None


def latency_ms(search_one, queries: np.ndarray, warmup: int = 3) -> np.ndarray:
    """Milliseconds per call of `search_one(query)`, one query at a time, after `warmup` calls."""
    for query in queries[:warmup]:
        search_one(query)
    times = []
    for query in queries:
        start = time.perf_counter()
        search_one(query)
        times.append(1000 * (time.perf_counter() - start))
    return np.array(times)


def index_study(
    vectors: np.ndarray,
    queries: np.ndarray,
    sweeps: Sequence[IndexSweep],
    top_k: int = 10,
    n_latency: int = 50,
    backend: str = "milvus",
    uri: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Recall against exact search and single-query latency for every index build and search parameter.

    Args:
        vectors: the collection (unit rows); queries: unit rows, e.g. caption embeddings.
        sweeps: what to build and try (see `standard_sweeps`).
        n_latency: queries timed one per call; recall uses all `queries`.
        backend: "milvus" (a bare collection in Milvus) or "faiss" (the index library alone, in this process).
        uri: for "milvus", a Milvus server to run on (it must allow dropping a collection named `ann_study`);
            default a temporary milvus-lite file.

    Returns:
        One row per (index, search parameter): backend, index, index_type, params, build_s, recall@k, p50_ms,
        p95_ms, vectors; the first row is exact numpy search in this process, the floor for one query's latency.
    """
    exact, _ = exact_top_k(queries, vectors, top_k)
    numpy_ms = latency_ms(lambda q: exact_top_k(q[None, :], vectors, top_k), queries[:n_latency])
    rows = [_row("numpy", "numpy exact (in process)", "numpy", {}, 0.0, 1.0, numpy_ms, len(vectors), top_k)]
    bench = FaissBench(vectors) if backend == "faiss" else Bench(vectors, uri, progress=progress)
    with bench:
        for sweep in tqdm(sweeps, desc=f"{backend} indexes", disable=not progress):
            build_s = bench.build(sweep.index_type, sweep.build_params)
            for params in sweep.search_params:
                recall = neighbour_recall(bench.search(queries, top_k, params), exact)
                ms = latency_ms(lambda q, p=params: bench.search_one(q, top_k, p), queries[:n_latency])
                rows.append(
                    _row(backend, sweep.label, sweep.index_type, params, build_s, recall, ms, len(vectors), top_k)
                )
    return pd.DataFrame(rows)


def _row(backend, index, index_type, params, build_s, recall, latency, n, top_k) -> dict:
    return {
        "backend": backend,
        "index": index,
        "index_type": index_type,
        "params": ", ".join(f"{k}={v}" for k, v in params.items()),
        "build_s": build_s,
        f"recall@{top_k}": recall,
        "p50_ms": float(np.percentile(latency, 50)),
        "p95_ms": float(np.percentile(latency, 95)),
        "vectors": n,
    }


def index_support(
    vectors: np.ndarray,
    queries: np.ndarray,
    index_types: Sequence[str] = INDEX_TYPES,
    top_k: int = 10,
    uri: str | None = None,
) -> pd.DataFrame:
    """Which index types this Milvus builds: try each on `vectors` and report recall@k against exact search.

    Small `vectors` suffice (use a few thousand); IVF types get nlist = 16. A type that is accepted but never
    built would leave searches exact; building on loaded data makes the failure visible here instead.
    """
    exact, _ = exact_top_k(queries, vectors, top_k)
    rows = []
    with Bench(vectors, uri) as bench, quiet_milvus():
        for index_type in index_types:
            params = {"nlist": 16, "m": 8} if index_type == "IVF_PQ" else {"nlist": 16} if "IVF" in index_type else {}
            try:
                bench.build(index_type, params)
            except MilvusException as err:
                rows.append({"index_type": index_type, "builds": False, "note": err.message.splitlines()[0][:120]})
                continue
            recall = neighbour_recall(bench.search(queries, top_k, {}), exact)
            rows.append({"index_type": index_type, "builds": True, f"recall@{top_k}": recall, "note": ""})
    return pd.DataFrame(rows)
