"""A real Milvus 2.3 server from the PyPI `milvus` package, started for one `with` block (notebook 03, the tests).

`pip install -e ".[server]"` adds the package (Linux x86-64); no Docker. Each server keeps its data, logs and
unpacked binaries (~400 MB) in a temporary folder that is removed when it stops, and takes free ports, so
several can run on one machine at once. Its parts talk to each other over 127.0.0.1 and clients connect there;
Milvus 2.3 binds its gRPC and metrics ports on every interface (it has no listen-address setting), so on a
shared network keep those ports behind a firewall.

Example:
    >>> with milvus_server() as uri:                 # ~8 s to start
    ...     client = MilvusClient(uri=uri)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = 'pip install -e ".[server]"  (the PyPI `milvus` package, Linux x86-64 only)'
# Milvus's roles; each advertises this address to the others, so their traffic stays on loopback.
_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# The embedded etcd listens where this file says; without it, it takes 2379 and 2380 whatever the config says,
# and a second server on the machine fails (or talks to the first one's etcd).
_ETCD = """name: t2i
listen-client-urls: http://127.0.0.1:{client}
advertise-client-urls: http://127.0.0.1:{client}
listen-peer-urls: http://127.0.0.1:{peer}
initial-advertise-peer-urls: http://127.0.0.1:{peer}
initial-cluster: t2i=http://127.0.0.1:{peer}
"""


_STORAGE: dict[str, Path] = {}  # the URI of each running server -> the folder that is its object storage


def server_storage(uri: str) -> Path:
    """The folder where a server that `milvus_server` started keeps its segments: its object storage (the
    server's `localStorage.path`), where Milvus's bulk import reads the files it is given, relative to it."""
    return _STORAGE[uri]


class MilvusServerError(RuntimeError):
    """The Milvus server package is missing, or the server did not start."""


def server_available() -> bool:
    """Whether the PyPI `milvus` package (the server) is installed."""
    return importlib.util.find_spec("milvus") is not None


@contextlib.contextmanager
def milvus_server(start_timeout_s: float = 120.0) -> Iterator[str]:
    """Start a Milvus standalone server on free local ports in a temporary folder; stop it and remove it after.

    Args:
        start_timeout_s: how long to wait for the server's health check to answer.

    Returns:
        A context manager that yields the server's URI, e.g. `http://127.0.0.1:19530`.

    Raises:
        MilvusServerError: the `milvus` package is not installed, or the server stopped or timed out while
            starting (the message quotes the end of its log).
    """
    if not server_available():
        raise MilvusServerError(f"a Milvus server needs the `milvus` package: {INSTALL_HINT}")
    import milvus

    with tempfile.TemporaryDirectory(prefix="t2i-milvus-") as folder:
        client_port, peer_port = _free_port(), _free_port()
        etcd = Path(folder) / "etcd.yaml"
        etcd.write_text(_ETCD.format(client=client_port, peer=peer_port))
        server = milvus.MilvusServer(wait_for_started=False)
        server.config.update(etcd_port=client_port)
        for role in _ROLES:
            server.config.set(f"{role}.ip", "127.0.0.1")
        server.set_base_dir(folder)
        try:
            with _environ(ETCD_CONFIG_PATH=str(etcd)):  # Milvus reads etcd.config.path from the environment
                server.start()  # returns once the process runs
            _wait_healthy(server, start_timeout_s, Path(folder) / "logs")
            uri = f"http://127.0.0.1:{server.listen_port}"
            _STORAGE[uri] = Path(server.config.get("local_storage_dir"))
            yield uri
        finally:
            _STORAGE.pop(f"http://127.0.0.1:{server.listen_port}", None)
            server.stop()  # SIGTERM, then SIGKILL after a second


def _wait_healthy(server, timeout_s: float, logs: Path) -> None:
    """Until /healthz answers OK; a server that exits or takes longer raises, quoting its log."""
    url, deadline = f"http://127.0.0.1:{server.webservice_port}/healthz", time.monotonic() + timeout_s
    while (exited := server.server_proc.poll()) is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if b"OK" in answer.read():
                    return
        time.sleep(0.2)
    why = f"it exited with status {exited}" if exited is not None else f"no answer in {timeout_s:g} s"
    raise MilvusServerError(f"the Milvus server did not start ({why}); its log ends: {_tail(logs)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def _tail(logs: Path) -> str:
    """The server's first error record (stdout log) or Go panic (stderr log), else its last log line."""
    last = "(empty log)"
    for name in ("milvus-stdout.log", "milvus-stderr.log"):
        with contextlib.suppress(FileNotFoundError):
            lines = (logs / name).read_text(errors="replace").strip().splitlines()
            errors = [line for line in lines if "[ERROR]" in line or "[FATAL]" in line or line.startswith("panic:")]
            if errors:
                return errors[0][:400]
            last = lines[-1][:400] if lines else last
    return last
