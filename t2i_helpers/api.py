"""The REST API over one shared `SearchEngine`, and the `t2i serve` command (taught in notebook 04).

    GET    /search?q=&k=&category=   hits for a text query, best first
    POST   /search/image             hits for an uploaded picture (multipart field `file`), same k and category
    GET    /images/{id}              the file of an indexed image, and nothing else
    POST   /index                    add pictures (multipart field `files`, one or more; form field `label`)
    DELETE /images/{id}              remove an image from the index (and its file, if it was uploaded)
    GET    /health, GET /stats       liveness (Milvus answers) and what is indexed
    GET    /docs, GET /openapi.json  the OpenAPI description (/docs loads Swagger UI from a CDN)

Errors are JSON `{"detail": "..."}` with a 4xx status for anything the client can fix: 422 for a bad query
(empty, or over 2,000 characters after cleaning; a query the model cannot read whole is cut and says so in
the `T2I-Query-Notice` header), for k outside 1..max_top_k, an unknown category, an unreadable picture or
one over 50 megapixels; 413 for an upload over the size limit (per file or per request), 415 for a file that
is not a JPEG, PNG, WebP, GIF, BMP or TIFF picture, 400 for a malformed multipart body or more than
`max_files` files, 404 for an id that is not indexed. `/images/{id}` serves a file only if its bytes still hash to `id`,
so neither a crafted id nor a file swapped after indexing can make it read anything else.

One process holds one engine: milvus-lite allows one process per file, and the model is loaded once.
Concurrent searches are safe without a lock (measured: 400 searches from 8 threads and 3,000 text encodings
from 16 threads gave the same results as one by one, no errors); writes (`POST /index`, `DELETE`) take a
lock, so two uploads never race. Scale out with a Milvus server (`--uri http://host:19530`) and several
processes behind a load balancer.

Example:
    $ t2i serve --api --ui                 # http://127.0.0.1:8000/docs, the web app at /ui
    >>> with BackgroundServer(create_api(engine)) as server:
    ...     httpx.get(f"{server.url}/search", params={"q": "a fire truck", "k": 3}).json()[0]["caption"]
"""

import argparse
import io
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from PIL import Image
from pydantic import BaseModel, Field
from pymilvus.exceptions import MilvusException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .config import Config
from .engine import SearchEngine
from .images import ImageError, content_id, decode_image, shrink
from .store import Hit, StoreError

log = logging.getLogger(__name__)

MAX_ID = (1 << 63) - 1  # ids are 63-bit content hashes
# What an upload may be: the declared content type and the format Pillow finds must both be in here.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                 "BMP": "image/bmp", "TIFF": "image/tiff"}  # fmt: skip
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$"
NOTICE_HEADER = "T2I-Query-Notice"
MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers, per request
MAX_UPLOAD_PIXELS = 50_000_000  # a decoded upload is at most 150 MB of RGB, however small its file
MAX_SERVED_BYTES = 256 << 20  # a file this big at an indexed path is not the picture indexed: never read it


class HitOut(BaseModel):
    """One search result."""

    id: int = Field(description="the image's id (a 63-bit content hash; exact in `image_url` for JS clients)")
    score: float = Field(description="cosine similarity to the query: ranks one query's hits, not a probability")
    path: str = Field(description="the file's path on the server")
    caption: str
    label: str = Field(description="the image's category")
    image_url: str = Field(description="where to GET the image")


class SkippedOut(BaseModel):
    """An uploaded file that was not indexed, and why."""

    file: str
    reason: str


class IndexedOut(BaseModel):
    """An uploaded file that is in the index now."""

    file: str
    id: int
    image_url: str


class IndexOut(BaseModel):
    """What `POST /index` did."""

    added: int = Field(description="new images embedded and stored")
    unchanged: int = Field(description="images that were already indexed (same bytes)")
    skipped: list[SkippedOut]
    images: list[IndexedOut]


class DeletedOut(BaseModel):
    """What `DELETE /images/{id}` did."""

    id: int
    file_removed: bool = Field(description="true if the file was an upload and was deleted too")


class HealthOut(BaseModel):
    """The server is up and Milvus answers."""

    status: str


class StatsOut(BaseModel):
    """The collection and what is in it."""

    collection: str
    uri: str
    encoder: str
    dim: int
    index_type: str
    metric: str
    count: int
    categories: list[str]


class ErrorOut(BaseModel):
    """Every error response."""

    detail: str


_ERRORS = {status: {"model": ErrorOut} for status in (404, 413, 415, 422, 503)}


class _DeclaredSizeLimit:
    """413 as JSON when a request declares a body over its path's limit, before a byte of it is read.

    FastAPI's own `max_body_size` (set on the routes too) also stops bodies sent without a length, but
    answers in plain text.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, int]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" else None
        length = Headers(scope=scope).get("content-length", "") if limit is not None else ""
        if length.isdigit() and int(length) > limit:
            detail = f"the request body is {int(length):,} bytes; the limit here is {limit:,}"
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def hit_out(hit: Hit) -> HitOut:
    """A `Hit` as the API returns it."""
    return HitOut(**hit._asdict(), image_url=f"/images/{hit.id}")


class _Categories:
    """The collection's categories, read again at most every `ttl` seconds or after this server's writes.

    Another process may write to a shared Milvus server, hence the expiry.
    """

    def __init__(self, engine: SearchEngine, ttl: float = 10.0) -> None:
        self.engine, self.ttl, self.names, self.read_at = engine, ttl, set(), float("-inf")
        self.lock = threading.Lock()

    def get(self) -> set[str]:
        with self.lock:
            if time.monotonic() - self.read_at > self.ttl:
                self.names, self.read_at = set(self.engine.store.categories()), time.monotonic()
            return self.names

    def forget(self) -> None:
        with self.lock:
            self.read_at = float("-inf")


def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The bytes of an uploaded picture, after checking its declared type and size (415, 413)."""
    name = upload.filename or "upload"
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared not in IMAGE_FORMATS.values():
        raise HTTPException(
            415, f"{name}: content type {declared or 'none'!r} is not accepted; send one of "
            f"{', '.join(sorted(IMAGE_FORMATS.values()))}",
        )  # fmt: skip
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{name}: larger than the {max_bytes:,}-byte upload limit")
    return data


def _decode_upload(name: str, data: bytes) -> tuple[str, np.ndarray]:
    """(format, RGB array shrunk for the model) of uploaded bytes; 422 if not a picture, 415 if another format."""
    try:
        image = decode_image(data, max_pixels=MAX_UPLOAD_PIXELS)
        with Image.open(io.BytesIO(data)) as header:
            found = header.format
    except ImageError as err:
        raise HTTPException(422, f"{name}: {err}") from err
    if found not in IMAGE_FORMATS:
        raise HTTPException(415, f"{name}: {found} pictures are not accepted; send JPEG, PNG, WebP, GIF, BMP or TIFF")
    return found, shrink(image)


def _caption_from(name: str) -> str:
    """A caption from an uploaded file's name: `red_kangaroo.jpg` -> `red kangaroo`."""
    return " ".join(re.split(r"[\s_\-.]+", Path(name).stem))[:200]


def create_api(
    engine: SearchEngine,
    upload_dir: str | Path | None = None,
    max_top_k: int = 100,
    max_upload_bytes: int = 10 << 20,
    max_files: int = 32,
) -> FastAPI:
    """The REST API over an open `engine` (notebook 04); endpoints and errors are listed in the module docs.

    Args:
        engine: the one `SearchEngine` of this process, shared by every request.
        upload_dir: where `POST /index` saves pictures (named by content hash); default `DATA_DIR/uploads`.
        max_top_k: the largest `k` a search may ask for.
        max_upload_bytes: the largest picture accepted, per file.
        max_files: the most pictures one `POST /index` may carry.

    Returns:
        A FastAPI app; serve it with uvicorn (`t2i serve --api`, or `BackgroundServer` in a notebook).

    Example:
        >>> app = create_api(SearchEngine.open(), max_top_k=50)
    """
    upload_dir = Path(upload_dir or Path(engine.config.data_dir) / "uploads").expanduser().resolve()
    writing = threading.Lock()
    categories = _Categories(engine)
    limits = {
        "/search/image": max_upload_bytes + MULTIPART_OVERHEAD,
        "/index": max_files * (max_upload_bytes + MULTIPART_OVERHEAD),
    }
    app = FastAPI(
        title="t2i: text-to-image search",
        version=__version__,
        description='Search pictures by text or by example. Errors are `{"detail": "..."}`.',
    )

    app.add_middleware(_DeclaredSizeLimit, limits=limits)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in err.errors()]
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(StoreError)
    @app.exception_handler(MilvusException)
    async def store_unavailable(request: Request, err: Exception) -> JSONResponse:
        log.error("Milvus error on %s: %s", request.url.path, err)
        return JSONResponse({"detail": f"the vector store failed: {err}"}, status_code=503)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, 500)

    def check_category(category: str | None) -> str | None:
        if not category:
            return None
        if category not in categories.get():
            known = ", ".join(sorted(categories.get())) or "none: the index is empty"
            raise HTTPException(422, f"unknown category {category[:100]!r}; known: {known}")
        return category

    TopK = Annotated[int, Query(ge=1, le=max_top_k, description=f"how many hits, 1 to {max_top_k}")]
    Category = Annotated[str | None, Query(max_length=512, description="only images with this label")]
    ImageId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="the image's id, from a search hit")]

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/search", response_model=list[HitOut], responses=_ERRORS, summary="Search by text")
    def search(
        response: Response,
        q: Annotated[str, Query(description="what the picture shows, e.g. 'a fire truck'")],
        k: TopK = engine.config.top_k,
        category: Category = None,
    ) -> list[HitOut]:
        """The `k` images that best match the text `q`, best first."""
        try:
            query = engine.prepare_query(q)
        except ValueError as err:
            raise HTTPException(422, f"q: {err}") from err
        if query.notice:
            response.headers[NOTICE_HEADER] = query.notice
        return [hit_out(h) for h in engine.search(query.text, k, check_category(category))]

    @app.post(
        "/search/image",
        response_model=list[HitOut],
        responses=_ERRORS,
        summary="Search by picture (more like this)",
        max_body_size=limits["/search/image"],
        form_limits={"max_files": 1},
    )
    def search_image(
        file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, GIF, BMP or TIFF picture")],
        k: TopK = engine.config.top_k,
        category: Category = None,
    ) -> list[HitOut]:
        """The `k` indexed images most like the uploaded picture, best first."""
        name = file.filename or "upload"
        _, image = _decode_upload(name, _read_upload(file, max_upload_bytes))
        return [hit_out(h) for h in engine.search_image(image, k, check_category(category))]

    @app.get(
        "/images/{image_id}",
        response_class=Response,
        responses={200: {"content": {t: {} for t in IMAGE_FORMATS.values()}}, **_ERRORS},
        summary="Get an indexed image",
    )
    def get_image(image_id: ImageId) -> Response:
        """The file of an indexed image, exactly as it was indexed."""
        rows = engine.store.get([image_id])
        if not rows:
            raise HTTPException(404, f"no image with id {image_id} is indexed")
        path = Path(rows[0]["path"])
        try:
            if path.stat().st_size > MAX_SERVED_BYTES:
                raise HTTPException(404, f"image {image_id}: its file is no longer the one indexed (too large)")
            data = path.read_bytes()
        except OSError as err:
            raise HTTPException(404, f"image {image_id}: its file is gone from the server") from err
        if content_id(data) != image_id:
            raise HTTPException(404, f"image {image_id}: its file changed after indexing; index it again")
        with Image.open(io.BytesIO(data)) as header:
            media_type = Image.MIME.get(header.format or "", "application/octet-stream")
        headers = {"Cache-Control": "public, max-age=86400, immutable", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=media_type, headers=headers)

    @app.post(
        "/index",
        response_model=IndexOut,
        responses=_ERRORS,
        summary="Add pictures to the index",
        max_body_size=limits["/index"],
        form_limits={"max_files": max_files, "max_fields": 4},
    )
    def index(
        files: Annotated[list[UploadFile], File(description=f"1 to {max_files} pictures")],
        label: Annotated[str, Form(pattern=LABEL_PATTERN, description="their category")] = "uploads",
    ) -> IndexOut:
        """Save the pictures under the upload folder and index them; all are checked before any is saved."""
        checked, skipped, seen = [], [], {}
        for upload in files:
            name = Path(upload.filename or "upload").name
            data = _read_upload(upload, max_upload_bytes)
            found, _ = _decode_upload(name, data)
            image_id = content_id(data)
            if image_id in seen:
                skipped.append(SkippedOut(file=name, reason=f"same image as {seen[image_id]}"))
                continue
            seen[image_id] = name
            checked.append((name, image_id, data, upload_dir / f"{image_id:016x}.{found.lower()}"))
        with writing:
            stored = engine.store.existing_ids(image_id for _, image_id, _, _ in checked)
            new = [c for c in checked if c[1] not in stored]
            upload_dir.mkdir(parents=True, exist_ok=True)
            for _, _, data, target in new:
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(target)
            rows = pd.DataFrame(
                [{"path": str(t), "label": label, "caption": _caption_from(n)} for n, _, _, t in new],
                columns=["path", "label", "caption"],
            )
            report = engine.index(rows, progress=False)
            categories.forget()
        names = {str(target): name for name, _, _, target in new}
        skipped += [SkippedOut(file=names.get(s.path, s.path), reason=s.reason) for s in report.skipped]
        failed = {s.path for s in report.skipped}
        images = [
            IndexedOut(file=name, id=image_id, image_url=f"/images/{image_id}")
            for name, image_id, _, target in checked
            if str(target) not in failed
        ]
        return IndexOut(added=report.added, unchanged=len(stored) + report.unchanged, skipped=skipped, images=images)

    @app.delete("/images/{image_id}", response_model=DeletedOut, responses=_ERRORS, summary="Remove an image")
    def delete_image(image_id: ImageId) -> DeletedOut:
        """Remove an image from the index; its file is deleted too if it was uploaded through `POST /index`."""
        with writing:
            rows = engine.store.get([image_id])
            if not rows:
                raise HTTPException(404, f"no image with id {image_id} is indexed")
            engine.store.delete([image_id])
            categories.forget()
            path = Path(rows[0]["path"])
            uploaded = path.parent.resolve() == upload_dir and path.is_file()
            if uploaded:
                path.unlink()
        return DeletedOut(id=image_id, file_removed=uploaded)

    @app.get("/health", response_model=HealthOut, responses=_ERRORS, summary="Is the service up?")
    def health() -> HealthOut:
        """200 when the server runs and Milvus answers a count; 503 otherwise."""
        engine.store.count()
        return HealthOut(status="ok")

    @app.get("/stats", response_model=StatsOut, responses=_ERRORS, summary="What is indexed")
    def stats() -> StatsOut:
        """The collection, encoder, index, row count and categories."""
        return StatsOut(**engine.info(), categories=sorted(categories.get()))

    return app


class BackgroundServer:
    """A uvicorn server on a daemon thread, for notebooks and tests (`t2i serve` runs in the foreground).

    Args:
        app: the ASGI app, e.g. `create_api(engine)`.
        host: the interface; 127.0.0.1 keeps it on this machine.
        port: 0 picks a free port; `url` says which once `start()` returns.

    Example:
        >>> with BackgroundServer(create_api(engine)) as server:
        ...     httpx.get(server.url + "/health").json()
        {'status': 'ok'}
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="t2i-server", daemon=True)
        self.url = ""  # the base URL, e.g. http://127.0.0.1:40123, once started

    def start(self, timeout: float = 60.0) -> "BackgroundServer":
        """Start serving; returns when the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting: is the port taken? (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:.0f} s")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish open requests and stop."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LatencyReport:
    """Client-side latencies of a batch of search requests."""

    latencies_ms: list[float]
    errors: list[str]
    wall_s: float
    workers: int

    def percentile(self, q: float) -> float:
        """The `q`-th percentile latency in milliseconds."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        """One line, e.g. `200 searches, 8 workers: p50 41 ms, p95 80 ms, 180/s, 0 errors`."""
        return (
            f"{len(self.latencies_ms)} searches, {self.workers} workers: p50 {self.percentile(50):.0f} ms, "
            f"p95 {self.percentile(95):.0f} ms, {len(self.latencies_ms) / self.wall_s:.0f}/s, {len(self.errors)} errors"
        )


def measure_search_latency(
    base_url: str, queries: list[str], total: int = 200, workers: int = 8, top_k: int = 5
) -> LatencyReport:
    """Send `total` `GET /search` requests from `workers` threads, cycling through `queries`; time each one.

    A request counts as an error unless it returns 200 with `top_k` hits (the index must hold that many).

    Example:
        >>> measure_search_latency(server.url, ["a dog", "a boat"], total=50).summary()
    """
    local = threading.local()
    latencies, errors = [], []

    def one(i: int) -> None:
        client = getattr(local, "client", None) or httpx.Client(base_url=base_url, timeout=60)
        local.client = client
        start = time.perf_counter()
        try:
            response = client.get("/search", params={"q": queries[i % len(queries)], "k": top_k})
            ok = response.status_code == 200 and len(response.json()) == top_k
            problem = None if ok else f"{response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as err:
            problem = f"{type(err).__name__}: {err}"
        (errors if problem else latencies).append(problem or 1000 * (time.perf_counter() - start))

    start = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="t2i-load") as pool:
        list(pool.map(one, range(total)))
    return LatencyReport(latencies, errors, time.perf_counter() - start, workers)


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `t2i serve` to the `t2i` parser; returns it, for the store options (--uri, --token, ...)."""
    serve = subparsers.add_parser("serve", help="serve search over HTTP: the REST API (--api), the web app (--ui)")
    serve.add_argument("--api", action="store_true", help="the REST API (docs at /docs); with neither flag: both")
    serve.add_argument("--ui", action="store_true", help="the web app (Gradio), at /ui")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000, or 7860 for --ui alone)")
    serve.add_argument("--upload-dir", help="where POST /index saves pictures (default: DATA_DIR/uploads)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest picture accepted (default 10)")
    return serve


def run_serve(args: argparse.Namespace) -> int:
    """Open the engine once and serve until Ctrl+C; returns the exit status."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app also passes analytics_enabled=False
    api, ui = (args.api, args.ui) if args.api or args.ui else (True, True)
    max_upload_bytes = int(args.max_upload_mb * (1 << 20))
    config = Config.from_env(uri=args.uri, token=args.token, collection=args.collection, encoder=args.encoder)
    engine = SearchEngine.open(config)
    try:
        if api:
            app = create_api(engine, upload_dir=args.upload_dir, max_upload_bytes=max_upload_bytes)
        else:
            app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
            app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
        if ui:
            from .app import UI_PATH, mount_app

            mount_app(app, engine, max_upload_bytes=max_upload_bytes)
        port = args.port if args.port is not None else 8000 if api else 7860
        parts = [f"API http://{args.host}:{port}/docs"] if api else []
        parts += [f"web app http://{args.host}:{port}{UI_PATH}/"] if ui else []
        print(f"t2i: serving {engine.info()['count']:,} images: {', '.join(parts)} (Ctrl+C stops)", file=sys.stderr)
        if not _is_loopback(args.host):
            print("t2i: warning: reachable from other machines, with no authentication", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=port, log_level="info")
    finally:
        engine.close()
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
