"""A load test of a running search service: concurrent clients over HTTP for a bounded time (notebook 04).

Each client is a thread with its own HTTP connection that sends `GET /search` requests one after another,
cycling through the queries from its own offset, until the time is up, with the standard library's
`http.client`: the clients share the machine's cores with the server, and it costs them less CPU a request
than httpx. `LoadReport` holds every latency and every answer's ids, so two servers can be checked for the
same results and plotted against concurrency.

Example:
    >>> report = load_test(server.url, ["a dog", "a red boat"], clients=8, seconds=5)
    >>> report.summary()
    '8 clients, 5 s: 412 searches, 82/s, p50 96 ms, p95 120 ms, p99 131 ms, 0 errors'
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import urlencode, urlsplit

import numpy as np


@dataclass
class LoadReport:
    """What the clients of one load test saw: latencies, errors and the ids each query returned."""

    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)  # query -> hit ids, best first (the last seen)

    @property
    def throughput(self) -> float:
        """Answered searches per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The `q`-th percentile latency in milliseconds (NaN when nothing was answered)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        """One line: clients, searches, searches/s, p50, p95, p99 and errors."""
        p50, p95, p99 = (self.percentile(q) for q in (50, 95, 99))
        return (
            f"{self.clients} clients, {self.seconds:.0f} s: {len(self.latencies_ms)} searches, "
            f"{self.throughput:.0f}/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
            f"{len(self.errors)} errors"
        )


def load_test(
    base_url: str,
    queries: Sequence[str],
    clients: int = 8,
    seconds: float = 10.0,
    top_k: int = 10,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> LoadReport:
    """`clients` threads send `GET /search?q=...&k=top_k` back to back for `seconds`; every answer is timed.

    A request counts as an error unless it returns 200 with `top_k` hits (the index must hold that many).
    `params` are added to every request, e.g. `{"literal": "true"}`: captions with quoted words or a year
    would otherwise be read as filters, and match nothing in a collection without dates or text.
    """
    if not queries:
        raise ValueError("the load test needs at least one query")
    report, lock = LoadReport(clients, seconds), threading.Lock()
    url = urlsplit(base_url)
    connect, path = HTTPSConnection if url.scheme == "https" else HTTPConnection, f"{url.path.rstrip('/')}/search?"
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        http, i = connect(url.hostname, url.port, timeout=60), offset
        while time.perf_counter() < deadline:
            query, i = queries[i % len(queries)], i + 1
            start = time.perf_counter()
            try:
                http.request("GET", path + urlencode({"q": query, "k": top_k, **(params or {})}), headers=headers or {})
                response = http.getresponse()
                body = response.read()
                hits = json.loads(body) if response.status == 200 else None
                ok = hits is not None and len(hits) == top_k
                problem = None if ok else f"{response.status}: {body[:200].decode(errors='replace')}"
            except (OSError, HTTPException, ValueError) as err:  # ValueError: a body that is not JSON
                http.close()  # the next request connects again
                problem = f"{type(err).__name__}: {err}"
            elapsed = 1000 * (time.perf_counter() - start)
            with lock:
                if problem:
                    report.errors.append(problem)
                else:
                    report.latencies_ms.append(elapsed)
                    report.answers[query] = [hit["id"] for hit in hits]
        http.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="t2i-load") as pool:
        list(pool.map(client, [c * len(queries) // clients for c in range(clients)]))
    report.seconds = time.perf_counter() - start
    return report
