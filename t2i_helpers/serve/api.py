"""The REST API over one shared `SearchEngine`: the FastAPI app, its routes by resource (taught in notebook 04).

    GET    /search?q=&k=&category=   hits for a text query, best first; &after=&before=&place=&camera=&text=
    POST   /search/image             hits for an uploaded picture (multipart field `file`), same k and category
    GET    /images/{id}              the file of an indexed image, and nothing else (?size=thumb: its thumbnail)
    POST   /index?label=             add pictures (multipart field `files`, one or more) under a category
    DELETE /images/{id}              remove an image from the index (and its file, if it was uploaded)
    GET    /health, GET /stats       liveness (Milvus answers) and what is indexed
    GET    /docs, GET /openapi.json  the OpenAPI description (/docs loads Swagger UI from a CDN)

Errors are JSON `{"detail": "..."}` with a 4xx status for anything the client can fix: 422 for a bad query
(blank, or over 2,000 characters; a query the model cannot read whole is cut and says so in the
`T2I-Query-Notice` header), for k outside 1..max_top_k, an unreadable picture or one over 50 megapixels;
413 for an upload over the size limit (per file or per request), 415 for a file that is not a JPEG, PNG,
WebP, GIF, BMP or TIFF picture, 400 for a malformed multipart body or more than `max_files` files, 404 for an
id that is not indexed or a category with no images, 405 (with `Allow`) for a method a path does not take,
401 without the API key when the server has one, 400 for a `Host` the server does not answer to, 403 for a
write sent by another site's page (all three before the body is read: `auth.RequestGuard`). The OpenAPI
document says all of this, and is checked against the running server with schemathesis. `/images/{id}` serves
a regular file only, and only if its bytes still hash to `id`, so neither a crafted id nor a file swapped after
indexing (for another file, a pipe or a device) can make it read anything else.

Concurrent searches need no lock; writes (`POST /index`, `DELETE`) take one. Text searches that arrive together
are answered together, one Milvus search per batch (`batching.py`). Running it: `server.py`.

Example:
    >>> app = create_api(engine)                          # serve it with `t2i serve` or `BackgroundServer(app)`
"""

import contextlib
import io
import json
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from fastapi import APIRouter, FastAPI, File, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse
from PIL import Image
from pydantic import ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..data.images import ImageError, content_id, read_bytes
from ..engine import Found, SearchEngine
from ..pipelines.search import MAX_QUERY_CHARS
from ..store.face_store import PersonError
from ..store.filters import DAY_PATTERN, Filters
from ..store.image_store import Hit
from .auth import LOOPBACK_HOSTS, RequestGuard
from .batching import SearchBatcher
from .schemas import (
    FILTERS_HEADER,
    NOTICE_HEADER,
    QUERY_PATTERN,
    READ_HEADER,
    SEARCH_HEADERS,
    DeletedOut,
    HealthOut,
    HitOut,
    IndexedOut,
    IndexOut,
    SkippedOut,
    StatsOut,
    add_error_handlers,
    errors,
    hit_out,
    multipart_images,
)
from .service import Service
from .uploads import (
    IMAGE_FORMATS,
    DeclaredSizeLimit,
    Picture,
    caption_from,
    decode_upload,
    read_upload,
)

MAX_ID = (1 << 63) - 1  # ids are 63-bit content hashes
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$"


def create_api(
    engine: SearchEngine,
    upload_dir: str | Path | None = None,
    max_top_k: int = 100,
    max_upload_bytes: int = 10 << 20,
    max_files: int = 32,
    api_key: str | None = None,
    hosts: Collection[str] = LOOPBACK_HOSTS,
    max_batch: int = 32,
    batch_wait_ms: float = 2.0,
) -> FastAPI:
    """The REST API over an open `engine` (notebook 04); endpoints and errors are listed in the module docs.

    Args:
        engine: the one `SearchEngine` of this process, shared by every request.
        upload_dir: where `POST /index` saves pictures (named by content hash); default `DATA_DIR/uploads`.
        max_top_k: the largest `k` a search may ask for.
        max_upload_bytes: the largest picture accepted, per file.
        max_files: the most pictures one `POST /index` may carry.
        api_key: if given, every route but /health needs it in the `X-API-Key` header (see `auth.py`).
        hosts: the `Host` names served (`auth.allowed_hosts`); other names get a 400 (DNS rebinding).
        max_batch: the most text searches answered together (`batching.SearchBatcher`); 1 answers each request
            on its own, in the thread pool.
        batch_wait_ms: under load, how long a batch waits for more searches to join it.

    Returns:
        A FastAPI app; serve it with uvicorn (`t2i serve --api`, or `server.BackgroundServer` in a notebook).

    Example:
        >>> app = create_api(SearchEngine.open(), max_top_k=50)
    """
    batcher = SearchBatcher(engine, max_batch, batch_wait_ms) if max_batch > 1 else None
    service = Service(engine, upload_dir, max_top_k, max_upload_bytes, max_files, api_key, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if batcher is not None:
            await run_in_threadpool(batcher.close)

    app = FastAPI(
        lifespan=lifespan,
        title="t2i: text-to-image search",
        version=__version__,
        description='Search pictures by text or by example. Errors are `{"detail": "..."}`.',
        generate_unique_id_function=lambda route: route.name,  # operationIds: search, get_image, index, ...
    )
    app.add_middleware(DeclaredSizeLimit, limits=service.limits)
    app.add_middleware(RequestGuard, hosts=hosts, api_key=api_key)  # added last: runs first, before any body
    add_error_handlers(app)
    app.add_api_route("/", lambda: RedirectResponse("/docs"), include_in_schema=False)
    for routes in (_search_routes, _image_routes, _index_routes, _service_routes):
        app.include_router(routes(service))
    return app


ImageId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="the image's id, from a search hit")]


def _search_routes(service: Service) -> APIRouter:
    """GET /search (by text) and POST /search/image (by picture)."""
    engine, router = service.engine, APIRouter(tags=["search"], dependencies=service.keyed)
    TopK = Annotated[int, Query(ge=1, le=service.max_top_k, description=f"how many hits, 1 to {service.max_top_k}")]
    Category = Annotated[str | None, Query(max_length=512, description="only images with this label")]
    Day = Annotated[str | None, Query(pattern=DAY_PATTERN, description="taken on or after (after), on or before "
                                      "(before): YYYY, YYYY-MM or YYYY-MM-DD")]  # fmt: skip
    Name = Annotated[str | None, Query(max_length=200, description="city, region or country; camera make or model")]

    @router.get(
        "/search",
        response_model=list[HitOut],
        responses={200: {"headers": SEARCH_HEADERS}, **service.errors(404, 422, 503)},
        summary="Search by text, and by when, where, which camera and the words in the photo",
    )
    async def search(
        response: Response,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                pattern=QUERY_PATTERN,
                description="what the picture shows, e.g. 'a fire truck in Lisbon 2022' (not blank); optional: "
                "without it `text` ranks by the words in the photos, other filters (or none) list newest first",
            ),
        ] = None,
        k: TopK = engine.config.top_k,
        category: Category = None,
        after: Day = None,
        before: Day = None,
        place: Name = None,
        camera: Name = None,
        text: Annotated[str | None, Query(max_length=200, pattern=r"[^\W_]", description="words in the photo")] = None,
        person: Annotated[
            str | None,
            Query(
                max_length=1000,
                description="a person named with `t2i people name`; several separated by commas: "
                "photos with all of them (404 if no one has a name, or no faces were read)",
            ),
        ] = None,
        literal: Annotated[bool, Query(description="do not read places, dates or quoted words in `q`")] = False,
    ) -> list[HitOut]:
        """The `k` images that best match `q` among those that pass the filters, best first; the filters
        applied (`T2I-Filters`), and which were read from `q` (`T2I-Filters-Read`), are in the headers."""
        search = service.batcher.search if service.batcher else None  # text searches join a batch

        def answer() -> tuple[Found | None, list[Hit]]:  # reads Milvus: on a worker thread, not the event loop
            chosen = service.check_category(category)
            filters = Filters(after=after, before=before, place=place, camera=camera, text=text, person=person)
            if not (q or filters):
                return None, engine.store.newest(k, chosen)
            found = engine.find(q, filters, k, chosen, literal, search)
            return found, found.hits

        try:
            found, hits = await run_in_threadpool(answer)
        except PersonError as err:  # like a category with no images: nothing by that name here
            raise HTTPException(404, str(err)) from err
        except ValueError as err:
            raise HTTPException(422, str(err)) from err
        if found and found.notice:
            response.headers[NOTICE_HEADER] = found.notice
        response.headers[FILTERS_HEADER] = json.dumps(found.filters.applied() if found else {})
        response.headers[READ_HEADER] = json.dumps(found.understood if found else {})
        return [hit_out(h) for h in hits]

    @router.post(
        "/search/image",
        response_model=list[HitOut],
        responses=service.errors(400, 404, 413, 415, 422, 503),
        summary="Search by picture (more like this)",
        max_body_size=service.limits["/search/image"],
        form_limits={"max_files": 1},
        openapi_extra=multipart_images("file", list(IMAGE_FORMATS.values())),
    )
    def search_image(
        file: Annotated[Picture, File(description="a JPEG, PNG, WebP, GIF, BMP or TIFF picture")],
        k: TopK = engine.config.top_k,
        category: Category = None,
    ) -> list[HitOut]:
        """The `k` indexed images most like the uploaded picture, best first."""
        name = file.filename or "upload"
        _, image = decode_upload(name, read_upload(file, service.max_upload_bytes))
        return [hit_out(h) for h in engine.search_image(image, k, service.check_category(category))]

    return router


def _image_routes(service: Service) -> APIRouter:
    """GET and DELETE /images/{id}: one indexed image."""
    engine, router = service.engine, APIRouter(tags=["images"], dependencies=service.keyed)
    picture = {"schema": {"type": "string", "format": "binary"}}

    @router.get(
        "/images/{image_id}",
        response_class=Response,
        responses={200: {"content": dict.fromkeys(IMAGE_FORMATS.values(), picture)}, **service.errors(404, 422, 503)},
        summary="Get an indexed image or its thumbnail",
    )
    def get_image(
        image_id: ImageId,
        size: Annotated[
            Literal["original", "thumb"],
            Query(description="`original`: the file as indexed; `thumb`: a small upright JPEG (EXIF applied)"),
        ] = "original",
    ) -> Response:
        """The file of an indexed image, exactly as it was indexed, or its cached thumbnail."""
        rows = engine.store.get([image_id])
        if not rows:
            raise HTTPException(404, f"no image with id {image_id} is indexed")
        path = Path(rows[0]["path"])
        headers = {"Cache-Control": "public, max-age=86400, immutable", "X-Content-Type-Options": "nosniff"}
        if size == "thumb":
            try:
                thumbnail = engine.thumbnail(Hit(image_id, 0.0, str(path), rows[0]["label"], rows[0]["caption"]))
            except ImageError as err:
                raise HTTPException(404, f"image {image_id}: {err}") from err
            return Response(thumbnail.read_bytes(), media_type="image/jpeg", headers=headers)
        try:
            data = read_bytes(path)  # regular files only, bounded: never a pipe or /dev/zero put in its place
        except ImageError as err:
            detail = f"image {image_id}: its file is gone from the server or unreadable ({err})"
            raise HTTPException(404, detail) from err
        if content_id(data) != image_id:
            raise HTTPException(404, f"image {image_id}: its file changed after indexing; index it again")
        with Image.open(io.BytesIO(data)) as header:
            media_type = Image.MIME.get(header.format or "", "application/octet-stream")
        return Response(data, media_type=media_type, headers=headers)

    @router.delete(
        "/images/{image_id}",
        response_model=DeletedOut,
        responses=service.errors(404, 422, 503),
        summary="Remove an image",
    )
    def delete_image(image_id: ImageId) -> DeletedOut:
        """Remove an image from the index and its thumbnail; its file too if it was uploaded through `POST /index`."""
        with service.writing:
            rows = engine.store.get([image_id])
            if not rows:
                raise HTTPException(404, f"no image with id {image_id} is indexed")
            engine.delete([image_id])
            service.forget_categories()
            path = Path(rows[0]["path"])
            uploaded = path.parent.resolve() == service.upload_dir and path.is_file()
            if uploaded:
                path.unlink()
        return DeletedOut(id=image_id, file_removed=uploaded)

    return router


def _index_routes(service: Service) -> APIRouter:
    """POST /index: add uploaded pictures."""
    engine, router = service.engine, APIRouter(tags=["index"], dependencies=service.keyed)
    max_files, first = service.max_files, {"image_id": "$response.body#/images/0/id"}
    links = {"GetImage": {"operationId": "get_image", "parameters": first},
             "DeleteImage": {"operationId": "delete_image", "parameters": first}}  # fmt: skip
    IndexForm = create_model(  # noqa: N806  (a model class, made here for this server's max_files)
        "IndexForm",
        __config__=ConfigDict(extra="forbid"),  # other fields get a 422, as the schema says
        files=(list[Picture], Field(min_length=1, max_length=max_files, description=f"1 to {max_files} pictures")),
    )
    Label = Annotated[str, Query(pattern=LABEL_PATTERN, description="their category")]

    @router.post(
        "/index",
        response_model=IndexOut,
        responses={200: {"links": links}, **service.errors(400, 413, 415, 422, 503)},
        summary="Add pictures to the index",
        max_body_size=service.limits["/index"],
        form_limits={"max_files": max_files, "max_fields": 4},
        openapi_extra=multipart_images("files", list(IMAGE_FORMATS.values())),
    )
    def index(form: Annotated[IndexForm, File()], label: Label = "uploads") -> IndexOut:
        """Save the pictures under the upload folder and index them; all are checked before any is saved.

        The multipart body carries only the pictures; `label`, like `k` and `category` elsewhere, is a query
        parameter (a multipart field is text whatever type a schema gives it)."""
        checked, skipped, seen = [], [], {}
        for upload in form.files:
            name = Path(upload.filename or "upload").name
            data = read_upload(upload, service.max_upload_bytes)
            found, _ = decode_upload(name, data)
            image_id = content_id(data)
            if image_id in seen:
                skipped.append(SkippedOut(file=name, reason=f"same image as {seen[image_id]}"))
                continue
            seen[image_id] = name
            checked.append((name, image_id, data, service.upload_dir / f"{image_id:016x}.{found.lower()}"))
        with service.writing:
            stored = engine.store.existing_ids(image_id for _, image_id, _, _ in checked)
            new = [c for c in checked if c[1] not in stored]
            service.upload_dir.mkdir(parents=True, exist_ok=True)
            for _, _, data, target in new:
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(target)
            rows = pd.DataFrame(
                [{"path": str(t), "label": label, "caption": caption_from(n)} for n, _, _, t in new],
                columns=["path", "label", "caption"],
            )
            report = engine.index(rows, progress=False)
            service.forget_categories()
        names = {str(target): name for name, _, _, target in new}
        skipped += [SkippedOut(file=names.get(s.path, s.path), reason=s.reason) for s in report.skipped]
        failed = {s.path for s in report.skipped}
        images = [
            IndexedOut(file=name, id=image_id, image_url=f"/images/{image_id}")
            for name, image_id, _, target in checked
            if str(target) not in failed
        ]
        return IndexOut(added=report.added, unchanged=len(stored) + report.unchanged, skipped=skipped, images=images)

    return router


def _service_routes(service: Service) -> APIRouter:
    """GET /health and GET /stats: the service itself."""
    engine, router = service.engine, APIRouter(tags=["service"])

    @router.get("/health", response_model=HealthOut, responses=errors(503), summary="Is the service up?")
    def health() -> HealthOut:
        """200 when the server runs and Milvus answers a count; 503 otherwise."""
        engine.store.count()
        return HealthOut(status="ok")

    @router.get(
        "/stats",
        response_model=StatsOut,
        responses=service.errors(503),
        summary="What is indexed",
        dependencies=service.keyed,
    )
    def stats() -> StatsOut:
        """The collection, encoder, index, row count and categories."""
        return StatsOut(**engine.info(), categories=sorted(service.categories()))

    return router
