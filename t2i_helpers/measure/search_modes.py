"""How vector, keyword and hybrid search do on one collection: caption -> photo R@k (taught in notebook 05).

Example:
    >>> modes = compare_search_modes(engine.encoder, engine.store, caption_queries(load_eval_data()))
    >>> modes.summary
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..models.encoders import Encoder
from ..pipelines.hybrid import hybrid_search, keyword_search
from ..pipelines.search import prepare_query
from ..store.image_store import ImageStore
from .evaluate import SEARCH_CHUNK
from .metrics import hit_rate_at_k, reciprocal_rank, relevance_matrix
from .queries import QuerySet, query_embeddings


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
