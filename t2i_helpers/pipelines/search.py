"""The search pipeline: a query cleaned, embedded and searched in Milvus (taught in notebook 01).

    search:  texts -> embed each text alone -> search Milvus (one call, nq = len(texts), in a category, with
             filters) -> hits per text

One query is a batch of one; a server answering many people at once passes their queries together
(`serve/batching.py`, notebook 04), and each gets the hits it gets alone: its embedding is made alone (in a
padded batch it differs in the last bits, enough to swap two photos of nearly the same score), and Milvus's
scores of a query do not depend on the queries searched with it.

Example:
    >>> search = search_pipeline(encoder, store)
    >>> hits = run_pipeline(search, ["a red kangaroo", "a fire truck"], 5, "", Filters()).get()[0]  # two lists
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..models.encoders import Encoder
from ..store.image_store import ImageStore
from .operators import Shared, ops, pipe

MAX_QUERY_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Invisible format characters (soft hyphen, zero-width spaces and joiners, direction marks, BOM), as a regex class
# body: a query made only of these and whitespace is empty, however many it holds.
INVISIBLE = r"\xad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
_VISIBLE = re.compile(rf"[^\s{INVISIBLE}]")


def search_pipeline(encoder: Encoder, store: ImageStore, cache: QueryCache | None = None):
    """A Towhee pipeline: (texts, top_k, category, filters) -> one list of `Hit` per text, best first.

    With a `cache`, texts embedded recently are not embedded again.
    """
    embed = QueryCache(0) if cache is None else cache
    encoder, store, embed = Shared(encoder), Shared(store), Shared(embed)
    return (
        pipe.input("texts", "top_k", "category", "filters")
        .map("texts", "embeddings", ops.t2i.text_embedding(encoder=encoder, cache=embed))
        .map(("embeddings", "top_k", "category", "filters"), "hits", ops.t2i.milvus_search(store=store))
        .output("hits")
    )


class QueryCache:
    """The embeddings of the `size` most recently searched distinct texts (least recently used leave first).

    People repeat queries; a repeated one then costs no encoder call. Every embedding is the one the encoder
    gives the text alone, cached or not, so results do not change.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts` `[n, dim]`: cached ones as they are, the others each embedded alone.

        Alone, not in one padded batch: batched in 2s to 32s, 68% of 1,000 embeddings differed from their text's
        alone in the last bits (up to 4.5e-8; int8 MiniLM, AMD EPYC with AVX512-VNNI), enough to swap near-tied
        photos (4 of 10,232 answers differed on an AMD EPYC with AVX2 only); batches of 8 saved ~0.4 ms a text.
        """
        with self._lock:
            found = {t: self._items[t] for t in texts if t in self._items}
            for text in found:
                self._items.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            found |= {text: encoder.encode_texts([text])[0] for text in missing}
        with self._lock:
            self.hits, self.misses = self.hits + len(texts) - len(missing), self.misses + len(missing)
            for text in missing[-self.size :] if self.size else ():
                self._items[text] = found[text]
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)


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
