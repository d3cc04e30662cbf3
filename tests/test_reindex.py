"""Re-indexing a photo library: unchanged files are not opened, changed ones are, and old stores migrate."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pymilvus import DataType, MilvusClient

from t2i_helpers.cli import main
from t2i_helpers.config import Config
from t2i_helpers.data.images import content_id
from t2i_helpers.engine import SearchEngine
from t2i_helpers.store.collection import META_PREFIX
from t2i_helpers.store.image_store import ImageStore

from .conftest import index_counts

NOBODY = 65534


@contextlib.contextmanager
def as_another_user():
    """Run the block with the effective uid of `nobody` when this is root, so that `chmod 000` keeps us out."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def open_folder():
    """A folder that `nobody` may enter (pytest's own temporary folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="t2i-reindex-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _copy(bundled, folder, count: int) -> list:
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{i:03d}.png" for i in range(count)]
    for source, target in zip(bundled.path, paths):
        shutil.copyfile(source, target)
    return paths


def test_an_unchanged_folder_is_reindexed_without_opening_a_file(tmp_path, open_folder, bundled, encoder):
    folder = open_folder / "photos"
    paths = _copy(bundled, folder, 12)
    folder.chmod(0o755)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "r.db"), data_dir=tmp_path), encoder)
    assert engine.index(folder, progress=False).added == 12
    for path in paths:
        path.chmod(0)  # size and mtime stay: only opening the file would notice
    try:
        with as_another_user():
            with open(paths[0], "rb"):
                pytest.fail("chmod 000 did not keep this test out of the file")
    except PermissionError:
        pass
    with as_another_user():
        again = engine.index(folder, progress=False)
        verified = engine.index(folder, progress=False, verify=True)
    assert (again.added, again.unchanged, again.skipped) == (0, 12, [])
    assert verified.unchanged == 0 and len(verified.skipped) == 12
    assert all("unreadable" in s.reason and "ermission" in s.reason for s in verified.skipped)
    assert engine.store.count() == 12
    engine.close()


def test_new_bytes_of_the_same_size_are_an_update_and_a_touch_is_not(tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    bmp = folder / "same-size.bmp"  # uncompressed: other pixels, the same number of bytes
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(bmp)
    touched = folder / "touched.bmp"
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(touched)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "u.db"), data_dir=tmp_path), encoder)
    assert engine.index(folder, progress=False).added == 2
    old_id, size = content_id(bmp.read_bytes()), bmp.stat().st_size

    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(bmp)
    os.utime(bmp, ns=(bmp.stat().st_atime_ns, bmp.stat().st_mtime_ns + 10**9))  # a later time, whatever the clock
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert bmp.stat().st_size == size
    report = engine.index(folder, progress=False)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    stored = engine.store.file_states([str(bmp), str(touched)])
    assert stored[str(bmp)].id == content_id(bmp.read_bytes()) != old_id
    assert stored[str(touched)].mtime_ns == touched.stat().st_mtime_ns  # the touch is remembered: no reread next time
    assert engine.store.count() == 2
    engine.close()


def test_a_moved_file_keeps_its_row_under_the_new_path(tmp_path, bundled, encoder):
    folder = tmp_path / "photos"
    paths = _copy(bundled, folder, 3)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "m.db"), data_dir=tmp_path), encoder)
    engine.index(folder, progress=False)
    moved = folder / "renamed.png"
    paths[0].rename(moved)
    report = engine.index(folder, progress=False)
    assert (report.added, report.unchanged, report.skipped) == (0, 3, [])
    assert sorted(engine.store.paths().values()) == sorted(str(p) for p in [moved, *paths[1:]])
    engine.close()


def test_cli_index_verify_and_progress_with_eta(tmp_path, bundled, capsys):
    folder, uri = tmp_path / "photos", str(tmp_path / "c.db")
    _copy(bundled, folder, 5)
    assert main(["index", str(folder), "--uri", uri]) == 0
    out, err = capsys.readouterr()
    assert index_counts(out) == "added 5, unchanged 0, updated 0, removed 0, skipped 0"
    assert re.search(r"\d+/5 \[\d\d:\d\d<\d\d:\d\d", err)  # tqdm's elapsed<remaining: the ETA
    assert main(["index", str(folder), "--uri", uri, "--verify"]) == 0
    assert index_counts(capsys.readouterr().out) == "added 0, unchanged 5, updated 0, removed 0, skipped 0"


def _version_1_collection(uri: str, encoder, rows: list[dict], vectors: np.ndarray) -> None:
    """A collection as t2i's schema version 1 wrote it: no size or mtime fields."""
    client = MilvusClient(uri=uri)
    meta = {"schema_version": 1, "encoder": encoder.name, "dim": encoder.dim}
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=META_PREFIX + json.dumps(meta)
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name, length in {"path": 4096, "label": 512, "caption": 2048}.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=encoder.dim)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    client.create_collection("t2i_images", schema=schema, index_params=index, consistency_level="Strong")
    client.insert("t2i_images", [{**r, "embedding": v.tolist()} for r, v in zip(rows, vectors)])
    client.flush("t2i_images")
    client.close()


def test_a_version_1_collection_is_migrated_in_place_without_losing_a_row(tmp_path, bundled, encoder):
    folder = tmp_path / "photos"
    paths = _copy(bundled, folder, 6)
    rows = [
        {"id": content_id(p.read_bytes()), "path": str(p), "label": "", "caption": f"c{i}"} for i, p in enumerate(paths)
    ]
    vectors = encoder.encode_images([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    uri = str(tmp_path / "old.db")
    _version_1_collection(uri, encoder, rows, vectors)

    store = ImageStore.open(Config(uri=uri), encoder)
    assert store.info()["schema_version"] == 4 and store.count() == 6
    assert {r["id"]: (r["caption"], r["size"]) for r in store.get(r["id"] for r in rows)} == {
        r["id"]: (r["caption"], -1) for r in rows
    }
    assert not store.client.has_collection("t2i_images__migrating")
    hits = store.search(vectors[:1], top_k=1)[0]
    assert hits[0].id == rows[0]["id"] and hits[0].score > 0.999  # the vectors came along
    store.close()

    engine = SearchEngine.open(Config(uri=uri, data_dir=tmp_path), encoder)
    report = engine.index(folder, progress=False)  # sizes not known: each file is hashed once, none re-embedded
    assert (report.added, report.unchanged) == (0, 6)
    assert {s.size for s in engine.store.file_states(map(str, paths)).values()} == {p.stat().st_size for p in paths}
    engine.close()


def test_a_migration_cut_off_after_the_backup_is_finished_on_the_next_open(tmp_path, encoder):
    uri = str(tmp_path / "cut.db")
    rows = [{"id": i + 1, "path": f"/p/{i}.png", "label": "x", "caption": ""} for i in range(5)]
    vectors = encoder.encode_texts([f"photo {i}" for i in range(5)])
    _version_1_collection(uri, encoder, rows, vectors)
    store = ImageStore.open(Config(uri=uri, collection="other"), encoder)  # a store on the same file
    backup = "t2i_images__migrating"
    store._create(backup)  # the first half of a migration: rows copied into the backup, the old collection dropped
    store._copy_rows("t2i_images", backup)
    store.client.drop_collection("t2i_images")
    store.close()

    reopened = ImageStore.open(Config(uri=uri), encoder)
    assert reopened.count() == 5 and not reopened.client.has_collection(backup)
    assert sorted(r["path"] for r in reopened.get(range(1, 6))) == sorted(r["path"] for r in rows)
    reopened.close()
