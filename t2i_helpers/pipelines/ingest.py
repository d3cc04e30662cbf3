"""The ingest pipeline, built from the local Towhee operators, and the incremental run around it (notebook 01).

    ingest:  rows -> skip files whose size and mtime are stored -> window of N
             -> read, hash, skip stored, decode (threads) -> embed images -> insert into Milvus

Example:
    >>> report = ingest(load_bundled(), encoder, store)
    >>> report.added
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..config import Config
from ..data.exif import header_metadata
from ..data.images import Thumbnails
from ..models.encoders import Encoder
from ..store.collection import fit_int64
from ..store.image_store import ImageStore
from .operators import (  # importing operators registers them with Towhee
    IngestReport,
    Shared,
    Skipped,
    ops,
    pipe,
    run_pipeline,
)

IMAGES_IN_FLIGHT = 128  # read ahead of the inserts at most (in whole batches, at least 2): bounds memory


def ingest_pipeline(
    encoder: Encoder,
    store: ImageStore,
    report: IngestReport,
    batch_size: int = Config.batch_size,
    workers: int = Config.decode_workers,
    thumbnails: Thumbnails | None = None,
):
    """A Towhee pipeline that takes a list of rows (dicts with path, label, caption, size, mtime_ns) and
    indexes them.

    Files are read, hashed and decoded by `workers` threads (JPEGs at the scale the encoder reads, its
    `image_size`), embedded `batch_size` at a time and inserted per batch. Bad files, already stored images
    and duplicates are counted in `report`, never raised.
    """
    load = ops.t2i.image_load(
        store=Shared(store),
        report=Shared(report),
        workers=workers,
        min_side=getattr(encoder, "image_size", None),
        thumbnails=thumbnails,
    )
    encoder, store, report = Shared(encoder), Shared(store), Shared(report)
    return (
        pipe.input("rows")
        .flat_map("rows", "row", lambda rows: rows)
        .window("row", "batch", batch_size, batch_size, lambda rows: list(rows))
        .map("batch", "items", load)
        .map("items", "embeddings", ops.t2i.image_embedding(encoder=encoder, report=report))
        .map(("items", "embeddings", "batch"), "inserted", ops.t2i.milvus_insert(store=store, report=report))
        .output("inserted")
    )


def ingest(
    rows: pd.DataFrame,
    encoder: Encoder,
    store: ImageStore,
    batch_size: int = Config.batch_size,
    workers: int = Config.decode_workers,
    progress: bool = True,
    sync_root: str | Path | None = None,
    verify: bool = False,
    thumbnails: Thumbnails | None = None,
) -> IngestReport:
    """Index a dataset (columns path, label, caption) through the ingest pipeline, then flush.

    Incremental and resumable: a file whose path, size and modification time match its stored row is
    unchanged without being opened; other files are hashed, so stored images are not embedded again, a
    changed file replaces its old row, and a run killed part way is completed by running it again.

    Args:
        sync_root: if given, first remove stored rows under this folder whose path is not in `rows`
            (files deleted since the last run).
        verify: read and hash every file, even those whose size and modification time are stored.
        thumbnails: where to write each new image's thumbnail; None writes none.

    Returns:
        The report: added, unchanged, updated, removed and skipped (with reasons), and the time it took.
    """
    started = time.perf_counter()
    report = IngestReport(max_in_flight=max(2, IMAGES_IN_FLIGHT // batch_size))
    records, todo = list_files(rows, store, report, sync_root, verify, thumbnails)
    try:
        if todo:
            unchanged = len(records) - len(todo)
            with tqdm(total=len(records), initial=unchanged, unit="img", desc="ingest", disable=not progress) as bar:
                report.progress = bar
                run_pipeline(ingest_pipeline(encoder, store, report, batch_size, workers, thumbnails), todo).to_list()
    except Exception as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[-1]  # Towhee wraps the node's traceback
        raise IngestError(
            f"ingest stopped after storing {report.added} new images: {cause}. Fix the cause and run it again: "
            "images already stored are not embedded again.",
            report,
        ) from err
    finally:
        report.progress = None
        store.flush()  # also after a failure: what was inserted is counted and searchable
        report.finish(started, len(records))
    return report


def list_files(
    rows: pd.DataFrame,
    store: ImageStore,
    report: IngestReport,
    sync_root: str | Path | None,
    verify: bool,
    thumbnails: Thumbnails | None = None,
) -> tuple[list[dict], list[dict]]:
    """Every file of a dataset with its size and mtime, and those to read: the start of every ingest.

    With `sync_root`, stored rows under that folder whose file is not listed are removed first (and their
    `thumbnails`); unless `verify`, files stored with the same size and modification time are counted unchanged
    and not read.

    A file whose name is not valid UTF-8 (Milvus stores text as UTF-8) is a reported skip, never the end of the run;
    so is a caption the folder scan did not read (`rows.attrs["skipped"]`, `datasets.scan_folder`).

    Returns:
        (all the records, the records to read); `report` counts what was removed, unchanged and skipped.
    """
    records, skipped = [], [Skipped(*s) for s in rows.attrs.get("skipped", [])]
    for row in rows[["path", "label", "caption"]].to_dict("records"):
        try:
            row["path"].encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in a name reach Python as lone surrogates
            shown = row["path"].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            skipped.append(Skipped(shown, "its name is not valid UTF-8, which Milvus cannot store: rename it"))
            continue
        records.append({**row, **file_state(row["path"])})
    report.add(skipped=skipped)
    if sync_root is not None:
        report.removed = remove_missing(store, {r["path"] for r in records}, sync_root, thumbnails)
    return records, records if verify else skip_unchanged(records, store, report)


def file_state(path: str) -> dict[str, int]:
    """A file's size and modification time (ns) as stored beside its row; -1 for a file that cannot be seen.

    A time beyond what INT64 nanoseconds hold (before 1677, after 2262-04-11: tar and zip keep such times) is
    stored as the nearest it holds (`fit_int64`): the next run compares it alike, and the photo has no time.
    """
    try:
        stat = os.stat(path)
    except OSError:  # reading it will say why
        return {"size": -1, "mtime_ns": -1}
    return {"size": stat.st_size, "mtime_ns": fit_int64(stat.st_mtime_ns)}


def skip_unchanged(records: list[dict], store: ImageStore, report: IngestReport) -> list[dict]:
    """The records whose file is not stored with the same size and modification time; counts the others, and
    reads the headers of those stored without their time, camera and place (migrated from schema 2)."""
    known = store.file_states(r["path"] for r in records)
    todo, undescribed = [], {}
    for r in records:
        k = known.get(r["path"])
        if r["size"] < 0 or k is None or (k.size, k.mtime_ns) != (r["size"], r["mtime_ns"]):
            todo.append(r)
        elif not k.described:
            undescribed[k.id] = r
    report.add(unchanged=len(records) - len(todo))
    describe(store, undescribed, report)
    return todo


def describe(store: ImageStore, records: dict[int, dict], report: IngestReport, chunk: int = 256) -> None:
    """Store the time, camera and place of stored rows (by id) from their files' headers; no pixels decoded."""
    ids = list(records)
    for lo in range(0, len(ids), chunk):
        store.update({i: header_metadata(records[i]["path"], records[i]["mtime_ns"]) for i in ids[lo : lo + chunk]})
    report.described += len(ids)


class IngestError(RuntimeError):
    """An ingest stopped part way; `report` says what it had done."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


def remove_missing(store: ImageStore, present: set[str], root: str | Path, thumbnails: Thumbnails | None = None) -> int:
    """Delete stored rows under folder `root` whose path is not in `present`, and their thumbnails; how many."""
    prefix = str(Path(root).expanduser().resolve()) + os.sep
    stale = [i for i, path in store.paths().items() if path.startswith(prefix) and path not in present]
    store.delete(stale)
    if thumbnails is not None:
        thumbnails.remove(stale)
    return len(stale)
