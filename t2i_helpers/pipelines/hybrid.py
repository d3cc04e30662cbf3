"""Keyword and hybrid search through Milvus (taught in notebook 05).

The keyword field (`keywords.py`) holds the words of each file's path; BM25 ranks the paths for a query's words,
and Milvus's `hybrid_search` fuses that ranking with the vector search's, by reciprocal rank (RRF) or by
weighted, normalized scores. `measure.search_modes` compares the three on caption -> photo R@k.

Example:
    >>> keyword_search(engine.store, ["a red kangaroo"], top_k=3)[0][0].path
    '.../animals/marsupials/kangaroo.png'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

from ..store.filters import Filters
from ..store.image_store import OUTPUT_FIELDS, Hit, ImageStore, StoreError, check_top_k, to_hits
from ..store.keywords import SPARSE_FIELD, keyword_support, server_version


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
    check_top_k(top_k)
    require_keywords(store)


def keyword_search(
    store: ImageStore,
    texts: Sequence[str],
    top_k: int = 5,
    category: str | None = None,
    filters: Filters | None = None,
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
        filter=store.where(category, filters),
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
    filters: Filters | None = None,
) -> list[list[Hit]]:
    """Vector and keyword search fused by Milvus's `hybrid_search`: one ranked list per query, best first.

    Args:
        store: a collection with a keyword field.
        embeddings: one query vector per text, `[n, dim]`.
        texts: the query texts, matched against the keyword field with BM25.
        weights: (vector, keyword) weights for Milvus's `WeightedRanker`, which normalizes both scores first;
            None fuses the two rankings by reciprocal rank, `RRFRanker(rrf_k)`: the sum of 1 / (rrf_k + rank).
        depth: results taken from each search before fusing (default `top_k`).
        filters: what both searches keep (`store.filters`), applied inside Milvus.

    Returns:
        Hits whose `score` is the fused score (not a cosine similarity).

    Raises:
        StoreError: the collection has no keyword field (see `require_keywords`).
    """
    _check(store, top_k)
    queries = np.atleast_2d(np.asarray(embeddings, np.float32))
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} query vectors but {len(texts)} texts")
    depth, where = depth or top_k, store.where(category, filters)
    requests = [
        AnnSearchRequest(queries.tolist(), "embedding", {"metric_type": store.metric}, depth, where),
        AnnSearchRequest(list(texts), SPARSE_FIELD, {"metric_type": "BM25"}, depth, where),
    ]
    ranker = RRFRanker(rrf_k) if weights is None else WeightedRanker(*weights)
    results = store.client.hybrid_search(
        store.collection, requests, ranker=ranker, limit=top_k, output_fields=OUTPUT_FIELDS
    )
    return to_hits(results)
