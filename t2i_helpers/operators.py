"""The project's own Towhee operators, registered locally: no Towhee hub, nothing downloaded (notebook 01).

Importing this module registers them under the `t2i` namespace, so a pipeline can say
`ops.t2i.image_decode(...)`. Batch operators receive a list (one Towhee `window`) and return one value.

Example:
    >>> from towhee import ops
    >>> decode = ops.t2i.image_decode(report=Shared(IngestReport()))
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

with warnings.catch_warnings():  # towhee 1.1.3 imports the deprecated pkg_resources (hence setuptools<81)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from towhee import ops, pipe, register  # noqa: F401  (ops and pipe are re-exported to pipelines)

from .encoders import Encoder, to_rgb_array
from .store import Hit, ImageStore

MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are skipped, never decoded
MAX_SIDE = 1024  # decoded images are shrunk to this: every encoder reads 336 px or less, and memory stays bounded
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


class ImageError(ValueError):
    """An image file that cannot be used; the message is the reason shown to the user."""


class Decoded(NamedTuple):
    """A decoded image with its row (id = content hash, path, label, caption; `replaces`: the id of the
    stored row for the same path when the file changed)."""

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
    skipped: list[Skipped] = field(default_factory=list)
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
        """One line, e.g. `added 784, unchanged 0, updated 0, removed 0, skipped 1`."""
        return (
            f"added {self.added}, unchanged {self.unchanged}, updated {self.updated}, "
            f"removed {self.removed}, skipped {len(self.skipped)}"
        )


def content_id(data: bytes) -> int:
    """A stable positive int64 id from the file's bytes, so re-ingesting the same image cannot duplicate it."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes with OpenCV to RGB uint8 (alpha on white); Pillow for what OpenCV cannot read.

    Raises:
        ImageError: empty, not an image, corrupt, or larger than `max_pixels`.
    """
    if not data:
        raise ImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the size only
            width, height = header.size
    except Image.DecompressionBombError as err:  # Pillow's own guard, at twice its warning size
        raise ImageError(f"{err} (decompression-bomb guard)") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError("not an image file or unsupported format") from err
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} is over the {max_pixels:,}-pixel limit (decompression-bomb guard)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is not None and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if image is None:  # e.g. GIF, CMYK or odd palette files in some OpenCV builds
        try:
            with Image.open(io.BytesIO(data)) as pil:
                pil.load()  # first frame of an animation
                return to_rgb_array(pil)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ImageError(f"corrupt or truncated image ({err})") from err
    return to_rgb_array(image)


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


def shrink(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """`image` scaled down (never up) so that its longer side is at most `max_side`."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def read_image(path: str | Path, max_side: int | None = None) -> tuple[int, np.ndarray]:
    """Read and decode one file: (content id, RGB uint8 image), shrunk to `max_side` if given.

    Raises:
        ImageError: with the reason (not found, unreadable, empty, not an image, corrupt, too large).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise ImageError("file not found (or a broken link)") from err
    except OSError as err:
        raise ImageError(f"unreadable: {err.strerror or err}") from err
    image = decode_image(data)
    return content_id(data), shrink(image, max_side) if max_side else image


@register(name="t2i/image-decode")
class ImageDecode:
    """Batch op: rows -> decoded images, read in parallel threads; bad files go to the report.

    It waits while `report.max_in_flight` batches are decoded but not yet inserted: Towhee's queues hold up to
    1,000 rows, which would let decoding run thousands of images ahead of the model.
    """

    def __init__(self, report: Shared[IngestReport], workers: int = 2) -> None:
        self.report, self.pool = report.value, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2i-decode")

    def _one(self, row: dict) -> Decoded | Skipped:
        try:
            image_id, image = read_image(row["path"], max_side=MAX_SIDE)
        except ImageError as err:
            return Skipped(str(row["path"]), str(err))
        except Exception as err:  # a decoder bug on one odd file must not stop the whole ingest
            return Skipped(str(row["path"]), f"could not decode ({type(err).__name__}: {err})")
        return Decoded({**row, "id": image_id}, image)

    def __call__(self, rows: list[dict]) -> list[Decoded]:
        if not self.report.wait_for_room():  # room is given back by MilvusInsert
            return []
        results = list(self.pool.map(self._one, rows))
        self.report.add(skipped=[r for r in results if isinstance(r, Skipped)])
        return [r for r in results if isinstance(r, Decoded)]


@register(name="t2i/drop-existing")
class DropExisting:
    """Batch op: keep only images not yet stored (nor seen earlier in this run); mark changed files.

    A file whose path is stored under another content id has changed: its new row `replaces` the old one.
    """

    def __init__(self, store: Shared[ImageStore], report: Shared[IngestReport]) -> None:
        self.store, self.report, self.seen = store.value, report.value, {}

    @_stop_on_error
    def __call__(self, items: list[Decoded]) -> list[Decoded]:
        stored = self.store.existing_ids(item.row["id"] for item in items)
        by_path = self.store.ids_for_paths(item.row["path"] for item in items if item.row["id"] not in stored)
        fresh, unchanged, duplicates = [], 0, []
        for item in items:
            image_id, path = item.row["id"], item.row["path"]
            if image_id in self.seen:
                duplicates.append(Skipped(path, f"same image as {self.seen[image_id]}"))
            elif image_id in stored:
                unchanged += 1
            else:
                fresh.append(Decoded({**item.row, "replaces": by_path.get(path)}, item.image))
            self.seen.setdefault(image_id, path)
        self.report.add(unchanged=unchanged, skipped=duplicates)
        return fresh


@register(name="t2i/image-embedding")
class ImageEmbedding:
    """Batch op: decoded images -> normalized embeddings `[n, dim]`."""

    def __init__(self, encoder: Shared[Encoder], report: Shared[IngestReport]) -> None:
        self.encoder, self.report = encoder.value, report.value

    @_stop_on_error
    def __call__(self, items: list[Decoded]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.encoder.dim), np.float32)
        return self.encoder.encode_images([item.image for item in items])


@register(name="t2i/text-embedding")
class TextEmbedding:
    """Op: one text -> its normalized embedding `[dim]`."""

    def __init__(self, encoder: Shared[Encoder]) -> None:
        self.encoder = encoder.value

    def __call__(self, text: str) -> np.ndarray:
        return self.encoder.encode_texts([text])[0]


@register(name="t2i/milvus-insert")
class MilvusInsert:
    """Op: (decoded images, embeddings, the window's rows) -> rows inserted; advances the progress bar."""

    def __init__(self, store: Shared[ImageStore], report: Shared[IngestReport]) -> None:
        self.store, self.report = store.value, report.value

    @_stop_on_error
    def __call__(self, items: list[Decoded], embeddings: np.ndarray, batch: list[dict]) -> int:
        inserted = self.store.insert([item.row for item in items], embeddings)
        replaced = [item.row["replaces"] for item in items if item.row.get("replaces") is not None]
        self.store.delete(replaced)  # after the insert: a crash in between leaves a row too many, never too few
        self.report.batch_done()
        self.report.add(added=inserted - len(replaced), updated=len(replaced))
        if self.report.progress is not None:
            self.report.progress.update(len(batch))
        return inserted


@register(name="t2i/milvus-search")
class MilvusSearch:
    """Op: (embedding, top_k, category) -> hits, best first; category "" means all (Towhee skips None)."""

    def __init__(self, store: Shared[ImageStore]) -> None:
        self.store = store.value

    def __call__(self, embedding: np.ndarray, top_k: int, category: str | None) -> list[Hit]:
        return self.store.search(embedding[None, :], top_k=top_k, category=category or None)[0]
