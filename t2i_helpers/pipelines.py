"""Towhee pipelines for ingest and search, built from the local operators (taught in notebook 01).

    ingest:  rows -> skip files whose size and mtime are stored -> window of N
             -> read, hash, skip stored, decode (threads) -> embed images -> insert into Milvus
    search:  text -> embed text -> search Milvus -> hits

Example:
    >>> search = search_pipeline(encoder, store)
    >>> hits = search("a red kangaroo", 5, None).get()[0]
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Generator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from tqdm.auto import tqdm

from .config import Config
from .encoders import Encoder
from .images import Thumbnails
from .operators import IngestReport, Shared, ops, pipe  # importing operators registers them with Towhee
from .store import ImageStore

MAX_QUERY_CHARS = 2000
IMAGES_IN_FLIGHT = 128  # read ahead of the inserts at most (in whole batches, at least 2): bounds memory
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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


def search_pipeline(encoder: Encoder, store: ImageStore):
    """A Towhee pipeline: (text, top_k, category) -> list of `Hit`, best first."""
    encoder, store = Shared(encoder), Shared(store)
    return (
        pipe.input("text", "top_k", "category")
        .map("text", "embedding", ops.t2i.text_embedding(encoder=encoder))
        .map(("embedding", "top_k", "category"), "hits", ops.t2i.milvus_search(store=store))
        .output("hits")
    )


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
    records, todo = list_files(rows, store, report, sync_root, verify)
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
    rows: pd.DataFrame, store: ImageStore, report: IngestReport, sync_root: str | Path | None, verify: bool
) -> tuple[list[dict], list[dict]]:
    """Every file of a dataset with its size and mtime, and those to read: the start of every ingest.

    With `sync_root`, stored rows under that folder whose file is not listed are removed first; unless
    `verify`, files stored with the same size and modification time are counted unchanged and not read.

    Returns:
        (all the records, the records to read); `report` counts what was removed and unchanged.
    """
    records = [{**row, **file_state(row["path"])} for row in rows[["path", "label", "caption"]].to_dict("records")]
    if sync_root is not None:
        report.removed = remove_missing(store, {r["path"] for r in records}, sync_root)
    return records, records if verify else skip_unchanged(records, store, report)


def file_state(path: str) -> dict[str, int]:
    """A file's size and modification time (ns) as stored beside its row; -1 for a file that cannot be seen."""
    try:
        stat = os.stat(path)
    except OSError:  # reading it will say why
        return {"size": -1, "mtime_ns": -1}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def skip_unchanged(records: list[dict], store: ImageStore, report: IngestReport) -> list[dict]:
    """The records whose file is not stored with the same size and modification time; counts the others."""
    known = store.file_states(r["path"] for r in records)
    todo = [
        r
        for r in records
        if r["size"] < 0 or (k := known.get(r["path"])) is None or (k.size, k.mtime_ns) != (r["size"], r["mtime_ns"])
    ]
    report.add(unchanged=len(records) - len(todo))
    return todo


class IngestError(RuntimeError):
    """An ingest stopped part way; `report` says what it had done."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


def remove_missing(store: ImageStore, present: set[str], root: str | Path) -> int:
    """Delete stored rows under folder `root` whose path is not in `present`; returns how many."""
    prefix = str(Path(root).expanduser().resolve()) + os.sep
    stale = [i for i, path in store.paths().items() if path.startswith(prefix) and path not in present]
    store.delete(stale)
    return len(stale)


class Query(NamedTuple):
    """A query ready for the encoder, and a notice for the user if it had to be shortened."""

    text: str
    notice: str | None


def prepare_query(text: str, encoder: Encoder) -> Query:
    """Clean a query and cut it to what the encoder reads (encoders may offer `truncate_text`)."""
    text = clean_query(text)
    fitted = encoder.truncate_text(text) if hasattr(encoder, "truncate_text") else text
    if fitted == text:
        return Query(text, None)
    return Query(
        fitted, f"the query was cut to its first {len(fitted)} of {len(text)} characters: the model reads no more"
    )


def clean_query(text: str) -> str:
    """A query with control characters removed and whitespace squeezed; refuses empty or huge queries."""
    if not isinstance(text, str):
        raise ValueError("the query must be text")
    text = " ".join(_CONTROL.sub(" ", text).split())
    if not text:
        raise ValueError("the query is empty: type what the picture shows, e.g. 'a dog on the beach'")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}")
    return text
