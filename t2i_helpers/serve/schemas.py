"""The REST API's contract: response models, error bodies, and what FastAPI cannot infer (taught in notebook 04).

The OpenAPI document is checked against the running server by `schemathesis run ... --checks all`
(tests/test_api_contract.py): every request it says is valid must be answered 2xx, every answer must match it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pymilvus.exceptions import MilvusException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..pipelines.search import INVISIBLE, clean_query
from ..store.image_store import Hit, StoreError

log = logging.getLogger(__name__)

# What `search.clean_query` keeps of a query: at least one character that is neither whitespace (as `str.split`
# sees it), a control character nor an invisible one. Escapes only, so Python, Rust (pydantic) and ECMA agree.
QUERY_PATTERN = r"[^\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000" + INVISIBLE + "]"
NOTICE_HEADER = "T2I-Query-Notice"
FILTERS_HEADER = "T2I-Filters"  # the filters a search applied, as JSON (ASCII)
READ_HEADER = "T2I-Filters-Read"  # those of them read from the query
SEARCH_HEADERS = {  # what GET /search answers in headers, for the OpenAPI document
    NOTICE_HEADER: {"description": "why the query was shortened", "schema": {"type": "string"}},
    FILTERS_HEADER: {"description": "the filters applied, as a JSON object", "schema": {"type": "string"}},
    READ_HEADER: {"description": "those of them read from `q`, as a JSON object", "schema": {"type": "string"}},
}
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


class HitOut(BaseModel):
    """One search result."""

    id: int = Field(description="the image's id (a 63-bit content hash; exact in `image_url` for JS clients)")
    score: float = Field(description="cosine similarity to the query: ranks one query's hits, not a probability")
    path: str = Field(description="the file's path on the server")
    caption: str
    label: str = Field(description="the image's category")
    image_url: str = Field(description="where to GET the image")
    thumbnail_url: str = Field(description="where to GET a small upright JPEG of it (for result grids)")
    taken_at: str | None = Field(
        description="when it was taken, ISO 8601 (with the UTC offset where the photo gave one; the file's time "
        "where it has no EXIF date), or null"
    )
    taken_from: str = Field(
        "",
        description='where `taken_at` comes from: "exif" (the camera\'s clock), "file" (the file\'s modification '
        "time, not when the photo was taken), or empty when not known",
    )
    place: str = Field(description="where it was taken (city, region, country from its GPS), or empty")
    camera: str = Field(description="the camera's make and model, or empty")
    text: str = Field(description="the words read in it (`t2i index --ocr`), or empty")


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


_MEANING = {
    400: "a malformed multipart body, or more files than allowed",
    401: "the X-API-Key header is missing or wrong",
    404: "not indexed: an image id, or a category with no images",
    413: "an upload over the size limit (per file or per request)",
    415: "a file that is not a JPEG, PNG, WebP, GIF, BMP or TIFF picture",
    422: "a parameter out of its range, or a picture that cannot be decoded",
    503: "Milvus failed or cannot be reached",
}


def errors(*statuses: int) -> dict[int, dict]:
    """OpenAPI `responses` for error statuses: each a JSON `{"detail": "..."}` with what it means."""
    return {status: {"model": ErrorOut, "description": _MEANING[status]} for status in statuses}


def multipart_images(field: str, media_types: list[str]) -> dict:
    """`openapi_extra` saying which media types the pictures in multipart `field` may have."""
    encoding = {field: {"contentType": ", ".join(media_types)}}
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": encoding}}}}


def hit_out(hit: Hit) -> HitOut:
    """A `Hit` as the API returns it."""
    return HitOut(**hit._asdict(), image_url=f"/images/{hit.id}", thumbnail_url=f"/images/{hit.id}?size=thumb")


def add_error_handlers(app: FastAPI) -> None:
    """Make every error of `app` a JSON `{"detail": "..."}`: validation 422, Milvus 503, anything else 500; a
    405 lists in `Allow` every method its path takes (Starlette names those of the first matching route only)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {_reason(e)}" for e in err.errors()]
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:  # Starlette's Allow names the first route of the path only, not all of them
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=headers)

    @app.exception_handler(StoreError)
    @app.exception_handler(MilvusException)
    async def store_unavailable(request: Request, err: Exception) -> JSONResponse:
        log.error("Milvus error on %s: %s", request.url.path, err)
        return JSONResponse({"detail": f"the vector store failed: {err}"}, status_code=503)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, 500)


def _reason(error: dict) -> str:
    """A validation error in words; a refused query `q` says what `clean_query` says, not which regex failed."""
    if tuple(error["loc"]) == ("query", "q") and error["type"].startswith("string_"):
        try:
            clean_query(error["input"])
        except ValueError as refused:
            return str(refused)
    return error["msg"]


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """The methods some route of `app` answers at the request's path, asked of each route as routing does."""
    probes = ({**scope, "method": method} for method in _METHODS)
    return [p["method"] for p in probes if any(r.matches(p)[0] == Match.FULL for r in app.router.routes)]
