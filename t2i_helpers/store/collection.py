"""The Milvus collection's layout: its fields and meta record, made, checked and migrated (notebook 01).

A t2i collection holds id (content hash), path, label, caption, the file's size and mtime, the embedding, what
the photo's header says (time taken, camera, place: `PHOTO_FIELDS`, notebook 06) and the text read in it, and,
where the deployment has BM25 (milvus-lite, Milvus >= 2.5), the words of the path and of that text as a keyword
field, and what the image model said (its top classes, schema 4). Its
description records `t2i {"schema_version", "encoder", "dim", "keywords"}`; `ImageStore` checks that record
on open and migrates an older schema in place, through a backup collection, so no row is ever lost.
"""

from __future__ import annotations

import json

from pymilvus import DataType, MilvusClient

from ..data.exif import INT64_MAX, NO_OFFSET, NO_TIME
from .filters import text_key
from .keywords import KEYWORD_FIELD, MAX_KEYWORD_BYTES, add_keyword_fields, keyword_support, row_keywords

# 2 added size, mtime_ns and (where supported) keywords; 3 the photo fields; 4 the image model's top classes.
# Versions 1 to 3 are migrated on open.
SCHEMA_VERSION = 4
META_PREFIX = "t2i "  # the collection description: "t2i {json meta}"
# Index types milvus-lite 2.5 builds (measured in notebook 03); HNSW, IVF_SQ8, IVF_PQ, DISKANN... need a server.
LITE_INDEX_TYPES = {"FLAT", "IVF_FLAT", "AUTOINDEX"}
TEXT_FIELDS = {"path": 4096, "label": 512, "caption": 2048}  # VARCHAR max_length
FILE_FIELDS = ("size", "mtime_ns")  # INT64: the file's size in bytes and modification time; -1 = not known
# Schema 3: the photo's time, camera and place (data/exif.py) and the text read in it (OCR), each with its value
# for "not known yet": taken_from "" marks a row whose header was not read (migrated), ocr_read False one whose
# text was not read. ocr_key is the text as `filters.text_key` matches it.
PHOTO_FIELDS = {
    "taken_at": NO_TIME,
    "taken_offset": NO_OFFSET,
    "taken_from": "",
    "camera": "",
    "camera_keys": [],
    "place": "",
    "place_keys": [],
    "ocr_text": "",
    "ocr_key": "",
    "ocr_read": False,
}
# Schema 4: what the image model said (ConSE encoders): its top class ids, most likely first, and their weights
# (summing to 1), so that a collection moves to another text tower without reading a photo (`store/move.py`).
# Empty where not known (another encoder, or a migrated row: the move recovers them from its vector).
CLASS_FIELDS = {"classes": [], "class_weights": []}
CLASSES_CAPACITY = 64
INT_FIELDS = ("id", *FILE_FIELDS, "taken_at", "taken_offset")  # INT64 in Milvus: a larger value fails the insert
MAX_OCR_BYTES = 4096
KEYS_CAPACITY = 6  # names in camera_keys (make, its first word, model, model without make, both) and place_keys
INSERT_CHUNK = 1000  # rows per insert call: milvus-lite 2.5 slows to ~200 rows/s at 5,000 or more per call


def moving_name(collection: str) -> str:
    """The collection a move of `collection` to another encoder writes into (`store/move.py`)."""
    return collection + "__moving"


def recorded_meta(client: MilvusClient, name: str) -> dict | None:
    """What collection `name` records about itself in its description, or None if t2i did not make it."""
    description = client.describe_collection(name).get("description", "")
    return json.loads(description[len(META_PREFIX) :]) if description.startswith(META_PREFIX) else None


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says what to do instead."""


class EncoderMismatchError(StoreError):
    """The collection was built with another encoder or dimension."""


def fit_int64(value: int) -> int:
    """`value` clamped into Milvus's INT64 (a file dated after 2262-04-11 has more nanoseconds than it holds: its
    time is stored as the largest, which `exif.photo_metadata` reads as no time)."""
    return max(-INT64_MAX - 1, min(INT64_MAX, int(value)))


def clip_text(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


class CollectionLayout:
    """What `ImageStore` does to its collection as a whole: create it, check its record, migrate it.

    Uses the store's `client`, `config`, `collection`, `meta`, `_backup`, `scan` and `_count`.
    """

    def _check_meta(self, name: str, *versions: int) -> int:
        """Refuse a collection not made by t2i, of another schema version or of another encoder; its version."""
        found = recorded_meta(self.client, name)
        if found is None:
            raise StoreError(
                f"collection {name!r} at {self.config.uri} was not made by t2i; choose another --collection name"
            )
        version = found.get("schema_version")
        if version not in versions:
            raise StoreError(
                f"collection {name!r} has schema version {version}, and this t2i reads {SCHEMA_VERSION} to 1: "
                "upgrade t2i to the version that wrote it, or index into another --collection"
            )
        if (found["encoder"], found["dim"]) != (self.meta["encoder"], self.meta["dim"]):
            raise EncoderMismatchError(
                f"collection {self.collection!r} holds {found['dim']}-d vectors from encoder "
                f"{found['encoder']!r}, but encoder {self.meta['encoder']!r} makes {self.meta['dim']}-d vectors. "
                f"Search it with --encoder {found['encoder']}, or index into another --collection, "
                f"or rebuild it with `t2i index ... --reset` (drops its rows)."
            )
        self.meta["keywords"] = bool(found.get("keywords", False))
        self.meta.pop("encoder_spec", None)
        if "encoder_spec" in found:
            self.meta["encoder_spec"] = found["encoder_spec"]
        return version

    def _migrate(self) -> None:
        """Bring a version-1, -2 or -3 collection to this schema in place; every step can be cut off and run again.

        milvus-lite can neither add fields nor rename collections, so the rows are copied into a backup
        collection of this schema, the collection is made anew and the rows copied back, vectors and all (fields
        the old schema lacks are "not known": the next index reads those headers, or files, once); the backup
        is dropped only when every row is back.
        """
        if not self.client.has_collection(self._backup):
            self._create(self._backup)
            self._copy_rows(self.collection, self._backup)
            self.client.drop_collection(self.collection)
        self.client.load_collection(self._backup)
        if self.client.has_collection(self.collection):
            self.client.load_collection(self.collection)
        else:
            self._create(self.collection)
        self._copy_rows(self._backup, self.collection)
        self.client.drop_collection(self._backup)

    def _copy_rows(self, source: str, target: str) -> None:
        """Upsert every row of `source` into `target` (fields `source` lacks are not known, the text read in a photo
        keyed again as `filters.text_key` matches it now); check the count."""
        has = {f["name"] for f in self.client.describe_collection(source)["fields"]}
        wanted = ["id", *TEXT_FIELDS, *FILE_FIELDS, *PHOTO_FIELDS, *CLASS_FIELDS, "embedding"]
        rows = [dict(row) for row in self.scan([f for f in wanted if f in has], collection=source)]
        for row in rows:
            for field, unknown in {**dict.fromkeys(FILE_FIELDS, -1), **PHOTO_FIELDS, **CLASS_FIELDS}.items():
                row.setdefault(field, unknown)
            row["ocr_key"] = clip_text(text_key(row["ocr_text"]), MAX_OCR_BYTES)  # as this t2i matches: accents too
        for lo in range(0, len(rows), INSERT_CHUNK):
            self.client.upsert(target, self._stored(rows[lo : lo + INSERT_CHUNK]))
        self.client.flush(target)
        if self._count(target) != len(rows):
            raise StoreError(
                f"copying collection {source!r} into {target!r} left {self._count(target)} of {len(rows)} rows; "
                f"{source!r} is kept: open the store again to retry"
            )

    def _create(self, name: str) -> None:
        if self.config.is_lite and self.config.index_type not in LITE_INDEX_TYPES:
            # checked before the collection is made: milvus-lite refuses them only at create_index
            raise StoreError(
                f"milvus-lite cannot build a {self.config.index_type} index; use one of {sorted(LITE_INDEX_TYPES)}, "
                "or a Milvus server (--uri http://host:19530) for HNSW, IVF_SQ8, IVF_PQ, DISKANN and the rest"
            )
        self.meta["keywords"] = keyword_support(self.client, self.config) is None  # measured, see keywords.py
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=META_PREFIX + json.dumps(self.meta)
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        for field, max_length in TEXT_FIELDS.items():
            schema.add_field(field, DataType.VARCHAR, max_length=max_length)
        for field in FILE_FIELDS:
            schema.add_field(field, DataType.INT64)
        add_photo_fields(schema)
        add_class_fields(schema)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.meta["dim"])
        index = self._vector_index(self.config.index_type)
        if self.meta["keywords"]:
            add_keyword_fields(schema, index)
        self.client.create_collection(  # creates the index and loads the collection
            name,
            schema=schema,
            index_params=index,
            consistency_level="Strong",  # a search sees every insert before it
        )

    def _vector_index(self, index_type: str):
        """Index parameters for the embedding: `index_type` with `config.metric` (and `config.index_params`)."""
        index = self.client.prepare_index_params()
        params = dict(self.config.index_params) if index_type == self.config.index_type else {}
        index.add_index("embedding", index_type=index_type, metric_type=self.config.metric, params=params)
        return index

    def _check_index(self) -> str:
        """The metric of the collection's vector index, which its searches must name; a FLAT index of another
        metric than `config.metric` (COSINE, the default before IP) is rebuilt with it, and a missing one (a
        rebuild cut off) built. A FLAT index is the vectors themselves: no row is read or written."""
        name = self.collection
        found = self.client.describe_index(name, "embedding") if self.client.list_indexes(name, "embedding") else None
        if found and (found["index_type"] != "FLAT" or found["metric_type"] == self.config.metric):
            return found["metric_type"]
        self.client.release_collection(name)
        if found:
            self.client.drop_index(name, "embedding")
        self.client.create_index(name, self._vector_index("FLAT" if found else self.config.index_type))
        return self.config.metric

    def _stored(self, rows: list[dict]) -> list[dict]:
        """`rows` as Milvus is given them: every integer field within INT64 (`fit_int64`), and the words of each
        one's path and text as its keywords, where the collection has that field."""
        for row in rows:
            for field in INT_FIELDS:
                if field in row:
                    row[field] = fit_int64(row[field])
            if self.meta.get("keywords"):
                row[KEYWORD_FIELD] = clip_text(row_keywords(row["path"], row.get("ocr_text", "")), MAX_KEYWORD_BYTES)
        return rows


def add_photo_fields(schema) -> None:
    """Add the schema-3 fields (`PHOTO_FIELDS`): scalars, and arrays of names for `array_contains` filters."""
    schema.add_field("taken_at", DataType.INT64)
    schema.add_field("taken_offset", DataType.INT64)
    schema.add_field("taken_from", DataType.VARCHAR, max_length=8)
    for field in ("camera", "place"):
        schema.add_field(field, DataType.VARCHAR, max_length=512)
        schema.add_field(
            f"{field}_keys",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=KEYS_CAPACITY,
            max_length=512,
        )
    schema.add_field("ocr_text", DataType.VARCHAR, max_length=MAX_OCR_BYTES)
    schema.add_field("ocr_key", DataType.VARCHAR, max_length=MAX_OCR_BYTES)
    schema.add_field("ocr_read", DataType.BOOL)


def add_class_fields(schema) -> None:
    """Add the schema-4 fields (`CLASS_FIELDS`): the image model's top class ids and their weights."""
    schema.add_field("classes", DataType.ARRAY, element_type=DataType.INT32, max_capacity=CLASSES_CAPACITY)
    schema.add_field("class_weights", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=CLASSES_CAPACITY)
