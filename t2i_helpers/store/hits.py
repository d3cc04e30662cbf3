"""A search's results as `Hit`s: the image, and what its header and the text read in it say (notebooks 01, 06)."""

from __future__ import annotations

from typing import NamedTuple

from ..data.exif import taken_iso
from .collection import TEXT_FIELDS

OUTPUT_FIELDS = [*TEXT_FIELDS, "taken_at", "taken_offset", "taken_from", "camera", "place", "ocr_text"]


class Hit(NamedTuple):
    """One search result: the image, and what its header and the text read in it say (notebook 06)."""

    id: int
    score: float
    path: str
    label: str
    caption: str
    taken_at: str | None = None  # ISO 8601, with the UTC offset where the photo gave one; None if not known
    place: str = ""
    camera: str = ""
    text: str = ""
    taken_from: str = ""  # where `taken_at` came from: "exif" (the camera's clock), "file" (its modification time)

    def when(self) -> str:
        """`taken_at` as people should read it: a file's modification time is said to be one ("file time ...")."""
        if not self.taken_at:
            return ""
        return f"file time {self.taken_at}" if self.taken_from == "file" else self.taken_at


def to_hit(row: dict, score: float) -> Hit:
    """A stored row (with the `OUTPUT_FIELDS`) as a `Hit`."""
    taken = taken_iso(row["taken_at"], row["taken_offset"], row["taken_from"])
    fields = (*(row[k] for k in TEXT_FIELDS), taken, row["place"], row["camera"], row["ocr_text"])
    return Hit(int(row["id"]), score, *fields, row["taken_from"] if taken else "")


def to_hits(results) -> list[list[Hit]]:
    """Milvus search results as `Hit` lists."""
    return [[to_hit({"id": h["id"], **h["entity"]}, float(h["distance"])) for h in hits] for hits in results]


def in_order(hits: list[Hit]) -> list[Hit]:
    """`hits` as ranked (best first, whichever way the metric runs), each run of equal scores by id: Milvus
    returns tied hits in any order, and one search must give the same answer alone or in a batch (notebook 04)."""
    first: dict[float, int] = {}  # score -> where its run starts
    return sorted(hits, key=lambda hit: (first.setdefault(hit.score, len(first)), hit.id))
