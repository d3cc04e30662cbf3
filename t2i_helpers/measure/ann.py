"""Exact or approximate? The ANN index study: recall against exact search vs query latency (notebook 03).

An approximate index (IVF, HNSW) answers faster than an exact scan by looking at part of the collection; what
it loses is measured as recall@k against the exact top k (`neighbour_recall`), which is a property of the
index alone and says nothing about whether the exact top k were right answers (that is `evaluate`'s job).

The study loads one bare collection (id, embedding) into Milvus, then for each index build drops and rebuilds
the index, reloads and sweeps its search parameter. On a Milvus server (`milvus_server.milvus_server()`, or any
`http://` URI) every index type builds and `ef` / `nprobe` are honoured; milvus-lite 2.5 builds FLAT, IVF_FLAT
and AUTOINDEX only and ignores the search parameter. The same sweeps on faiss in this process (`backend="faiss"`)
are the reference: what the index itself costs, without a client, an RPC and a server around it.

Example:
    >>> vectors = extended_collection(image_embeddings, 100_000)
    >>> with milvus_server() as uri:
    ...     table = index_study(vectors, text_embeddings, standard_sweeps(len(vectors)), uri=uri)
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

from ..config import Config
from ..models.encoders import l2_normalize
from ..store.connection import milvus_client, release_lite
from .metrics import exact_top_k

COLLECTION = "ann_study"
# Milvus caps one insert RPC at 64 MB; inserts of at most 16 MB of vectors stay well under it.
INSERT_BYTES = 16 << 20
# The study's collection does not change while it is searched, so searches need not wait for the newest writes:
# "Strong" makes every search on a Milvus 2.3 server wait for the next time tick (measured: 200-400 ms a query).
SEARCH_CONSISTENCY = "Eventually"
# Milvus index type -> faiss index factory string (Knowhere's IVF_SQ8 is faiss's SQ8: one byte per dimension).
FAISS_FACTORY = {"FLAT": "Flat", "IVF_FLAT": "IVF{nlist},Flat", "IVF_SQ8": "IVF{nlist},SQ8", "HNSW": "HNSW{M},Flat"}
# Index types to probe: what milvus-lite builds, and what needs a Milvus server (standalone or cluster).
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


def standard_sweeps(
    n: int,
    hnsw_m: Sequence[int] = (8, 16, 32),
    ef_construction: Sequence[int] = (100,),
    ivf_types: Sequence[str] = ("IVF_FLAT",),
    nlists: Sequence[int] | None = None,
) -> list[IndexSweep]:
    """FLAT; each IVF type with nprobe 1..64; HNSW for each M and efConstruction, with ef 10..320.

    Args:
        n: the collection's size.
        hnsw_m, ef_construction: HNSW builds, one per pair (empty `hnsw_m`: none).
        ivf_types: e.g. ("IVF_FLAT", "IVF_SQ8") on a server; milvus-lite builds IVF_FLAT only.
        nlists: IVF list counts; default one, a power of two near sqrt(n) with at least 39 vectors per list
            (as faiss asks).

    Returns:
        The builds in order, each with its search parameters from cheapest to dearest.
    """
    nlists = nlists or [int(2 ** np.floor(np.log2(min(np.sqrt(n), n / 39))))]
    efs = tuple({"ef": ef} for ef in (10, 20, 40, 80, 160, 320))
    ivf = [
        IndexSweep(kind, {"nlist": nlist}, tuple({"nprobe": p} for p in (1, 2, 4, 8, 16, 32, 64) if p <= nlist))
        for kind in ivf_types
        for nlist in nlists
    ]
    hnsw = [IndexSweep("HNSW", {"M": m, "efConstruction": ef}, efs) for m in hnsw_m for ef in ef_construction]
    return [IndexSweep("FLAT", {}), *ivf, *hnsw]


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


def extended_collection(base: np.ndarray, n: int, noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """`n` rows: the rows of `base` (e.g. the real image embeddings), then `synthetic_embeddings` up to `n`."""
    return np.vstack([np.asarray(base, np.float32)[:n], synthetic_embeddings(base, max(0, n - len(base)), noise, seed)])


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

    Use as a context manager; with no `uri` it lives in a temporary milvus-lite file, removed afterwards; on a
    server (`uri`) the collection is dropped at the end.
    """

    def __init__(self, vectors: np.ndarray, uri: str | None = None, batch_size: int = 1000, progress=False):
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self._tmp = None if uri else tempfile.TemporaryDirectory(prefix="t2i-ann-")
        self.uri = uri or str(Path(self._tmp.name) / "ann.db")
        config = Config(uri=self.uri)
        self.where = "milvus-lite" if config.is_lite else "milvus server"
        self.client = milvus_client(config)
        if self.client.has_collection(COLLECTION):
            self.client.drop_collection(COLLECTION)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.vectors.shape[1])
        self.client.create_collection(COLLECTION, schema=schema, consistency_level="Strong")
        # milvus-lite 2.5 slows to a few hundred rows/s when one insert carries 5,000 rows or more
        batch_size = max(1, min(batch_size, INSERT_BYTES // (4 * self.vectors.shape[1])))
        start = time.perf_counter()
        for lo in tqdm(range(0, len(self.vectors), batch_size), desc="insert", disable=not progress):
            rows = [{"id": i, "embedding": v} for i, v in enumerate(self.vectors[lo : lo + batch_size].tolist(), lo)]
            self.client.insert(COLLECTION, rows)
        self.client.flush(COLLECTION)  # seals the segments: only sealed segments get the index
        self.insert_s = time.perf_counter() - start

    def build(self, index_type: str, build_params: dict, timeout_s: int | None = None) -> float:
        """Replace the index, wait for it (at most `timeout_s`) and load the collection; returns the seconds."""
        start = time.perf_counter()
        self.client.release_collection(COLLECTION)
        for name in self.client.list_indexes(COLLECTION):
            self.client.drop_index(COLLECTION, name)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type=index_type, metric_type="COSINE", params=build_params)
        self.client.create_index(COLLECTION, index, timeout=timeout_s)
        self.client.load_collection(COLLECTION)
        return time.perf_counter() - start

    def search(self, queries: np.ndarray, top_k: int, params: dict) -> np.ndarray:
        """Row ids `[n_queries, top_k]` (-1 pads), in calls of 256 queries."""
        found = np.full((len(queries), top_k), -1, dtype=np.int64)
        for lo in range(0, len(queries), 256):
            for row, hits in enumerate(self._search(queries[lo : lo + 256], top_k, params), lo):
                found[row, : len(hits)] = [h["id"] for h in hits]
        return found

    def search_one(self, query: np.ndarray, top_k: int, params: dict) -> None:
        """One query, as a user's search sends it."""
        self._search(query[None, :], top_k, params)

    def _search(self, queries: np.ndarray, top_k: int, params: dict) -> list:
        search_params = {"metric_type": "COSINE", "params": params}
        return self.client.search(
            COLLECTION, queries.tolist(), limit=top_k, search_params=search_params, consistency_level=SEARCH_CONSISTENCY
        )

    def close(self) -> None:
        """Drop the collection (a server) or its temporary file (milvus-lite, whose helper process stops too)."""
        if self._tmp is None:
            self.client.drop_collection(COLLECTION)
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
    (Milvus's index library, Knowhere, builds on faiss and hnswlib)."""

    def __init__(self, vectors: np.ndarray) -> None:
        import faiss

        self.faiss, self.vectors, self.index = faiss, np.ascontiguousarray(vectors, dtype=np.float32), None

    def build(self, index_type: str, build_params: dict) -> float:
        """Build FLAT, IVF_FLAT, IVF_SQ8 or HNSW (inner product: cosine on unit vectors); returns the seconds."""
        if index_type not in FAISS_FACTORY:
            raise ValueError(f"the faiss bench builds {', '.join(FAISS_FACTORY)}, not {index_type}")
        start = time.perf_counter()
        spec = FAISS_FACTORY[index_type].format(nlist=build_params.get("nlist", 128), M=build_params.get("M", 16))
        self.index = self.faiss.index_factory(self.vectors.shape[1], spec, self.faiss.METRIC_INNER_PRODUCT)
        if index_type == "HNSW":
            self.index.hnsw.efConstruction = build_params.get("efConstruction", 200)
        self.index.train(self.vectors)  # IVF: k-means for the lists (and SQ8's value ranges); others: nothing
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
        uri: for "milvus", a Milvus server to run on (e.g. from `milvus_server()`; it must allow dropping a
            collection named `ann_study`); default a temporary milvus-lite file.

    Returns:
        One row per (index, search parameter): backend ("milvus server", "milvus-lite" or "faiss"), index,
        index_type, params, build_s, recall@k, p50_ms and p95_ms (one query per call), batched_ms (per query,
        all `queries` sent in calls of 256), vectors; the first row is exact numpy search in this process.
    """
    start = time.perf_counter()
    exact, _ = exact_top_k(queries, vectors, top_k)
    batched = 1000 * (time.perf_counter() - start) / len(queries)
    numpy_ms = latency_ms(lambda q: exact_top_k(q[None, :], vectors, top_k), queries[:n_latency])
    rows = [_row("numpy", IndexSweep("numpy", {}), {}, 0.0, 1.0, numpy_ms, batched, len(vectors), top_k)]
    bench = FaissBench(vectors) if backend == "faiss" else Bench(vectors, uri, progress=progress)
    where = "faiss" if backend == "faiss" else bench.where
    with bench:
        for sweep in tqdm(sweeps, desc=f"{where} indexes", disable=not progress):
            build_s = bench.build(sweep.index_type, sweep.build_params)
            for params in sweep.search_params:
                start = time.perf_counter()
                found = bench.search(queries, top_k, params)
                batched = 1000 * (time.perf_counter() - start) / len(queries)
                recall = neighbour_recall(found, exact)
                ms = latency_ms(lambda q, p=params: bench.search_one(q, top_k, p), queries[:n_latency])
                rows.append(_row(where, sweep, params, build_s, recall, ms, batched, len(vectors), top_k))
    return pd.DataFrame(rows)


def cheapest_at(table: pd.DataFrame, recall: float = 0.95) -> pd.DataFrame:
    """Per backend and index build, the first row (its cheapest search parameter) with at least `recall`.

    We choose by the parameter, not by latency: small differences in latency are within the noise.
    """
    column = next(c for c in table.columns if c.startswith("recall@"))
    return table[table[column] >= recall].groupby(["backend", "index"], sort=False).head(1)


def _row(backend, sweep, params, build_s, recall, latency, batched_ms, n, top_k) -> dict:
    return {
        "backend": backend,
        "index": "numpy exact (in process)" if backend == "numpy" else sweep.label,
        "index_type": sweep.index_type,
        "params": ", ".join(f"{k}={v}" for k, v in params.items()),
        "build_s": build_s,
        f"recall@{top_k}": recall,
        "p50_ms": float(np.percentile(latency, 50)),
        "p95_ms": float(np.percentile(latency, 95)),
        "batched_ms": batched_ms,
        "vectors": n,
    }


def index_support(
    vectors: np.ndarray,
    queries: np.ndarray,
    index_types: Sequence[str] = INDEX_TYPES,
    top_k: int = 10,
    uri: str | None = None,
    timeout_s: int = 60,
) -> pd.DataFrame:
    """Which index types this Milvus builds: try each on `vectors` and report recall@k against exact search.

    Use a few thousand `vectors` (a Milvus server leaves segments under 1,024 rows without an index); IVF and
    SCANN get nlist 16, HNSW M 16. A type that is accepted but never built would leave searches exact; building
    on loaded data makes the failure visible. A build not done in `timeout_s` counts as failed (the Milvus 2.3
    server accepts DISKANN, then fails its build and retries it for ever).
    """
    exact, _ = exact_top_k(queries, vectors, top_k)
    rows = []
    with Bench(vectors, uri) as bench, quiet_milvus():
        for index_type in index_types:
            try:
                bench.build(index_type, _support_params(index_type), timeout_s)
            except MilvusException as err:
                timed_out = "timeout" in err.message.lower()
                note = f"accepted, but no index after {timeout_s} s" if timed_out else err.message.splitlines()[0]
                rows.append({"index_type": index_type, "builds": False, "note": note[:120]})
                continue
            recall = neighbour_recall(bench.search(queries, top_k, {}), exact)
            rows.append({"index_type": index_type, "builds": True, f"recall@{top_k}": recall, "note": ""})
    return pd.DataFrame(rows)


def _support_params(index_type: str) -> dict:
    if index_type.startswith("HNSW"):
        return {"M": 16, "efConstruction": 100}
    if index_type == "IVF_PQ":
        return {"nlist": 16, "m": 8}
    return {"nlist": 16} if index_type.startswith("IVF") or index_type == "SCANN" else {}
