"""A small milvus-lite collection the filter exercises run on (notebooks 05, 06): an expression is judged by the rows
it selects on the course's own Milvus, never by its spelling.

It opens once per process, in a temporary folder, on the first expression checked; its milvus-lite server is
stopped and the folder removed when the process exits.

Example:
    >>> selected('label == "animals"')
    {0}
    >>> LABELS[0], TIMES[0]
    ('animals', 1514744400)
"""

from __future__ import annotations

import atexit
import calendar
import logging
import re
import shutil
import tempfile
from pathlib import Path

from pymilvus import DataType, MilvusClient

from ..config import Config
from ..data.exif import NO_TIME
from ..store.connection import milvus_client
from .problem import Wrong

COLLECTION = "exercise_rows"
QUERY_TIMEOUT_S = 5.0  # a refused expression fails within this, never hangs the cell
_TEMPLATE = re.compile(r"\{\w*\}")
# Labels a category filter must tell apart: quotes, backslashes, non-ASCII, LIKE's wildcards, case, spaces, a tab
# and an invisible character (which Python's repr would escape as \u200b, which Milvus reads as six characters).
_LABELS = [
    "animals",
    "vehicles",
    'x" or id > 0 or "',
    "back\\slash",
    "ends with \\",
    "café",
    'say "cheese"',
    "it's",
    "animals%",
    "Animals",
    "animals ",
    "a_b",
    "aXb",
    "ice cream",
    "x",
    "tab\there",
    "zero\u200bwidth",
]
# Times (stored wall-clock seconds, read as UTC) around the first second of each year, and 5 h 30 min off it
# (where a bound computed in another time zone falls), for the year filter; NO_TIME for a photo without one.
_EDGES = [calendar.timegm((year, 1, 1, 0, 0, 0)) for year in range(2018, 2025)]
_TIMES = [t + d for t in _EDGES for d in (-19800, -1, 0, 1, 19800)] + [_EDGES[0] + 86400 * 200, NO_TIME]
ROWS = max(len(_LABELS), len(_TIMES))
LABELS = _LABELS + ["other"] * (ROWS - len(_LABELS))  # row i's label
TIMES = _TIMES + [NO_TIME] * (ROWS - len(_TIMES))  # row i's taken_at
_state: dict[str, MilvusClient] = {}


def _open() -> MilvusClient:
    folder = Path(tempfile.mkdtemp(prefix="t2i-exercises-"))
    uri = str(folder / "exercises.db")
    client = milvus_client(Config(uri=uri))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("label", DataType.VARCHAR, max_length=256)
    schema.add_field("taken_at", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection(COLLECTION, schema=schema, index_params=index)
    rows = [
        {"id": i, "label": label, "taken_at": taken, "vector": [1.0, 0.0]}
        for i, (label, taken) in enumerate(zip(LABELS, TIMES, strict=True))
    ]
    client.insert(COLLECTION, rows)
    atexit.register(_close, client, uri, folder)
    return client


def _close(client: MilvusClient, uri: str, folder: Path) -> None:
    from milvus_lite.server_manager import server_manager_instance

    client.close()
    server_manager_instance.release_server(uri)
    shutil.rmtree(folder, ignore_errors=True)


def selected(expression: object) -> set[int]:
    """The ids of the rows a Milvus boolean expression selects; `Wrong` (one sentence) when Milvus refuses it."""
    if not isinstance(expression, str):
        raise Wrong(f"return the expression as one string, not a {type(expression).__name__}")
    if _TEMPLATE.search(expression):
        raise Wrong(
            "milvus-lite 2.5.1 (the course's Milvus) refuses expression templates ({name} with filter_params): "
            "write the value into the expression as a literal"
        )
    if "client" not in _state:
        _state["client"] = _open()
    client = _state["client"]
    logging.disable(logging.ERROR)  # pymilvus logs a refused expression with a traceback: the sentence is enough
    try:
        found = client.query(COLLECTION, filter=expression, output_fields=["id"], timeout=QUERY_TIMEOUT_S)
    except Exception as err:
        why = re.sub(r"\s+", " ", str(getattr(err, "message", err)))[:160]
        raise Wrong(f"Milvus refuses the expression {expression!r}: {why}") from None
    finally:
        logging.disable(logging.NOTSET)
    return {int(row["id"]) for row in found}
