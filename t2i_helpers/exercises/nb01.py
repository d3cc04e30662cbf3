"""Exercises of notebook 01: normalize and rank by cosine by hand, and why a re-run stores nothing twice."""

from __future__ import annotations

import numpy as np

from .problem import Case, Exercise, Wrong, same_array

_RNG = np.random.default_rng(1)
_ROWS = [_RNG.normal(size=(5, 4)).astype(np.float32), np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)]
_IMAGES = _RNG.normal(size=(6, 4)).astype(np.float32) * _RNG.uniform(0.5, 3, size=(6, 1)).astype(np.float32)
_TEXT = _RNG.normal(size=4).astype(np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """Each row divided by its length (L2 norm): unit rows, whose dot products are cosine similarities."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rank_by_cosine(image_embeddings: np.ndarray, text_embedding: np.ndarray, top_k: int) -> np.ndarray:
    """The indices of the `top_k` images most similar to the text by cosine, best first."""
    images = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    text = text_embedding / np.linalg.norm(text_embedding)
    return np.argsort(-(images @ text))[:top_k]


def new_ids(batch_ids: list[int], stored_ids: set[int]) -> list[int]:
    """The ids of a batch that are not stored yet, each once, in the batch's order (what the ingest embeds)."""
    seen, new = set(stored_ids), []
    for image_id in batch_ids:
        if image_id not in seen:
            seen.add(image_id)
            new.append(image_id)
    return new


def _ranked(expected: np.ndarray):
    def compare(result) -> None:
        got = [int(i) for i in np.asarray(result).ravel()]
        if len(got) != len(expected):
            raise Wrong(f"return exactly top_k indices ({len(expected)} here), not {len(got)}")
        if sorted(got) != sorted(int(i) for i in expected):
            raise Wrong(
                "these are not the most similar images: normalize both sides, then take the largest dot products"
            )
        if got != [int(i) for i in expected]:
            raise Wrong("the right images, in the wrong order: best first means descending similarity")

    return compare


def _ids(expected: list[int]):
    def compare(result) -> None:
        got = list(result)
        if len(got) != len(set(got)):
            raise Wrong("an id appears twice: two copies of one photo in a batch are one image")
        if set(got) != set(expected):
            raise Wrong("the set of ids is not right: keep only ids that are not stored yet")
        if got != expected:
            raise Wrong("the right ids in another order: keep the batch's order")

    return compare


q1 = Exercise(
    "Normalize the rows",
    [Case((x,), same_array(normalize(x), "the result")) for x in _ROWS],
    [
        "The length of a row is `np.linalg.norm(row)`; for all rows at once pass `axis=1`.",
        "Divide each row by its own length: `keepdims=True` keeps the norms as a column, so broadcasting works.",
    ],
    normalize,
    wrong=[lambda x: x / np.linalg.norm(x), lambda x: x / x.sum(axis=1, keepdims=True)],
)

q2 = Exercise(
    "Rank images by cosine similarity",
    [Case((_IMAGES, _TEXT, k), _ranked(rank_by_cosine(_IMAGES, _TEXT, k))) for k in (3, 6)],
    [
        "Cosine similarity is the dot product of unit vectors: normalize the images (rows) and the text first.",
        "`images @ text` gives one score per image; `np.argsort` sorts ascending, so sort the negated scores.",
        "Unnormalized dot products favour long vectors: the images here have different lengths on purpose.",
    ],
    rank_by_cosine,
    wrong=[
        lambda i, t, k: np.argsort(-(i @ t))[:k],  # no normalization
        lambda i, t, k: np.argsort(normalize(i) @ t)[:k],  # worst first
    ],
)

q3 = Exercise(
    "Embed only what is new",
    [
        Case(([5, 3, 5, 9, 1], {3}), _ids([5, 9, 1])),
        Case(([2, 2, 2], set()), _ids([2])),
        Case(([7, 8], {7, 8}), _ids([])),
    ],
    [
        "An id is a hash of the file's bytes: the same photo always has the same id.",
        "Skip ids in `stored_ids`, and ids you already kept from this batch (keep a `seen` set).",
    ],
    new_ids,
    wrong=[
        lambda batch, stored: [i for i in batch if i not in stored],  # duplicates inside the batch stay
        lambda batch, stored: sorted(set(batch) - stored),  # loses the order
    ],
)

EXERCISES = {"nb01.q1": q1, "nb01.q2": q2, "nb01.q3": q3}
