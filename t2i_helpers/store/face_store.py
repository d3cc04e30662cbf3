"""The faces collection beside the photos: one row per face, a person's photos in one filtered query (notebook 07).

    <collection>_faces   id (face: hash of photo id and its place in the photo), photo_id, face (false on the one
                         row per photo that says its faces were read, found or not), box [x, y, w, h] in the
                         upright photo's pixels, score, person (-1: none yet), name (the person's, "" if unnamed),
                         apart (ids of faces it must never share a person with: it was taken out of their person),
                         embedding (SFace, 128-d, unit length; inner product = cosine)

One photo has many faces; each face names its photo and its person, so "Anna's photos" is one query on `name`
and "who is in this photo" one on `photo_id`. The photos collection is not changed: deleting a photo there
deletes its faces here (`ImageStore.delete`), and a photo's faces and its "read" row are written in one upsert,
so a pass cut off reads again only photos whose faces were not stored. A version-1 collection (without `apart`)
is migrated in place when first used, through a backup collection, as the photos collection is.

Example:
    >>> faces = store.faces                                  # the ImageStore's faces collection
    >>> faces.ensure(); faces.write([FaceRow(...), ...])
    >>> faces.photos_of(["Anna", "Bob"])                     # ids of the photos with both
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
from pymilvus import DataType, MilvusClient

from .collection import META_PREFIX, StoreError, recorded_meta

FACE_SCHEMA_VERSION = 2  # 2 added `apart`; version 1 is migrated on first use
FACE_DIM = 128
MAX_NAME_BYTES = 256
MAX_APART = 16  # faces a face taken out of a person is kept apart from: that person's surest faces
FACE_FIELDS = ["id", "photo_id", "box", "score", "person", "name", "apart"]  # a face row, but for its vector
NO_PERSON = -1
NAMES_MAX_AGE_S = 60.0  # how long `names()` trusts what it read


class PersonError(StoreError, ValueError):
    """A person asked for is not there (no faces read yet, no such id or name) or a name or merge is refused: the
    user's input, not the store (404 in the API's search, one line in the CLI)."""


class FaceRow(NamedTuple):
    """One stored face; `face` False marks the row that records a photo as read (box empty, zero vector); `apart`
    the faces it must never share a person with (`people.remove_face`)."""

    id: int
    photo_id: int
    face: bool
    box: tuple[int, int, int, int] | tuple[()]
    score: float
    person: int
    name: str
    embedding: np.ndarray
    apart: tuple[int, ...] = ()


def face_id(photo_id: int, index: int) -> int:
    """A stable positive int64 id for the `index`-th face of a photo (-1: the photo's "read" row)."""
    digest = hashlib.blake2b(f"{photo_id}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def read_marker(photo_id: int) -> FaceRow:
    """The row that records that a photo's faces were read (written with them, even when there are none)."""
    return FaceRow(face_id(photo_id, -1), photo_id, False, (), 0.0, NO_PERSON, "", np.zeros(FACE_DIM, np.float32))


class FaceStore:
    """The faces collection `name` on a store's Milvus `client`; `scan` reads a whole collection in windows
    (`ImageStore.scan`). Nothing is created until `ensure()` (the face pass)."""

    def __init__(self, client: MilvusClient, name: str, scan: Callable[..., list[dict]]) -> None:
        self.client, self.name, self._scan = client, name, scan
        self._backup = f"{name}__migrating"  # holds the rows while a version-1 collection migrates
        self._exists = False
        self._names: tuple[float, set[str]] | None = None  # (when read, the names given; casefolded)

    def exists(self) -> bool:
        """Whether faces were ever read into this store (the collection exists); checks its record once, and
        migrates a version-1 collection (or finishes a migration cut off)."""
        if not self._exists and self.client.has_collection(self._backup):
            self._migrate()
        if not self._exists and self.client.has_collection(self.name):
            version = self._version(self.name)
            if version not in (1, FACE_SCHEMA_VERSION):
                raise StoreError(
                    f"collection {self.name!r} is not a faces collection this t2i reads; choose another --collection"
                )
            if version == 1:
                self._migrate()
            self._exists = True
        return self._exists

    def _version(self, name: str) -> int | None:
        return (recorded_meta(self.client, name) or {}).get("faces")

    def _migrate(self) -> None:
        """Bring a version-1 collection to this schema (`apart` empty): its rows are copied into a backup collection,
        the collection is made anew and the rows copied back; each step can be cut off and run again."""
        if not self.client.has_collection(self._backup):
            self._create(self._backup)
            self._copy(self.name, self._backup)
            self.client.drop_collection(self.name)
        self.client.load_collection(self._backup)
        if not self.client.has_collection(self.name):
            self._create(self.name)
        self._copy(self._backup, self.name)
        self.client.drop_collection(self._backup)
        self._exists = True

    def _copy(self, source: str, target: str) -> None:
        self.client.load_collection(source)
        has = {f["name"] for f in self.client.describe_collection(source)["fields"]}
        rows = [
            to_row(r)
            for r in self._scan([*(f for f in FACE_FIELDS if f in has), "face", "embedding"], collection=source)
        ]
        for lo in range(0, len(rows), 256):
            self.client.upsert(target, _as_data(rows[lo : lo + 256]))
        self.client.flush(target)
        copied = self.client.query(target, filter="", output_fields=["count(*)"])[0]["count(*)"]
        if copied != len(rows):
            raise StoreError(f"migrating {source!r} into {target!r} copied {copied} of {len(rows)} faces; run again")

    def ensure(self) -> None:
        """Create the collection unless it exists (FLAT index, inner product; Strong consistency)."""
        if not self.exists():
            self._create(self.name)
            self._exists = True

    def _create(self, name: str) -> None:
        meta = {"faces": FACE_SCHEMA_VERSION, "model": "sface-2021dec", "dim": FACE_DIM}
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=META_PREFIX + json.dumps(meta)
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("photo_id", DataType.INT64)
        schema.add_field("face", DataType.BOOL)
        schema.add_field("box", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
        schema.add_field("score", DataType.FLOAT)
        schema.add_field("person", DataType.INT64)
        schema.add_field("name", DataType.VARCHAR, max_length=MAX_NAME_BYTES)
        schema.add_field("apart", DataType.ARRAY, element_type=DataType.INT64, max_capacity=MAX_APART)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=FACE_DIM)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type="FLAT", metric_type="IP")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    def require(self) -> None:
        """Refuse, in one sentence, to answer about faces before any were read."""
        if not self.exists():
            raise PersonError("no faces were read in this index yet: run `t2i index FOLDER --faces` first")

    def write(self, rows: Sequence[FaceRow]) -> None:
        """Upsert face rows (and "read" rows) in one call: a photo's faces are stored all or none. Queries see them
        at once (Strong consistency), and a process killed afterwards keeps them (measured on milvus-lite)."""
        if rows:
            self.client.upsert(self.name, _as_data(rows))
            self._names = None

    def flush(self) -> None:
        """Seal what was written (once a pass ends: a server takes ~2.5 s a flush, measured on Milvus 2.3)."""
        if self.exists():
            self.client.flush(self.name)

    def read_photos(self) -> set[int]:
        """The ids of every photo whose faces were read."""
        return {int(r["photo_id"]) for r in self._scan(["photo_id"], collection=self.name, expression="face == false")}

    def faces(self, expression: str = "", vectors: bool = False) -> list[FaceRow]:
        """Every face (not the "read" rows) that passes `expression`, with its vector if `vectors`."""
        if not self.exists():
            return []
        fields = [*FACE_FIELDS, "face", *(["embedding"] if vectors else [])]
        condition = "face == true" + (f" and ({expression})" if expression else "")
        return [to_row(r) for r in self._scan(fields, collection=self.name, expression=condition)]

    def update(self, changes: dict[int, dict]) -> None:
        """Change the person or name of stored faces (by id), keeping everything else."""
        ids = list(changes)
        for lo in range(0, len(ids), 256):
            chunk = ids[lo : lo + 256]
            stored = self.client.get(self.name, ids=chunk, output_fields=[*FACE_FIELDS, "face", "embedding"])
            self.write([to_row(r)._replace(**changes[int(r["id"])]) for r in stored])

    def delete_photos(self, photo_ids: Iterable[int]) -> None:
        """Delete the faces (and "read" rows) of these photos; nothing to do if no faces were ever read."""
        ids = [int(i) for i in photo_ids]
        if ids and self.exists():
            self.client.delete(self.name, filter=f"photo_id in {ids}")
            self._names = None

    def delete(self, face_ids: Iterable[int]) -> None:
        """Delete faces by id."""
        ids = [int(i) for i in face_ids]
        if ids:
            self.client.delete(self.name, ids=ids)
            self._names = None

    def names(self) -> set[str]:
        """Every person's name (casefolded; for the query reader), read again after `NAMES_MAX_AGE_S` or a change
        here (another process may name people meanwhile)."""
        if not self.exists():
            return set()
        if self._names is None or time.monotonic() - self._names[0] > NAMES_MAX_AGE_S:
            rows = self._scan(["name"], collection=self.name, expression='face == true and name != ""')
            self._names = (time.monotonic(), {r["name"].casefold() for r in rows})
        return self._names[1]

    def photos_of(self, names: Sequence[str]) -> set[int]:
        """The photos in which every one of `names` is (names match without regard to case).

        Raises:
            PersonError: no faces were read yet, or no person has one of the names (one sentence).
        """
        self.require()
        by_name: dict[str, set[int]] = {}
        for row in self._scan(["photo_id", "name"], collection=self.name, expression='face == true and name != ""'):
            by_name.setdefault(row["name"].casefold(), set()).add(int(row["photo_id"]))
        found = []
        for name in names:
            if name.casefold() not in by_name:
                raise PersonError(f"no person is named {name!r}: `t2i people` lists them, `t2i people name` names one")
            found.append(by_name[name.casefold()])
        return set.intersection(*found) if found else set()

    def drop(self) -> None:
        """Drop the collection (with the photos collection's `reset`)."""
        for name in (self.name, self._backup):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._exists, self._names = False, None


def _as_data(rows: Sequence[FaceRow]) -> list[dict]:
    """Face rows as Milvus takes them."""
    return [
        {**r._asdict(), "box": list(r.box), "apart": list(r.apart), "embedding": np.asarray(r.embedding).tolist()}
        for r in rows
    ]


def to_row(row: dict) -> FaceRow:
    """A Milvus row of the faces collection as a `FaceRow` (zero vector when not read)."""
    vector = np.asarray(row["embedding"], np.float32) if "embedding" in row else np.zeros(FACE_DIM, np.float32)
    return FaceRow(
        int(row["id"]),
        int(row["photo_id"]),
        bool(row["face"]),
        tuple(int(v) for v in row["box"]),
        float(row["score"]),
        int(row["person"]),
        row["name"],
        vector,
        tuple(int(v) for v in row.get("apart") or ()),
    )
