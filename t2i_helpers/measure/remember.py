"""Measurements of notebook 06: filtered vector search, and fusing pixels with the text read in photos.

Two studies on a bare pymilvus collection (so they run alike on milvus-lite and a Milvus server):
`filter_latency` times a vector search with no filter, a selective one (1% of rows) and a broad one (50%);
`memory_collection` holds a generated library with its date, camera and place as scalar and JSON fields and the
OCR text with a BM25 function, and `fused_recall` measures R@k of vector search, text search and their RRF fusion.

Example:
    >>> filter_latency(MilvusClient("demo.db"), rows=10_000)
    >>> fused_recall(client, "library", queries, relevant, encoder)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker

# label -> (Milvus expression, the same test in Python, to check every row a filtered search returns)
FILTERS = {
    "none": ("", lambda bucket: True),
    "selective (1%)": ("bucket == 7", lambda bucket: bucket == 7),
    "broad (50%)": ("bucket < 50", lambda bucket: bucket < 50),
}
BUCKETS = 100  # rows are spread over this many bucket values
INSERT_BATCH = 1_000  # measured on milvus-lite 2.5.1: 10,000 rows in one insert took 100 s, in 1,000s under 1 s


def filter_latency(client: MilvusClient, rows: int, dim: int = 384, queries: int = 30, seed: int = 0) -> pd.DataFrame:
    """Median and p90 latency (ms) of a top-10 vector search without a filter and with two filters, on `rows`.

    The collection `filtered_<rows>` (dropped first) holds unit vectors and an INT64 `bucket` spread evenly over
    0..99; every returned row is checked against its filter.
    """
    name, rng = f"filtered_{rows}", np.random.default_rng(seed)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("bucket", DataType.INT64)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    for lo in range(0, rows, INSERT_BATCH):
        n = min(INSERT_BATCH, rows - lo)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        client.insert(name, [{"id": lo + i, "vector": v, "bucket": (lo + i) % BUCKETS} for i, v in enumerate(vectors)])
    client.flush(name)
    client.load_collection(name)
    probes = rng.standard_normal((queries, dim)).astype(np.float32)
    table = {}
    for label, (expression, passes) in FILTERS.items():
        client.search(name, [probes[0]], limit=10, filter=expression)  # warm-up
        times = []
        for probe in probes:
            start = time.perf_counter()
            hits = client.search(name, [probe], limit=10, filter=expression, output_fields=["bucket"])[0]
            times.append(1000 * (time.perf_counter() - start))
            if not all(passes(h["entity"]["bucket"]) for h in hits):
                raise AssertionError(f"a search filtered by {expression!r} returned a row that does not match")
        table[label] = {"median ms": np.median(times), "p90 ms": np.percentile(times, 90)}
    client.drop_collection(name)
    frame = pd.DataFrame(table).T
    frame["vs none"] = frame["median ms"] / frame.loc["none", "median ms"]
    return frame


def epoch(taken_at: str | None) -> int:
    """Seconds since 1970 of a local ISO time (its offset ignored: people remember local dates); -1 for none."""
    return int(datetime.fromisoformat(taken_at[:19]).replace(tzinfo=None).timestamp()) if taken_at else -1


def memory_collection(
    client: MilvusClient, name: str, truth: pd.DataFrame, embeddings: np.ndarray, texts: Sequence[str]
) -> None:
    """A collection (dropped first) of the library: vector, `taken_at` (INT64, -1 for none), `camera` (VARCHAR),
    `place` (JSON: city, country), `text` (the OCR text, with a BM25 sparse vector beside it)."""
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=embeddings.shape[1])
    schema.add_field("taken_at", DataType.INT64)
    schema.add_field("camera", DataType.VARCHAR, max_length=128)
    schema.add_field("place", DataType.JSON)
    schema.add_field("text", DataType.VARCHAR, max_length=4096, enable_analyzer=True)
    schema.add_field("text_bm25", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function("text_to_bm25", FunctionType.BM25, ["text"], ["text_bm25"]))
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    index.add_index("text_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index)
    rows = [
        {
            "id": i,
            "vector": embeddings[i],
            "taken_at": epoch(row.taken_at or None),
            "camera": " ".join(filter(None, [row.make, row.model])),
            "place": {"city": row.city, "country": row.country} if row.city else {},
            "text": texts[i],
        }
        for i, row in enumerate(truth.fillna("").itertuples())
    ]
    client.insert(name, rows)
    client.flush(name)
    client.load_collection(name)


def fused_recall(
    client: MilvusClient,
    name: str,
    queries: pd.DataFrame,
    encoder,
    ks: Sequence[int] = (1, 5, 10),
    depth: int = 50,
) -> pd.DataFrame:
    """R@k by kind of query ("text only", "pixels only", "both") for the vector search, the BM25 search over the
    OCR text, and Milvus's RRF fusion of the two (`hybrid_search`).

    Args:
        queries: columns `query`, `kind` and `relevant` (the set of ids that answer it).
    """
    vectors = encoder.encode_texts(list(queries["query"]))
    runs = {"vector": [], "text (BM25)": [], "RRF fused": []}
    for query, vector in zip(queries["query"], vectors):
        dense = AnnSearchRequest([vector], "vector", {"metric_type": "COSINE"}, limit=depth)
        sparse = AnnSearchRequest([query], "text_bm25", {"metric_type": "BM25"}, limit=depth)
        runs["vector"].append(client.search(name, [vector], anns_field="vector", limit=depth)[0])
        runs["text (BM25)"].append(client.search(name, [query], anns_field="text_bm25", limit=depth)[0])
        runs["RRF fused"].append(client.hybrid_search(name, [dense, sparse], RRFRanker(60), limit=depth)[0])
    rows = []
    for mode, results in runs.items():
        for kind, relevant, hits in zip(queries["kind"], queries["relevant"], results):
            ids = [int(h["id"]) for h in hits]
            row = {"mode": mode, "kind": kind}
            for k in ks:
                row[f"R@{k}"] = len(set(ids[:k]) & set(relevant)) / len(relevant)
            rows.append(row)
    return pd.DataFrame(rows).groupby(["kind", "mode"]).mean().round(3)
