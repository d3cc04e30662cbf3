"""Keyword and hybrid search through Milvus, and how each does against vector search (taught in notebook 05).

The keyword field (`keywords.py`) holds the words of each file's path; BM25 ranks the paths for a query's words,
and Milvus's `hybrid_search` fuses that ranking with the vector search's, by reciprocal rank (RRF) or by
weighted, normalized scores. `compare_search_modes` measures caption -> photo R@k for all three on one collection.

Example:
    >>> keyword_search(engine.store, ["a red kangaroo"], top_k=3)[0][0].path
    '.../animals/marsupials/kangaroo.png'
    >>> modes = compare_search_modes(engine.encoder, engine.store, caption_queries(load_eval_data()))
    >>> modes.summary
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

from .encoders import Encoder
from .keywords import SPARSE_FIELD, keyword_support, server_version
from .metrics import hit_rate_at_k, reciprocal_rank, relevance_matrix
from .pipelines import prepare_query
from .queries import QuerySet, query_embeddings
from .store import MAX_TOP_K, OUTPUT_FIELDS, Hit, ImageStore, StoreError, label_filter, to_hits

SEARCH_CHUNK = 256  # queries per Milvus call


def require_keywords(store: ImageStore) -> None:
    """Refuse, in one sentence that says what is needed, a collection that has no keyword field.

    Raises:
        StoreError: made without one on a deployment that has BM25 (index it anew), or on one that has not
            (measured: a Milvus 2.3 server has no sparse vectors).
    """
    if store.meta.get("keywords"):
        return
    if store.config.is_lite or keyword_support(store.client, store.config) is None:
        raise StoreError(
            f"collection {store.collection!r} was made without a keyword field: index into a new --collection "
            "(or rebuild it with --reset) to search file and folder names beside the vectors"
        )
    raise StoreError(
        f"keyword and hybrid search need sparse vectors and BM25, which this Milvus server "
        f"({server_version(store.client)}) lacks: use Milvus >= 2.5 or milvus-lite"
    )


def _check(store: ImageStore, top_k: int) -> None:
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    require_keywords(store)


def keyword_search(
    store: ImageStore, texts: Sequence[str], top_k: int = 5, category: str | None = None
) -> list[list[Hit]]:
    """The `top_k` images whose file and folder names best match each text (BM25 scores), best first.

    A text none of whose words (after stemming and stop words) is in any path finds nothing: an empty list.

    Raises:
        StoreError: the collection has no keyword field (see `require_keywords`).
    """
    _check(store, top_k)
    results = store.client.search(
        store.collection,
        data=list(texts),
        anns_field=SPARSE_FIELD,
        limit=top_k,
        filter=label_filter(category),
        output_fields=OUTPUT_FIELDS,
        search_params={"metric_type": "BM25"},
    )
    return to_hits(results)


def hybrid_search(
    store: ImageStore,
    embeddings: np.ndarray,
    texts: Sequence[str],
    top_k: int = 5,
    category: str | None = None,
    weights: tuple[float, float] | None = None,
    rrf_k: int = 60,
    depth: int | None = None,
) -> list[list[Hit]]:
    """Vector and keyword search fused by Milvus's `hybrid_search`: one ranked list per query, best first.

    Args:
        store: a collection with a keyword field.
        embeddings: one query vector per text, `[n, dim]`.
        texts: the query texts, matched against the keyword field with BM25.
        weights: (vector, keyword) weights for Milvus's `WeightedRanker`, which normalizes both scores first;
            None fuses the two rankings by reciprocal rank, `RRFRanker(rrf_k)`: the sum of 1 / (rrf_k + rank).
        depth: results taken from each search before fusing (default `top_k`).

    Returns:
        Hits whose `score` is the fused score (not a cosine similarity).

    Raises:
        StoreError: the collection has no keyword field (see `require_keywords`).
    """
    _check(store, top_k)
    queries = np.atleast_2d(np.asarray(embeddings, np.float32))
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} query vectors but {len(texts)} texts")
    depth, where = depth or top_k, label_filter(category)
    requests = [
        AnnSearchRequest(queries.tolist(), "embedding", {"metric_type": store.config.metric}, depth, where),
        AnnSearchRequest(list(texts), SPARSE_FIELD, {"metric_type": "BM25"}, depth, where),
    ]
    ranker = RRFRanker(rrf_k) if weights is None else WeightedRanker(*weights)
    results = store.client.hybrid_search(
        store.collection, requests, ranker=ranker, limit=top_k, output_fields=OUTPUT_FIELDS
    )
    return to_hits(results)


@dataclass(frozen=True)
class SearchModes:
    """Caption -> photo results of several search modes on one query set.

    `summary`: one row per mode (R@k for each k, MRR); `first_rank`: per query (rows) and mode (columns), the
    rank of its photo, NaN when it is not in the top `depth`; `queries`: query text and label per row.
    """

    summary: pd.DataFrame
    first_rank: pd.DataFrame
    queries: pd.DataFrame

    def wins(self, k: int = 10, a: str = "vector", b: str = "keyword") -> pd.Series:
        """How many queries find their photo in the top k with both modes, only `a`, only `b`, or neither."""
        found_a, found_b = self.first_rank[a] <= k, self.first_rank[b] <= k
        return pd.Series(
            {
                "both": int((found_a & found_b).sum()),
                f"only {a}": int((found_a & ~found_b).sum()),
                f"only {b}": int((~found_a & found_b).sum()),
                "neither": int((~found_a & ~found_b).sum()),
            },
            name=f"found in the top {k}",
        )

    def examples(self, winner: str, loser: str, n: int = 5) -> pd.DataFrame:
        """Queries `winner` ranks first and `loser` does not find in the top 10 (those `loser` ranks lowest first)."""
        ranks = self.first_rank
        chosen = (ranks[winner] == 1) & ~(ranks[loser] <= 10)
        table = pd.concat([self.queries[chosen], ranks[chosen]], axis=1)
        return table.sort_values(loser, ascending=False, na_position="first").head(n)


def compare_search_modes(
    encoder: Encoder,
    store: ImageStore,
    queries: QuerySet,
    ks: Sequence[int] = (1, 5, 10),
    depth: int = 50,
    weights: Sequence[tuple[float, float]] = ((0.5, 0.5),),
) -> SearchModes:
    """Rank every query by vector search, keyword search and hybrid search (RRF, and each of `weights`).

    Args:
        encoder: the collection's encoder (embeds the query texts).
        store: a collection with a keyword field, holding the query set's images.
        queries: e.g. `caption_queries(data)`; each query's first text is searched.
        ks: cut-offs for R@k (the hit rate: one relevant photo per caption).
        depth: results fetched per query (and per list before fusing); a photo below it counts as not found.
        weights: (vector, keyword) weights, one weighted hybrid mode each.

    Returns:
        `SearchModes` with the summary table, per-query first ranks and the queries.
    """
    texts = [prepare_query(group[0], encoder).text for group in queries.texts]
    embeddings = query_embeddings(encoder, [(t,) for t in texts])
    searches = {"vector": lambda e, t: store.search(e, depth), "keyword": lambda e, t: keyword_search(store, t, depth)}
    searches["hybrid RRF"] = lambda e, t: hybrid_search(store, e, t, depth, depth=depth)
    for w in weights:
        searches[f"hybrid weighted {w[0]:g}/{w[1]:g}"] = lambda e, t, w=w: hybrid_search(
            store, e, t, depth, weights=w, depth=depth
        )
    modes = {}
    for name, search in searches.items():
        ids = np.full((len(texts), depth), -1, dtype=np.int64)
        for start in range(0, len(texts), SEARCH_CHUNK):
            chunk = slice(start, start + SEARCH_CHUNK)
            for row, hits in enumerate(search(embeddings[chunk], texts[chunk]), start):
                ids[row, : len(hits)] = [h.id for h in hits]
        modes[name] = ids
    rows, first = [], {}
    for name, ranked in modes.items():
        hits = relevance_matrix(ranked, queries.relevant)
        rows.append({"mode": name, **{f"R@{k}": hit_rate_at_k(hits, k).mean() for k in ks}})
        rows[-1]["MRR"] = reciprocal_rank(hits).mean()
        first[name] = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1.0, np.nan)
    table = pd.DataFrame({"query": texts, "label": queries.labels})
    return SearchModes(pd.DataFrame(rows).set_index("mode"), pd.DataFrame(first), table)
