"""Shared fixtures: the real offline encoder, the bundled photos, a real milvus-lite store and a Milvus server."""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import DatasetError, load_bundled
from t2i_helpers.engine import SearchEngine
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.store.milvus_server import INSTALL_HINT, milvus_server, server_available

T2I = str(Path(sys.executable).parent / "t2i")  # the console script of the interpreter running the tests


def index_counts(out: str) -> str:
    """The counts on `t2i index`'s last line of output, after checking that the line ends with its throughput."""
    counts, _, speed = out.strip().splitlines()[-1].partition("; ")
    assert re.fullmatch(r"\d+ files in \d+\.\d s \(\d+(\.\d)? images/s\)", speed), speed
    return counts


@pytest.fixture(scope="session")
def bundled():
    """The bundled photo set (fetched by `make setup`)."""
    try:
        return load_bundled()
    except DatasetError as err:
        pytest.fail(f"{err} -- the tests need the bundled photos")


@pytest.fixture(scope="session")
def encoder():
    return load_encoder()


@pytest.fixture(scope="session")
def engine(tmp_path_factory, encoder, bundled):
    """A real milvus-lite store with every bundled photo indexed once."""
    config = Config(uri=str(tmp_path_factory.mktemp("milvus") / "bundled.db"))
    engine = SearchEngine.open(config, encoder)
    engine.first_report = engine.index(bundled, progress=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def milvus_uri():
    """A real Milvus 2.3 standalone server (the `server` extra) for one test module: free ports, clients and its
    parts on 127.0.0.1, its data in a temporary folder; about 8 s to start, stopped and removed after the module.
    Without the package the tests that use it skip."""
    if not server_available():
        pytest.skip(f"needs {INSTALL_HINT}")
    with milvus_server() as uri:
        yield uri


@pytest.fixture
def image_folder(tmp_path, bundled):
    """A small folder of real photos in two categories, with Tux Paint style caption files."""
    for label, group in bundled.groupby("label"):
        if label not in ("animals", "vehicles"):
            continue
        (tmp_path / label).mkdir()
        for i, row in enumerate(group.head(4).itertuples()):
            target = tmp_path / label / f"{i}.png"
            target.write_bytes(open(row.path, "rb").read())
            target.with_suffix(".txt").write_text(row.caption + "\n", encoding="utf-8")
    return tmp_path


def write_bad_files(folder):
    """Files an ingest must skip, each with a reason: returns {name: expected reason fragment}."""
    good = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(good).save(folder / "ok.png")
    png = (folder / "ok.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    (folder / "broken-link.jpg").symlink_to(folder / "missing.jpg")
    return {
        "truncated.png": "corrupt",
        "empty.jpg": "empty",
        "notes.png": "not an image",
        "broken-link.jpg": "not found",
    }


@pytest.fixture
def no_network(monkeypatch):
    """Fail any socket connection to a non-loopback address (unix sockets and 127.0.0.1 stay allowed)."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host == "localhost"
            if not local:
                attempts.append(address)
                raise OSError(f"test blocked a network connection to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts
