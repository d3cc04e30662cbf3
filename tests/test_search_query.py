"""`SearchEngine.search` takes a text or a query already prepared (cleaned and cut) by `prepare_query`."""

from __future__ import annotations

import pytest

from t2i_helpers.pipelines.search import Query


def test_a_prepared_query_is_searched_as_it_is(engine):
    query = engine.prepare_query("  a   fire\x07truck \n")
    assert query == Query("a fire truck", None)
    hits = engine.search(query, top_k=5)
    assert [h.id for h in hits] == [h.id for h in engine.search("a fire truck", top_k=5)]
    assert [h.id for h in engine.search("  a   fire\x07truck \n", top_k=5)] == [h.id for h in hits]


def test_a_long_query_is_cut_once_with_a_notice(engine):
    query = engine.prepare_query("a red kangaroo " * 120)
    assert query.notice and "cut" in query.notice
    assert engine.encoder.truncate_text(query.text) == query.text  # already what the model reads
    assert [h.id for h in engine.search(query, top_k=3)] == [h.id for h in engine.search(query.text, top_k=3)]


def test_an_empty_query_is_refused_in_words(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.search(" \t ")
