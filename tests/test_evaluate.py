"""Evaluation: metrics on hand-worked examples and against scikit-learn, query sets, the real path, `t2i eval`,
and the ANN index study on a real milvus-lite file."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import DatasetError
from t2i_helpers.data.images import content_id
from t2i_helpers.measure.ann import (
    IndexSweep,
    index_study,
    index_support,
    neighbour_recall,
    standard_sweeps,
    synthetic_embeddings,
)
from t2i_helpers.measure.compare import caption_quality
from t2i_helpers.measure.evaluate import add_eval_command, evaluate, run_eval
from t2i_helpers.measure.metrics import (
    average_precision_at_k,
    exact_top_k,
    hit_rate_at_k,
    metrics_table,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    relevance_matrix,
)
from t2i_helpers.measure.queries import (
    EvalData,
    caption_queries,
    category_queries,
    load_eval_data,
    load_karpathy,
)
from t2i_helpers.store.image_store import ImageStore, StoreError

# ---------------------------------------------------------------- metrics, worked by hand

# Query A: relevant {a, c}, ranked [a, b, c, d] -> hits 1 0 1 0 (R = 2)
# Query B: relevant {x},    ranked [a, b, x, d] -> hits 0 0 1 0 (R = 1)
# Query C: relevant {p, q, r}, ranked [p, z, y, w] -> hits 1 0 0 0 (R = 3; q and r never retrieved)
# Query D: relevant {m},    ranked [a, b, c, d] -> hits 0 0 0 0 (R = 1)
HITS = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
R = np.array([2, 1, 3, 1])


def test_recall_precision_hit_rate_by_hand():
    assert recall_at_k(HITS, R, 1).tolist() == [1 / 2, 0, 1 / 3, 0]
    assert recall_at_k(HITS, R, 3).tolist() == [1, 1, 1 / 3, 0]
    assert precision_at_k(HITS, 1).tolist() == [1, 0, 1, 0]
    assert precision_at_k(HITS, 3).tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0])
    assert hit_rate_at_k(HITS, 1).tolist() == [1, 0, 1, 0]
    assert hit_rate_at_k(HITS, 3).tolist() == [1, 1, 1, 0]
    # with one relevant image (query B), hit rate and recall are the same number: the papers' R@k
    assert hit_rate_at_k(HITS[1:2], 3) == recall_at_k(HITS[1:2], R[1:2], 3)


def test_reciprocal_rank_average_precision_ndcg_by_hand():
    assert reciprocal_rank(HITS).tolist() == [1, 1 / 3, 1, 0]
    # A: (P@1 + P@3) / min(2, 3) = (1 + 2/3) / 2;  B: P@3 / 1;  C: P@1 / min(3, 3);  D: 0
    assert average_precision_at_k(HITS, R, 3).tolist() == pytest.approx([5 / 6, 1 / 3, 1 / 3, 0])
    assert average_precision_at_k(HITS, R, 1).tolist() == pytest.approx([1, 0, 1, 0])  # C: 1 / min(3, 1)
    # A: (1 + 1/log2(4)) / (1 + 1/log2(3));  B: (1/log2(4)) / 1;  C: 1 / (1 + 1/log2(3) + 1/log2(4))
    assert ndcg_at_k(HITS, R, 3).tolist() == pytest.approx(
        [1.5 / (1 + 1 / math.log2(3)), 0.5, 1 / (1.5 + 1 / math.log2(3)), 0]
    )


def test_metrics_table_has_every_metric_per_query():
    table = metrics_table(HITS, R, [1, 3])
    assert list(table.columns) == [
        *["recall@1", "recall@3", "hit_rate@1", "hit_rate@3", "precision@1", "precision@3"],
        *["AP@1", "AP@3", "nDCG@1", "nDCG@3", "RR"],
    ]
    assert table["AP@3"].tolist() == pytest.approx([5 / 6, 1 / 3, 1 / 3, 0])


def test_metrics_refuse_k_beyond_the_depth_and_queries_without_answers():
    with pytest.raises(ValueError, match="depth"):
        recall_at_k(HITS, R, 5)
    with pytest.raises(ValueError, match="at least one relevant"):
        ndcg_at_k(HITS, np.array([2, 1, 0, 1]), 3)


def test_relevance_matrix_is_per_query_and_ignores_padding():
    ranked = np.array([[5, 3, -1], [3, 5, 9]])
    assert relevance_matrix(ranked, [{3}, {9, 5}]).tolist() == [[False, True, False], [False, True, True]]
    big = (1 << 62) + 7  # content ids are 63-bit
    assert relevance_matrix(np.array([[big, 1]]), [{big}]).tolist() == [[True, False]]


def test_average_precision_and_ndcg_match_scikit_learn_on_full_rankings():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y_true = rng.random(n) < rng.uniform(0.05, 0.6)
        y_true[rng.integers(n)] = True  # at least one relevant item
        scores = rng.random(n)  # distinct: no ties to break
        hits = y_true[np.argsort(-scores)][None, :]
        n_relevant = np.array([y_true.sum()])
        assert average_precision_at_k(hits, n_relevant, n)[0] == pytest.approx(average_precision_score(y_true, scores))
        for k in {1, 3, 10, n} & set(range(1, n + 1)):
            expected = ndcg_score(y_true[None, :].astype(float), scores[None, :], k=k)
            assert ndcg_at_k(hits, n_relevant, k)[0] == pytest.approx(expected)


def _reference(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """The definitions written as plain loops, independently of the vectorized code."""
    rel = [1 if r in relevant else 0 for r in ranked[:k]]
    first = next((i for i, r in enumerate(ranked) if r in relevant), None)
    precisions = [sum(rel[: i + 1]) / (i + 1) for i in range(len(rel)) if rel[i]]
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return {
        f"recall@{k}": sum(rel) / len(relevant),
        f"precision@{k}": sum(rel) / k,
        f"hit_rate@{k}": float(any(rel)),
        f"AP@{k}": sum(precisions) / min(len(relevant), k),
        f"nDCG@{k}": dcg / ideal,
        "RR": 0.0 if first is None else 1 / (first + 1),
    }


def test_vectorized_metrics_match_a_loop_implementation_on_truncated_rankings():
    rng = np.random.default_rng(1)
    ranked = [list(rng.choice(60, size=12, replace=False)) for _ in range(200)]
    relevant = [set(rng.choice(60, size=int(rng.integers(1, 15)), replace=False).tolist()) for _ in range(200)]
    hits = relevance_matrix(np.array(ranked), relevant)
    for k in (1, 5, 12):
        table = metrics_table(hits, np.array([len(r) for r in relevant]), [k])
        expected = pd.DataFrame([_reference(r, s, k) for r, s in zip(ranked, relevant)])
        pd.testing.assert_frame_equal(table[expected.columns], expected, check_exact=False, rtol=1e-12)


# ---------------------------------------------------------------- query sets


@pytest.fixture(scope="module")
def data(bundled):
    return EvalData.from_rows("bundled", bundled)


def test_relevance_is_by_content_so_the_duplicate_file_is_one_image(data, bundled):
    duplicated = data.images[data.images.image_id.duplicated(keep=False)]
    assert len(duplicated) == 2 and duplicated.image_id.nunique() == 1  # one photo at two paths
    (image_id,) = set(duplicated.image_id)
    captions = caption_queries(data)
    assert len(captions.texts) == 784  # 785 rows, but the duplicate's (caption, image) pair counts once
    assert all(len(r) == 1 for r in captions.relevant)
    categories = category_queries(data)
    by_label = dict(zip(categories.labels, categories.relevant))
    assert set(duplicated.label) == {"military", "people"}
    assert image_id in by_label["military"] and image_id in by_label["people"]
    assert sum(len(r) for r in categories.relevant) == len(bundled)  # 785 (label, image) pairs
    assert categories.texts[categories.labels.index("animals")] == ("a photo of a animals.",)


def test_merging_identical_captions_makes_every_photo_with_that_caption_relevant(data):
    merged = caption_queries(data, merge_identical=True)
    flower = merged.relevant[merged.texts.index(("A flower.",))]
    assert len(flower) == 6
    assert len(merged.texts) == data.captions.caption.nunique()


def test_template_ensembles_give_several_texts_per_category(data):
    templates = ("a photo of a {category}.", "{category}.")
    queries = category_queries(data, templates)
    assert queries.texts[queries.labels.index("naturalforces")] == ("a photo of a naturalforces.", "naturalforces.")


# ---------------------------------------------------------------- the real path


@pytest.fixture(scope="module")
def milvus_and_exact(engine, encoder, data):
    """The session's indexed bundled photos, evaluated through Milvus and by exact numpy search."""
    milvus = evaluate(encoder, data, engine.store, ks=(1, 5, 10), depth=50)
    exact = evaluate(encoder, data, engine.store, ks=(1, 5, 10), depth=50, search="exact")
    return milvus, exact


def test_flat_milvus_search_scores_the_same_as_exact_search(milvus_and_exact):
    milvus, exact = milvus_and_exact
    assert list(milvus.summary.index) == [("caption->image", "milvus"), ("category->images", "milvus")]
    assert list(milvus.summary.queries) == [784, 16]
    metrics = [c for c in milvus.per_query.columns if "@" in c or c == "RR"]
    np.testing.assert_allclose(milvus.per_query[metrics], exact.per_query[metrics], atol=1e-9)
    assert (milvus.ranked == exact.ranked).mean() > 0.99  # the same lists, up to float ties


def test_caption_scores_match_the_comparison_modules_independent_count(milvus_and_exact, engine, data):
    sample = data.images.drop_duplicates("image_id").sample(120, random_state=0)
    expected = caption_quality(engine, sample)  # compare.py's own count, depth 50
    per_query = milvus_and_exact[0].per_query
    chosen = per_query[
        [(q, r[0]) in set(zip(sample.caption, sample.image_id)) for q, r in zip(per_query["query"], per_query.relevant)]
    ]
    assert len(chosen) == 120
    for k in (1, 5, 10):
        assert chosen[f"recall@{k}"].mean() == pytest.approx(expected[f"R@{k}"])
        assert (chosen[f"hit_rate@{k}"] == chosen[f"recall@{k}"]).all()  # one relevant image per caption
    assert chosen.RR.mean() == pytest.approx(expected["MRR"])


def test_batched_ranking_is_what_the_search_pipeline_returns(milvus_and_exact, engine):
    milvus = milvus_and_exact[0]
    for row in [0, 100, 500, 790]:
        query = milvus.per_query["query"].iloc[row]
        assert [h.id for h in engine.search(query, top_k=10)] == milvus.ranked[row, :10].tolist()


def test_summary_curve_labels_and_failure_gallery_agree(milvus_and_exact):
    milvus = milvus_and_exact[0]
    curve = milvus.curve("recall")
    assert list(curve.index) == list(range(1, 51))
    assert (curve.diff().dropna() >= 0).all().all()  # recall never falls as k grows
    for k in (1, 5, 10):
        assert curve.loc[k].tolist() == pytest.approx(milvus.summary[f"recall@{k}"].tolist())
    assert milvus.curve("hit_rate").loc[10].tolist() == pytest.approx(milvus.summary["hit_rate@10"].tolist())
    table = milvus.by_label("caption->image")
    assert table.queries.sum() == 784 and table.RR.is_monotonic_increasing
    paths, titles = milvus.failure_gallery("caption->image", n=3, top=4)
    assert len(paths) == len(titles) == 15 and titles[0].startswith("wanted for")
    worst = milvus.per_query[milvus.per_query.set == "caption->image"].RR.min()
    assert worst == 0.0  # some captions do not find their photo in the top 50


def test_a_collection_with_other_images_is_refused(tmp_path, encoder, karpathy):
    store = ImageStore.open(Config(uri=str(tmp_path / "mixed.db")), encoder)
    store.insert([{"id": 1, "path": "/elsewhere.png", "label": "", "caption": ""}], encoder.encode_texts(["x"]))
    with pytest.raises(StoreError, match="holds 1 images that are not in"):
        evaluate(encoder, load_karpathy(karpathy, karpathy.parent / "images"), store)
    store.close()


# ---------------------------------------------------------------- Karpathy-split files


@pytest.fixture
def karpathy(tmp_path, bundled):
    """A tiny Karpathy-format file: 3 test images (one COCO-style under a filepath), 1 train image."""
    picks = bundled.drop_duplicates("caption").iloc[[0, 40, 120, 200]]
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    entries = []
    for i, row in enumerate(picks.itertuples()):
        filepath = "val2014" if i == 1 else ""
        shutil.copyfile(row.path, tmp_path / "images" / filepath / f"{i}.png")
        sentences = [{"raw": row.caption, "tokens": []}, {"raw": f" {row.label} ", "tokens": []}]
        entry = {"filename": f"{i}.png", "split": "train" if i == 3 else "test", "sentences": sentences}
        entries.append({**entry, "filepath": filepath} if filepath else entry)
    path = tmp_path / "dataset_tiny.json"
    path.write_text(json.dumps({"images": entries, "dataset": "tiny"}))
    return path


def test_karpathy_loader_reads_one_split_with_every_sentence(karpathy):
    data = load_karpathy(karpathy, karpathy.parent / "images")
    assert data.name == "tiny_test"
    assert len(data.images) == 3 and data.images.path.iloc[1].endswith("images/val2014/1.png")
    assert len(data.captions) == 6 and (data.captions.caption == data.captions.caption.str.strip()).all()
    assert data.images.image_id.tolist() == [content_id(open(p, "rb").read()) for p in data.images.path]
    assert len(load_karpathy(karpathy, karpathy.parent / "images", split="train").images) == 1


def test_karpathy_evaluation_runs_the_real_path(karpathy, encoder):
    data = load_eval_data(karpathy, karpathy.parent / "images")
    result = evaluate(encoder, data, ks=(1, 3))  # a temporary milvus-lite file
    assert list(result.summary.index) == [("caption->image", "milvus")]  # no labels: no category queries
    assert result.summary.queries.iloc[0] == 6
    assert (result.per_query["hit_rate@3"] == 1).all()  # 3 images: every caption finds its own in the top 3
    assert (result.per_query.n_relevant == 1).all()


def test_karpathy_missing_images_or_split_are_clear_errors(karpathy):
    with pytest.raises(DatasetError, match="3 of 3 images cannot be read"):
        load_karpathy(karpathy)  # images are not beside the JSON
    with pytest.raises(DatasetError, match=r"no images in split 'val'.*\['test', 'train'\]"):
        load_karpathy(karpathy, karpathy.parent / "images", split="val")


# ---------------------------------------------------------------- `t2i eval`


def _eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="t2i")
    add_eval_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *argv])


def test_t2i_eval_prints_the_table_and_writes_csv_and_json(engine, tmp_path, capsys):
    # The session's temporary milvus-lite file already holds the bundled photos: no re-embedding.
    args = _eval_args("--uri", engine.config.uri, "--collection", engine.config.collection, "--exact")
    args.out = str(tmp_path / "out")
    assert run_eval(args) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line and not line.startswith("wrote")}
    for metric in ("recall@1", "recall@5", "recall@10", "MRR", "mAP@10", "nDCG@10"):
        assert len(lines[metric]) == 4, metric  # caption and category, Milvus and exact
    per_query = pd.read_csv(next((tmp_path / "out").glob("*-per_query.csv")))
    record = json.loads(next((tmp_path / "out").glob("*-summary.json")).read_text())
    assert record["dataset"] == "bundled" and record["encoder"] == "conse-effnet-minilm"
    captions = per_query[(per_query.set == "caption->image") & (per_query.search == "milvus")]
    assert record["summary"]["caption->image"]["recall@10"] == pytest.approx(captions["recall@10"].mean())
    assert float(lines["recall@10"][0]) == pytest.approx(captions["recall@10"].mean(), abs=5e-4)
    assert record["summary"]["caption->image (exact)"]["MRR"] == pytest.approx(
        record["summary"]["caption->image"]["MRR"]
    )


def test_t2i_eval_errors_are_one_line_with_exit_status_1(tmp_path, capsys):
    args = _eval_args("--dataset", str(tmp_path / "missing.csv"), "--uri", str(tmp_path / "e.db"))
    assert run_eval(args) == 1
    assert capsys.readouterr().err.startswith("t2i: error: ")


# ---------------------------------------------------------------- the ANN index study


def test_synthetic_embeddings_are_unit_rows_and_reproducible():
    base = synthetic_embeddings(np.eye(8, dtype=np.float32), 20, seed=3)
    again = synthetic_embeddings(np.eye(8, dtype=np.float32), 20, seed=3)
    assert base.shape == (20, 8) and np.allclose(np.linalg.norm(base, axis=1), 1)
    assert np.array_equal(base, again)
    assert neighbour_recall(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)


def test_exact_top_k_is_a_full_sort():
    rng = np.random.default_rng(2)
    queries, vectors = rng.normal(size=(5, 6)), rng.normal(size=(30, 6))
    rows, scores = exact_top_k(queries, vectors, 7)
    assert np.array_equal(rows, np.argsort(-(queries @ vectors.T), axis=1)[:, :7])
    assert exact_top_k(queries, vectors, 99)[0].shape == (5, 30)


def test_index_study_runs_on_milvus_lite_with_flat_exact(tmp_path):
    base = np.random.default_rng(0).normal(size=(300, 48)).astype(np.float32)
    vectors = synthetic_embeddings(base, 3000, noise=0.5, seed=1)
    queries = synthetic_embeddings(base, 100, noise=0.5, seed=2)
    sweeps = [IndexSweep("FLAT", {}), IndexSweep("IVF_FLAT", {"nlist": 16}, ({"nprobe": 1}, {"nprobe": 16}))]
    table = index_study(vectors, queries, sweeps, top_k=10, n_latency=5, uri=str(tmp_path / "ann.db"))
    recall = dict(zip(table["index"] + " " + table.params, table["recall@10"]))
    assert recall["numpy exact (in process) "] == 1.0 and recall["FLAT "] == 1.0
    assert 0 < recall["IVF_FLAT nlist=16 nprobe=1"] <= recall["IVF_FLAT nlist=16 nprobe=16"] <= 1
    assert (table.p50_ms > 0).all() and (table.vectors == 3000).all()


def test_index_support_reports_what_builds(tmp_path):
    vectors = synthetic_embeddings(np.random.default_rng(0).normal(size=(50, 32)), 1000)
    kinds = ["FLAT", "IVF_FLAT", "HNSW", "NO_SUCH_INDEX"]
    table = index_support(vectors, vectors[:20], kinds, uri=str(tmp_path / "s.db"))
    assert table.builds.tolist() == [True, True, False, False]  # milvus-lite 2.5 builds FLAT, IVF_FLAT, AUTOINDEX
    assert table["recall@10"].iloc[0] == 1.0 and 0 < table["recall@10"].iloc[1] <= 1
    assert "HNSW" in table.note.iloc[2] and "NO_SUCH_INDEX" in table.note.iloc[3]


def test_standard_sweeps_scale_nlist_with_the_collection():
    assert [s.index_type for s in standard_sweeps(100_000)] == ["FLAT", "IVF_FLAT", "HNSW", "HNSW", "HNSW"]
    assert standard_sweeps(100_000)[1].build_params == {"nlist": 256}
    assert standard_sweeps(784)[1].build_params == {"nlist": 16}
    assert max(p["nprobe"] for p in standard_sweeps(784)[1].search_params) == 16


def test_faiss_backend_runs_the_same_sweeps_in_process():
    base = np.random.default_rng(0).normal(size=(300, 48)).astype(np.float32)
    vectors, queries = synthetic_embeddings(base, 3000, noise=0.5, seed=1), synthetic_embeddings(base, 50, seed=2)
    sweeps = [
        IndexSweep("FLAT", {}),
        IndexSweep("IVF_FLAT", {"nlist": 16}, ({"nprobe": 1}, {"nprobe": 16})),
        IndexSweep("HNSW", {"M": 4, "efConstruction": 16}, ({"ef": 10}, {"ef": 300})),
    ]
    table = index_study(vectors, queries, sweeps, n_latency=5, backend="faiss")
    assert table.backend.tolist() == ["numpy"] + ["faiss"] * 5
    recall = table["recall@10"].tolist()
    assert recall[:2] == [1.0, 1.0] and recall[2] < recall[3] == 1.0 and recall[4] < recall[5]
