"""Uploaded pictures are checked before anything is stored: size, declared type, format, decode (notebook 04).

Both the type the client declares and the format Pillow finds in the header must be a JPEG, PNG, WebP, GIF, BMP
or TIFF picture, before a pixel is decoded; a body over its route's limit is refused from its declared length,
before it is read. The web app's uploads go through the same `decode_upload`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import WithJsonSchema
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..data.bounds import check_chunks
from ..data.images import MAX_SIDE, ImageError, decode_image

# What an upload may be: the declared content type and the format Pillow finds must both be in here.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                 "BMP": "image/bmp", "TIFF": "image/tiff"}  # fmt: skip
MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers, per request
MAX_UPLOAD_PIXELS = 50_000_000  # an upload is at most 50 MP, however small its file (memory: `bounds.DECODES`)
# An uploaded picture: a file part. Spelled `format: binary` in OpenAPI (3.1 writes it `contentMediaType:
# application/octet-stream` too), the spelling test tools draw files for; which types: `encoding.contentType`.
Picture = Annotated[UploadFile, WithJsonSchema({"type": "string", "format": "binary"})]


class DeclaredSizeLimit:
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


def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
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


def decode_upload(name: str, data: bytes) -> tuple[str, np.ndarray]:
    """(format, RGB array shrunk for the model) of uploaded bytes: the one check of the API and the web app.

    The format is read from the header and checked before anything is decoded; decoding is bounded in pixels,
    in PNG chunks, for JPEGs in scans, and in memory by the process's one decoding budget (`images.decode_image`,
    the same as ingest's). 422 if not a usable picture, 415 if another format.
    """
    try:
        check_chunks(data)  # before Pillow walks a PNG's chunks to find its header
        with Image.open(io.BytesIO(data)) as header:  # the header only
            found = header.format
    except ImageError as err:
        raise HTTPException(422, f"{name}: {err}") from err
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise HTTPException(422, f"{name}: not an image file or unsupported format") from err
    if found not in IMAGE_FORMATS:
        raise HTTPException(415, f"{name}: {found} pictures are not accepted; send JPEG, PNG, WebP, GIF, BMP or TIFF")
    try:
        image = decode_image(data, max_pixels=MAX_UPLOAD_PIXELS, max_side=MAX_SIDE)
    except ImageError as err:
        raise HTTPException(422, f"{name}: {err}") from err
    return found, image


def caption_from(name: str) -> str:
    """A caption from an uploaded file's name: `red_kangaroo.jpg` -> `red kangaroo`."""
    return " ".join(re.split(r"[\s_\-.]+", Path(name).stem))[:200]
