"""Towhee pipelines for ingest and search, built from the local operators (taught in notebook 01).

    ingest:  rows -> window of N -> decode (threads) -> drop stored -> embed images -> insert into Milvus
    search:  text -> embed text -> search Milvus -> hits

Example:
    >>> search = search_pipeline(encoder, store)
    >>> hits = search("a red kangaroo", 5, None).get()[0]
"""

from __future__ import annotations

import re

import pandas as pd
from tqdm.auto import tqdm

from .encoders import Encoder
from .operators import IngestReport, Shared, ops, pipe  # importing operators registers them with Towhee
from .store import ImageStore

MAX_QUERY_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def ingest_pipeline(encoder: Encoder, store: ImageStore, report: IngestReport, batch_size: int = 8, workers: int = 2):
    """A Towhee pipeline that takes a list of rows (dicts with path, label, caption) and indexes them.

    Images are decoded by `workers` threads, embedded `batch_size` at a time and inserted per batch. Bad
    files, already stored images and duplicates are counted in `report`, never raised.
    """
    encoder, store, report = Shared(encoder), Shared(store), Shared(report)
    return (
        pipe.input("rows")
        .flat_map("rows", "row", lambda rows: rows)
        .window("row", "batch", batch_size, batch_size, lambda rows: list(rows))
        .map("batch", "items", ops.t2i.image_decode(report=report, workers=workers))
        .map("items", "items", ops.t2i.drop_existing(store=store, report=report))
        .map("items", "embeddings", ops.t2i.image_embedding(encoder=encoder))
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


def ingest(
    rows: pd.DataFrame,
    encoder: Encoder,
    store: ImageStore,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
) -> IngestReport:
    """Index a dataset (columns path, label, caption) through the ingest pipeline, then flush.

    Re-running it adds nothing: images are keyed by content hash and stored ones are not embedded again.

    Returns:
        The report: added, unchanged and skipped (with reasons).
    """
    records = rows[["path", "label", "caption"]].to_dict("records")
    report = IngestReport()
    with tqdm(total=len(records), unit="img", desc="ingest", disable=not progress) as bar:
        report.progress = bar
        ingest_pipeline(encoder, store, report, batch_size, workers)(records).to_list()
    report.progress = None
    store.flush()
    return report


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
