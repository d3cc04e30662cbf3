"""The project's own Towhee operators, registered locally: no Towhee hub, nothing downloaded (notebook 01).

Importing this module registers them under the `t2i` namespace, so a pipeline can say
`ops.t2i.image_load(...)`. Batch operators receive a list (one Towhee `window`) and return one value.

Example:
    >>> from towhee import ops
    >>> load = ops.t2i.image_load(store=Shared(store), report=Shared(IngestReport()), min_side=260)
"""

from __future__ import annotations

import functools
import os
import threading
import time
import traceback
import warnings
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

import numpy as np

with warnings.catch_warnings():  # towhee 1.1.3 imports the deprecated pkg_resources (hence setuptools<81)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from towhee import ops, pipe, register  # noqa: F401  (ops and pipe are re-exported to pipelines)

from ..data.exif import header_metadata, photo_metadata
from ..data.images import MAX_SIDE, ImageError, Thumbnails, content_id, decode_photo, read_bytes
from ..models.encoders import Encoder, encode_images_with_classes
from ..store.filters import Filters
from ..store.image_store import Hit, ImageStore

T = TypeVar("T")


class Shared(Generic[T]):
    """A live object (model, store connection, report) handed to a Towhee operator by reference.

    Towhee deep-copies operator arguments when it builds a pipeline; a loaded model or an open connection
    must not be copied, so operators take them wrapped: `ops.t2i.text_embedding(encoder=Shared(encoder))`.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict) -> Shared[T]:
        return self


class Decoded(NamedTuple):
    """A decoded image with its row (id = content hash, path, label, caption, size, mtime_ns; `replaces`: the
    id of the stored row for the same path when the file changed)."""

    row: dict
    image: np.ndarray


class Skipped(NamedTuple):
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass
class IngestReport:
    """What an ingest did, and its flow control; operators add to it from several threads."""

    added: int = 0
    unchanged: int = 0
    updated: int = 0
    removed: int = 0
    described: int = 0  # stored rows whose header was read for their time, camera and place (after a migration)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0  # files looked at (stored, new or skipped)
    seconds: float = 0.0  # wall time of the whole ingest
    progress: object = None  # a tqdm bar, advanced as batches are inserted
    max_in_flight: int = 8  # batches decoded but not yet inserted
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _room: threading.Semaphore = field(init=False, repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self._room = threading.Semaphore(self.max_in_flight)

    def wait_for_room(self) -> bool:
        """Block while `max_in_flight` batches are on their way; False once a stage has failed."""
        while not self._room.acquire(timeout=0.1):
            if self._stopped.is_set():
                return False
        return True

    def batch_done(self) -> None:
        """A batch has left the pipeline: the decoder may read another."""
        self._room.release()

    def stop(self) -> None:
        """A stage failed: let a waiting decoder give up instead of hanging the run."""
        self._stopped.set()

    def add(self, added: int = 0, unchanged: int = 0, updated: int = 0, skipped: list[Skipped] | None = None) -> None:
        """Count rows, thread-safely."""
        with self._lock:
            self.added += added
            self.unchanged += unchanged
            self.updated += updated
            self.skipped.extend(skipped or [])

    def summary(self) -> str:
        """One line, e.g. `added 784, unchanged 0, updated 0, removed 0, skipped 1` (`, described N` where
        headers of stored photos were read)."""
        described = f", described {self.described}" if self.described else ""
        return (
            f"added {self.added}, unchanged {self.unchanged}, updated {self.updated}, "
            f"removed {self.removed}, skipped {len(self.skipped)}{described}"
        )

    @property
    def images_per_s(self) -> float:
        """Files looked at per second of the whole ingest."""
        return self.files / self.seconds if self.seconds > 0 else 0.0

    def throughput(self) -> str:
        """How fast it went, e.g. `785 files in 5.1 s (154 images/s)`."""
        rate = self.images_per_s
        return f"{self.files} files in {self.seconds:.1f} s ({rate:.{0 if rate >= 10 else 1}f} images/s)"

    def finish(self, started: float, files: int) -> None:
        """Record the wall time since `started` (a `time.perf_counter()`) and how many files were looked at."""
        self.files, self.seconds = files, time.perf_counter() - started


def _stop_on_error(call):
    """Wrap an operator's `__call__` so that a failure stops the decoder (see `IngestReport.stop`)."""

    @functools.wraps(call)
    def run(self, *args):
        try:
            return call(self, *args)
        except BaseException:
            self.report.stop()
            raise

    return run


def read_file(row: dict) -> tuple[dict, bytes] | Skipped:
    """A file's row with its id (the content hash) and its bytes, or why it cannot be read."""
    try:
        data = read_bytes(row["path"])
    except ImageError as err:
        return Skipped(str(row["path"]), str(err))
    return {**row, "id": content_id(data)}, data


def decode_file(
    row: dict, data: bytes, min_side: int | None = None, thumbnails: Thumbnails | None = None
) -> Decoded | Skipped:
    """A file's bytes decoded upright at the scale the encoder reads (thumbnail written), or why not; the row gets
    what the header Pillow parsed on the way says (time taken, camera, place: `exif.photo_metadata`)."""
    try:
        image, exif = decode_photo(data, min_side=min_side, max_side=MAX_SIDE)
        row = {**row, **photo_metadata(exif, row.get("mtime_ns", -1))}
        if thumbnails is not None:
            thumbnails.write(row["id"], image)
    except ImageError as err:
        return Skipped(str(row["path"]), str(err))
    except Exception as err:  # a decoder bug on one odd file must not stop the whole ingest
        return Skipped(str(row["path"]), f"could not decode ({type(err).__name__}: {err})")
    return Decoded(row, image)


class Kept(NamedTuple):
    """What `drop_stored` made of a batch of read files: those to decode, how many were stored, the skips."""

    fresh: list[tuple[dict, bytes]]
    unchanged: int
    skipped: list[Skipped]


def drop_stored(store: ImageStore, loaded: list[tuple[dict, bytes]], seen: dict[int, str]) -> Kept:
    """Keep the read files whose image the store lacks; point stored images at their file again.

    A stored image whose file was touched, or moved from a path that is gone, is pointed at the file again
    (`store.update`; a row migrated from schema 2 gets its header's time, camera and place then). A file stored
    under another id has changed: its row `replaces` the old one. A copy of an
    image stored at another path, or seen earlier in this run (`seen`: id -> first path, updated here), is
    skipped. Both ingests call it: the Towhee operator per window, each Ray read task per chunk of files.
    """
    stored = {int(r["id"]): r for r in store.get(row["id"] for row, _ in loaded)}
    by_path = store.file_states(row["path"] for row, _ in loaded if row["id"] not in stored)
    fresh, unchanged, skipped, changes = [], 0, [], {}
    for row, data in loaded:
        image_id, path, known = row["id"], row["path"], stored.get(row["id"])
        if image_id in seen:
            skipped.append(Skipped(path, f"same image as {seen[image_id]}"))
        elif known is None:
            old = by_path.get(path)
            fresh.append(({**row, "replaces": old.id if old else None}, data))
        elif known["path"] == path or not os.path.exists(known["path"]):
            unchanged += 1
            file = {"path": path, "size": row["size"], "mtime_ns": row["mtime_ns"]}
            change = {} if all(known[k] == v for k, v in file.items()) else file
            if not known["taken_from"]:  # migrated from schema 2: its header was not read yet
                change.update(header_metadata(data, row["mtime_ns"]))
            if change:
                changes[image_id] = change
        else:
            skipped.append(Skipped(path, f"same image as {known['path']}"))
        seen.setdefault(image_id, path)
    store.update(changes)
    return Kept(fresh, unchanged, skipped)


@register(name="t2i/image-load")
class ImageLoad:
    """Batch op: rows -> decoded images of the files the store lacks; read, hashed and decoded by threads.

    Each file's bytes are hashed first (the id); only images not stored yet are decoded: JPEGs at the smallest
    DCT scale that covers `min_side`, every image upright, with its thumbnail written when `thumbnails` is
    given. A stored image whose file was touched, or moved from a path that is gone, is pointed at the file
    again. A file stored under another id has changed: its new row `replaces` the old one. Bad files and
    copies of an image seen before go to the report. The op waits while `report.max_in_flight` batches are
    on their way: Towhee's queues hold up to 1,000 rows, which would let reading run far ahead of the model.
    """

    def __init__(
        self,
        store: Shared[ImageStore],
        report: Shared[IngestReport],
        workers: int = 2,
        min_side: int | None = None,
        thumbnails: Thumbnails | None = None,
    ) -> None:
        self.store, self.report, self.min_side, self.thumbnails = store.value, report.value, min_side, thumbnails
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2i-load")
        self.seen: dict[int, str] = {}  # id -> the first path it came from in this run

    @_stop_on_error
    def __call__(self, rows: list[dict]) -> list[Decoded]:
        if not self.report.wait_for_room():  # room is given back by MilvusInsert
            return []
        read = list(self.pool.map(read_file, rows))
        self.report.add(skipped=[r for r in read if isinstance(r, Skipped)])
        kept = drop_stored(self.store, [r for r in read if not isinstance(r, Skipped)], self.seen)
        self.report.add(unchanged=kept.unchanged, skipped=kept.skipped)
        decoded = list(self.pool.map(lambda item: decode_file(*item, self.min_side, self.thumbnails), kept.fresh))
        self.report.add(skipped=[d for d in decoded if isinstance(d, Skipped)])
        return [d for d in decoded if isinstance(d, Decoded)]


@register(name="t2i/image-embedding")
class ImageEmbedding:
    """Batch op: decoded images -> normalized embeddings `[n, dim]`; what the image model said of each (its top
    classes, for ConSE encoders) goes into the item's row."""

    def __init__(self, encoder: Shared[Encoder], report: Shared[IngestReport]) -> None:
        self.encoder, self.report = encoder.value, report.value

    @_stop_on_error
    def __call__(self, items: list[Decoded]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.encoder.dim), np.float32)
        embeddings, said = encode_images_with_classes(self.encoder, [item.image for item in items])
        for item, classes in zip(items, said):
            item.row.update(classes)
        return embeddings


@register(name="t2i/text-embedding")
class TextEmbedding:
    """Op: texts -> their normalized embeddings `[n, dim]`, the ones not in `cache` each embedded alone."""

    def __init__(self, encoder: Shared[Encoder], cache: Shared) -> None:
        self.encoder, self.cache = encoder.value, cache.value  # a `search.QueryCache`

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.cache.embed(self.encoder, texts)


def write_rows(store: ImageStore, rows: list[dict], embeddings: np.ndarray) -> tuple[int, int]:
    """Upsert embedded rows, then delete the stored rows they replace (`row["replaces"]`); (added, updated)."""
    inserted = store.insert(rows, embeddings)
    replaced = [row["replaces"] for row in rows if row.get("replaces") is not None]
    store.delete(replaced)  # after the insert: a crash in between leaves a row too many, never too few
    return inserted - len(replaced), len(replaced)


@register(name="t2i/milvus-insert")
class MilvusInsert:
    """Op: (decoded images, embeddings, the window's rows) -> rows inserted; advances the progress bar."""

    def __init__(self, store: Shared[ImageStore], report: Shared[IngestReport]) -> None:
        self.store, self.report = store.value, report.value

    @_stop_on_error
    def __call__(self, items: list[Decoded], embeddings: np.ndarray, batch: list[dict]) -> int:
        added, updated = write_rows(self.store, [item.row for item in items], embeddings)
        self.report.batch_done()
        self.report.add(added=added, updated=updated)
        if self.report.progress is not None:
            self.report.progress.update(len(batch))
        return added + updated


@register(name="t2i/milvus-search")
class MilvusSearch:
    """Op: (embeddings `[n, dim]`, top_k, category, filters) -> n lists of hits, best first, in one Milvus search
    (nq = n); category "" means all (Towhee skips None)."""

    def __init__(self, store: Shared[ImageStore]) -> None:
        self.store = store.value

    def __call__(self, embeddings: np.ndarray, top_k: int, category: str | None, filters: Filters) -> list[list[Hit]]:
        return self.store.search(embeddings, top_k=top_k, category=category or None, filters=filters)


class PipelineError(RuntimeError):
    """A Towhee pipeline failed outside any operator; the message is Towhee's first line."""


def run_pipeline(pipeline, *inputs):
    """Run a Towhee pipeline, re-raising what an operator raised as itself (the one place that unwraps Towhee).

    Towhee 1.1.3 catches an operator's exception in `Node._call`, keeps only its text and two tracebacks, and
    raises a `RuntimeError` with that text once the run ends. Here each node of this run keeps the exception
    object too, and the first one is raised again: callers catch `ImageError`, `StoreError`, ... as usual, and
    a person never sees Towhee's 30-line message.

    Args:
        pipeline: a Towhee pipeline, e.g. `search_pipeline(encoder, store)`.
        inputs: its inputs, as for `pipeline(*inputs)`.

    Returns:
        The output `DataQueue` (`.get()`, `.to_list()`).
    """
    failures: list[Exception] = []
    try:
        graph = pipeline.preload()  # the nodes of one run, as `pipeline(*inputs)` builds them
        for node in graph._node_runners:
            node._call = _keeping_failures(node, failures)
        return graph(inputs)
    except RuntimeError as err:
        if failures:
            raise failures[0] from None
        # Towhee's own failure ("Node-x runs failed, error msg: <cause>, Traceback ..."): keep the cause
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise PipelineError(first.split("error msg: ", 1)[-1].split(", Traceback")[0]) from None


def _keeping_failures(node, failures: list[Exception]):
    """Towhee's `Node._call` (run the operator, report failure as text), also keeping the exception object,
    including one raised while Towhee iterates a generator the operator returned (`flat_map`)."""

    def call(inputs):
        try:
            result = node._op(*inputs)
        except Exception as err:
            failures.append(err)
            return False, None, f"{err}, {traceback.format_exc()}"
        return True, _iterate_keeping(result, failures) if isinstance(result, Generator) else result, None

    return call


def _iterate_keeping(items: Generator, failures: list[Exception]) -> Generator:
    try:
        yield from items
    except Exception as err:
        failures.append(err)
        raise
