"""The REST API's contract: the response models and error bodies of every route (taught in notebook 04)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .store import Hit


class HitOut(BaseModel):
    """One search result."""

    id: int = Field(description="the image's id (a 63-bit content hash; exact in `image_url` for JS clients)")
    score: float = Field(description="cosine similarity to the query: ranks one query's hits, not a probability")
    path: str = Field(description="the file's path on the server")
    caption: str
    label: str = Field(description="the image's category")
    image_url: str = Field(description="where to GET the image")
    thumbnail_url: str = Field(description="where to GET a small upright JPEG of it (for result grids)")


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


ERRORS = {status: {"model": ErrorOut} for status in (404, 413, 415, 422, 503)}


def hit_out(hit: Hit) -> HitOut:
    """A `Hit` as the API returns it."""
    return HitOut(**hit._asdict(), image_url=f"/images/{hit.id}", thumbnail_url=f"/images/{hit.id}?size=thumb")
