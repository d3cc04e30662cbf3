"""What a benchmark starts it stops, a failed start included: servers and their milvus-lite processes (issue 37)."""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
import time
from pathlib import Path

import pytest

from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _living(group: int) -> list[int]:
    """The processes of process group `group` that are not zombies, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def test_serve_benchmark_stops_its_servers_and_their_milvus_lite_when_a_start_fails(tmp_path, encoder, bundled):
    """One `t2i serve` started, the next one fails: the first and its milvus-lite process are gone after."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        serve = importlib.import_module("serve")
    finally:
        sys.path.remove(str(BENCHMARKS))
    db = tmp_path / "photos.db"
    engine = SearchEngine.open(Config(uri=str(db), data_dir=str(tmp_path), thumbnail_size=0), encoder)
    engine.index(bundled.head(4), progress=False)
    engine.close()
    groups, members = [], []
    with pytest.raises(RuntimeError, match="bad server exited"):
        with contextlib.ExitStack() as stack:
            good = stack.enter_context(serve.Server("good", db, _free_port()))
            groups.append(good.process.pid)
            members = _living(good.process.pid)
            stack.enter_context(serve.Server("bad", db, _free_port(), "--encoder", "no-such-encoder"))
    assert len(members) >= 2, members  # the server and the milvus-lite process it started
    deadline = time.monotonic() + 10
    while _living(groups[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _living(groups[0]) == []
