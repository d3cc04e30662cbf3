"""Retrieval metrics: recall@k, precision@k, hit rate@k, MRR, mAP@k, nDCG@k, as numpy (taught in notebook 03).

For one query with R relevant images and a ranked list (rel_i = 1 if result i is relevant):

    hit_rate@k   1 if a relevant image is in the top k, else 0. Flickr30k/COCO papers report this as "R@k"
                 (recall@k): with exactly one relevant image per caption the two are equal.
    recall@k     relevant images in the top k / R
    precision@k  relevant images in the top k / k
    MRR          mean over queries of 1 / rank of the first relevant result (0 when it is below the depth searched)
    mAP@k        mean over queries of AP@k = sum_{i<=k} precision@i * rel_i / min(R, k)
    nDCG@k       DCG@k = sum_{i<=k} rel_i / log2(i + 1), divided by the best possible DCG@k (min(R, k) hits on top)

Every function takes `hits [n_queries, depth]` (from `relevance_matrix`) and returns one value per query.

Example:
    >>> hits = relevance_matrix(np.array([[7, 3, -1]]), [{3}])
    >>> recall_at_k(hits, np.array([1]), k=2), reciprocal_rank(hits)
    (array([1.]), array([0.5]))
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd


def relevance_matrix(ranked: np.ndarray, relevant: Sequence[Collection[int]]) -> np.ndarray:
    """`hits[q, i]`: whether result i of query q is one of its relevant ids.

    Args:
        ranked: result ids `[n_queries, depth]`, best first; -1 pads lists shorter than `depth`.
        relevant: for each query, the ids that count as right answers.

    Example:
        >>> relevance_matrix(np.array([[7, 3, -1]]), [{3}])
        array([[False,  True, False]])
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(relevant):
        raise ValueError(f"ranked has shape {ranked.shape}, but there are {len(relevant)} relevant sets")
    owner = np.repeat(np.arange(len(relevant)), [len(r) for r in relevant])
    ids = np.fromiter((i for r in relevant for i in r), dtype=np.int64, count=len(owner))
    vocab = np.unique(np.concatenate([ids, ranked.ravel()]))  # (query, id) pairs as one int64 key each
    ranked_keys = np.arange(len(ranked))[:, None] * len(vocab) + np.searchsorted(vocab, ranked)
    relevant_keys = owner * len(vocab) + np.searchsorted(vocab, ids)
    return np.isin(ranked_keys, relevant_keys) & (ranked >= 0)


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    hits = np.asarray(hits, dtype=bool)
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} is outside 1..{hits.shape[1]}, the depth that was searched")
    return hits[:, :k]


def _counts(n_relevant: np.ndarray) -> np.ndarray:
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if (n_relevant < 1).any():
        raise ValueError("every query needs at least one relevant image")
    return n_relevant


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant results in the top k / number of relevant images."""
    return _top(hits, k).sum(axis=1) / _counts(n_relevant)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant results in the top k / k."""
    return _top(hits, k).sum(axis=1) / k


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if any of the top k is relevant (the papers' "R@k" with one relevant image), else 0.0."""
    return _top(hits, k).any(axis=1).astype(float)


def reciprocal_rank(hits: np.ndarray) -> np.ndarray:
    """Per query: 1 / rank of the first relevant result, 0.0 if none was found; its mean is the MRR."""
    hits = np.asarray(hits, dtype=bool)
    return np.where(hits.any(axis=1), 1.0 / (hits.argmax(axis=1) + 1), 0.0)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: sum of precision@i at each relevant rank i <= k, / min(R, k); its mean is mAP@k."""
    top = _top(hits, k)
    precision = top.cumsum(axis=1) / np.arange(1, k + 1)
    return (precision * top).sum(axis=1) / np.minimum(_counts(n_relevant), k)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: binary-gain DCG@k divided by the ideal DCG@k (all min(R, k) relevant images on top)."""
    top = _top(hits, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(_counts(n_relevant), k) - 1]
    return (top * discounts).sum(axis=1) / ideal


def metrics_table(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> pd.DataFrame:
    """Every metric per query: recall@k, hit_rate@k, precision@k, AP@k, nDCG@k for each k, and RR."""
    columns = {}
    for name, metric in [
        ("recall", lambda k: recall_at_k(hits, n_relevant, k)),
        ("hit_rate", lambda k: hit_rate_at_k(hits, k)),
        ("precision", lambda k: precision_at_k(hits, k)),
        ("AP", lambda k: average_precision_at_k(hits, n_relevant, k)),
        ("nDCG", lambda k: ndcg_at_k(hits, n_relevant, k)),
    ]:
        columns.update({f"{name}@{k}": metric(k) for k in ks})
    columns["RR"] = reciprocal_rank(hits)
    return pd.DataFrame(columns)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product search: (row indices, scores), each `[n_queries, min(top_k, n_vectors)]`."""
    top_k = min(top_k, len(vectors))
    rows, scores = [], []
    for start in range(0, len(queries), 1024):  # bounded memory for 25,000 COCO captions
        sims = queries[start : start + 1024] @ vectors.T
        part = np.argpartition(-sims, top_k - 1, axis=1)[:, :top_k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        rows.append(np.take_along_axis(part, order, axis=1))
        scores.append(np.take_along_axis(sims, rows[-1], axis=1))
    return np.concatenate(rows), np.concatenate(scores)
