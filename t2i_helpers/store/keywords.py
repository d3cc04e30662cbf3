"""The keyword field: each file's folder and file names, searched with BM25 beside the vectors (notebook 05).

A row's keywords are the words of its path, e.g. `.../animals/mammals/dogs/dog.png` -> "... animals mammals
dogs dog", and the words read in the photo (OCR, notebook 06); never its caption. Milvus (>= 2.5, and
milvus-lite 2.5) turns them into a sparse BM25 vector with its own `Function`, so one collection answers vector,
keyword and hybrid (`hybrid_search`) queries. Older servers have no sparse vectors: whether a deployment can hold
the field is measured (`keyword_support`), not assumed.

Example:
    >>> path_keywords("/photos/animals/mammals/dogs/dog.png")
    'photos animals mammals dogs dog'
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import PurePath

import grpc
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker
from pymilvus.exceptions import MilvusException

from ..config import Config

KEYWORD_FIELD = "keywords"  # VARCHAR with an analyzer: the words of the path
SPARSE_FIELD = "keywords_bm25"  # SPARSE_FLOAT_VECTOR, filled by Milvus's BM25 function
MAX_KEYWORD_BYTES = 4096
# Milvus's "english" analyzer: standard tokenizer, lowercase, English stop words and stemmer ("dogs" finds "dog").
ANALYZER = {"type": "english"}
_WORDS = re.compile(r"[^\W_]+")  # letters and digits: "_", "-", "." and "/" separate words
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")  # "yellowPepper" -> "yellow Pepper"
_SUPPORT: dict[str, str | None] = {}  # deployment -> None (supported) or why not, measured once per process


def path_keywords(path: str) -> str:
    """The words of a path's folders and file name (without its extension), lowercased, in order."""
    parts = PurePath(path)
    text = " ".join([*parts.parent.parts, parts.stem])
    return " ".join(w.lower() for w in _WORDS.findall(_CAMEL.sub(" ", text)))


def row_keywords(path: str, text: str = "") -> str:
    """A row's keywords: the words of its path, then those of the text read in the photo (lowercased)."""
    return " ".join([path_keywords(path), *(w.lower() for w in _WORDS.findall(text))]).strip()


def add_keyword_fields(schema, index_params) -> None:
    """Add the keyword text field, its BM25 sparse vector and the function between them, and the sparse index."""
    schema.add_field(
        KEYWORD_FIELD, DataType.VARCHAR, max_length=MAX_KEYWORD_BYTES, enable_analyzer=True, analyzer_params=ANALYZER
    )
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="keywords_to_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[KEYWORD_FIELD],
            output_field_names=[SPARSE_FIELD],
        )
    )
    index_params.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")


def keyword_support(client: MilvusClient, config: Config) -> str | None:
    """None if this deployment can hold the keyword field and search it, else what went wrong (one line).

    Measured on a throwaway collection (made, filled with one row, searched by text, by hybrid search, and
    dropped), once per deployment and process: a Milvus 2.3 server refuses the sparse index; one that accepted
    the schema but ignored the BM25 function would find nothing.
    """
    key = "milvus-lite" if config.is_lite else config.uri
    if key not in _SUPPORT:
        with _quiet():
            _SUPPORT[key] = _probe(client)
    return _SUPPORT[key]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pymilvus's traceback logging of a failed call that is expected (an older server refusing)."""
    logger = logging.getLogger("pymilvus.decorators")
    was, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = was


def _probe(client: MilvusClient) -> str | None:
    name = f"t2i_keyword_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    try:
        add_keyword_fields(schema, index)
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        client.insert(name, [{"id": 1, KEYWORD_FIELD: "probe dogs", "embedding": [1.0, 0.0]}])
        found = client.search(name, ["dog"], anns_field=SPARSE_FIELD, limit=1, search_params={"metric_type": "BM25"})
        requests = [
            AnnSearchRequest([[1.0, 0.0]], "embedding", {"metric_type": "COSINE"}, limit=1),
            AnnSearchRequest(["dog"], SPARSE_FIELD, {"metric_type": "BM25"}, limit=1),
        ]
        fused = client.hybrid_search(name, requests, ranker=RRFRanker(), limit=1)
        if [h["id"] for h in found[0]] != [1] or [h["id"] for h in fused[0]] != [1]:
            return "a BM25 text search found nothing: the server ignored the BM25 function"
        return None
    except (MilvusException, ValueError, TypeError) as err:  # an older server, or a pymilvus that lacks the API
        return str(getattr(err, "message", "") or err).splitlines()[0]
    finally:
        try:
            if client.has_collection(name):
                client.drop_collection(name)
        except MilvusException:
            pass  # the probe's reason matters more than a failed clean-up


def server_version(client: MilvusClient) -> str:
    """The server's version string, e.g. "v2.3.5-lite"; "unknown" where it does not say (milvus-lite)."""
    try:
        with _quiet():
            return str(client.get_server_version())
    except (MilvusException, grpc.RpcError):
        return "unknown"
