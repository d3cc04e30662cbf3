"""Property-based tests of the retrieval metrics and the grouping scores against plain-Python definitions
(hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from t2i_helpers.measure.metrics import (
    average_precision_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    relevance_matrix,
)
from t2i_helpers.measure.people import bcubed_scores, face_pairs, pairwise_scores, threshold_curve


@st.composite
def rankings(draw):
    """Queries with a ranked list of distinct ids (-1 padded) and a non-empty set of relevant ids each."""
    depth = draw(st.integers(1, 12))
    pool = list(range(30))
    ranked, relevant = [], []
    for _ in range(draw(st.integers(1, 6))):
        shown = draw(st.lists(st.sampled_from(pool), unique=True, max_size=depth))
        ranked.append(shown + [-1] * (depth - len(shown)))
        relevant.append(set(draw(st.lists(st.sampled_from(pool), unique=True, min_size=1, max_size=8))))
    return np.array(ranked), relevant, depth


def _ap(row: list[bool], n_relevant: int, k: int) -> float:
    found, total = 0, 0.0
    for i, hit in enumerate(row[:k], start=1):
        if hit:
            found += 1
            total += found / i
    return total / min(n_relevant, k)


def _ndcg(row: list[bool], n_relevant: int, k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(row[:k]) if hit)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(n_relevant, k)))


@settings(max_examples=300, deadline=None)
@given(rankings())
def test_metrics_agree_with_their_definitions(case):
    ranked, relevant, depth = case
    hits = relevance_matrix(ranked, relevant)
    loop = [[int(i) in rel for i in row] for row, rel in zip(ranked, relevant)]
    assert hits.tolist() == loop
    n_relevant = np.array([len(r) for r in relevant])
    previous = None
    for k in range(1, depth + 1):
        in_top = hits[:, :k].sum(axis=1)
        recall, precision = recall_at_k(hits, n_relevant, k), precision_at_k(hits, k)
        hit_rate = hit_rate_at_k(hits, k)
        ap, ndcg = average_precision_at_k(hits, n_relevant, k), ndcg_at_k(hits, n_relevant, k)
        for values in (recall, precision, hit_rate, ap, ndcg):
            assert ((values >= 0) & (values <= 1 + 1e-12)).all()
        np.testing.assert_allclose(precision * k, in_top)
        np.testing.assert_allclose(recall * n_relevant, in_top)
        assert (hit_rate >= recall - 1e-12).all()  # a hit means at least one found; recall <= 1
        np.testing.assert_allclose(ap, [_ap(row, n, k) for row, n in zip(loop, n_relevant)])
        np.testing.assert_allclose(ndcg, [_ndcg(row, n, k) for row, n in zip(loop, n_relevant)])
        if previous is not None:
            assert (recall >= previous[0]).all() and (hit_rate >= previous[1]).all()  # monotone in k
        previous = (recall, hit_rate)
    rr = reciprocal_rank(hits)
    first = [next((i + 1 for i, h in enumerate(row) if h), None) for row in loop]
    np.testing.assert_allclose(rr, [1 / f if f else 0.0 for f in first])
    np.testing.assert_array_equal(rr == 1.0, hit_rate_at_k(hits, 1) == 1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10))
def test_ideal_ranking_scores_one(n_relevant, depth):
    """All relevant ids first: AP@k and nDCG@k are 1 for every k, recall reaches min(R, k) / R."""
    ids = list(range(n_relevant)) + list(range(100, 100 + depth))
    hits = relevance_matrix(np.array([ids[:depth]]), [set(range(n_relevant))])
    for k in range(1, depth + 1):
        np.testing.assert_allclose(average_precision_at_k(hits, np.array([n_relevant]), k), 1.0)
        np.testing.assert_allclose(ndcg_at_k(hits, np.array([n_relevant]), k), 1.0)
        np.testing.assert_allclose(recall_at_k(hits, np.array([n_relevant]), k), min(n_relevant, k) / n_relevant)


@settings(max_examples=100, deadline=None)
@given(rankings(), st.randoms(use_true_random=False))
def test_per_query_metrics_do_not_depend_on_query_order(case, rng):
    ranked, relevant, depth = case
    order = list(range(len(relevant)))
    rng.shuffle(order)
    hits = relevance_matrix(ranked, relevant)
    shuffled = relevance_matrix(ranked[order], [relevant[i] for i in order])
    n = np.array([len(r) for r in relevant])
    np.testing.assert_allclose(ndcg_at_k(shuffled, n[order], depth), ndcg_at_k(hits, n, depth)[order])


labelings = st.integers(2, 14).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 4), min_size=n, max_size=n), st.lists(st.integers(0, 5), min_size=n, max_size=n)
    )
)


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_grouping_scores_agree_with_their_definitions(case):
    """Pairwise scores over each pair of two faces once, B-cubed per face; both blind to how groups are labelled."""
    truth, predicted = case
    n = range(len(truth))
    pairs = [(i, j) for i in n for j in n if i < j]
    together = [truth[i] == truth[j] for i, j in pairs if predicted[i] == predicted[j]]
    alike = [predicted[i] == predicted[j] for i, j in pairs if truth[i] == truth[j]]
    pairwise = pairwise_scores(truth, predicted)
    np.testing.assert_allclose(pairwise.precision, np.mean(together) if together else 1.0)
    np.testing.assert_allclose(pairwise.recall, np.mean(alike) if alike else 1.0)
    group = [[j for j in n if predicted[j] == predicted[i]] for i in n]
    person = [[j for j in n if truth[j] == truth[i]] for i in n]
    bcubed = bcubed_scores(truth, predicted)
    np.testing.assert_allclose(
        bcubed.precision, np.mean([np.mean([truth[j] == truth[i] for j in g]) for i, g in zip(n, group)])
    )
    np.testing.assert_allclose(
        bcubed.recall, np.mean([np.mean([predicted[j] == predicted[i] for j in p]) for i, p in zip(n, person)])
    )
    relabelled = [f"group {9 - label}" for label in predicted]
    np.testing.assert_allclose(pairwise_scores(truth, relabelled), pairwise)
    np.testing.assert_allclose(bcubed_scores(truth, relabelled), bcubed)
    assert pairwise_scores(truth, truth) == (1.0, 1.0, 1.0) == tuple(bcubed_scores(truth, truth))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=3, max_size=12), st.integers(0, 2**32 - 1))
def test_the_threshold_curve_is_precision_and_recall_of_the_pairs_within_each_threshold(people, seed):
    vectors = np.random.default_rng(seed).normal(size=(len(people), 4))
    pairs = face_pairs(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), people)
    assert len(pairs) == len(people) * (len(people) - 1) // 2
    assert pairs.same.tolist() == [people[i] == people[j] for i, j in zip(pairs.i, pairs.j)]
    if not pairs.same.any():
        return
    curve = threshold_curve(pairs)
    assert curve.threshold.is_monotonic_increasing
    for row in curve.itertuples():
        called = pairs[pairs.distance <= row.threshold]
        np.testing.assert_allclose(row.precision, called.same.mean())
        np.testing.assert_allclose(row.recall, called.same.sum() / pairs.same.sum())
