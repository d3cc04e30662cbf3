"""Milvus's write path: rows/s into a Milvus server through the store's upserts and through bulk import.

In one run, against a Milvus 2.3 server started here on 127.0.0.1 (the `server` extra), with precomputed
normalized vectors (random, 384-d: the default encoder's) and rows shaped as the ingest writes them (id, path,
label, caption, size, mtime_ns), each into a fresh collection of the project's schema:
  (a) `ImageStore.insert` (an upsert per batch, as the ingest's sink writes) at several batch sizes, one flush at
      the end;
  (b) the same rows as files in the server's storage, then one `utility.do_bulk_insert` per file (Milvus's bulk
      import: the data nodes read the files themselves; the server here keeps its storage in a local folder);
and prints rows/s of each and `ratio bulk/upsert` (bulk import over the best upsert batch size).

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/writes.py              # 200,000 rows, ~5 min
    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/writes.py --rows 20000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from t2i_helpers.config import Config
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import l2_normalize
from t2i_helpers.store.image_store import ImageStore
from t2i_helpers.store.milvus_server import INSTALL_HINT, milvus_server, server_available, server_storage

DIM = 384
BATCHES = [32, 256, 2048]  # rows per upsert: the ingest's batch, and larger ones
FILE_ROWS = 50_000  # rows per Parquet file of the bulk import
ENCODER = "conse-effnet-minilm"  # the default encoder's name: the collection is the one an ingest writes


def make_rows(count: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """`count` rows as the ingest writes them, with unit vectors: precomputed, so only the writes are timed."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2**62, count)
    rows = [
        {
            "id": int(i),
            "path": f"/photos/2024/{n // 1000:04d}/IMG_{n:07d}.jpg",
            "label": "photos",
            "caption": "",
            "size": 2_000_000 + n,
            "mtime_ns": 1_700_000_000_000_000_000 + n,
        }
        for n, i in enumerate(ids)
    ]
    return rows, l2_normalize(rng.standard_normal((count, DIM)).astype(np.float32))


def upsert_rate(uri: str, rows: list[dict], vectors: np.ndarray, batch: int, collection: str) -> float:
    """Rows/s of `ImageStore.insert` (one upsert RPC per batch) into a fresh collection, one flush at the end."""
    store = ImageStore(Config(uri=uri, collection=collection), ENCODER, DIM, reset=True)
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            store.insert(rows[i : i + batch], vectors[i : i + batch])
        store.flush()
        elapsed = time.perf_counter() - start
        assert store.count() == len(rows), "rows were lost"
        return len(rows) / elapsed
    finally:
        store.close()


def bulk_rate(uri: str, storage: Path, rows: list[dict], vectors: np.ndarray, collection: str) -> float:
    """Rows/s of Milvus's bulk import into a fresh collection: Parquet files written into the server's storage
    folder (pyarrow), one `do_bulk_insert` task per file, until a query counts every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pymilvus import connections, utility

    store = ImageStore(Config(uri=uri, collection=collection), ENCODER, DIM, reset=True)
    folder = storage / f"import-{collection}"
    folder.mkdir(parents=True)
    try:
        start = time.perf_counter()
        files = []
        for n, i in enumerate(range(0, len(rows), FILE_ROWS)):
            part = rows[i : i + FILE_ROWS]
            table = {k: [row[k] for row in part] for k in part[0]} | {"embedding": list(vectors[i : i + FILE_ROWS])}
            pq.write_table(pa.table(table), folder / f"part-{n}.parquet")
            files.append(str(folder / f"part-{n}.parquet"))  # 2.3.5 refuses a path relative to its storage
        written = time.perf_counter() - start
        connections.connect(alias=collection, uri=uri)
        tasks = [utility.do_bulk_insert(collection, files=[f], using=collection) for f in files]
        while True:
            states = [utility.get_bulk_insert_state(t, using=collection) for t in tasks]
            failed = [s.infos.get("failed_reason") or s.state_name for s in states if s.state_name == "Failed"]
            if failed:
                raise RuntimeError(f"bulk import failed: {failed[0]}")
            if all(s.state_name in ("Persisted", "Completed") for s in states):  # 2.3: rows stored, then indexed
                break
            time.sleep(0.2)
        while store.count() < len(rows):  # until a query sees every imported row
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        assert store.count() == len(rows), f"bulk import stored {store.count()} of {len(rows)} rows"
        print(f"  bulk: files written in {written:.1f} s, imported in {elapsed - written:.1f} s")
        return len(rows) / elapsed
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    if not server_available():  # before anything starts
        print(f"skipped: the writes go into a Milvus server, which needs {INSTALL_HINT}")
        return
    rows, vectors = make_rows(args.rows)
    rates = {}
    with milvus_server() as uri:
        for batch in BATCHES:
            rates[batch] = upsert_rate(uri, rows, vectors, batch, f"upsert_{batch}")
            print(f"upsert, {batch} rows per call: {rates[batch]:,.0f} rows/s")
        bulk = bulk_rate(uri, server_storage(uri), rows, vectors, "bulk")
        print(f"bulk import (Parquet, do_bulk_insert): {bulk:,.0f} rows/s")
    best = max(rates, key=rates.get)
    print(f"ratio upsert_{best}/upsert_{BATCHES[0]} = {rates[best] / rates[BATCHES[0]]:.2f}")
    print(f"ratio bulk/upsert = {bulk / rates[best]:.2f}")


if __name__ == "__main__":
    main()
