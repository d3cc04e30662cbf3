"""Serving many searches at once: batched searches, the query cache and the int8 text tower (issues 26, 37)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine
from t2i_helpers.models.encoders import l2_normalize
from t2i_helpers.pipelines.search import QueryCache
from t2i_helpers.serve.batching import SearchBatcher
from t2i_helpers.store.filters import Filters
from t2i_helpers.store.image_store import ImageStore


def test_concurrent_searches_are_batched_and_each_gets_its_own_hits(engine, bundled):
    """Queries with different k and categories, all at once: the same ids in the same order as one at a time."""
    captions = list(bundled.caption[:24])
    requests = [(q, 5 if i % 3 else 8, "animals" if i % 4 == 0 else None) for i, q in enumerate(captions)]
    expected = [[h.id for h in engine.search(q, top_k=k, category=c)] for q, k, c in requests]
    batcher = SearchBatcher(engine, max_batch=16, max_wait_ms=5)
    try:
        futures = [batcher.submit(engine.prepare_query(q), k, c) for q, k, c in requests]  # all at once
        results = [future.result(timeout=60) for future in futures]
    finally:
        batcher.close()
    assert [[h.id for h in hits] for hits in results] == expected
    assert all(h.label == "animals" for (_, _, c), hits in zip(requests, results) if c for h in hits)
    assert max(batcher.batch_sizes) > 1 and max(batcher.batch_sizes) <= 16  # batched, never past the bound
    assert sum(size * n for size, n in batcher.batch_sizes.items()) == len(requests)


def test_batches_of_any_size_answer_exactly_as_single_searches(engine, bundled):
    """Each query's hits, ids and scores to the last bit, alone and in batches of 1, 2, 3, 7, 8 and 19, on the
    real encoder: a text embedded in a padded batch differs from itself alone in the last bits (issue 37)."""
    uncached = SearchEngine(engine.config.with_(query_cache=0), engine.encoder, engine.store)  # every text embedded
    queries = list(dict.fromkeys(bundled.caption))[:38]
    alone = [uncached.search(q, top_k=10) for q in queries]
    order = np.random.default_rng(0).permutation(len(queries))
    for size in (1, 2, 3, 7, 8, 19):
        for start in range(0, len(queries), size):
            chunk = order[start : start + size]
            assert uncached.search_many([queries[i] for i in chunk], top_k=10) == [alone[i] for i in chunk], size


def test_hits_of_equal_score_come_by_id_also_across_the_cut(tmp_path, encoder):
    """Twelve photos with the same vector (say, one picture saved twice with different headers): whatever order
    Milvus returns them in, they come by id, and a cut at k inside them keeps the lowest ids, alone or batched."""
    store = ImageStore.open(Config(uri=str(tmp_path / "ties.db")), encoder)
    try:
        rng = np.random.default_rng(1)
        ids = [int(i) for i in rng.choice(1 << 40, size=42, replace=False)]  # 12 tied, 30 others, in no order
        same = l2_normalize(rng.standard_normal(encoder.dim))
        vectors = np.vstack([np.tile(same, (12, 1)), l2_normalize(rng.standard_normal((30, encoder.dim)))])
        store.insert([{"id": i, "path": f"/photos/{i}.png", "label": "", "caption": ""} for i in ids], vectors)
        store.flush()
        near = l2_normalize(same + 0.3 * l2_normalize(rng.standard_normal(encoder.dim)))  # the tied ones first
        queries = np.vstack([same, near, l2_normalize(rng.standard_normal(encoder.dim))])
        tied = sorted(ids[:12])
        for top_k in (5, 12, 20):
            alone = [store.search(query[None, :], top_k)[0] for query in queries]
            assert store.search(queries, top_k) == alone
            for hits in alone[:2]:
                assert [h.id for h in hits][: min(top_k, 12)] == tied[:top_k]
                assert len({h.score for h in hits[: min(top_k, 12)]}) == 1
    finally:
        store.close()


def test_filters_are_kept_per_request_inside_a_batch(engine):
    """Requests with and without a filter share a batch; each gets what `search` gives it alone."""
    requests = [("a dog", Filters()), ("a cat", Filters(place="Nowhere at all")), ("a boat", Filters())]
    batcher = SearchBatcher(engine, max_batch=8)
    try:
        futures = [batcher.submit(engine.prepare_query(q), 4, None, f) for q, f in requests]
        results = [future.result(timeout=60) for future in futures]
    finally:
        batcher.close()
    assert [[h.id for h in hits] for hits in results] == [
        [h.id for h in engine.search(q, top_k=4, filters=f)] for q, f in requests
    ]
    assert results[1] == [] and len(results[0]) == 4


def test_a_failing_group_fails_its_own_requests_only(engine):
    batcher = SearchBatcher(engine, max_batch=8)
    try:
        good = batcher.submit(engine.prepare_query("a dog"), 3)
        bad = batcher.submit(engine.prepare_query("a cat"), 20_000)  # past Milvus's limit on top_k
        assert [h.id for h in good.result(timeout=60)] == [h.id for h in engine.search("a dog", top_k=3)]
        with pytest.raises(ValueError, match="top_k"):
            bad.result(timeout=60)
    finally:
        batcher.close()


def test_the_batcher_refuses_bad_bounds_and_stops(engine):
    with pytest.raises(ValueError, match="max_batch"):
        SearchBatcher(engine, max_batch=0)
    batcher = SearchBatcher(engine)
    assert len(batcher.search(engine.prepare_query("a boat"), 2)) == 2
    batcher.close()
    assert not any(t.name == "t2i-search-batcher" for t in threading.enumerate())


def test_the_query_cache_returns_the_encoders_embeddings_and_stays_bounded(encoder, bundled):
    texts = list(dict.fromkeys(bundled.caption))[:12]  # distinct captions
    cache = QueryCache(size=8)
    first = cache.embed(encoder, texts[:6] + texts[:2])  # a repeat inside one batch is embedded once
    assert cache.misses == 6 and cache.hits == 2
    again = cache.embed(encoder, texts[:6])
    assert cache.hits == 8 and np.array_equal(again, first[:6])
    np.testing.assert_allclose(again, encoder.encode_texts(texts[:6]), atol=1e-6)
    cache.embed(encoder, texts)  # 12 distinct texts through a cache of 8: the least recently used leave
    assert len(cache._items) == 8 and list(cache._items) == texts[4:]
    assert QueryCache(0).embed(encoder, texts[:2]).shape == (2, encoder.dim)


def test_texts_cut_and_embedded_on_many_threads_at_once_match_one_at_a_time(encoder, bundled):
    """The tokenizer keeps settings between calls: cutting queries while batches are embedded must not mix them."""
    texts = list(bundled.caption[:32])
    expected = encoder.encode_texts(texts)
    long_text = "a red kangaroo " * 200
    results, errors = {}, []

    def embed(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = encoder.encode_texts(texts[i : i + 8])
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    def cut() -> None:
        for _ in range(200):
            encoder.truncate_text(long_text)

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(0, 24, 8)] + [threading.Thread(target=cut)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i, vectors in results.items():
        np.testing.assert_allclose(vectors, expected[i : i + 8], atol=1e-5)
