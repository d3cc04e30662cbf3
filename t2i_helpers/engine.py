"""`SearchEngine`: an encoder, a Milvus store and the Towhee pipelines held together (notebooks 01, 04).

The notebooks, the CLI, the app and the API all use this one object; hybrid (keyword + vector) search is taught
in notebook 05.

Example:
    >>> engine = SearchEngine.open()                      # default encoder, data/t2i.db
    >>> engine.index("data/tuxpaint/stamps.csv").summary()
    'added 784, unchanged 0, updated 0, removed 0, skipped 1'
    >>> [h.caption for h in engine.search("a red kangaroo", top_k=2)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .config import DEFAULT_COLLECTION, Config
from .data.datasets import load_source
from .data.images import MAX_SIDE, ImageLike, Thumbnails, read_image
from .models.encoders import Encoder, load_encoder
from .pipelines.face_pass import FaceReport, find_faces
from .pipelines.hybrid import hybrid_search, keyword_search
from .pipelines.ingest import ingest
from .pipelines.ocr_pass import OcrReport, read_text
from .pipelines.operators import IngestReport, run_pipeline
from .pipelines.people import (
    Person,
    face_thumbnail,
    faces_of,
    forget_person,
    list_people,
    merge_people,
    name_person,
    regroup,
    remove_face,
)
from .pipelines.search import Query, QueryCache, clean_query, prepare_query, search_pipeline
from .pipelines.understand import stored_place, understand
from .store.connection import read_meta
from .store.face_store import FaceRow
from .store.filters import Filters
from .store.image_store import Hit, ImageStore, StoreError
from .store.move import move_hint


class NoIndexError(StoreError):
    """There is no collection at this address yet; the message says how to make one."""


class EngineClosedError(StoreError):
    """The engine was closed (`close()`) and cannot search or index any more."""


class Found(NamedTuple):
    """What `SearchEngine.find` did: the hits, the text searched by meaning (None: filters only), the filters
    applied, those of them read from the query (to show), and a notice if the query was shortened."""

    hits: list[Hit]
    text: str | None
    filters: Filters
    understood: dict[str, str]
    notice: str | None


class SearchEngine:
    """Text-to-image (and image-to-image) search over one Milvus collection."""

    def __init__(self, config: Config, encoder: Encoder, store: ImageStore) -> None:
        self.config, self.encoder, self._store = config, encoder, store
        self.closed = False
        self.thumbnails = Thumbnails(config.thumbnail_dir, config.thumbnail_size or Thumbnails.size)
        self.query_cache = QueryCache(config.query_cache)
        self._search = search_pipeline(encoder, store, self.query_cache)

    @classmethod
    def open(cls, config: Config | None = None, encoder: Encoder | None = None, reset: bool = False) -> SearchEngine:
        """Load the encoder named in `config` (unless given) and open its collection.

        Args:
            config: where the index lives; `Config.from_env()` if None.
            encoder: an already loaded encoder; by default `load_encoder(config.encoder)`.
            reset: drop the collection first (its rows are lost).
        """
        config = config or Config.from_env()
        if encoder is None:
            encoder = load_encoder(config.encoder)  # config.encoder stays the name it was loaded by
        elif encoder.name != config.encoder:
            config = config.with_(encoder=encoder.name)
        return cls(config, encoder, ImageStore.open(config, encoder, reset=reset))

    @classmethod
    def open_index(cls, config: Config, encoder: str | None = None) -> SearchEngine:
        """Open a collection that exists, with the encoder it was built with; creates nothing.

        Args:
            config: where the index lives; its `encoder` is ignored: the collection records its own.
            encoder: an encoder name that overrides the recorded one (`t2i search --encoder`); a different
                encoder is refused with `EncoderMismatchError`.

        Raises:
            NoIndexError: there is no such collection yet (nor, for milvus-lite, a file): `t2i index` makes one.
        """
        meta = read_meta(config)
        if meta is None:
            where = "" if config.uri == Config(data_dir=config.data_dir).uri else f" --uri {config.uri}"
            where += f" --collection {config.collection}" if config.collection != DEFAULT_COLLECTION else ""
            raise NoIndexError(
                f"there is no index at {config.uri} (collection {config.collection!r}) yet: make one with "
                f"`t2i index FOLDER_OR_CSV{where}`, or `t2i index bundled{where}` for the bundled photos"
            )
        return cls.open(config.with_(encoder=encoder or meta.get("encoder_spec", meta["encoder"])))

    @property
    def store(self) -> ImageStore:
        """The Milvus collection; raises `EngineClosedError` once the engine is closed."""
        self._check_open()
        return self._store

    def _check_open(self) -> None:
        if self.closed:
            raise EngineClosedError(
                "this search engine was closed (engine.close()); open it again with SearchEngine.open(...): "
                "in a notebook, run the cell that opens the engine again, then the cells that use it"
            )

    def index(
        self,
        source: str | Path | pd.DataFrame,
        progress: bool = True,
        sync: bool = False,
        verify: bool = False,
        engine: str = "local",
        ray_address: str | None = None,
    ) -> IngestReport:
        """Index a folder of images, a dataset CSV or a DataFrame; only new or changed files are embedded.

        Args:
            sync: also remove rows of files that are gone from the folder (or from the CSV's folder).
            verify: read and hash every file, also those whose size and modification time are unchanged.
            engine: "local" (the Towhee pipeline in this process) or "ray" (a Ray Data job into a Milvus
                server, `distributed.ingest`; needs `pip install -e ".[distributed]"`).
            ray_address: for "ray", the cluster to join; None joins `$RAY_ADDRESS` or starts a local Ray.
        """
        if engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', not {engine!r}")
        if isinstance(source, pd.DataFrame):
            if sync:
                raise ValueError("sync needs a folder or CSV source, to know which stored rows belong to it")
            rows, root = source, None
        else:
            rows = load_source(source)
            root = Path(source).expanduser() if Path(source).is_dir() else Path(source).expanduser().parent
        if engine == "ray":
            from .pipelines.distributed import ingest as ray_ingest

            return ray_ingest(
                rows,
                self.encoder,
                self.store,
                encoder_spec=self.config.encoder,
                ray_address=ray_address,
                batch_size=self.config.batch_size,
                progress=progress,
                sync_root=root if sync else None,
                verify=verify,
                thumbnails=self.thumbnails if self.config.thumbnail_size else None,
            )
        return ingest(
            rows,
            self.encoder,
            self.store,
            self.config.batch_size,
            self.config.decode_workers,
            progress,
            sync_root=root if sync else None,
            verify=verify,
            thumbnails=self.thumbnails if self.config.thumbnail_size else None,
        )

    def read_text(self, source: str | Path | None = None, progress: bool = True) -> OcrReport:
        """Read the words in every stored photo (of folder or CSV `source`) that has none read yet (notebook 06);
        nothing is embedded again, and a run cut off is finished by running it again (`ocr_pass.read_text`)."""
        from .models.ocr import read_texts  # loads RapidOCR's models: only for an OCR pass

        return read_text(self.store, read_texts, folder_of(source), progress=progress)

    def read_faces(self, source: str | Path | None = None, progress: bool = True) -> FaceReport:
        """Find, embed and group the faces of the stored photos (of `source`) not read yet; resumable (notebook 07)."""
        from .models.faces import default_reader  # loads YuNet and SFace: only for a face pass

        return find_faces(self.store, default_reader(), folder_of(source), progress=progress)

    def people(self) -> list[Person]:
        """Every person whose faces were read, most photos first (`people.list_people`, notebook 07)."""
        return list_people(self.store.faces)

    def face_thumbnail(self, person: Person) -> Path:
        """A small JPEG of a person's surest face, made on first use under the thumbnail folder's `faces/`."""
        return face_thumbnail(self.store, person.face, self.thumbnails.face_path(person.face.photo_id, person.face.id))

    def name_person(self, person: int, name: str) -> None:
        """Name a person; `t2i search --person NAME` then finds its photos."""
        name_person(self.store.faces, person, name)

    def merge_people(self, source: int, target: int) -> None:
        """Make two persons one: `source`'s faces go to `target`."""
        merge_people(self.store.faces, source, target)

    def forget_person(self, person: int) -> int:
        """Delete a person's faces, their cached crops and its name (the photos stay); how many faces."""
        forgotten = forget_person(self.store.faces, person)
        for face in forgotten:
            self.thumbnails.face_path(face.photo_id, face.id).unlink(missing_ok=True)
        return len(forgotten)

    def faces_of(self, person: int) -> list[FaceRow]:
        """A person's faces (id, photo, box, score), surest first; `PersonError` if there is no such person."""
        return sorted(faces_of(self.store.faces, person), key=lambda f: -f.score)

    def remove_face(self, face: int) -> int:
        """Take a face out of its person, for good (`people.remove_face`); the id of the person it is now."""
        return remove_face(self.store.faces, face)

    def regroup_people(self) -> int:
        """Group every face into people anew, names kept (`people.regroup`); how many people."""
        return regroup(self.store.faces)

    def prepare_query(self, text: str) -> Query:
        """The cleaned query as the encoder will read it, with a notice if it was shortened."""
        return prepare_query(text, self.encoder)

    def search(
        self,
        query: str | Query,
        top_k: int | None = None,
        category: str | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """The images that best match `query`, best first (through the Towhee search pipeline).

        Args:
            query: a text (cleaned and shortened here), or a `Query` from `prepare_query` (used as it is).
            filters: only photos taken then, there, with that camera or text (notebook 06); inside Milvus.
        """
        return self.search_many([query], top_k, category, filters)[0]

    def search_many(
        self,
        queries: Sequence[str | Query],
        top_k: int | None = None,
        category: str | None = None,
        filters: Filters | None = None,
    ) -> list[list[Hit]]:
        """The best images for each of `queries`: one Milvus search for them all.

        Each query's hits, ids and scores, are those `search` returns for it alone (notebook 04's batching server):
        each text is embedded alone (`QueryCache.embed`), and equal scores come by id (`ImageStore.search`).
        """
        texts = [q.text if isinstance(q, Query) else self.prepare_query(q).text for q in queries]
        self._check_open()  # before Towhee: a closed store would fail deep inside the pipeline
        if not texts:
            return []
        top_k, filters = top_k or self.config.top_k, filters or Filters()
        return run_pipeline(self._search, texts, top_k, category or "", filters).get()[0]

    def find(
        self,
        query: str | None = None,
        filters: Filters | None = None,
        top_k: int | None = None,
        category: str | None = None,
        literal: bool = False,
        search: Callable[..., list[Hit]] | None = None,
    ) -> Found:
        """Search as a person asks: a query (optional when a filter is given) and filters (notebook 06).

        `search` runs the text search, `self.search` by default (the API passes its batcher's, notebook 04).

        Unless `literal`, a stored place, a year or month, "quoted words" and a named person in the query are read
        as filters (`understand`); `filters` given win over those read. A place named in another language is the
        stored place it names ("Lissabon": Lisbon). With text left, the photos are ranked by meaning; with only a
        text filter, by how well their text matches (BM25, where the deployment has it); with only
        other filters (and after those ranked, for text found only inside run-together words), newest first.

        Raises:
            ValueError: no query and no filter, or a filter that is not one (one sentence).
        """
        filters, top_k, notice = filters or Filters(), top_k or self.config.top_k, None
        text = clean_query(query) if query is not None and query.strip() else ""
        understood: dict[str, str] = {}
        if filters.place:  # "--place Lissabon": the stored place it names
            named = stored_place(filters.place, self.store.places())
            filters = dataclasses.replace(filters, place=named or filters.place)
        if text and not literal:
            read = understand(text, self.store.places(), self.store.faces.names())
            understood = {k: v for k, v in read.filters.applied().items() if k not in filters.applied()}
            text, filters = read.text, filters.merged(read.filters)
        if text:
            prepared = self.prepare_query(text)
            hits, notice = (search or self.search)(prepared, top_k, category, filters), prepared.notice
        elif filters:  # the words' BM25 ranking where there is one (not inside run-together text), then newest
            ranked = self.store.meta.get("keywords") and filters.text
            hits = keyword_search(self.store, [filters.text], top_k, category, filters)[0] if ranked else []
            ids = {h.id for h in hits}
            hits += [h for h in self.store.newest(top_k, category, filters) if h.id not in ids][: top_k - len(hits)]
        else:
            raise ValueError("the query is empty: type what the picture shows, or give a date, place, camera or text")
        return Found(hits, text or None, filters, understood, notice)

    def search_image(
        self,
        image: ImageLike | str | Path,
        top_k: int | None = None,
        category: str | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Images similar to `image` (a path, PIL image or RGB array): "more like this"."""
        return self.search_vector(self.embed_image(image), top_k, category, filters)

    def embed_image(self, image: ImageLike | str | Path) -> np.ndarray:
        """The embedding of one image (a path, read as ingest reads it, a PIL image or an RGB array)."""
        self._check_open()
        if isinstance(image, (str, Path)):
            image = read_image(image, MAX_SIDE, getattr(self.encoder, "image_size", None))[1]
        return self.encoder.encode_images([image])[0]

    def search_vector(
        self,
        embedding: np.ndarray,
        top_k: int | None = None,
        category: str | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Nearest images to one embedding, e.g. query arithmetic like `dog - grass + snow`."""
        return self.store.search(embedding[None, :], top_k or self.config.top_k, category or None, filters)[0]

    def hybrid_search(
        self,
        text: str,
        top_k: int | None = None,
        category: str | None = None,
        weights: tuple[float, float] | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Images that match `text` by meaning (vectors) and by file and folder names and the words read in
        them (BM25), fused by Milvus; with `filters`, among the photos that pass them.

        Args:
            weights: (vector, keyword) for Milvus's weighted ranker; None fuses the rankings by reciprocal rank.

        Raises:
            StoreError: the collection has no keyword field; the message says what is needed (notebook 05).
        """
        query = self.prepare_query(text).text
        embedding = self.encoder.encode_texts([query])
        top_k = top_k or self.config.top_k
        return hybrid_search(self.store, embedding, [query], top_k, category, weights, filters=filters)[0]

    def delete(self, ids: Sequence[int]) -> None:
        """Remove images from the index, and their cached thumbnails with them (the files stay)."""
        self.store.delete(ids)
        self.thumbnails.remove(ids)

    def thumbnail(self, hit: Hit) -> Path:
        """The cached thumbnail of a hit (upright JPEG, longer side `config.thumbnail_size`), made on first use.

        Raises:
            ImageError: its file is gone, unreadable, or no longer the image that was indexed.
        """
        return self.thumbnails.ensure(hit.id, hit.path)

    def info(self) -> dict:
        """Collection, URI, encoder, dim, index and count, plus `encoder_backend` where the encoder has backends,
        and `move`, how to move a collection of an earlier default to today's (`store/move.py`).

        `encoder_backend` is what the encoder runs on here: "onnx" or "torch" for ConSE, one per tower for a
        CLIP model as `backend="auto"` picked it on this machine, e.g. "image=autocast,text=onnx".
        """
        extra = {"encoder_backend": getattr(self.encoder, "backend", None), "move": move_hint(self.store.meta)}
        return {**self.store.info(), **{key: value for key, value in extra.items() if value}}

    def close(self) -> None:
        """Release the store (and milvus-lite's file lock); afterwards every use raises `EngineClosedError`."""
        if not self.closed:
            self._store.close()
            self.closed = True


def folder_of(source: str | Path | None) -> Path | None:
    """The folder a pass over stored photos covers: `source` itself, or a CSV's folder (None: every photo)."""
    root = None if source is None else Path(source).expanduser()
    return root if root is None or root.is_dir() else root.parent
