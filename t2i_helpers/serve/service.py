"""What every route of the REST API shares: engine, batcher, limits, write lock, category cache (notebook 04)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi import Depends, HTTPException

from ..engine import SearchEngine
from .auth import require_api_key
from .batching import SearchBatcher
from .schemas import errors
from .uploads import MULTIPART_OVERHEAD


class Service:
    """What every route shares: the engine, the write lock, the upload folder, the limits, the category cache.

    Categories are read again at most every `ttl` seconds, or after this server's own writes: another process
    may write to a shared Milvus server.
    """

    def __init__(
        self,
        engine: SearchEngine,
        upload_dir: str | Path | None,
        max_top_k: int,
        max_upload_bytes: int,
        max_files: int,
        api_key: str | None,
        batcher: SearchBatcher | None,
    ) -> None:
        self.keyed = [Depends(require_api_key(api_key))] if api_key else []  # every route but /health
        self.engine, self.max_top_k, self.max_files, self.batcher = engine, max_top_k, max_files, batcher
        self.max_upload_bytes = max_upload_bytes
        self.upload_dir = Path(upload_dir or Path(engine.config.data_dir) / "uploads").expanduser().resolve()
        self.writing = threading.Lock()
        self.limits = {
            "/search/image": max_upload_bytes + MULTIPART_OVERHEAD,
            "/index": max_files * (max_upload_bytes + MULTIPART_OVERHEAD),
        }
        self._names, self._read_at, self._lock, self.ttl = set(), float("-inf"), threading.Lock(), 10.0

    def categories(self) -> set[str]:
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl:
                self._names, self._read_at = set(self.engine.store.categories()), time.monotonic()
            return self._names

    def forget_categories(self) -> None:
        with self._lock:
            self._read_at = float("-inf")

    def check_category(self, category: str | None) -> str | None:
        if not category:
            return None
        if category not in self.categories():
            known = ", ".join(sorted(self.categories())) or "none: the index is empty"
            raise HTTPException(404, f"no images in category {category[:100]!r}; known: {known}")
        return category

    def errors(self, *statuses: int) -> dict[int, dict]:
        """The error responses of a route that takes the API key (401 when the server has one)."""
        return errors(*statuses, *([401] if self.keyed else []))
