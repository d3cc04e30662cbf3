"""The ANN study of notebook 03 on a real Milvus server: recall@10 against exact search and single-query latency.

The collection: the bundled photos' real image embeddings (ingested once through the real pipeline into a
temporary milvus-lite file), then generated neighbours up to `--vectors` (`ann.extended_collection`). The
queries: the first 300 caption embeddings. A Milvus 2.3 server from the PyPI `milvus` package (`pip install -e
".[server]"`) is started in a temporary folder; FLAT, IVF_FLAT and IVF_SQ8 (nprobe 1..64) and HNSW (each M, ef
10..320) are built on it in turn, then the same sweeps run on faiss in this process (the reference). Each
search parameter's recall uses all queries, its latency one query per call (`--latency-queries`).

Prints, per index build, its cheapest search parameter that keeps 95% of the exact top 10, with its latency as
ratios against exact FLAT search on the same server and against faiss with the same parameter, measured in
the same run; writes every row to `benchmarks/results/ann_server_<N>.csv` (notebook 03 shows that file when
the server package is missing).

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/ann.py       # 100,000 vectors: ~5 minutes on 2 cores
    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/ann.py --vectors 1000000 --hnsw-m 16
    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/ann.py --hnsw-m 16 --ef-construction 50 100 200 \
        --nlist 128 256 512 --out benchmarks/results/ann_server_100000_build_params.csv   # the build parameters
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd

from t2i_helpers.measure.ann import cheapest_at, extended_collection, index_study, standard_sweeps
from t2i_helpers.measure.evaluate import index_data, stored_embeddings, temporary_store
from t2i_helpers.measure.queries import caption_queries, load_eval_data, query_embeddings
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.store.milvus_server import INSTALL_HINT, milvus_server, server_available

RESULTS = Path(__file__).resolve().parent / "results"


def slug(label: str) -> str:
    """`HNSW M=16, efConstruction=100` -> `hnsw-m16-efconstruction100`, for the `ratio x/y = N` lines."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace("=", "")).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--latency-queries", type=int, default=50)
    parser.add_argument("--hnsw-m", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--ef-construction", type=int, nargs="+", default=[100])
    parser.add_argument("--nlist", type=int, nargs="+", default=None, help="IVF list counts; default one near sqrt(N)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/ann_server_<N>.csv")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    if not server_available():  # before anything starts
        print(f"skipped: the index study runs on a Milvus server, which needs {INSTALL_HINT}")
        return

    encoder, data = load_encoder(), load_eval_data("bundled")
    with temporary_store(encoder) as store:
        index_data(encoder, data, store)
        _, image_embeddings = stored_embeddings(store)
    queries = query_embeddings(encoder, caption_queries(data).texts)[: args.queries]
    vectors = extended_collection(image_embeddings, args.vectors)
    sweeps = standard_sweeps(
        len(vectors), args.hnsw_m, args.ef_construction, ivf_types=("IVF_FLAT", "IVF_SQ8"), nlists=args.nlist
    )
    print(
        f"{len(image_embeddings)} real image embeddings + generated neighbours = {len(vectors):,} vectors, "
        f"{vectors.shape[1]}-d; {len(queries)} caption queries, latency over {args.latency_queries} single queries"
    )

    start = time.perf_counter()
    with milvus_server() as uri:
        print(f"Milvus server up in {time.perf_counter() - start:.1f} s at {uri}")
        server = index_study(vectors, queries, sweeps, n_latency=args.latency_queries, uri=uri, progress=True)
    faiss = index_study(vectors, queries, sweeps, n_latency=args.latency_queries, backend="faiss")
    table = pd.concat([server, faiss[faiss.backend == "faiss"]], ignore_index=True)  # one exact numpy row
    out = args.out or RESULTS / f"ann_server_{len(vectors)}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    report(table)
    print(f"\nwrote {out}")


def report(table: pd.DataFrame) -> None:
    """Print each index's cheapest setting at recall@10 >= 0.95, as ratios against exact search."""
    server = table[table.backend == "milvus server"]
    flat = server[server.index_type == "FLAT"].p50_ms.iloc[0]
    numpy_ms = table[table.backend == "numpy"].p50_ms.iloc[0]
    faiss = table[table.backend == "faiss"].set_index(["index", "params"]).p50_ms
    print(f"\nexact search: FLAT on the server p50 {flat:.2f} ms, numpy in process {numpy_ms:.2f} ms")
    print(f"ratio server-flat/numpy = {flat / numpy_ms:.2f}")
    print("cheapest search parameter with recall@10 >= 0.95 on the server (build time, p50 latency):")
    for _, row in cheapest_at(server[server.index_type != "FLAT"]).iterrows():
        name, ms, reference = row["index"], row.p50_ms, faiss.get((row["index"], row.params))
        print(f"  {name}, {row.params}: recall@10 {row['recall@10']:.3f}, build {row.build_s:.1f} s, p50 {ms:.2f} ms")
        print(f"    ratio {slug(name)}/flat = {ms / flat:.2f}")
        if reference is not None:
            print(f"    ratio server/faiss = {ms / reference:.1f}  (faiss, same parameters: p50 {reference:.3f} ms)")
    missed = set(server[server.index_type != "FLAT"]["index"]) - set(cheapest_at(server)["index"])
    for index in sorted(missed):
        best = server[server["index"] == index]["recall@10"].max()
        print(f"  {index}: never reached 0.95 (best recall@10 {best:.3f})")


if __name__ == "__main__":
    main()
