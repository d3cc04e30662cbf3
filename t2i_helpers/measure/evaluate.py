"""How good is the search? Evaluation runs on the real path, and `t2i eval` (taught in notebook 03).

`evaluate` indexes a data set's images (those not stored yet), runs every query of its query sets
(`queries.py`) through Milvus, or exact numpy search over the same stored vectors, and scores the rankings
with the metrics of `metrics.py`.

Example:
    >>> data = load_eval_data("bundled")
    >>> result = evaluate(load_encoder(), data)        # indexes into a temporary milvus-lite file
    >>> result.summary[["recall@1", "recall@10", "MRR"]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..data.datasets import DatasetError
from ..engine import SearchEngine
from ..models.encoders import Encoder, load_encoder
from ..store.image_store import ImageStore, StoreError
from .metrics import exact_top_k, metrics_table, relevance_matrix
from .queries import (
    DEFAULT_TEMPLATES,
    ENSEMBLE_TEMPLATES,
    EvalData,
    QuerySet,
    category_queries,
    default_query_sets,
    load_eval_data,
    query_embeddings,
)

SEARCH_CHUNK = 256  # queries per Milvus search call


@contextlib.contextmanager
def temporary_store(encoder: Encoder) -> Iterator[ImageStore]:
    """A store in a throwaway milvus-lite file, removed afterwards (its server stopped)."""
    with tempfile.TemporaryDirectory(prefix="t2i-eval-") as tmp:
        uri = str(Path(tmp) / "eval.db")
        store = ImageStore.open(Config(uri=uri, collection="t2i_eval"), encoder)
        try:
            yield store
        finally:
            store.close()  # the last store of the file: its milvus-lite server stops


def index_data(encoder: Encoder, data: EvalData, store: ImageStore, progress: bool = False) -> None:
    """Index the images the store lacks, as every index is made (`SearchEngine.index`); then the collection must
    hold exactly `data`'s images.

    Raises:
        StoreError: an image could not be indexed, or the collection holds other images too (they would
            compete in every ranking, and scores would not be comparable).
    """
    wanted = set(data.images.image_id)
    stored = _stored_ids(store, wanted)
    report = None
    if stored != wanted:
        todo = data.images[~data.images.image_id.isin(stored)]
        engine = SearchEngine(store.config.with_(encoder=encoder.name), encoder, store)
        report = engine.index(todo, progress=progress)
        stored = _stored_ids(store, wanted)
    if stored != wanted:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in (report.skipped if report else [])[:3])
        raise StoreError(f"{len(wanted - stored)} images of {data.name} could not be indexed ({reasons})")
    if (extra := store.count() - len(wanted)) > 0:
        raise StoreError(
            f"collection {store.collection!r} holds {extra} images that are not in {data.name}; evaluate on a "
            "collection of its own (the default: a temporary one)"
        )


def _stored_ids(store: ImageStore, ids: set[int]) -> set[int]:
    ordered = sorted(ids)
    return set().union(*(store.existing_ids(ordered[i : i + 1000]) for i in range(0, len(ordered), 1000)))


def stored_embeddings(store: ImageStore) -> tuple[np.ndarray, np.ndarray]:
    """Every stored image's id and embedding: `(ids [n], image_embeddings [n, dim])`."""
    rows = store.scan(["embedding"])
    return np.array([r["id"] for r in rows], dtype=np.int64), np.array([r["embedding"] for r in rows], np.float32)


def rank(store: ImageStore, queries: np.ndarray, depth: int, search: str = "milvus") -> tuple[np.ndarray, np.ndarray]:
    """Result ids and scores `[n_queries, depth]` (-1 and NaN pad short lists) from Milvus or exact numpy."""
    ids = np.full((len(queries), depth), -1, dtype=np.int64)
    scores = np.full((len(queries), depth), np.nan, dtype=np.float32)
    if search == "exact":
        gallery, vectors = stored_embeddings(store)
        found, sims = exact_top_k(queries, vectors, depth)
        ids[:, : found.shape[1]], scores[:, : found.shape[1]] = gallery[found], sims
    elif search == "milvus":
        for start in range(0, len(queries), SEARCH_CHUNK):
            for row, hits in enumerate(store.search(queries[start : start + SEARCH_CHUNK], top_k=depth), start):
                ids[row, : len(hits)] = [h.id for h in hits]
                scores[row, : len(hits)] = [h.score for h in hits]
    else:
        raise ValueError(f"search must be 'milvus' or 'exact', got {search!r}")
    return ids, scores


@dataclass
class Evaluation:
    """One evaluation: `per_query` (one row per query, every metric), the rankings, and the images."""

    per_query: pd.DataFrame
    ranked: np.ndarray  # result ids [n_queries, depth], -1 pads
    hits: np.ndarray  # whether each result is relevant
    images: pd.DataFrame  # path, label, caption, indexed by image_id

    @property
    def summary(self) -> pd.DataFrame:
        """Mean of every metric per query set (and search): recall@k, ..., MRR, mAP@k, nDCG@k."""
        return summarize(self.per_query)

    def curve(self, metric: str = "recall") -> pd.DataFrame:
        """`metric` ("recall", "hit_rate" or "precision") at every k from 1 to the depth, one column per query set."""
        n_relevant = self.per_query.n_relevant.to_numpy()
        found = self.hits.cumsum(axis=1)
        per_k = {"recall": found / n_relevant[:, None], "hit_rate": found > 0, "precision": found / self._ks()}
        frame = pd.DataFrame(per_k[metric].astype(float), columns=self._ks(), index=self.per_query.index)
        table = frame.groupby(self.per_query.set, sort=False).mean().T
        table.index.name = "k"
        return table

    def by_label(self, query_set: str) -> pd.DataFrame:
        """Mean metrics of one query set per label (the image's folder or the category), lowest MRR first."""
        rows = self.per_query[self.per_query.set == query_set]
        metrics = [c for c in rows.columns if "@" in c or c == "RR"]
        table = rows.groupby("label")[metrics].mean()
        table.insert(0, "queries", rows.groupby("label").size())
        return table.sort_values("RR")

    def failure_gallery(self, query_set: str, n: int = 4, top: int = 4) -> tuple[list[str], list[str]]:
        """Paths and titles for `viz.show_images(..., columns=top + 1)`: per failed query, a wanted image then its
        top results. The worst are those with the lowest reciprocal rank, most confident first."""
        rows = self.per_query[self.per_query.set == query_set]
        worst = rows.sort_values(["RR", "top_score"], ascending=[True, False]).head(n)
        paths, titles = [], []
        for position, row in worst.iterrows():
            wanted = self.images.loc[row.relevant[0]]
            paths.append(wanted.path)
            titles.append(f"wanted for “{row.query}”: {wanted.caption or wanted.label}")
            found_ids = self.ranked[self.per_query.index.get_loc(position), :top]
            for i, image_id in enumerate(found_ids[found_ids >= 0], start=1):
                found = self.images.loc[image_id]
                paths.append(found.path)
                titles.append(f"{i}. {found.caption or found.label}")
        return paths, titles

    def _ks(self) -> np.ndarray:
        return np.arange(1, self.hits.shape[1] + 1)


def summarize(per_query: pd.DataFrame) -> pd.DataFrame:
    """Means per query set and search of a `per_query` table (several may be concatenated)."""
    metrics = [c for c in per_query.columns if "@" in c or c == "RR"]
    groups = per_query.groupby(["set", "search"], sort=False)
    table = groups[metrics].mean().rename(columns=lambda c: {"RR": "MRR"}.get(c, c.replace("AP@", "mAP@")))
    table.insert(0, "queries", groups.size())
    return table


def evaluate(
    encoder: Encoder,
    data: EvalData,
    store: ImageStore | None = None,
    ks: Sequence[int] = (1, 5, 10),
    depth: int | None = None,
    query_sets: Sequence[QuerySet] | None = None,
    search: str = "milvus",
    progress: bool = False,
) -> Evaluation:
    """Index `data`'s images (only those not stored yet), run every query and score the rankings.

    Args:
        encoder: embeds the images (at ingest) and the query texts.
        data: images and captions, from `load_eval_data`.
        store: a collection for `encoder` that holds only `data`'s images, or none yet (it is filled); None
            indexes into a temporary milvus-lite file, removed afterwards.
        ks: cut-offs for recall@k, hit_rate@k, precision@k, AP@k and nDCG@k.
        depth: results fetched per query, default max(ks); MRR counts a first hit below it as 0.
        query_sets: default `default_query_sets(data)`: caption->image, and category->images if labelled.
        search: "milvus" ranks with the collection's index (batched `store.search`, as the search pipeline
            does); "exact" by brute-force numpy over the same stored vectors: the reference that separates
            encoder quality from what an approximate index loses.

    Returns:
        An `Evaluation`; `.per_query` has one row per query, `.summary` the means per query set.
    """
    if store is None:
        with temporary_store(encoder) as store:
            return evaluate(encoder, data, store, ks, depth, query_sets, search, progress)
    ks = sorted(set(ks))
    depth = depth or ks[-1]
    query_sets = default_query_sets(data) if query_sets is None else query_sets
    index_data(encoder, data, store, progress)
    texts = [t for s in query_sets for t in s.texts]
    relevant = [r for s in query_sets for r in s.relevant]
    ranked, scores = rank(store, query_embeddings(encoder, texts), depth, search)
    hits = relevance_matrix(ranked, relevant)
    per_query = pd.DataFrame(
        {
            "set": [s.name for s in query_sets for _ in s.texts],
            "search": search,
            "query": [" | ".join(t) for t in texts],
            "label": [label for s in query_sets for label in s.labels],
            "n_relevant": [len(r) for r in relevant],
            "first_rank": np.where(hits.any(axis=1), hits.argmax(axis=1) + 1.0, np.nan),
            "top_score": scores[:, 0],
            "relevant": [sorted(r) for r in relevant],
        }
    )
    per_query = pd.concat([per_query, metrics_table(hits, per_query.n_relevant.to_numpy(), ks)], axis=1)
    images = data.images.drop_duplicates("image_id").set_index("image_id")
    return Evaluation(per_query, ranked, hits, images)


def compare_templates(
    encoder: Encoder,
    data: EvalData,
    store: ImageStore,
    templates: Sequence[str] = ENSEMBLE_TEMPLATES,
    ks: Sequence[int] = (1, 5, 10),
    depth: int | None = None,
) -> pd.DataFrame:
    """Category queries with each template alone, then with all of them averaged (prompt ensembling)."""
    variants = {t: (t,) for t in templates} | {f"ensemble of all {len(templates)}": tuple(templates)}
    rows = [
        evaluate(encoder, data, store, ks, depth, [category_queries(data, group)]).summary.iloc[0].rename(name)
        for name, group in variants.items()
    ]
    return pd.DataFrame(rows).rename_axis("templates")


def eval_collection(data_name: str, encoder_name: str) -> str:
    """The default collection for an evaluation: its own, so that no other images compete."""
    return re.sub(r"\W", "_", f"eval_{data_name}_{encoder_name}")[:255]


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `t2i eval` to the `t2i` parser's subcommands."""
    parser = subparsers.add_parser("eval", help="measure search quality: recall@k, MRR, mAP, nDCG")
    parser.add_argument(
        "--dataset", default="bundled", help="'bundled', a dataset CSV, a folder, or a Karpathy-split JSON"
    )
    parser.add_argument("--images", help="the image folder of a Karpathy-split JSON (default: the JSON's folder)")
    parser.add_argument("--split", default="test", help="the Karpathy split to evaluate (default: test)")
    parser.add_argument("-k", dest="ks", type=int, nargs="+", default=[1, 5, 10], help="cut-offs (default 1 5 10)")
    parser.add_argument(
        "--depth", type=int, default=50, help="results fetched per query; MRR counts a first hit below as 0"
    )
    parser.add_argument("--ensemble", action="store_true", help="average several prompt templates per category")
    parser.add_argument("--exact", action="store_true", help="also rank by exact numpy search over the same vectors")
    parser.add_argument("--out", help="folder for the CSV and JSON results (default: DATA_DIR/eval)")
    parser.add_argument("--uri", help="milvus-lite file or http://host:19530 (default: $T2I_MILVUS_URI or data/t2i.db)")
    parser.add_argument("--token", help="Milvus token for a server (default: $T2I_MILVUS_TOKEN)")
    parser.add_argument("--collection", help="collection to index into (default: eval_<dataset>_<encoder>)")
    parser.add_argument("--encoder", help="encoder name (default: $T2I_ENCODER or conse-effnet-minilm)")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Run `t2i eval`: print the summary table, write per-query CSV and summary CSV/JSON; returns the exit status."""
    try:
        data = load_eval_data(args.dataset, args.images, args.split)
        config = Config.from_env(uri=args.uri, token=args.token, encoder=args.encoder)
        encoder = load_encoder(config.encoder)
        config = config.with_(
            encoder=encoder.name, collection=args.collection or eval_collection(data.name, encoder.name)
        )
        query_sets = default_query_sets(data, ENSEMBLE_TEMPLATES if args.ensemble else DEFAULT_TEMPLATES)
        store = ImageStore.open(config, encoder)
        try:
            index_type = store.client.describe_index(store.collection, "embedding").get("index_type", "?")
            searches = ["milvus", "exact"] if args.exact else ["milvus"]
            per_query = pd.concat(
                [
                    evaluate(
                        encoder, data, store, args.ks, max(args.depth, *args.ks), query_sets, s, progress=True
                    ).per_query
                    for s in searches
                ]
            )
        finally:
            store.close()
    except (DatasetError, StoreError, ValueError, ImportError, RuntimeError) as err:
        print(f"t2i: error: {err}", file=sys.stderr)
        return 1
    summary = summarize(per_query)
    summary.index = [s if search == "milvus" else f"{s} (exact)" for s, search in summary.index]
    print(f"{data.name}: {data.images.image_id.nunique()} images, encoder {encoder.name}, {index_type} index")
    print(summary.T.to_string(float_format=lambda x: f"{x:.3f}"))
    out = Path(args.out) if args.out else config.data_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{eval_collection(data.name, encoder.name)}"
    per_query.to_csv(f"{stem}-per_query.csv", index=False)
    summary.to_csv(f"{stem}-summary.csv", index_label="set")
    meta = {
        "dataset": data.name,
        "encoder": encoder.name,
        "uri": config.uri,
        "collection": config.collection,
        "depth": max(args.depth, *args.ks),
    }
    record = {**meta, "index_type": index_type, "summary": summary.to_dict(orient="index")}
    Path(f"{stem}-summary.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {stem}-per_query.csv, {stem}-summary.csv and {stem}-summary.json")
    return 0
