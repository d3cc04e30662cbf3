"""Notebook 05's functions on the bundled photos in real milvus-lite: keywords, hybrid search, zero-shot labels,
maps, duplicates, outliers and query arithmetic. (The Milvus server side is in test_milvus_server.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine
from t2i_helpers.explore.duplicates import (
    category_outliers,
    exact_duplicates,
    near_duplicates,
    pixel_similarity,
    radius_check,
    range_search,
)
from t2i_helpers.explore.questions import (
    arithmetic_effect,
    compare_maps,
    compare_prompts,
    embedding_map,
    map_quality,
    parse_expression,
    plot_map,
    query_vector,
    stored_images,
    zero_shot,
)
from t2i_helpers.measure.queries import ENSEMBLE_TEMPLATES, caption_queries, load_eval_data
from t2i_helpers.measure.search_modes import compare_search_modes
from t2i_helpers.pipelines.hybrid import hybrid_search, keyword_search
from t2i_helpers.store.collection import SCHEMA_VERSION
from t2i_helpers.store.connection import read_meta
from t2i_helpers.store.image_store import ImageStore, StoreError
from t2i_helpers.store.keywords import KEYWORD_FIELD, path_keywords

from .test_reindex import _version_1_collection
from .test_schema3 import keywordless_collection


@pytest.fixture(scope="module")
def images(engine):
    return stored_images(engine.store)


def _stamp(bundled, tail: str) -> str:
    return bundled.path[bundled.path.str.endswith(tail)].iloc[0]


# --- the keyword field ---------------------------------------------------------------------------------------


def test_path_keywords_are_the_words_of_folders_and_file_name():
    assert path_keywords("animals/mammals/dogs/dog.png") == "animals mammals dogs dog"
    assert path_keywords("/p/town/flags/blue-and-yellowflag.png") == "p town flags blue and yellowflag"
    assert path_keywords("C:/Photos/2023_Rome/IMG_0001.HEIC") == "c photos 2023 rome img 0001"
    assert path_keywords("food/vegetables/yellowPepper.v2.png") == "food vegetables yellow pepper v2"


def test_the_store_records_and_fills_keywords_from_each_path(tmp_path, encoder):
    config = Config(uri=str(tmp_path / "k.db"))
    store = ImageStore.open(config, encoder)
    assert store.meta["keywords"] is True and read_meta(config)["keywords"] is True  # in the description JSON
    rows = [{"id": 1, "path": "/x/animals/birds/drake.png", "label": "animals", "caption": "never searched"}]
    store.insert(rows, encoder.encode_texts(["a duck"]))
    stored = store.client.query(store.collection, filter="id == 1", output_fields=[KEYWORD_FIELD])
    assert stored[0][KEYWORD_FIELD] == "x animals birds drake"
    assert [h.id for h in keyword_search(store, ["Two drakes."])[0]] == [1]  # stemmed: drakes -> drake
    assert keyword_search(store, ["never searched"])[0] == []  # the caption is not in the keyword field

    store.update({1: {"path": "/x/animals/birds/mallard.png", "size": 5, "mtime_ns": 6}})  # moved
    assert [h.id for h in keyword_search(store, ["a mallard"])[0]] == [1]
    assert keyword_search(store, ["a drake"])[0] == []
    store.close()


def test_a_version_1_collection_migrates_into_one_with_keywords(tmp_path, encoder):
    uri = str(tmp_path / "old.db")
    rows = [{"id": i + 1, "path": f"/lib/pets/cat{i}.png", "label": "pets", "caption": ""} for i in range(3)]
    _version_1_collection(uri, encoder, rows, encoder.encode_texts(["a cat"] * 3))
    store = ImageStore.open(Config(uri=uri), encoder)
    assert store.meta["keywords"] and store.count() == 3
    assert sorted(h.id for h in keyword_search(store, ["cat2"], top_k=3)[0]) == [3]
    assert len(keyword_search(store, ["my pets"], top_k=5)[0]) == 3
    store.close()


def test_hybrid_search_on_a_collection_without_keywords_says_how_to_get_them(tmp_path, encoder):
    """A schema-2 collection made before the keyword field (as t2i's main branch made them) is refused clearly."""
    uri = str(tmp_path / "plain.db")
    keywordless_collection(uri, SCHEMA_VERSION, encoder).close()  # this schema: no migration adds keywords
    engine = SearchEngine.open(Config(uri=uri, data_dir=tmp_path), encoder)
    try:
        engine.store.insert([{"id": 9, "path": "/a/b.png", "label": "", "caption": ""}], encoder.encode_texts(["x"]))
        assert engine.search("x", top_k=1)[0].id == 9  # vector search is unaffected
        with pytest.raises(StoreError, match=r"made without a keyword field: index into a new --collection"):
            engine.hybrid_search("a dog")
        with pytest.raises(StoreError, match="without a keyword field"):
            keyword_search(engine.store, ["a dog"])
    finally:
        engine.close()


# --- keyword and hybrid search on the bundled photos ----------------------------------------------------------


def test_keyword_search_ranks_file_names(engine):
    hits = keyword_search(engine.store, ["A red kangaroo.", "the of a", "a kangaroo"], top_k=3)
    assert hits[0][0].path.endswith("/animals/marsupials/kangaroo.png")
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score
    assert hits[1] == []  # only stop words: nothing to match
    assert {h.label for h in keyword_search(engine.store, ["a red kangaroo"], 5, category="food")[0]} == {"food"}


def test_hybrid_search_fuses_both_rankings_through_milvus(engine):
    text = "A red kangaroo."
    vector = engine.encoder.encode_texts([text])
    by_vector = [h.id for h in engine.store.search(vector, top_k=5)[0]]
    by_keyword = [h.id for h in keyword_search(engine.store, [text], top_k=5)[0]]
    fused = hybrid_search(engine.store, vector, [text], top_k=10, depth=5)[0]
    assert set(by_vector) | set(by_keyword) == {h.id for h in fused}  # two top-5 lists fused: their union
    assert fused[0].path.endswith("/animals/marsupials/kangaroo.png")
    for hit in fused:  # reciprocal rank fusion: the sum of 1 / (60 + rank) over the lists that hold the hit
        expected = sum(1 / (60 + ranked.index(hit.id) + 1) for ranked in (by_vector, by_keyword) if hit.id in ranked)
        assert hit.score == pytest.approx(expected, rel=1e-4)
    assert all(a.score >= b.score for a, b in zip(fused, fused[1:]))
    same = hybrid_search(engine.store, vector, [text], top_k=3)[0]
    assert [h.id for h in engine.hybrid_search(text, top_k=3)] == [h.id for h in same]
    vector_only = engine.hybrid_search(text, top_k=3, weights=(1.0, 0.0))
    assert [h.id for h in vector_only] == by_vector[:3]
    # Measured limitation the notebook and README report: milvus-lite 2.5.1's WeightedRanker normalizes BM25
    # scores as if smaller were better, so keyword-only weights put the best keyword match below worse ones.
    keyword_only = engine.hybrid_search(text, top_k=5, weights=(0.0, 1.0))
    assert keyword_only[0].id != by_keyword[0] and by_keyword[0] in {h.id for h in keyword_only}
    with pytest.raises(ValueError, match="2 query vectors but 1 texts"):
        hybrid_search(engine.store, np.vstack([vector, vector]), [text])


def test_compare_search_modes_scores_each_mode_from_its_first_ranks(engine):
    queries = caption_queries(load_eval_data("bundled"))
    modes = compare_search_modes(engine.encoder, engine.store, queries, depth=20, weights=((0.5, 0.5),))
    assert list(modes.summary.index) == ["vector", "keyword", "hybrid RRF", "hybrid weighted 0.5/0.5"]
    assert len(modes.first_rank) == len(queries.texts) == len(modes.queries)
    for mode, row in modes.summary.iterrows():
        for k in (1, 5, 10):
            assert row[f"R@{k}"] == pytest.approx((modes.first_rank[mode] <= k).mean())
    assert modes.summary.loc["vector", "R@10"] == pytest.approx(0.26, abs=0.02)  # as notebook 03 measures it
    wins = modes.wins(10)
    assert wins.sum() == len(queries.texts)
    assert wins["only keyword"] == ((modes.first_rank.keyword <= 10) & ~(modes.first_rank.vector <= 10)).sum()
    examples = modes.examples("keyword", "vector", n=3)
    assert (examples.keyword == 1).all() and not (examples.vector <= 10).any()


# --- zero-shot classification ---------------------------------------------------------------------------------


def test_zero_shot_labels_beat_chance_and_the_confusion_matrix_adds_up(engine, images):
    result = zero_shot(engine.encoder, images)
    assert len(result.categories) == 16 and result.chance == 1 / 16
    assert result.accuracy > 3 * result.chance  # measured 0.35 against 0.0625
    confusion = result.confusion()
    assert confusion.to_numpy().sum() == len(images.ids)
    assert np.trace(confusion.to_numpy()) / len(images.ids) == pytest.approx(result.accuracy)
    per_label = np.diag(confusion.to_numpy()) / confusion.sum(axis=1).to_numpy()
    assert per_label.mean() == pytest.approx(result.balanced_accuracy)
    table = compare_prompts(engine.encoder, images, {"photo": ("a photo of a {category}.",), "all": ENSEMBLE_TEMPLATES})
    assert table.loc["photo", "accuracy"] == pytest.approx(result.accuracy)
    assert set(table.columns) == {"accuracy", "balanced accuracy", "most predicted", "its share"}


# --- the embedding map ----------------------------------------------------------------------------------------


def test_map_quality_is_perfect_for_a_plane_and_lower_for_noise():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2))
    lifted = np.c_[plane, np.full(200, 5.0)]  # on a plane away from the origin: cosine follows the plane
    assert map_quality(lifted / np.linalg.norm(lifted, axis=1, keepdims=True), plane, k=5)["5-NN kept"] > 0.9
    noise = map_quality(lifted, rng.normal(size=(200, 2)), k=5)
    assert noise["5-NN kept"] < 0.2 and noise["trustworthiness"] < 0.7


def test_tsne_and_umap_maps_of_the_photos(engine, images):
    sample = images.image_embeddings[:150]
    maps = compare_maps(sample, ("tsne", "umap"), k=10)
    assert list(maps.table.index) == ["tsne", "umap"]
    assert maps.table["trustworthiness"].between(0.6, 1).all() and maps.table["10-NN kept"].between(0.1, 1).all()
    for coords in maps.coords.values():
        assert coords.shape == (150, 2) and np.isfinite(coords).all()
    assert np.array_equal(embedding_map(sample, "tsne", seed=0), maps.coords["tsne"])  # seeded: reproducible
    with pytest.raises(ValueError, match="'tsne' or 'umap'"):
        embedding_map(sample, "pca")


def test_plot_map_draws_cached_thumbnails(engine, images):
    from matplotlib.offsetbox import AnnotationBbox

    coords = np.random.default_rng(0).normal(size=(len(images.ids), 2))
    fig = plot_map(images, coords, engine.thumbnails, n_thumbnails=12)
    assert sum(isinstance(a, AnnotationBbox) for a in fig.axes[0].artists) == 12
    assert len(fig.axes[0].get_legend().get_texts()) == 16


# --- duplicates and outliers ----------------------------------------------------------------------------------


def test_exact_duplicates_are_one_stored_row(engine, images):
    groups = exact_duplicates(load_eval_data("bundled"))
    fireman = groups[groups.labels.map(sorted).map(tuple) == ("military", "people")]
    assert len(fireman) == 1 and fireman.files.iloc[0] == 2
    assert int(fireman.image_id.iloc[0]) in set(images.ids.tolist())
    assert len(images.ids) == load_eval_data("bundled").images.image_id.nunique()


def test_range_search_honours_the_radius_on_milvus_lite(engine, images):
    check = radius_check(engine.store, images.image_embeddings[:20], radius=0.9, limit=50)
    plain, ranged = check.iloc[0], check.iloc[1]
    assert plain["results"] == 20 * 50 and plain["below radius"] > 0
    assert ranged["below radius"] == 0 and ranged["lowest score"] > 0.9
    assert all(h.score > 0.9 for hits in range_search(engine.store, images.image_embeddings[:5], 0.9) for h in hits)


def test_near_duplicates_through_milvus_match_brute_force(engine, images):
    threshold, limit = 0.995, 40
    sims = images.image_embeddings @ images.image_embeddings.T
    np.fill_diagonal(sims, -1)
    assert (sims > threshold).sum(axis=1).max() < limit  # every neighbour above the threshold fits in `limit`
    pairs = near_duplicates(engine.store, images, threshold, limit)
    a, b = np.nonzero(np.triu(sims > threshold + 1e-5))  # float32 vs Milvus's own rounding at the edge
    expected = {tuple(sorted((int(images.ids[i]), int(images.ids[j])))) for i, j in zip(a, b)}
    found = {tuple(sorted(p)) for p in zip(pairs.id_a, pairs.id_b)}
    assert expected <= found and len(found) == len(pairs) and all(x != y for x, y in found)
    assert (pairs.similarity > threshold).all() and pairs.similarity.is_monotonic_decreasing

    same = pd.DataFrame({"id_a": [images.ids[0]], "path_a": [images.paths[0]]}).assign(
        id_b=lambda d: d.id_a, path_b=lambda d: d.path_a
    )
    assert pixel_similarity(engine.thumbnails, same).iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert pixel_similarity(engine.thumbnails, pairs.head(3)).between(-1, 1).all()


def test_category_outliers_are_the_farthest_from_each_centre(engine, images):
    table = category_outliers(engine.store, images, n=2)
    assert len(table) == 2 * 16
    animals = images.labels == "animals"
    centre = images.image_embeddings[animals].mean(axis=0)
    cosine = images.image_embeddings[animals] @ (centre / np.linalg.norm(centre))
    farthest = images.ids[animals][np.argsort(cosine)[:2]]
    rows = table[table.label == "animals"]
    assert list(rows.id) == list(farthest)
    assert rows["similarity to centre"].to_numpy() == pytest.approx(np.sort(cosine)[:2], abs=1e-4)


# --- query arithmetic and image queries -----------------------------------------------------------------------


def test_parse_expression():
    assert parse_expression("dog - grass + snow") == [(1.0, "dog"), (-1.0, "grass"), (1.0, "snow")]
    assert parse_expression("a t-shirt+hat") == [(1.0, "a t-shirt+hat")]  # no spaces: one term
    for bad in ["", "dog + ", " - "]:
        with pytest.raises(ValueError, match="' \\+ ' and ' - '"):
            parse_expression(bad)


def test_query_vectors_add_texts_and_images(engine, bundled):
    encode = engine.encoder.encode_texts
    assert query_vector(engine, "a truck") == pytest.approx(encode(["a truck"])[0], abs=1e-6)
    assert query_vector(engine, "a car - a car + a truck") == pytest.approx(encode(["a truck"])[0], abs=1e-5)
    mix = query_vector(engine, [(1.0, "a dog"), (1.0, "snow")])
    assert float(np.linalg.norm(mix)) == pytest.approx(1.0)
    truck = _stamp(bundled, "/vehicles/emergency/firetruck.png")
    photo = query_vector(engine, [(1.0, Path(truck))])
    assert photo == pytest.approx(engine.embed_image(truck), abs=1e-6)
    assert engine.search_image(truck, top_k=1)[0].path == truck  # "more like this" finds the photo itself first


def test_arithmetic_effect_measures_what_a_change_brings_in(engine, bundled):
    truck = _stamp(bundled, "/vehicles/emergency/firetruck.png")
    table = arithmetic_effect(
        engine, {"photo": [(1, truck)], "photo + 4 x a bus": [(1, truck), (4, "a bus")]}, r"\bbus\b", photo=truck
    )
    assert table.loc["photo", "rank of the photo"] == 1
    assert table.loc["photo + 4 x a bus", "top 10 matching"] >= table.loc["photo", "top 10 matching"]
    assert table["first match"].dropna().between(1, 10).all()
