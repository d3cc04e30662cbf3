"""Store schema 3: a schema-2 collection migrates in place (also after a kill -9), and a Milvus 2.3 server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pymilvus import DataType, MilvusClient

from t2i_helpers.config import Config
from t2i_helpers.data.images import content_id
from t2i_helpers.engine import SearchEngine
from t2i_helpers.pipelines import operators
from t2i_helpers.store.collection import META_PREFIX, PHOTO_FIELDS, SCHEMA_VERSION, add_class_fields, add_photo_fields
from t2i_helpers.store.filters import Filters
from t2i_helpers.store.image_store import ImageStore, StoreError
from t2i_helpers.store.keywords import add_keyword_fields, path_keywords

from .photos import write_library
from .test_remember import INJECTIONS

BACKUP = "t2i_images__migrating"


def version_2_collection(uri: str, rows: list[dict], dim: int, encoder_name: str) -> None:
    """A collection as t2i's schema version 2 wrote it: size, mtime_ns and keywords, no photo fields."""
    client = MilvusClient(uri=uri)
    meta = {"schema_version": 2, "encoder": encoder_name, "dim": dim, "keywords": True}
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=META_PREFIX + json.dumps(meta)
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name, length in {"path": 4096, "label": 512, "caption": 2048}.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    for name in ("size", "mtime_ns"):
        schema.add_field(name, DataType.INT64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    add_keyword_fields(schema, index)
    client.create_collection("t2i_images", schema=schema, index_params=index, consistency_level="Strong")
    client.insert("t2i_images", [{**r, "keywords": path_keywords(r["path"])} for r in rows])
    client.flush("t2i_images")


def keywordless_collection(uri: str, version: int, encoder) -> MilvusClient:
    """A collection of schema `version` (3 or 4) as t2i wrote it, without the keyword field; its open client."""
    client = MilvusClient(uri=uri)
    meta = {"schema_version": version, "encoder": encoder.name, "dim": encoder.dim}
    schema = MilvusClient.create_schema(auto_id=False, description=META_PREFIX + json.dumps(meta))
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name, length in {"path": 4096, "label": 512, "caption": 2048}.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    for name in ("size", "mtime_ns"):
        schema.add_field(name, DataType.INT64)
    add_photo_fields(schema)
    if version >= 4:
        add_class_fields(schema)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=encoder.dim)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    client.create_collection("t2i_images", schema=schema, index_params=index, consistency_level="Strong")
    return client


# In another process (milvus-lite serves a file to one process): the schema-2 collection is made, its migration
# starts, and the process is killed with SIGKILL while the rows are being copied back.
KILLED_MID_COPY = """
import json, os, signal
from t2i_helpers.config import Config
from t2i_helpers.store.collection import CLASS_FIELDS, PHOTO_FIELDS
from t2i_helpers.store.image_store import ImageStore
from tests.test_schema3 import BACKUP, version_2_collection
rows = json.load(open({rows!r}))
version_2_collection({uri!r}, rows, {dim}, {name!r})
store = ImageStore(Config(uri={uri!r}, collection="other"), {name!r}, {dim})  # a store on the same file
store._create(BACKUP)  # the migration: rows copied into the backup, the old collection dropped and made anew,
store._copy_rows("t2i_images", BACKUP)
store.client.drop_collection("t2i_images")
store._create("t2i_images")
half = store.scan(["id", "path", "label", "caption", "size", "mtime_ns", "embedding"], collection=BACKUP)[:3]
store.client.upsert("t2i_images", store._stored([{{**dict(r), **PHOTO_FIELDS, **CLASS_FIELDS}} for r in half]))
store.client.flush("t2i_images")
os.kill(os.getpid(), signal.SIGKILL)  # ... and killed while copying the rows back
"""


def test_a_schema_2_collection_killed_mid_migration_loses_no_row_and_reads_headers_only(tmp_path, encoder, monkeypatch):
    paths = list(write_library(tmp_path / "photos").values())
    uri, listed = str(tmp_path / "v2.db"), tmp_path / "rows.json"
    embedded = encoder.encode_images([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    vectors = {content_id(p.read_bytes()): v for p, v in zip(paths, embedded)}
    rows = [
        {
            "id": i,
            "path": str(p),
            "label": "",
            "caption": "",
            "size": p.stat().st_size,
            "mtime_ns": p.stat().st_mtime_ns,
        }
        for i, p in zip(vectors, paths)
    ]
    listed.write_text(json.dumps([{**r, "embedding": v.tolist()} for r, v in zip(rows, embedded)]))
    script = KILLED_MID_COPY.format(uri=uri, rows=str(listed), name=encoder.name, dim=encoder.dim)
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert killed.returncode == -9, killed.stderr

    store = ImageStore.open(Config(uri=uri), encoder)  # finishes the migration
    assert store.info()["schema_version"] == SCHEMA_VERSION == 4 and store.count() == len(paths)
    assert not store.client.has_collection(BACKUP)
    for image_id, vector in vectors.items():  # every vector came along: nothing re-embedded
        assert store.search(vector[None, :], top_k=1)[0][0].id == image_id
    assert {r["taken_from"] for r in store.get(vectors)} == {""}  # not known yet
    store.close()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a migrated photo was decoded")

    monkeypatch.setattr(operators, "decode_photo", no_decoding)
    engine = SearchEngine.open(Config(uri=uri, data_dir=tmp_path), encoder)
    report = engine.index(tmp_path / "photos", progress=False)
    assert report.summary() == f"added 0, unchanged {len(paths)}, updated 0, removed 0, skipped 0, described 8"
    assert {h.place for h in engine.find(None, Filters(camera="canon"), top_k=10).hits} == {
        "Lisbon, Portugal",
        "Sydney, New South Wales, Australia",
        "",
    }
    again = engine.index(tmp_path / "photos", progress=False)
    assert again.summary() == f"added 0, unchanged {len(paths)}, updated 0, removed 0, skipped 0"
    engine.close()


def test_a_milvus_2_3_server_holds_the_photo_fields_and_refuses_what_it_cannot(milvus_uri, tmp_path, encoder):
    library = write_library(tmp_path / "photos")
    config = Config(uri=milvus_uri, collection="remember", data_dir=tmp_path)
    engine = SearchEngine.open(config, encoder, reset=True)
    assert engine.index(tmp_path / "photos", progress=False).added == len(library)
    assert {h.path.rsplit("/", 1)[-1] for h in engine.find(None, Filters(place="lisbon", after="2022")).hits} == {
        "lisbon.jpg"
    }
    tokyo = engine.find("a photo in Tokyo")
    assert [h.place for h in tokyo.hits] == ["Tokyo, Japan"] and tokyo.understood == {"place": "Tokyo"}
    assert {h.camera for h in engine.search("a photo", 10, filters=Filters(camera="pixel 7"))} == {"Google Pixel 7"}
    for value in INJECTIONS:
        assert engine.find("a photo", Filters(place=value, camera=value)).hits == []
        assert engine.find(None, Filters(place=value)).hits == []
    with pytest.raises(StoreError, match="matches by prefix only"):
        engine.find(None, Filters(text="bakery"))
    engine.close()


def test_a_schema_3_collection_migrates_to_4_with_no_classes_and_its_text_keyed_as_searched_now(tmp_path, encoder):
    """Rows of schema 3 come over with their vectors, no classes (the move recovers them) and the text read in
    them keyed again: a sign stored with a key made before accents were folded is found by `--text bäckerei`."""
    uri = str(tmp_path / "v3.db")
    client = keywordless_collection(uri, 3, encoder)
    vectors = encoder.encode_texts(["a bakery", "a dog"])
    signs = ["BÄCKEREI MÜLLER", ""]
    rows = [
        {"id": i + 1, "path": f"/p/{i}.jpg", "label": "", "caption": "", "size": 1, "mtime_ns": 1, **PHOTO_FIELDS}
        | {"ocr_text": sign, "ocr_key": sign, "ocr_read": True, "embedding": v.tolist()}
        for i, (sign, v) in enumerate(zip(signs, vectors))
    ]
    client.insert("t2i_images", rows)
    client.close()

    store = ImageStore.open(Config(uri=uri), encoder)
    try:
        assert store.info()["schema_version"] == SCHEMA_VERSION == 4 and store.count() == 2
        stored = {r["id"]: r for r in store.scan(["id", "classes", "class_weights", "ocr_text", "embedding"])}
        assert {i: (r["classes"], r["class_weights"], r["ocr_text"]) for i, r in stored.items()} == {
            1: ([], [], "BÄCKEREI MÜLLER"),
            2: ([], [], ""),
        }
        assert np.allclose([stored[1]["embedding"], stored[2]["embedding"]], vectors, atol=1e-6)
        found = store.search(vectors[1], top_k=2, filters=Filters(text="bäckerei"))[0]
        assert [h.id for h in found] == [1]
    finally:
        store.close()
