"""Dynamic batching of concurrent text searches: one Milvus search for many (notebook 04).

Requests that arrive while a batch runs wait in a queue; the next batch takes all of them, up to `max_batch`,
and runs them through the search pipeline together (`SearchEngine.search_many`), one pipeline run per distinct
(top_k, category, filters): one Milvus search has one filter expression. When the last batch held more than
one request (there is load), a batch also waits up to `max_wait_ms` for more to arrive; a request reaching an
idle server runs at once, so a lone user pays no wait. Each request gets exactly the hits it would get alone,
ids and scores (`SearchEngine.search_many`: each text embedded alone, equal scores by id).

Example:
    >>> batcher = SearchBatcher(engine, max_batch=32, max_wait_ms=2)
    >>> hits = batcher.search(engine.prepare_query("a red kangaroo"), top_k=5)   # on each request's thread
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future
from typing import NamedTuple

from ..engine import SearchEngine
from ..pipelines.search import Query
from ..store.filters import Filters
from ..store.image_store import Hit


class _Request(NamedTuple):
    query: Query
    top_k: int
    category: str | None
    filters: Filters
    future: Future


class SearchBatcher:
    """Gathers concurrent `search` calls into batches, run on one worker thread; `close()` stops it."""

    def __init__(self, engine: SearchEngine, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_ms at least 0")
        self.engine, self.max_batch, self.max_wait = engine, max_batch, max_wait_ms / 1000
        self.batch_sizes: Counter[int] = Counter()  # size -> how many batches of that size ran (notebook 04)
        self._last_size = 0
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock, self._thread = threading.Lock(), None

    def search(
        self, query: Query, top_k: int, category: str | None = None, filters: Filters | None = None
    ) -> list[Hit]:
        """The hits for `query`, searched together with whatever other queries are waiting (blocks until then)."""
        return self.submit(query, top_k, category, filters).result()

    def submit(
        self, query: Query, top_k: int, category: str | None = None, filters: Filters | None = None
    ) -> Future[list[Hit]]:
        """Queue `query` for the next batch; the future holds its hits (or the error its group raised)."""
        future: Future[list[Hit]] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="t2i-search-batcher", daemon=True)
                self._thread.start()
            self._queue.put(_Request(query, top_k, category, filters or Filters(), future))
        return future

    def close(self) -> None:
        """Stop the worker once the batches already queued are answered."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + (self.max_wait if self._last_size > 1 else 0)
            while len(batch) < self.max_batch:
                try:
                    request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if request is None:
                    self._queue.put(None)  # answer this batch, then stop
                    break
                batch.append(request)
            self._last_size = len(batch)
            self.batch_sizes[len(batch)] += 1
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        groups: dict[tuple[int, str | None, Filters], list[_Request]] = defaultdict(list)
        for request in batch:
            if request.future.set_running_or_notify_cancel():  # False: the caller has gone
                groups[request.top_k, request.category, request.filters].append(request)
        for (top_k, category, filters), requests in groups.items():
            try:
                results = self.engine.search_many([r.query for r in requests], top_k, category, filters)
            except Exception as err:  # every request of the group gets the error its route turns into a status
                for request in requests:
                    request.future.set_exception(err)
            else:
                for request, hits in zip(requests, results):
                    request.future.set_result(hits)
