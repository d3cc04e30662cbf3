"""The encoder comparison: measured rows for models that load, reasons for those that cannot."""

from __future__ import annotations

import pandas as pd

from t2i_helpers.data.images import read_image
from t2i_helpers.measure import compare
from t2i_helpers.measure.compare import (
    CANDIDATES,
    FP32,
    INT8,
    PUBLISHED,
    Candidate,
    caption_quality,
    compare_encoders,
    pareto_front,
)


def test_compare_measures_loadable_and_explains_skipped(bundled, tmp_path):
    photos = bundled.sample(60, random_state=0)
    candidates = [
        Candidate("lite0", "conse-effnet-lite0-minilm"),
        Candidate("lite2 T=5", "conse-effnet-minilm", {"top_t": 5}),
        Candidate("no such model", "hf:/nonexistent/model/dir"),
    ]
    cache = tmp_path / "compare.csv"
    table = compare_encoders(photos, candidates=candidates, cache=cache)
    assert list(table.status) == ["ok", "ok", "skipped"]
    ok = table[table.status == "ok"]
    assert (ok.dim == 384).all() and (ok["images/s"] > 0).all() and (ok["params (M)"] > 20).all()
    assert ((ok["R@1"] <= ok["R@5"]) & (ok["R@5"] <= ok["R@10"])).all()
    assert (ok["R@10"] > 10 / len(photos)).all()  # above chance
    assert table.reason.iloc[2]  # the reason is kept, never dropped silently
    cached = compare_encoders(photos, candidates=[], cache=cache)  # read back, not recomputed
    pd.testing.assert_frame_equal(cached, pd.read_csv(cache))
    assert len(cached) == 3


def test_clip_without_weights_gets_speed_from_a_stand_in_and_published_quality(bundled, tmp_path, monkeypatch):
    photos = bundled.sample(40, random_state=1)
    monkeypatch.setitem(compare.STAND_INS, "hf:/no/weights/here", "hf-random:ViT-B-32")  # never the hub
    candidates = [
        Candidate("lite0", "conse-effnet-lite0-minilm"),
        Candidate("CLIP ViT-B/32 (OpenAI)", "hf:/no/weights/here"),
        Candidate("CLIP ViT-B/32 (LAION-2B)", "hf:/no/weights/here"),
    ]
    table = compare_encoders(photos, candidates=candidates).set_index("encoder")
    row = table.loc["CLIP ViT-B/32 (OpenAI)"]
    assert row.status == "speed only" and "random weights (hf-random:ViT-B-32)" in row.reason
    assert row.dim == 512 and 150 < row["params (M)"] < 153 and row["index (MB)"] > 0
    assert row["images/s"] > 0 and row["images/s (eager fp32)"] > 0 and row.backend.startswith("image=")
    assert pd.isna(row["R@10"]) and pd.isna(row["load (s)"])  # random embeddings measure no quality
    assert table.loc["lite0", "R@10"] > 0 and table.loc["lite0", "backend"] == "onnx-int8"  # the same table
    assert table["Flickr30k R@10 (published)"].tolist()[1:] == [90.0, 93.1]
    shared = ["images/s", "query p50 (ms)", "index (MB)"]  # one stand-in, measured once for both
    assert table.loc["CLIP ViT-B/32 (LAION-2B)", shared].tolist() == row[shared].tolist()


def test_caption_quality_matches_a_direct_count(engine, bundled):
    sample = bundled.sample(40, random_state=3)
    scores = caption_quality(engine, sample)
    found = sum(
        read_image(row.path)[0] in {h.id for h in engine.search(row.caption, top_k=10)} for row in sample.itertuples()
    )
    assert abs(scores["R@10"] - found / len(sample)) < 1e-9
    # a first-ranked photo adds 1 to MRR; one ranked 11th or lower adds at most 1/11
    assert scores["R@1"] <= scores["MRR"] <= scores["R@10"] + (1 - scores["R@10"]) / 11


def test_pareto_front_keeps_only_undominated():
    table = pd.DataFrame(
        {"encoder": list("abcd"), "status": "ok", "R@10": [0.3, 0.2, 0.25, 0.1], "images/s": [10, 50, 5, 40]}
    )
    assert list(pareto_front(table, "R@10", "images/s").encoder) == ["a", "b"]
    assert PUBLISHED.shape[0] == 5


def test_each_conse_size_is_compared_in_fp32_and_int8_side_by_side():
    """Notebook 02's table: every ConSE classifier size has an fp32 row directly followed by its int8 row."""
    fp32 = [c for c in CANDIDATES if c.kwargs == FP32]
    assert {c.name for c in fp32} == {"conse-effnet-lite0-minilm", "conse-effnet-lite1-minilm", "conse-effnet-minilm"}
    for candidate in fp32:
        following = CANDIDATES[CANDIDATES.index(candidate) + 1]
        assert (following.name, following.kwargs) == (candidate.name, INT8), candidate.label
    (default,) = [c for c in CANDIDATES if "(default)" in c.label]
    assert (default.name, default.kwargs) == ("conse-effnet-minilm", INT8)
