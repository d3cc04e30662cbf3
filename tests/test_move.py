"""Moving a collection to another text tower (store/move.py): no photo decoded, same ids, resumable after a kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from t2i_helpers.cli import main
from t2i_helpers.config import DEFAULT_ENCODER, MULTILINGUAL_ENCODER, Config
from t2i_helpers.data.images import read_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.store import move
from t2i_helpers.store.collection import moving_name
from t2i_helpers.store.connection import read_meta
from t2i_helpers.store.image_store import ImageStore, StoreError

OLD = DEFAULT_ENCODER  # English only
NEW = MULTILINGUAL_ENCODER
PHOTOS = 24


@pytest.fixture(scope="module")
def old_collection(tmp_path_factory, bundled):
    """A milvus-lite file with PHOTOS bundled photos indexed by the old default, half of them stripped of their
    stored classes as a collection of schema 3 has none (the move recovers them from the vectors)."""
    folder = tmp_path_factory.mktemp("move")
    uri = str(folder / "old.db")
    engine = SearchEngine.open(Config(uri=uri, encoder=OLD, data_dir=folder))
    engine.index(bundled.head(PHOTOS), progress=False)
    store = engine.store
    rows = [dict(r) for r in store.scan(["id", "path", "label", "caption", "classes", "class_weights", "embedding"])]
    assert all(len(r["classes"]) == 20 and abs(sum(r["class_weights"]) - 1) < 1e-4 for r in rows)
    stripped = [{**r, "classes": [], "class_weights": []} for r in rows[::2]]
    store.insert(stripped, np.asarray([r.pop("embedding") for r in stripped], np.float32))
    store.flush()
    engine.close()
    return uri, {int(r["id"]): r["path"] for r in rows}


def _copy(uri: str, tmp_path: Path) -> str:
    """A copy of a milvus-lite file (its server is stopped when no store is open on it)."""
    target = tmp_path / "copy.db"
    target.write_bytes(Path(uri).read_bytes())
    return str(target)


def _ids(engine: SearchEngine, query: str) -> list[int]:
    return [h.id for h in engine.search(query, top_k=PHOTOS)]


def test_an_old_collection_searches_as_it_is_then_moves_without_decoding_and_keeps_its_ids(
    old_collection, tmp_path, monkeypatch
):
    uri, paths = old_collection
    uri = _copy(uri, tmp_path)
    engine = SearchEngine.open_index(Config(uri=uri, encoder=NEW))  # the collection says which encoder: OLD
    assert engine.encoder.name == OLD and sorted(_ids(engine, "a red kangaroo")) == sorted(paths)
    engine.close()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a photo was read")

    load_encoder(OLD), load_encoder(NEW)  # loaded (and cached) first: the int8 tower may read photos to calibrate
    for module, function in ((Image, "open"), (cv2, "imread"), (cv2, "imdecode")):
        monkeypatch.setattr(module, function, no_decoding)
    report = move.move_collection(Config(uri=uri), NEW)
    monkeypatch.undo()
    assert (report.rows, report.moved, report.recovered) == (PHOTOS, PHOTOS, PHOTOS // 2)
    assert (report.source, report.target) == (OLD, NEW)
    assert read_meta(Config(uri=uri, collection=moving_name(Config().collection))) is None

    engine = SearchEngine.open_index(Config(uri=uri))
    assert engine.encoder.name == NEW and engine.store.meta["dim"] == engine.encoder.dim
    assert engine.store.paths() == paths  # the same ids, the same rows
    for query in ("a red kangaroo", "ein rotes Känguru"):
        assert sorted(_ids(engine, query)) == sorted(paths)
    # each row's new vector is what the new encoder makes of the photo (recovered classes: nearly so)
    rows = engine.store.scan(["id", "path", "classes", "embedding"])
    fresh = engine.encoder.encode_images([read_image(r["path"])[1] for r in rows])
    cosines = np.einsum("nd,nd->n", fresh, np.asarray([r["embedding"] for r in rows], np.float32))
    assert cosines.min() > 0.99 and all(len(r["classes"]) == 20 for r in rows)
    again = move.move_collection(Config(uri=uri), NEW)
    assert (again.rows, again.moved) == (0, 0)  # already there: nothing to do
    engine.close()


KILLED_MID_MOVE = """
import os, signal, sys
from t2i_helpers.config import DEFAULT_ENCODER, MULTILINGUAL_ENCODER, Config
from t2i_helpers.store import move
move.SLICE_ROWS = 4
def progress(done, total):
    print(f"{{done}}/{{total}}", flush=True)
    if done >= 8:
        os.kill(os.getpid(), signal.SIGKILL)
move.move_collection(Config(uri={uri!r}), {new!r}, progress)
"""


def test_a_move_killed_midway_goes_on_and_loses_nothing(old_collection, tmp_path):
    uri, paths = old_collection
    uri = _copy(uri, tmp_path)
    script = KILLED_MID_MOVE.format(uri=uri, new=NEW)
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert killed.returncode == -9, killed.stderr
    store = ImageStore(
        Config(uri=uri), OLD, load_encoder(OLD).dim
    )  # cut off before the old rows went: it still searches as it was
    assert store.paths() == paths and 8 <= store._count(moving_name(store.collection)) < PHOTOS
    store.close()

    def stop_after_all(done: int, total: int) -> None:
        if done == total:
            raise KeyboardInterrupt  # every row in `__moving`, the old collection not yet dropped

    with pytest.raises(KeyboardInterrupt):
        move.move_collection(Config(uri=uri), NEW, stop_after_all)
    config = Config(uri=uri)
    store = ImageStore(config, OLD, load_encoder(OLD).dim)
    store.client.drop_collection(config.collection)  # as the move does next: now only `__moving` holds the rows
    store.close()
    with pytest.raises(StoreError, match=f"was cut off: finish it with `t2i move --encoder {NEW}`"):
        ImageStore(config, NEW, load_encoder(NEW).dim)
    finished = move.move_collection(config, NEW)
    assert (finished.rows, finished.moved) == (PHOTOS, 0)
    engine = SearchEngine.open_index(config)
    assert engine.encoder.name == NEW and engine.store.paths() == paths
    assert not engine.store.client.has_collection(moving_name(config.collection))
    engine.close()


def test_the_cli_says_how_to_move_moves_and_indexes_into_the_moved_one(old_collection, tmp_path, capsys, bundled):
    uri = _copy(old_collection[0], tmp_path)
    assert main(["search", "a red kangaroo", "--uri", uri, "-k", "1"]) == 0
    assert "note:" not in capsys.readouterr().err  # an English query on an English collection: nothing to say
    assert main(["search", "ein rotes Känguru", "--uri", uri, "-k", "1"]) == 0
    assert f"reads queries in English only: `t2i move` moves it to {NEW!r}" in capsys.readouterr().err
    assert main(["move", "--uri", uri, "--encoder", "conse-effnet-lite0-minilm"]) == 1
    assert "have different image models: a move keeps it" in capsys.readouterr().err
    assert read_meta(Config(uri=uri))["encoder"] == OLD
    assert main(["move", "--uri", uri]) == 0  # to the multilingual encoder
    assert f"to {NEW}: {PHOTOS} rows, no photo read" in capsys.readouterr().out
    assert read_meta(Config(uri=uri))["encoder"] == NEW
    more = tmp_path / "more"
    more.mkdir()
    for row in bundled.iloc[PHOTOS : PHOTOS + 3].itertuples():
        (more / Path(row.path).name).write_bytes(Path(row.path).read_bytes())
    assert main(["index", str(more), "--uri", uri]) == 0  # no --encoder: the collection's own, not the default
    assert capsys.readouterr().out.startswith("added 3,")
    assert read_meta(Config(uri=uri))["encoder"] == NEW
