"""People: faces grouped into persons, named, merged, forgotten and grouped again (notebook 07).

    a new face   joins the person whose centre (mean face) is nearest, if within SAME_PERSON cosine distance and
                 no other face of its photo took that person; else it starts a new person
    regroup      every face clustered anew (scikit-learn's agglomerative clustering, average linkage, cut at
                 SAME_PERSON): faces of one photo never together, faces named differently never together, faces
                 named alike together, a face taken out of a person never with the faces it was taken from; each
                 group keeps the id and name of the old person it shares most faces with
    remove_face  one face taken out of its person: it becomes a person of its own, kept apart (`FaceRow.apart`)
                 from that person's surest faces in every later regroup and rematch
    rematch      at the end of each face pass, faces alone in an unnamed person join the nearest other person's
                 centre within SAME_PERSON (no shared photo, nothing kept apart): as the library grows, a face that
                 joined no one when it was read is tried again

Photo apps are blamed most for two people merged into one, so every rule here errs towards keeping people apart.
The faces collection is the only record: a person is the faces that carry its id, its name is on each of them.

Example:
    >>> list_people(store.faces)[0]                      # Person(id=0, name='', photos=12, faces=12, face=FaceRow(...))
    >>> name_person(store.faces, 0, "Anna"); merge_people(store.faces, 3, 0); forget_person(store.faces, 5)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data.images import ImageError, content_id, decode_bounded, encode_jpeg, read_bytes, shrink
from ..models.faces import SAME_PERSON
from ..store.face_store import MAX_APART, MAX_NAME_BYTES, NO_PERSON, FaceRow, FaceStore, PersonError
from ..store.image_store import ImageStore

# A distance no two faces have (they are at most 2 apart): pairs that must stay apart. Average linkage joins two
# groups only if their mean distance is under SAME_PERSON, so one such pair keeps apart groups of up to
# sqrt(APART / SAME_PERSON) ~ 47,000 faces each.
APART = 1e9
FACE_THUMBNAIL = 160  # px, the longer side of a face's thumbnail
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Person(NamedTuple):
    """One person: id, name ("" if unnamed), how many photos and faces, and its surest face (the thumbnail's)."""

    id: int
    name: str
    photos: int
    faces: int
    face: FaceRow


class People:
    """The persons' centres while a face pass runs: which person each new face joins (`assign`)."""

    def __init__(self, faces: list[FaceRow], threshold: float = SAME_PERSON) -> None:
        self.threshold = threshold
        self.sums: dict[int, np.ndarray] = {}
        self.names: dict[int, str] = {}
        for face in faces:
            self.sums[face.person] = self.sums.get(face.person, 0) + face.embedding
            self.names[face.person] = face.name
        self.next_id = max(self.sums, default=-1) + 1

    def assign(self, embeddings: np.ndarray) -> list[int]:
        """The person of each face of one photo (unit vectors, one a row): nearest centre first, each person
        taken once in the photo; faces that join no one start new persons."""
        chosen = [NO_PERSON] * len(embeddings)
        if self.sums and len(embeddings):
            ids = list(self.sums)
            centres = np.stack([self.sums[i] for i in ids])
            centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
            distance = 1 - np.asarray(embeddings) @ centres.T
            taken = set()
            close = sorted(np.argwhere(distance < self.threshold).tolist(), key=lambda p: distance[p[0], p[1]])
            for face, column in close:
                if chosen[face] == NO_PERSON and ids[column] not in taken:
                    chosen[face] = ids[column]
                    taken.add(ids[column])
        for face, vector in enumerate(embeddings):
            if chosen[face] == NO_PERSON:
                chosen[face], self.next_id = self.next_id, self.next_id + 1
                self.names[chosen[face]] = ""
            self.sums[chosen[face]] = self.sums.get(chosen[face], 0) + vector
        return chosen


def list_people(faces: FaceStore) -> list[Person]:
    """Every person, most photos first (then by id), with the face of the highest score as its picture.

    Raises:
        PersonError: no faces were read in this store yet.
    """
    faces.require()
    by_person: dict[int, list[FaceRow]] = {}
    for face in faces.faces():
        by_person.setdefault(face.person, []).append(face)
    return sorted((_person(pid, rows) for pid, rows in by_person.items()), key=lambda p: (-p.photos, p.id))


def get_person(faces: FaceStore, person: int) -> Person:
    """One person by id (PersonError if there is none)."""
    return _person(person, faces_of(faces, person))


def _person(person: int, rows: list[FaceRow]) -> Person:
    return Person(person, rows[0].name, len({r.photo_id for r in rows}), len(rows), max(rows, key=lambda r: r.score))


def faces_of(faces: FaceStore, person: int) -> list[FaceRow]:
    """A person's faces (PersonError if no faces were read, or there is no such person)."""
    faces.require()
    found = faces.faces(f"person == {int(person)}")
    if not found:
        raise PersonError(f"there is no person {person}: `t2i people` lists them")
    return found


def clean_name(name: str) -> str:
    """A person's name as stored: control characters and extra spaces dropped.

    Raises:
        ValueError: empty, with a comma (the person filter separates names by commas) or too long.
    """
    name = " ".join(_CONTROL.sub(" ", name).split())
    if not name or "," in name or len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"a person's name must be 1 to {MAX_NAME_BYTES} bytes without a comma, not {name!r}")
    return name


def name_person(faces: FaceStore, person: int, name: str) -> None:
    """Name a person (or rename it); a name another person has is refused, for a merge is what was meant."""
    name = clean_name(name)
    rows = faces_of(faces, person)
    other = [f for f in faces.faces('name != ""') if f.name.casefold() == name.casefold() and f.person != person]
    if other:
        found = other[0]
        raise PersonError(
            f"person {found.person} is named {found.name!r} already: `t2i people merge {person} {found.person}`"
        )
    faces.update({r.id: {"name": name} for r in rows})


def merge_people(faces: FaceStore, source: int, target: int) -> None:
    """Give `source`'s faces to `target` (which keeps its name, or takes `source`'s if it has none).

    Raises:
        PersonError: one of them does not exist, or they are both in one photo (then they are two people).
    """
    if source == target:
        raise PersonError(f"person {source} cannot be merged into itself")
    moved, kept = faces_of(faces, source), faces_of(faces, target)
    shared = {r.photo_id for r in moved} & {r.photo_id for r in kept}
    if shared:
        raise PersonError(f"persons {source} and {target} are both in {len(shared)} photo(s): they are two people")
    name = kept[0].name or moved[0].name
    ids = {r.id for r in [*moved, *kept]}  # the user says they are one: nothing between them is kept apart
    faces.update(
        {
            r.id: {"person": target, "name": name, "apart": tuple(i for i in r.apart if i not in ids)}
            for r in [*moved, *kept]
        }
    )


def remove_face(faces: FaceStore, face: int) -> int:
    """Take one face out of its person: it becomes a new unnamed person, never grouped again with the person's
    surest faces (up to MAX_APART, kept on the face); the new person's id.

    Raises:
        PersonError: there is no such face, or it is alone in its person already.
    """
    faces.require()
    found = faces.faces(f"id == {int(face)}")
    if not found:
        raise PersonError(f"there is no face {face}: `t2i people faces ID` lists a person's faces")
    rows = faces.faces(f"person == {found[0].person}")
    if len(rows) == 1:
        raise PersonError(f"face {face} is alone in person {found[0].person} already")
    others = sorted((r for r in rows if r.id != face), key=lambda r: -r.score)[:MAX_APART]
    new = max((p.id for p in list_people(faces)), default=-1) + 1
    faces.update({face: {"person": new, "name": "", "apart": tuple(r.id for r in others)}})
    return new


def rematch(faces: FaceStore, threshold: float = SAME_PERSON) -> int:
    """Let each face alone in an unnamed person join the nearest other person whose centre is within `threshold`,
    unless they share a photo or are kept apart (see the module's docstring); how many faces joined.

    One matrix product a face alone against every person's centre: singles x people x 128 multiply-adds.
    """
    members: dict[int, list[FaceRow]] = {}
    for row in faces.faces(vectors=True):
        members.setdefault(row.person, []).append(row)
    ids = list(members)
    column = {person: i for i, person in enumerate(ids)}
    sums = np.stack([np.sum([g.embedding for g in members[p]], axis=0) for p in ids]) if ids else np.zeros((0, 1))
    joined: dict[int, dict] = {}
    for alone in [m[0] for m in members.values() if len(m) == 1 and not m[0].name]:
        if len(members[alone.person]) > 1:  # another face alone joined it meanwhile
            continue
        distance = 1 - sums @ alone.embedding / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
        for j in np.argsort(distance):
            group = members[ids[j]]
            if distance[j] >= threshold:
                break
            if ids[j] != alone.person and group and not _kept_apart(alone, group):
                members[alone.person], sums[column[alone.person]] = [], 0  # gone: its only face moves
                group.append(alone._replace(person=ids[j], name=group[0].name))
                sums[j] += alone.embedding
                joined[alone.id] = {"person": ids[j], "name": group[0].name}
                break
    faces.update(joined)
    return len(joined)


def _kept_apart(face: FaceRow, group: list[FaceRow]) -> bool:
    """Whether `face` may not join `group`: a face of its photo is there, or one it is kept apart from (or that is
    kept apart from it)."""
    ids = {g.id for g in group}
    return any(g.photo_id == face.photo_id or face.id in g.apart for g in group) or not ids.isdisjoint(face.apart)


def forget_person(faces: FaceStore, person: int) -> list[FaceRow]:
    """Delete a person's faces and name; the faces deleted. Their photos stay read: the faces are not found again."""
    rows = faces_of(faces, person)
    faces.delete(r.id for r in rows)
    return rows


def regroup(faces: FaceStore, threshold: float = SAME_PERSON) -> int:
    """Cluster every face anew (see the module's docstring); the number of people afterwards.

    Needs scikit-learn; holds a faces x faces distance matrix (10,000 faces: 800 MB).
    """
    faces.require()
    rows = faces.faces(vectors=True)
    if len(rows) < 2:
        return len(rows)
    vectors = np.stack([r.embedding for r in rows]).astype(np.float64)
    distance = np.clip(1 - vectors @ vectors.T, 0, 2)
    photo = np.array([r.photo_id for r in rows])
    name = np.array([r.name.casefold() for r in rows])
    named = name != ""
    both_named = named[:, None] & named[None, :]
    distance[both_named & (name[:, None] == name[None, :])] = 0
    distance[(both_named & (name[:, None] != name[None, :])) | (photo[:, None] == photo[None, :])] = APART
    where = {r.id: i for i, r in enumerate(rows)}
    for i, row in enumerate(rows):  # a face taken out of a person, and that person's faces
        for j in (where[a] for a in row.apart if a in where):
            distance[i, j] = distance[j, i] = APART
    np.fill_diagonal(distance, 0)
    labels = cluster(distance, threshold)
    old = [r.person for r in rows]
    overlap = Counter((label, person) for label, person in zip(labels, old) if person != NO_PERSON)
    new_id: dict[int, int] = {}
    for (label, person), _ in sorted(overlap.items(), key=lambda item: -item[1]):
        if label not in new_id and person not in new_id.values():
            new_id[label] = person
    next_id = max(old, default=-1) + 1
    for label in sorted(set(labels) - set(new_id)):
        new_id[label], next_id = next_id, next_id + 1
    group_name = {label: n for label, n in zip(labels, (r.name for r in rows)) if n}
    changes = {
        r.id: {"person": new_id[label], "name": group_name.get(label, "")}
        for r, label in zip(rows, labels)
        if (r.person, r.name) != (new_id[label], group_name.get(label, ""))
    }
    faces.update(changes)
    return len(new_id)


def cluster(distance: np.ndarray, threshold: float = SAME_PERSON) -> np.ndarray:
    """A person label for each face: scikit-learn's agglomerative clustering (average linkage) of a faces x faces
    distance matrix, cut at `threshold` (pairs set to APART are never joined)."""
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    ).fit_predict(distance)


def face_thumbnail(store: ImageStore, face: FaceRow, target: Path) -> Path:
    """A small JPEG of one face (its box and a margin) at `target`, made from its photo on first use.

    Raises:
        ImageError: the photo is gone, unreadable, or no longer the image indexed.
    """
    if target.exists():
        return target
    rows = store.get([face.photo_id])
    if not rows:
        raise ImageError("its photo is no longer indexed")
    data = read_bytes(rows[0]["path"])
    if content_id(data) != face.photo_id:
        raise ImageError("its photo changed after it was indexed; index it again")
    image, scale = decode_bounded(data)
    x, y, w, h = (v / scale for v in face.box)
    margin = max(w, h) / 4
    top, left = max(0, int(y - margin)), max(0, int(x - margin))
    crop = image[top : int(y + h + margin), left : int(x + w + margin)]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(encode_jpeg(shrink(crop, FACE_THUMBNAIL)))
    partial.replace(target)
    return target
