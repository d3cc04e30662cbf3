"""Opening a Milvus: a client of a milvus-lite file or a server, and what a t2i collection records (notebook 01).

milvus-lite runs one server process per file, which holds the file until it is stopped (`release_lite`); a file
name it cannot use, a file another process holds and a server that answers late are each said in one sentence.

Example:
    >>> client = connect(Config())                  # data/t2i.db, or the server at T2I_MILVUS_URI
    >>> read_meta(Config())["encoder"]
    'conse-effnet-minilm'
"""

from __future__ import annotations

import re
from pathlib import Path

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from ..config import Config
from .collection import StoreError, recorded_meta

# pymilvus pings every 10 s, idle or not; milvus-lite's gRPC server allows a ping without data once in 5 minutes
# and answers the third early one with GOAWAY "too_many_pings": reopening that file in the same process then
# failed (measured: opened and closed twice, idle 35 s, opened again). Servers accept the pings: defaults there.
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}
LITE_NAME_CHARS = "A-Za-z0-9._-"  # what milvus-lite 2.5 accepts in a file name
LITE_HELD = "Open local milvus failed"  # pymilvus's words when milvus-lite could not lock the file (or start)
LITE_FIRST_S, LITE_START_S = 10.0, 60.0  # waits for a milvus-lite server to answer: first, and once more


def connect(config: Config) -> MilvusClient:
    """A client of `config.uri`, milvus-lite's file name checked first and its server started anew once if it
    did not answer in time; every failure is a `StoreError` in one sentence."""
    if config.is_lite:
        path = Path(config.uri).expanduser()
        if path.is_dir():  # milvus-lite 3 kept a folder under this name; 2.5 keeps one file
            raise StoreError(
                f"{config.uri} is a folder (a milvus-lite 3 store, which this t2i cannot read): move it aside "
                "and index again, or pass another file with --uri"
            )
        if not re.fullmatch(f"[{LITE_NAME_CHARS}]+", path.name):
            fixed = re.sub(f"[^{LITE_NAME_CHARS}]", "_", path.name)
            raise StoreError(
                f"milvus-lite cannot use the file name {path.name!r}: use only letters, digits, '.', '-' and "
                f"'_' in it (e.g. {fixed!r}); the folder may be named freely"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return milvus_client(config, timeout=LITE_FIRST_S if config.is_lite else None)
    except MilvusException as err:
        if not config.is_lite:
            raise StoreError(f"cannot connect to Milvus at {config.uri}: {err}. Is the server running?") from err
        if LITE_HELD in str(err):
            raise StoreError(
                f"cannot open the milvus-lite file {config.uri}: another process has it open "
                "(milvus-lite allows one process per file). Close that process (a notebook kernel, "
                "`t2i serve`), use another file with --uri, or run a Milvus server and pass its URI."
            ) from err
    # Seen on a loaded machine: the server started but answered later than the first wait, or stopped while
    # starting ("Open storage failed: unable to open database file"). Start it anew and wait longer.
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(Path(config.uri).expanduser()))
    try:
        return milvus_client(config, timeout=LITE_START_S)
    except MilvusException as err:
        raise StoreError(
            f"milvus-lite did not answer for {config.uri} within {LITE_START_S:.0f} s ({err}); try again, or "
            "run a Milvus server and pass its URI"
        ) from err


def read_meta(config: Config) -> dict | None:
    """What a t2i collection records about itself (encoder, dim, schema version), or None if there is none.

    Creates nothing: a milvus-lite file that does not exist is not made, and no collection is created.

    Raises:
        StoreError: the collection was not made by t2i, or the store cannot be opened.
    """
    if config.is_lite and not Path(config.uri).expanduser().exists():
        return None
    client = connect(config)
    try:
        if not client.has_collection(config.collection):
            return None
        found = recorded_meta(client, config.collection)
    finally:
        client.close()
    if found is None:
        raise StoreError(f"collection {config.collection!r} at {config.uri} was not made by t2i")
    return found


def release_lite(uri: str) -> None:
    """Stop milvus-lite's server process for a file (it would hold the file until this process exits)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def milvus_client(config: Config, timeout: float | None = None) -> MilvusClient:
    """A client of `config.uri`: a Milvus server, or a milvus-lite file without the keepalive pings it refuses;
    `timeout` bounds the wait for the connection (pymilvus's `MILVUS_CONN_TIMEOUT`, 10 s, when None)."""
    options = {"grpc_options": LITE_GRPC_OPTIONS} if config.is_lite else {}
    return MilvusClient(uri=config.uri, token=config.token, timeout=timeout, **options)
