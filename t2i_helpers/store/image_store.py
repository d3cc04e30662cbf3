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

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pymilvus.exceptions import MilvusException

from ..config import Config
from ..models.encoders import Encoder
from .collection import (
    CLASS_FIELDS,
    CLASSES_CAPACITY,
    FILE_FIELDS,
    MAX_OCR_BYTES,
    PHOTO_FIELDS,
    SCHEMA_VERSION,
    TEXT_FIELDS,
    CollectionLayout,
    StoreError,
    clip_text,
    moving_name,
    recorded_meta,
)
from .connection import connect, release_lite
from .face_store import FaceStore
from .filters import Filters, quote, text_key, where
from .hits import OUTPUT_FIELDS, Hit, in_order, to_hit, to_hits

MAX_TOP_K = 16384  # Milvus's own limit on a search's `limit`
QUERY_WINDOW = 16384  # and on a query's `limit`
# rows per query when vectors come back too: milvus-lite 2.5 takes time quadratic in a query's rows then
# (measured on 10,000 rows: 500 in 0.09 s, 2,000 in 2.0 s, 4,000 in 8.0 s; all 10,000 in windows of 256: 2.1 s)
VECTOR_WINDOW = 256
ROW_FIELDS = ["id", *TEXT_FIELDS, *FILE_FIELDS, *PHOTO_FIELDS, *CLASS_FIELDS]  # a whole row, but for its vectors
_LITE_OPEN: Counter[str] = Counter()  # open stores per milvus-lite file in this process (its server stops at 0)
PLACES_MAX_AGE_S = 60.0  # how long `places()` trusts what it read (another process may index meanwhile)


class FileState(NamedTuple):
    """What the store knows of one file: its row's id (content hash), size and modification time, and whether
    its header was read (a row migrated from schema 2 waits for the next index to read it)."""

    id: int
    size: int
    mtime_ns: int
    described: bool = True


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
        self.client = connect(config)
        self._lite_file = str(Path(config.uri).expanduser().resolve()) if config.is_lite else None
        if self._lite_file:
            _LITE_OPEN[self._lite_file] += 1
        self._backup = f"{self.collection}__migrating"  # holds the rows while an older collection migrates
        self._places: tuple[float, set[str]] | None = None  # (when read, the place names stored)
        self._infix_like = False  # a Milvus server answered LIKE '%word%' (`where`)
        self.metric = config.metric  # the vector index's metric, which searches name (`_check_index`)
        self.faces = FaceStore(self.client, f"{self.collection}_faces", self.scan)  # made by the face pass
        try:
            if reset:
                for name in (self.collection, self._backup):
                    if self.client.has_collection(name):
                        self.client.drop_collection(name)
                self.faces.drop()
            self._check_no_move_cut_off()
            if self.client.has_collection(self._backup):  # a migration was cut off: finish it
                self._check_meta(self._backup, SCHEMA_VERSION)
                self._migrate()
            elif self.client.has_collection(self.collection):
                version = self._check_meta(self.collection, SCHEMA_VERSION, 3, 2, 1)
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

    def _check_no_move_cut_off(self) -> None:
        """Refuse a collection whose move to another encoder (`store/move.py`) stopped after its old rows went."""
        moving = moving_name(self.collection)
        if not self.client.has_collection(moving):
            return
        encoder = (recorded_meta(self.client, moving) or {}).get("encoder", "?")
        if (
            not self.client.has_collection(self.collection)
            or (recorded_meta(self.client, self.collection) or {}).get("encoder") == encoder
        ):
            raise StoreError(
                f"the move of collection {self.collection!r} to encoder {encoder!r} was cut off: finish it with "
                f"`t2i move --encoder {encoder}` (nothing is lost: its rows are in {moving!r})"
            )

    @classmethod
    def open(cls, config: Config, encoder: Encoder, reset: bool = False) -> ImageStore:
        """Open (or create) the collection for `encoder`; refuse one built with another encoder.

        A new collection records `config.encoder` too when it differs from the encoder's name, so that a search
        can load the same encoder again (`SearchEngine.open_index`).
        """
        return cls(config, encoder.name, encoder.dim, reset=reset, encoder_spec=config.encoder)

    def insert(self, rows: Sequence[dict], embeddings: np.ndarray) -> int:
        """Insert (or overwrite) rows with keys id, path, label, caption (and size, mtime_ns, the photo fields, the
        image model's classes); returns how many."""
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
                **{k: [*row.get(k, [])][:CLASSES_CAPACITY] for k in CLASS_FIELDS},
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
        """Delete rows by id, and the faces found in them (missing ids are ignored)."""
        ids = [int(i) for i in ids]
        if ids:
            self.faces.delete_photos(ids)  # first: a crash in between leaves a photo without faces, never faces
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
        only among those that pass `filters` (applied inside Milvus); equal scores by id, also across the cut at
        `top_k`, so that a query's hits are the same searched alone or with others (notebook 04)."""
        check_top_k(top_k)
        queries = np.atleast_2d(np.asarray(embeddings, np.float32))
        if queries.shape[1] != self.meta["dim"]:
            raise ValueError(f"query vectors have dim {queries.shape[1]}, the collection {self.meta['dim']}")
        expression = self.where(category, filters)
        found = self._search(queries, min(top_k + 1, MAX_TOP_K), expression)  # one more: a tie at the cut shows
        for i, hits in enumerate(found):  # a tie across the cut: Milvus kept any of the tied; fetch them all
            limit = len(hits)
            while limit < MAX_TOP_K and len(hits) == limit > top_k and hits[-1].score == hits[top_k - 1].score:
                limit = min(2 * limit, MAX_TOP_K)
                hits = found[i] = self._search(queries[i : i + 1], limit, expression)[0]
        return [hits[:top_k] for hits in found]

    def _search(self, queries: np.ndarray, limit: int, expression: str) -> list[list[Hit]]:
        results = self.client.search(
            self.collection,
            data=queries.tolist(),
            anns_field="embedding",  # a collection with keywords has a second (sparse) vector field
            limit=limit,
            filter=expression,
            output_fields=OUTPUT_FIELDS,  # without it milvus returns each hit's whole vector
            search_params={"metric_type": self.metric},
        )
        return [in_order(hits) for hits in to_hits(results)]

    def where(self, category: str | None, filters: Filters | None) -> str:
        """The filter expression of a search; refuses, in one sentence, a text filter the server cannot run.

        A person filter becomes the ids of the photos with all the people named (`FaceStore.photos_of`).

        Raises:
            StoreError: a Milvus 2.3 server matches LIKE patterns by prefix only, so it cannot find words inside
                the text read in a photo; or no faces were read, or no person has a name asked for.
        """
        expression = where(category, filters)
        if filters and filters.person:
            ids = sorted(self.faces.photos_of(filters.people()))
            with_people = f"id in {ids}" if ids else "id < 0"  # milvus-lite 2.5 refuses `in []`; ids are >= 0
            expression = f"{expression} and {with_people}" if expression else with_people
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
        """Release the connection; the last store of a milvus-lite file closed stops its server, freeing the file."""
        self.client.close()
        lite_file, self._lite_file = self._lite_file, None  # a second close releases nothing more
        if lite_file:
            _LITE_OPEN[lite_file] -= 1
            if not _LITE_OPEN[lite_file]:
                release_lite(lite_file)


def check_top_k(top_k: int) -> None:
    """Refuse a `top_k` Milvus cannot answer (ValueError, one sentence)."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
