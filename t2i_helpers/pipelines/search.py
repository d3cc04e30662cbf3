"""The search pipeline: a query cleaned, embedded and searched in Milvus (taught in notebook 01).

    search:  text -> embed text -> search Milvus (in a category, with filters) -> hits

Example:
    >>> search = search_pipeline(encoder, store)
    >>> hits = run_pipeline(search, "a red kangaroo", 5, "", Filters()).get()[0]
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..models.encoders import Encoder
from ..store.image_store import ImageStore
from .operators import Shared, ops, pipe

MAX_QUERY_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Invisible format characters (soft hyphen, zero-width spaces and joiners, direction marks, BOM), as a regex class
# body: a query made only of these and whitespace is empty, however many it holds.
INVISIBLE = r"\xad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
_VISIBLE = re.compile(rf"[^\s{INVISIBLE}]")


def search_pipeline(encoder: Encoder, store: ImageStore):
    """A Towhee pipeline: (text, top_k, category, filters) -> list of `Hit`, best first."""
    encoder, store = Shared(encoder), Shared(store)
    return (
        pipe.input("text", "top_k", "category", "filters")
        .map("text", "embedding", ops.t2i.text_embedding(encoder=encoder))
        .map(("embedding", "top_k", "category", "filters"), "hits", ops.t2i.milvus_search(store=store))
        .output("hits")
    )


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
    if not _VISIBLE.search(text):
        raise ValueError("the query is empty: type what the picture shows, e.g. 'a dog on the beach'")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}")
    return text
