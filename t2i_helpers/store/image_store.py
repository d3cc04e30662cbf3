"""The Milvus store: one collection of image rows, on milvus-lite or a Milvus server (notebooks 01, 04).

The same code serves an embedded milvus-lite file (`data/t2i.db`) and a Milvus server, cluster or managed
Milvus (`http://host:19530` plus a token). The collection records which encoder made its vectors, and the
store refuses to mix encoders. Existing data is never dropped unless `reset=True`. Each row keeps its file's
size and modification time, so a re-index skips unchanged files without opening them; a collection of an
older schema is migrated in place when it is opened, through a backup collection, so no row is ever lost.
Where the deployment supports it (milvus-lite, Milvus >= 2.5), each row also keeps the words of its path as a
BM25 keyword field beside the vector, for keyword and hybrid search (`keywords.py`, `hybrid.py`, notebook 05).

Example:
    >>> store = ImageStore.open(Config(), encoder)          # creates or checks the collection
    >>> store.search(encoder.encode_texts(["a red kangaroo"]), top_k=3)[0][0].caption
    'A red kangaroo.'
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from ..config import Config
from ..models.encoders import Encoder
from .collection import (
    FILE_FIELDS,
    MAX_OCR_BYTES,
    META_PREFIX,
    PHOTO_FIELDS,
    SCHEMA_VERSION,
    TEXT_FIELDS,
    CollectionLayout,
    StoreError,
    clip_text,
)
from .filters import Filters, quote, text_key, where
from .hits import OUTPUT_FIELDS, Hit, to_hit, to_hits

MAX_TOP_K = 16384  # Milvus's own limit on a search's `limit`
QUERY_WINDOW = 16384  # and on a query's `limit`
# rows per query when vectors come back too: milvus-lite 2.5 takes time quadratic in a query's rows then
# (measured on 10,000 rows: 500 in 0.09 s, 2,000 in 2.0 s, 4,000 in 8.0 s; all 10,000 in windows of 256: 2.1 s)
VECTOR_WINDOW = 256
# pymilvus pings every 10 s, idle or not; milvus-lite's gRPC server allows a ping without data once in 5 minutes
# and answers the third early one with GOAWAY "too_many_pings": reopening that file in the same process then
# failed (measured: opened and closed twice, idle 35 s, opened again). Servers accept the pings: defaults there.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}
LITE_NAME_CHARS = "A-Za-z0-9._-"  # what milvus-lite 2.5 accepts in a file name
LITE_HELD = "Open local milvus failed"  # pymilvus's words when milvus-lite could not lock the file (or start)
LITE_FIRST_S, LITE_START_S = 10.0, 60.0  # waits for a milvus-lite server to answer: first, and once more
ROW_FIELDS = ["id", *TEXT_FIELDS, *FILE_FIELDS, *PHOTO_FIELDS]  # a whole row, but for its vectors
PLACES_MAX_AGE_S = 60.0  # how long `places()` trusts what it read (another process may index meanwhile)


class FileState(NamedTuple):
    """What the store knows of one file: its row's id (content hash), size and modification time, and whether
    its header was read (a row migrated from schema 2 waits for the next index to read it)."""

    id: int
    size: int
    mtime_ns: int
    described: bool = True


def read_meta(config: Config) -> dict | None:
    """What a t2i collection records about itself (encoder, dim, schema version), or None if there is none.

    Creates nothing: a milvus-lite file that does not exist is not made, and no collection is created.

    Raises:
        StoreError: the collection was not made by t2i, or the store cannot be opened.
    """
    if config.is_lite and not Path(config.uri).expanduser().exists():
        return None
    client = ImageStore._connect(config)
    try:
        if not client.has_collection(config.collection):
            return None
        description = client.describe_collection(config.collection).get("description", "")
    finally:
        client.close()
    if not description.startswith(META_PREFIX):
        raise StoreError(f"collection {config.collection!r} at {config.uri} was not made by t2i")
    return json.loads(description[len(META_PREFIX) :])


class ImageStore(CollectionLayout):
    """A Milvus collection of images: id (content hash), path, label, caption and embedding.

    Use `ImageStore.open(config, encoder)`; the constructor arguments are the same, spelled out.
    """

    def __init__(
        self, config: Config, encoder_name: str, dim: int, reset: bool = False, encoder_spec: str | None = None
    ) -> None:
        self.config, self.collection = config, config.collection
        self.meta = {"schema_version": SCHEMA_VERSION, "encoder": encoder_name, "dim": int(dim)}
        if encoder_spec and encoder_spec != encoder_name:  # e.g. conse-head:PATH, whose name is not loadable
            self.meta["encoder_spec"] = encoder_spec
        self.client = self._connect(config)
        self._backup = f"{self.collection}__migrating"  # holds the rows while an older collection migrates
        self._places: tuple[float, set[str]] | None = None  # (when read, the place names stored)
        self._infix_like = False  # a Milvus server answered LIKE '%word%' (`where`)
        self.metric = config.metric  # the vector index's metric, which searches name (`_check_index`)
        try:
            if reset:
                for name in (self.collection, self._backup):
                    if self.client.has_collection(name):
                        self.client.drop_collection(name)
            if self.client.has_collection(self._backup):  # a migration was cut off: finish it
                self._check_meta(self._backup, SCHEMA_VERSION)
                self._migrate()
            elif self.client.has_collection(self.collection):
                version = self._check_meta(self.collection, SCHEMA_VERSION, 2, 1)
                if version == SCHEMA_VERSION:
                    self.metric = self._check_index()
                self.client.load_collection(self.collection)  # a reopened collection starts released
                if version != SCHEMA_VERSION:
                    self._migrate()  # the collection is made anew, with `config.metric`
            else:
                self._create(self.collection)
        except Exception:
            self.close()  # a refused store must not keep the file locked
            raise

    @classmethod
    def open(cls, config: Config, encoder: Encoder, reset: bool = False) -> ImageStore:
        """Open (or create) the collection for `encoder`; refuse one built with another encoder.

        A new collection records `config.encoder` too when it differs from the encoder's name, so that a search
        can load the same encoder again (`SearchEngine.open_index`).
        """
        return cls(config, encoder.name, encoder.dim, reset=reset, encoder_spec=config.encoder)

    @staticmethod
    def _connect(config: Config) -> MilvusClient:
        if config.is_lite:
            path = Path(config.uri).expanduser()
            if path.is_dir():  # milvus-lite 3 kept a folder under this name; 2.5 keeps one file
                raise StoreError(
                    f"{config.uri} is a folder (a milvus-lite 3 store, which this t2i cannot read): move it aside "
                    "and index again, or pass another file with --uri"
                )
            if not re.fullmatch(f"[{LITE_NAME_CHARS}]+", path.name):
                fixed = re.sub(f"[^{LITE_NAME_CHARS}]", "_", path.name)
                raise StoreError(
                    f"milvus-lite cannot use the file name {path.name!r}: use only letters, digits, '.', '-' and "
                    f"'_' in it (e.g. {fixed!r}); the folder may be named freely"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return milvus_client(config, timeout=LITE_FIRST_S if config.is_lite else None)
        except MilvusException as err:
            if not config.is_lite:
                raise StoreError(f"cannot connect to Milvus at {config.uri}: {err}. Is the server running?") from err
            if LITE_HELD in str(err):
                raise StoreError(
                    f"cannot open the milvus-lite file {config.uri}: another process has it open "
                    "(milvus-lite allows one process per file). Close that process (a notebook kernel, "
                    "`t2i serve`), use another file with --uri, or run a Milvus server and pass its URI."
                ) from err
        # Seen on a loaded machine: the server started but answered later than the first wait, or stopped while
        # starting ("Open storage failed: unable to open database file"). Start it anew and wait longer.
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(Path(config.uri).expanduser()))
        try:
            return milvus_client(config, timeout=LITE_START_S)
        except MilvusException as err:
            raise StoreError(
                f"milvus-lite did not answer for {config.uri} within {LITE_START_S:.0f} s ({err}); try again, or "
                "run a Milvus server and pass its URI"
            ) from err

    def insert(self, rows: Sequence[dict], embeddings: np.ndarray) -> int:
        """Insert (or overwrite) rows with keys id, path, label, caption (and size, mtime_ns); returns how many."""
        if len(rows) != len(embeddings):
            raise ValueError(f"{len(rows)} rows but {len(embeddings)} embeddings")
        if len(rows) == 0:
            return 0
        data = [
            {
                "id": int(row["id"]),
                **{k: clip_text(str(row.get(k) or ""), n) for k, n in TEXT_FIELDS.items()},
                **{k: int(row.get(k, -1)) for k in FILE_FIELDS},
                **{k: row.get(k, unknown) for k, unknown in PHOTO_FIELDS.items()},
                "embedding": vector.tolist(),
            }
            for row, vector in zip(rows, np.asarray(embeddings, np.float32))
        ]
        self._places = None
        return int(self.client.upsert(self.collection, self._stored(data))["upsert_count"])

    def flush(self) -> None:
        """Seal inserted rows: counts are exact and searches use the index (fast) afterwards."""
        self.client.flush(self.collection)

    def existing_ids(self, ids: Iterable[int]) -> set[int]:
        """Which of `ids` are already stored."""
        ids = [int(i) for i in ids]
        if not ids:
            return set()
        rows = self.client.query(self.collection, filter=f"id in {ids}", output_fields=["id"])
        return {int(r["id"]) for r in rows}

    def file_states(self, paths: Iterable[str], chunk: int = 512) -> dict[str, FileState]:
        """What is stored for each of `paths` that is stored: id, size and modification time."""
        paths, found = list(paths), {}
        for lo in range(0, len(paths), chunk):
            listed = ", ".join(quote(p) for p in paths[lo : lo + chunk])
            rows = self.client.query(
                self.collection, filter=f"path in [{listed}]", output_fields=["id", "path", *FILE_FIELDS, "taken_from"]
            )
            found.update(
                {
                    r["path"]: FileState(int(r["id"]), int(r["size"]), int(r["mtime_ns"]), bool(r["taken_from"]))
                    for r in rows
                }
            )
        return found

    def update(self, changes: dict[int, dict]) -> None:
        """Change some fields of stored rows (by id), keeping their vectors and other fields.

        For a file's new path, size and mtime_ns (a file whose bytes are indexed already but whose size or time
        changed, or that moved from a path that is gone, so that the next index skips it without opening it),
        the metadata of its header (`exif.photo_metadata`), or the text read in it (`ocr_text`, which also sets
        `ocr_key`, `ocr_read` and the keywords). Ids no longer stored are left out.
        """
        if not changes:
            return
        stored = self.client.get(self.collection, ids=list(changes), output_fields=[*ROW_FIELDS, "embedding"])
        updated = []
        for row in map(dict, stored):
            row.update(changes[int(row["id"])])
            row["path"] = clip_text(str(row["path"]), TEXT_FIELDS["path"])
            if "ocr_text" in changes[int(row["id"])]:
                row["ocr_text"] = clip_text(row["ocr_text"], MAX_OCR_BYTES)
                row.update(ocr_key=clip_text(text_key(row["ocr_text"]), MAX_OCR_BYTES), ocr_read=True)
            updated.append(row)
        if updated:
            self.client.upsert(self.collection, self._stored(updated))
        self._places = None

    def scan(
        self,
        fields: list[str],
        low: int = 0,
        high: int = (1 << 63) - 1,
        collection: str | None = None,
        expression: str = "",
    ) -> list[dict]:
        """Every row with ids in [low, high] (that passes `expression`) and the given fields, however many there are.

        Ids are uniform 63-bit content hashes: a range that fills one query window is split in halves; the
        window is small when vectors come back (`VECTOR_WINDOW`). (milvus-lite lacks the timestamp call that
        pymilvus's query_iterator asks for.)
        """
        name = collection or self.collection
        window = VECTOR_WINDOW if "embedding" in fields else QUERY_WINDOW
        condition = f"id >= {low} and id <= {high}" + (f" and ({expression})" if expression else "")
        # list(): pymilvus fills vectors in lazily on item access, and `+` of two results would copy unfilled rows
        rows = list(self.client.query(name, filter=condition, output_fields=fields, limit=window))
        if len(rows) < window or low == high:
            return rows
        middle = (low + high) // 2
        return self.scan(fields, low, middle, name, expression) + self.scan(fields, middle + 1, high, name, expression)

    def paths(self) -> dict[int, str]:
        """Every stored id with its path."""
        return {int(r["id"]): r["path"] for r in self.scan(["path"])}

    def get(self, ids: Iterable[int]) -> list[dict]:
        """The stored rows (without vectors) for `ids`: id, path, label, caption, size, mtime_ns and the photo
        fields; missing ids are left out."""
        ids = [int(i) for i in ids]
        return list(self.client.get(self.collection, ids=ids, output_fields=ROW_FIELDS)) if ids else []

    def delete(self, ids: Iterable[int]) -> None:
        """Delete rows by id (missing ids are ignored)."""
        ids = [int(i) for i in ids]
        if ids:
            self.client.delete(self.collection, ids=ids)

    def count(self) -> int:
        """Number of rows, exact (Strong consistency)."""
        return self._count(self.collection)

    def _count(self, name: str) -> int:
        return int(self.client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def categories(self) -> list[str]:
        """The distinct non-empty labels, sorted."""
        return sorted({r["label"] for r in self.scan(["label"])} - {""})

    def search(
        self, embeddings: np.ndarray, top_k: int = 5, category: str | None = None, filters: Filters | None = None
    ) -> list[list[Hit]]:
        """The `top_k` most similar images for each query embedding, best first, optionally in one category and
        only among those that pass `filters` (applied inside Milvus)."""
        check_top_k(top_k)
        queries = np.atleast_2d(np.asarray(embeddings, np.float32))
        if queries.shape[1] != self.meta["dim"]:
            raise ValueError(f"query vectors have dim {queries.shape[1]}, the collection {self.meta['dim']}")
        results = self.client.search(
            self.collection,
            data=queries.tolist(),
            anns_field="embedding",  # a collection with keywords has a second (sparse) vector field
            limit=top_k,
            filter=self.where(category, filters),
            output_fields=OUTPUT_FIELDS,  # without it milvus returns each hit's whole vector
            search_params={"metric_type": self.metric},
        )
        return to_hits(results)

    def where(self, category: str | None, filters: Filters | None) -> str:
        """The filter expression of a search; refuses, in one sentence, a text filter the server cannot run.

        Raises:
            StoreError: a Milvus 2.3 server matches LIKE patterns by prefix only, so it cannot find words inside
                the text read in a photo.
        """
        expression = where(category, filters)
        if filters and filters.text and not self.config.is_lite and not self._infix_like:
            try:
                self.client.query(self.collection, filter='ocr_key like "%a%"', output_fields=["id"], limit=1)
                self._infix_like = True  # probed once per store; a failure is probed again next time
            except MilvusException as err:
                raise StoreError(
                    "searching the text in photos needs LIKE '%word%', which this Milvus server matches by prefix "
                    "only: use Milvus >= 2.4 or milvus-lite"
                ) from err
        return expression

    def newest(self, top_k: int, category: str | None = None, filters: Filters | None = None) -> list[Hit]:
        """The `top_k` newest images (by time taken; those with none last) that pass `filters`; score 0."""
        check_top_k(top_k)
        rows = self.scan(["id", *OUTPUT_FIELDS], expression=self.where(category, filters))
        rows.sort(key=lambda r: (-r["taken_at"], r["path"]))
        return [to_hit(row, 0.0) for row in rows[:top_k]]

    def places(self) -> set[str]:
        """Every place name stored (city, region, country; lowercase), read again after `PLACES_MAX_AGE_S`."""
        if self._places is None or time.monotonic() - self._places[0] > PLACES_MAX_AGE_S:
            names = {n for r in self.scan(["place_keys"], expression="taken_from != ''") for n in r["place_keys"]}
            self._places = (time.monotonic(), names)
        return self._places[1]

    def info(self) -> dict:
        """Collection name, URI, encoder, dim, schema version, keywords (a BM25 field or not), index type, metric
        and row count."""
        return {
            "collection": self.collection,
            "uri": self.config.uri,
            **self.meta,
            "index_type": self.config.index_type,
            "metric": self.metric,
            "count": self.count(),
        }

    def close(self) -> None:
        """Release the connection.

        milvus-lite keeps its embedded server (and the file lock) for the life of the process, shared by every
        client of that file in the process; another process can open the file once this one has exited.
        """
        self.client.close()


def check_top_k(top_k: int) -> None:
    """Refuse a `top_k` Milvus cannot answer (ValueError, one sentence)."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")


def milvus_client(config: Config, timeout: float | None = None) -> MilvusClient:
    """A client of `config.uri`: a Milvus server, or a milvus-lite file without the keepalive pings it refuses;
    `timeout` bounds the wait for the connection (pymilvus's `MILVUS_CONN_TIMEOUT`, 10 s, when None)."""
    options = {"grpc_options": LITE_GRPC_OPTIONS} if config.is_lite else {}
    return MilvusClient(uri=config.uri, token=config.token, timeout=timeout, **options)
