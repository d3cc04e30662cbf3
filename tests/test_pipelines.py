"""Towhee pipelines end to end: ingest the bundled photos, search, skip bad files, stay offline."""

from __future__ import annotations

import numpy as np
import pytest

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import scan_folder
from t2i_helpers.engine import EngineClosedError, SearchEngine
from t2i_helpers.pipelines.operators import PipelineError, pipe, run_pipeline
from t2i_helpers.pipelines.search import clean_query

from .conftest import write_bad_files


def test_bundled_ingest_counts_and_is_idempotent(engine, bundled):
    first = engine.first_report
    duplicates = [s for s in first.skipped if s.reason.startswith("same image")]
    assert first.added + len(first.skipped) == len(bundled)
    assert len(first.skipped) == len(duplicates)  # the bundled set has no broken files
    assert engine.store.count() == first.added  # right after the ingest: flushed
    again = engine.index(bundled, progress=False)
    assert (again.added, again.unchanged) == (0, first.added)
    assert engine.store.count() == first.added


def test_captions_find_their_photo(engine, bundled):
    """Caption -> its own photo, over all bundled photos: measured R@10 = 0.26 (chance 0.013)."""
    sample = bundled.sample(200, random_state=0)
    found = sum(row.path in {h.path for h in engine.search(row.caption, top_k=10)} for row in sample.itertuples())
    assert found / len(sample) >= 0.18


def test_search_pipeline_returns_ranked_hits_with_metadata(engine):
    hits = engine.search("a fire truck", top_k=5)
    assert len(hits) == 5
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert all(h.path and h.caption and h.label for h in hits)
    assert {h.label for h in engine.search("a cat", top_k=5, category="animals")} == {"animals"}


def test_image_to_image_finds_itself(engine, bundled):
    path = bundled.path.iloc[10]
    assert engine.search_image(path, top_k=1)[0].path == path


def test_bad_files_are_skipped_with_reasons(tmp_path, encoder):
    expected = write_bad_files(tmp_path)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "bad.db")), encoder)
    report = engine.index(tmp_path, progress=False)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert report.added == 1 and engine.store.count() == 1
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons.get(name))
    engine.close()


def test_pipelines_make_no_network_access(tmp_path, encoder, image_folder, no_network):
    engine = SearchEngine.open(Config(uri=str(tmp_path / "offline.db")), encoder)
    report = engine.index(scan_folder(image_folder), progress=False)
    assert report.added == 8
    assert engine.search("a dog", top_k=3)
    assert no_network == []
    engine.close()


@pytest.mark.parametrize("bad", ["", "   ", "\x00\x07", "x" * 2001, None])
def test_clean_query_refuses_empty_or_huge(bad):
    with pytest.raises(ValueError):
        clean_query(bad)


def test_clean_query_keeps_unicode_and_strips_controls():
    assert clean_query("  un  kangourou\t🦘\x00 ") == "un kangourou 🦘"


def test_query_arithmetic_through_search_vector(engine, encoder):
    dog, grass, snow = encoder.encode_texts(["a dog", "grass", "snow"])
    query = dog - grass + snow
    hits = engine.search_vector(query / np.linalg.norm(query), top_k=3)
    assert len(hits) == 3


class _Refused(ValueError):
    """An operator's own exception type, which callers must get back as itself."""


def test_run_pipeline_raises_what_an_operator_raised_not_towhees_text():
    def fails(x):
        raise _Refused(f"cannot take {x}")

    def yields_then_fails(x):
        yield x
        raise _Refused("stopped part way")

    for pipeline, message in [
        (pipe.input("x").map("x", "y", fails).output("y"), "cannot take 3"),
        (pipe.input("x").flat_map("x", "y", yields_then_fails).output("y"), "stopped part way"),
    ]:
        with pytest.raises(_Refused) as raised:
            run_pipeline(pipeline, 3)
        assert str(raised.value) == message  # the object itself: no "Node-... runs failed", no traceback text
    assert run_pipeline(pipe.input("x").map("x", "y", lambda x: x + 1).output("y"), 3).get() == [4]


def test_a_towhee_failure_outside_any_operator_is_one_line():
    two_outputs = pipe.input("x").map("x", ("a", "b"), lambda x: 5).output("a")  # Towhee cannot split 5
    with pytest.raises(PipelineError) as raised:
        run_pipeline(two_outputs, 3)
    assert str(raised.value) == "'int' object is not subscriptable"


class _BrokenTextTower:
    """A text model that fails: what reaches `engine.search`'s caller must be its own error."""

    name, dim = "broken-text-tower", 4

    def encode_images(self, images):
        return np.tile(np.float32([0.5, 0.5, 0.5, 0.5]), (len(images), 1))

    def encode_texts(self, texts):
        raise _Refused("the text tower is out of order")


def test_a_failure_inside_the_search_pipeline_reaches_the_caller_as_its_cause(tmp_path):
    engine = SearchEngine.open(Config(uri=str(tmp_path / "broken.db")), _BrokenTextTower())
    try:
        with pytest.raises(_Refused, match="^the text tower is out of order$"):
            engine.search("a dog")
    finally:
        engine.close()


def test_a_closed_engine_says_so_before_towhee_or_milvus_is_called(tmp_path, encoder, image_folder):
    engine = SearchEngine.open(Config(uri=str(tmp_path / "closed.db")), encoder)
    engine.index(image_folder, progress=False)
    image = next(image_folder.glob("*/*.png"))
    engine.close()
    engine.close()  # twice is harmless
    for use in (
        lambda: engine.search("a dog"),
        lambda: engine.search_image(image),
        lambda: engine.search_vector(np.ones(encoder.dim, np.float32)),
        lambda: engine.index(image_folder, progress=False),
        lambda: engine.info(),
        lambda: engine.store.categories(),
    ):
        with pytest.raises(EngineClosedError, match=r"was closed \(engine.close\(\)\); open it again"):
            use()
