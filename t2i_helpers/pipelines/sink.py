"""The Ray workers' side of the ingest: the embedding actor, a store per process, a Ray Data sink (notebook 04).

Ray Data's documented extension point for a new destination is a `ray.data.Datasink` subclass handed to
`Dataset.write_datasink`; each write task calls `write` with some blocks, and the driver `on_write_complete`.
This module needs Ray (`pip install -e ".[distributed]"`); `distributed.py` imports it only to run a job.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from ..config import Config
from ..models.encoders import encode_images_with_classes, load_encoder
from ..store.connection import read_meta
from ..store.image_store import ImageStore, StoreError
from .operators import IngestReport, Skipped, write_rows


@functools.lru_cache(maxsize=4)
def open_store(config: Config, encoder_name: str, dim: int) -> ImageStore:
    """The collection, opened once per Ray worker process (with the encoder check) and kept for its tasks.

    Raises:
        StoreError: the collection is gone (the driver made it: a worker never creates one).
    """
    if read_meta(config) is None:
        raise StoreError(
            f"collection {config.collection!r} is no longer at {config.uri} (dropped while the Ray ingest ran)"
        )
    return ImageStore(config, encoder_name, dim)


class ImageEmbedder:
    """A Ray actor's work: load the encoder once, then embed one batch of images per call (`map_batches`)."""

    def __init__(self, encoder_spec: str, encoder_name: str, dim: int) -> None:
        self.encoder = load_encoder(encoder_spec)
        if (self.encoder.name, self.encoder.dim) != (encoder_name, dim):
            raise StoreError(
                f"encoder {encoder_spec!r} loads as {self.encoder.name!r} ({self.encoder.dim}-d) on the Ray "
                f"workers, not {encoder_name!r} ({dim}-d): give the Ray ingest a name load_encoder() accepts"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch.pop("image")
        embeddings = np.zeros((len(images), self.encoder.dim), np.float32)
        said = np.full(len(images), "{}", dtype=object)  # what the image model said, as JSON (a column of str)
        todo = np.flatnonzero(batch["tally"] == "")
        if len(todo):
            embeddings[todo], classes = encode_images_with_classes(self.encoder, [images[i] for i in todo])
            said[todo] = [json.dumps(c) for c in classes]
        return {**batch, "embedding": embeddings, "classes": said}


class Tally(NamedTuple):
    """What one write task stored and counted."""

    files: int
    added: int
    updated: int
    unchanged: int
    skipped: list[Skipped]


class MilvusDatasink(Datasink):
    """Writes embedded image rows into a t2i collection through `ImageStore`, as the local ingest does.

    Each write task upserts its image rows (ids are content hashes, so a retried task or a second writer
    overwrites, never duplicates) and then deletes the rows they replace; tally rows (one per read chunk:
    files, unchanged, skips) are counted. On the driver, `on_write_complete` adds every task's counts to
    `report` and flushes the driver's `store`; `on_write_failed` flushes too, so what was written is searchable.
    """

    def __init__(self, store: ImageStore, report: IngestReport) -> None:
        self.store, self.report = store, report
        self.config, self.encoder_name, self.dim = store.config, store.meta["encoder"], store.meta["dim"]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "store": None, "report": None}  # write tasks open their own store

    def write(self, blocks: Iterable[Block], ctx: object) -> Tally:
        """Store the image rows of `blocks` and count their tally rows (runs in a Ray write task)."""
        store = open_store(self.config, self.encoder_name, self.dim)
        files = added = updated = unchanged = 0
        skipped: list[Skipped] = []
        for block in blocks:
            batch = BlockAccessor.for_block(block).to_batch_format("numpy")
            images = np.flatnonzero(batch["tally"] == "")
            rows = [
                {
                    "id": int(batch["id"][i]),
                    **{k: str(batch[k][i]) for k in ("path", "label", "caption")},
                    **{k: int(batch[k][i]) for k in ("size", "mtime_ns")},
                    "replaces": int(batch["replaces"][i]) if batch["replaces"][i] >= 0 else None,
                    **json.loads(str(batch["photo"][i])),
                    **json.loads(str(batch["classes"][i])),
                }
                for i in images
            ]
            done = write_rows(store, rows, batch["embedding"][images])
            added, updated = added + done[0], updated + done[1]
            for text in batch["tally"][batch["tally"] != ""]:
                tally = json.loads(text)
                files, unchanged = files + tally["files"], unchanged + tally["unchanged"]
                skipped += [Skipped(*s) for s in tally["skipped"]]
        return Tally(files, added, updated, unchanged, skipped)

    def on_write_complete(self, write_result) -> None:
        """On the driver: add every write task's counts to the report, then flush."""
        for tally in write_result.write_returns:
            self.report.add(tally.added, tally.unchanged, tally.updated, tally.skipped)
        self.store.flush()

    def on_write_failed(self, error: Exception) -> None:
        """On the driver, after a failure: flush what was written (a flush that fails too leaves `error` to say)."""
        with contextlib.suppress(Exception):
            self.store.flush()
