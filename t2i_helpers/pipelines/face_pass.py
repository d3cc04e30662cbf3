"""The face pass: the faces in each stored photo not read yet, embedded, given a person and stored (notebook 07).

    photos stored (under a folder) whose faces were not read -> a few at a time: read and decode at most
    DETECT_SIDE px (small faces again from more pixels: `FaceReader.read_photo`) -> find and embed faces -> each
    joins a person or starts one -> store faces + a "read" row

Faces cost more than an embedding (a detection ~70 ms a photo, ~30 ms a face), so like the OCR pass this is its
own pass over what is stored: `t2i index FOLDER --faces` embeds the new photos first, then reads the faces of
every photo of the folder not read yet, and nothing is embedded again. When a pass found faces, the faces still
alone in a person are tried again against the people as they are now (`people.rematch`). Each batch (its faces
and one "read" row per photo, even a photo without faces) is stored in one upsert before the next is read, so a
run killed part way loses at most one batch, and the next run reads only the photos not stored.

Example:
    >>> find_faces(engine.store, FaceReader(), root="photos/")
    FaceReport(read=12, faces=9, people=3, skipped=[])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.images import ImageError, content_id, read_bytes
from ..models.faces import FaceReader
from ..store.face_store import FaceRow, face_id, read_marker
from ..store.image_store import ImageStore
from .ocr_pass import under
from .operators import Skipped
from .people import People, rematch

FACE_BATCH = 8  # photos per stored batch: what a run killed part way reads again


@dataclass
class FaceReport:
    """What a face pass did: photos read, faces found, people new, faces alone before that joined a person
    (`people.rematch`), and the files it could not read."""

    read: int = 0
    faces: int = 0
    people: int = 0
    joined: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. `read the faces of 12 photos (9 faces, 3 new people, 1 alone joined a person), skipped 0`."""
        return (
            f"read the faces of {self.read} photos ({self.faces} faces, {self.people} new people, "
            f"{self.joined} alone joined a person), skipped {len(self.skipped)}"
        )


def unread(store: ImageStore, root: str | Path | None = None) -> list[dict]:
    """The stored rows (id, path) whose faces were not read yet, under folder `root` if given, in path order."""
    read = store.faces.read_photos()
    return under([r for r in store.scan(["id", "path"]) if int(r["id"]) not in read], root)


def find_faces(
    store: ImageStore,
    reader: FaceReader,
    root: str | Path | None = None,
    batch_size: int = FACE_BATCH,
    progress: bool = True,
) -> FaceReport:
    """Find, embed, group and store the faces of every stored photo (under `root`) not read yet.

    A file that is gone, unreadable or no longer the image stored is a reported skip and stays unread (a later
    index of its folder brings its row up to date). Resumable: each batch is stored before the next is read.
    """
    store.faces.ensure()
    report, rows = FaceReport(), unread(store, root)
    if not rows:
        return report
    people = People(store.faces.faces(vectors=True))
    known = people.next_id
    try:
        _read_batches(store, reader, rows, people, report, batch_size, progress)
        report.joined = rematch(store.faces) if report.faces else 0  # faces alone, tried against the grown people
    finally:
        store.faces.flush()  # also after a failure: what was written is sealed
    report.people = people.next_id - known
    return report


def _read_batches(
    store: ImageStore,
    reader: FaceReader,
    rows: list[dict],
    people: People,
    report: FaceReport,
    batch_size: int,
    progress: bool,
) -> None:
    """Read, group and write the faces of `rows`, `batch_size` photos to an upsert."""
    for lo in tqdm(range(0, len(rows), batch_size), unit="batch", desc="faces", disable=not progress):
        found: list[FaceRow] = []
        for row in rows[lo : lo + batch_size]:
            photo_id = int(row["id"])
            try:
                data = read_bytes(row["path"])
                if content_id(data) != photo_id:
                    raise ImageError("the file changed after it was indexed; index its folder again")
                faces = reader.read_photo(data)
            except ImageError as err:
                report.skipped.append(Skipped(row["path"], str(err)))
                continue
            persons = people.assign(np.array([f.embedding for f in faces]))
            found += [
                FaceRow(face_id(photo_id, i), photo_id, True, f.box, f.score, p, people.names[p], f.embedding)
                for i, (f, p) in enumerate(zip(faces, persons))
            ]
            found.append(read_marker(photo_id))
            report.read += 1
            report.faces += len(faces)
        store.faces.write(found)
