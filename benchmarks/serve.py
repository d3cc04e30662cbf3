"""Serving under load: a real `t2i serve` driven over loopback HTTP by 1, 8 and 32 concurrent clients.

Builds once (cached in data/bench/serve-10k/) a milvus-lite collection of 10,000 photos through the real ingest:
the bundled photos and flipped / rotated / cropped / recoloured copies of them, as benchmarks/search.py makes
them. Then starts four `t2i serve --api` processes, each on its own copy of that collection file:
  now:      `--max-batch 1 --query-cache 0`: every request runs its own encoder call and its own Milvus search
            (today's path; it runs on the per-row int8 text tower as every path but `static` does, and with
            what every path shares: the IP index, the server's 1 ms GIL slice);
  batched:  `--query-cache 0`: concurrent requests searched in one Milvus call (each new text embedded alone);
  new:      the defaults: batching, and a repeated query skips the encoder (`QueryCache`; the clients cycle
            through the bundled photos' distinct captions, so a query comes back after ~750 others);
  static:   the defaults with the static text tower (`--encoder conse-effnet-static-minilm`, an option with a
            lower R@10, models/static_tower.py): its answers differ from the others' by design, so they are
            not compared; without the `static` extra this path is skipped (one line says so);
and drives them in turns, phase by phase: 1 client for `--seconds` (fewer searches than distinct queries, so
none is repeated), then 8 and 32 clients, `--rounds` turns of `--seconds` each, pooled (a drift of the
machine's speed falls on every path alike; queries repeat, which the new path's cache is for), from this process
(`measure.load.load_test`: one thread and one HTTP connection per client, on the same 2 cores). It prints, per
path and concurrency, searches/s and p50 / p95 / p99 latency, the ratios over today's path, how many answers
were compared with today's path and how many differed (ids and order), then 32 clients on the new path for
`--soak` seconds (errors, and the server's peak resident memory with milvus-lite's process). Each server runs in
a process group of its own, stopped with its milvus-lite process on every exit path, a failed start included.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/serve.py      # ~6 minutes (+3 the first time)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
from search import child_pids, make_photos, rss_mb  # benchmarks/search.py: the 10,000 photos, RSS from /proc

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.load import LoadReport, load_test
from t2i_helpers.models import static_tower
from t2i_helpers.models.cpu import describe

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "bench" / "serve-10k"


def collection(count: int) -> Path:
    """The milvus-lite file of `count` photos, built through the ingest the first time."""
    db = CACHE / f"photos-{count}.db"
    if db.exists():  # opened once here, so that a collection of an older schema is migrated once
        SearchEngine.open_index(Config(uri=str(db), thumbnail_size=0)).close()
        return db
    (CACHE / "photos").mkdir(parents=True, exist_ok=True)
    photos = make_photos(load_bundled(), CACHE / "photos", count)
    start = time.perf_counter()
    engine = SearchEngine.open(Config(uri=str(db), data_dir=str(CACHE), thumbnail_size=0))
    try:
        report = engine.index(photos, progress=False)
    finally:
        engine.close()
    print(f"built {db.name}: {report.summary()} in {time.perf_counter() - start:.0f} s", flush=True)
    return db


class Server:
    """`t2i serve --api` in a child process on its own copy of the collection (beside it), in a process group of
    its own with the milvus-lite process it starts; a `with` block or `close()` stops the whole group."""

    def __init__(self, name: str, db: Path, port: int, *options: str) -> None:
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        copy = db.with_name(f"serve-{name}.db")
        shutil.copyfile(db, copy)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "t2i_helpers.cli", "serve", "--api", "--uri", str(copy), "--port", str(port)]
            + list(options),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a group of its own: its milvus-lite child is stopped with it
            preexec_fn=_stop_with_parent,
        )
        try:
            self._wait_started(180)
        except BaseException:
            self.close()
            raise

    def _wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} server did not start in {timeout_s:.0f} s")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (milvus-lite's process)."""
        pid = str(self.process.pid)
        return rss_mb(pid) + sum(rss_mb(child) for child in child_pids(pid))

    def close(self) -> None:
        """Stop the server (SIGTERM, 30 s to finish), then whatever of its process group is left (SIGKILL)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stderr.close()


def _stop_with_parent() -> None:
    """In the server's process: a SIGTERM when this benchmark dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


LITERAL = {"literal": "true"}  # the captions as they are: none read as a date, place or "quoted words" filter
PATHS = {  # name -> `t2i serve` options
    "now": ("--max-batch", "1", "--query-cache", "0"),  # each request on its own, every query embedded
    "batched": ("--query-cache", "0"),  # dynamic batching only
    "new": (),  # dynamic batching and the query cache (the defaults)
    "static": ("--encoder", "conse-effnet-static-minilm"),  # the defaults, queries through the static tower
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per path, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="how many times the paths take turns")
    parser.add_argument("--soak", type=float, default=60.0, help="32 clients on the new path, for this long")
    parser.add_argument("-k", "--top-k", type=int, default=10)
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a SIGTERM unwinds too: the servers are stopped

    paths = dict(PATHS)
    if not static_tower.available():  # checked before anything starts
        del paths["static"]
        print(f"static path skipped: {static_tower.INSTALL_HINT}", flush=True)
    db = collection(args.photos)
    queries = list(pd.Series(load_bundled().caption.unique()).sample(frac=1.0, random_state=0))
    with contextlib.ExitStack() as stack:  # every server started is stopped, whatever fails and wherever
        servers = {
            name: stack.enter_context(Server(name, db, 8790 + i, *options))
            for i, (name, options) in enumerate(paths.items())
        }
        for server in servers.values():  # warm-up: the models' first calls, Milvus's first searches
            load_test(server.url, queries[-50:], clients=2, seconds=2, top_k=args.top_k)  # the last: seen last
        print(
            f"{len(queries)} distinct queries (captions of the bundled photos), k={args.top_k}, "
            f"{args.seconds:.0f} s per path at 1 client, {args.rounds} rounds of {args.seconds:.0f} s at 8 and 32, "
            "paths in turns",
            flush=True,
        )
        reports: dict[tuple[str, int], LoadReport] = {}
        for clients, turns in ((1, 1), (8, args.rounds), (32, args.rounds)):  # one client: every query new
            rounds: dict[str, list[LoadReport]] = {name: [] for name in servers}
            for _ in range(turns):  # the paths in turns, round after round: drifts of the machine hit all
                for name, server in servers.items():
                    report = load_test(server.url, queries, clients, args.seconds, args.top_k, params=LITERAL)
                    rounds[name].append(report)
            for name in servers:
                reports[name, clients] = report = pooled(rounds[name])
                print(f"  {name:8s} {report.summary()}", flush=True)
        now, new = reports["now", 8], reports["new", 8]
        print(f"ratio throughput_new/throughput_now = {new.throughput / now.throughput:.2f}  (8 clients)")
        print(f"ratio throughput_batched/throughput_now = {reports['batched', 8].throughput / now.throughput:.2f}")
        print(f"ratio p95_new/p95_now = {new.percentile(95) / now.percentile(95):.2f}  (8 clients)")
        p50 = {name: reports[name, 1].percentile(50) for name in servers}
        line = ", ".join(f"{name} {ms:.1f} ms" for name, ms in p50.items())
        print(f"one client p50: {line}".replace("static ", "static text tower "))
        same = differ = 0
        for name in ("batched", "new"):
            for clients in (1, 8, 32):
                for query, ids in reports[name, clients].answers.items():
                    seen = [reports["now", c].answers.get(query) for c in (1, 8, 32)]
                    for expected in filter(None, seen):
                        same, differ = same + (ids == expected), differ + (ids != expected)
        print(f"identical results: {same} query answers compared with today's path, {differ} differ")
        soak(servers["new"], queries, args)


def pooled(rounds: list[LoadReport]) -> LoadReport:
    """The rounds of one path and concurrency as one report: every latency, error and answer; their time summed."""
    report = LoadReport(rounds[0].clients, sum(r.seconds for r in rounds))
    for r in rounds:
        report.latencies_ms += r.latencies_ms
        report.errors += r.errors
        report.answers |= r.answers
    return report


def soak(server: Server, queries: list[str], args: argparse.Namespace) -> None:
    """32 clients on `server` for `args.soak` seconds; errors and the server's peak memory."""
    peak, done = [server.rss_mb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak.append(server.rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = peak[0]
    report = load_test(server.url, queries, clients=32, seconds=args.soak, top_k=args.top_k, params=LITERAL)
    done.set()
    sampler.join()
    print(f"soak, new path: {report.summary()}")
    print(f"server RSS (with milvus-lite's process): {before:.0f} MB before, peak {max(peak):.0f} MB")
    if report.errors:
        print(f"first error: {report.errors[0]}")


if __name__ == "__main__":
    main()
