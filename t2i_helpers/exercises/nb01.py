"""Exercises of notebook 01: normalize and rank by cosine by hand, and why a re-run stores nothing twice."""

from __future__ import annotations

import numpy as np

from .problem import Case, Exercise, Wrong, as_array, positions, same_array

_RNG = np.random.default_rng(1)
_ROWS = [
    _RNG.normal(size=(5, 4)).astype(np.float32),
    np.array([[3.0, 4.0], [0.0, 2.0]], np.float32),  # square: a norm over the wrong axis still broadcasts
    np.array([[1.0, -2.0, 2.0]]),  # one row, float64
    np.array([[0.5, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 9.0, 0.0]], np.float32),  # signs and sizes
]
_IMAGES = _RNG.normal(size=(6, 4)).astype(np.float32) * _RNG.uniform(0.5, 3, size=(6, 1)).astype(np.float32)
_TEXT = _RNG.normal(size=4).astype(np.float32) * 2.5
# Ties: rows 1 and 4 point the same way as row 0 (equal cosine), at other lengths; row 2 is the text itself.
_TIED = np.array([[1, 2, 0], [2, 4, 0], [0.3, 0.3, 0.9], [0, 0, 1], [0.5, 1, 0], [-1, 0, 0]], np.float32)
_TIED_TEXT = np.array([0.3, 0.3, 0.9], np.float32) * 4


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


def _ranked(images: np.ndarray, text: np.ndarray, k: int):
    """Any order of equally similar images is right: the similarity at each rank must be the best k, in order."""
    cosine = normalize(images.astype(np.float64)) @ (text / np.linalg.norm(text))
    best = np.sort(cosine)[::-1][:k]

    def compare(result) -> None:
        got = positions(result, len(images))
        if len(got) != k:
            raise Wrong(f"return exactly top_k indices ({k} here, of {len(images)} images), not {len(got)}")
        if len(set(got)) != len(got):
            raise Wrong("an image appears twice in your ranking")
        if not np.allclose(np.sort(cosine[got])[::-1], best, atol=1e-6):
            raise Wrong(
                "these are not the most similar images: normalize both sides, then take the largest dot products"
            )
        if not np.allclose(cosine[got], best, atol=1e-6):
            raise Wrong("the right images, in the wrong order: best first means descending similarity")

    return compare


def _ids(expected: list[int]):
    def compare(result) -> None:
        got = [int(i) for i in list(as_array(list(result)).ravel())]
        if len(got) != len(set(got)):
            raise Wrong("an id appears twice: two copies of one photo in a batch are one image")
        if set(got) != set(expected):
            raise Wrong("the set of ids is not right: keep only ids that are not stored yet, each once")
        if got != expected:
            raise Wrong("the right ids in another order: keep the order of their first appearance in the batch")

    return compare


def _normalize_loop(x):
    out = np.empty_like(x)
    for i, row in enumerate(x):
        out[i] = row / np.sqrt((row**2).sum())
    return out


def _normalize_in_place(x):
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _normalize_torch(x):
    import torch

    return torch.nn.functional.normalize(torch.from_numpy(x), dim=1)


q1 = Exercise(
    "Normalize the rows",
    "Write `normalize(x)`: `x` is a 2-D NumPy array (one embedding per row, at least one row, no row of zeros); "
    "return an array of the same shape whose every row is that row of `x` divided by its length (L2 norm). "
    "NumPy, torch or a loop are all fine.",
    [Case((x,), same_array(normalize(x), "the result")) for x in _ROWS],
    [
        "The length of a row is `np.linalg.norm(row)`; for all rows at once pass `axis=1`.",
        "Divide each row by its own length: `keepdims=True` keeps the norms as a column, so broadcasting works.",
    ],
    normalize,
    wrong=[
        lambda x: x / np.linalg.norm(x),  # one norm for the whole matrix
        lambda x: x / x.sum(axis=1, keepdims=True),  # divides by the sum
        lambda x: x / np.linalg.norm(x, axis=0, keepdims=True),  # columns, not rows
        lambda x: x / np.linalg.norm(x, axis=1),  # no keepdims: broadcasts along the wrong axis
        lambda x: x / (x**2).sum(axis=1, keepdims=True),  # squared length, no square root
        lambda x: x / np.abs(x).sum(axis=1, keepdims=True),  # L1 norm
        lambda x: x / np.abs(x).max(axis=1, keepdims=True),  # largest entry
        lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),  # standardizes
        lambda x: x[0] / np.linalg.norm(x[0]),  # the first row only
    ],
    variants=[
        _normalize_loop,
        _normalize_in_place,
        _normalize_torch,
        lambda x: [list(row / np.linalg.norm(row)) for row in x],
    ],
)


def _rank_torch(image_embeddings, text_embedding, top_k):
    import torch

    images, text = torch.from_numpy(image_embeddings), torch.from_numpy(text_embedding)
    return torch.topk(torch.nn.functional.cosine_similarity(images, text[None, :]), top_k).indices


def _rank_loop(image_embeddings, text_embedding, top_k):
    def cosine(row):
        return float(row @ text_embedding) / (np.linalg.norm(row) * np.linalg.norm(text_embedding))

    return sorted(range(len(image_embeddings)), key=lambda i: cosine(image_embeddings[i]), reverse=True)[:top_k]


def _rank_in_place(image_embeddings, text_embedding, top_k):
    image_embeddings /= np.linalg.norm(image_embeddings, axis=1, keepdims=True)  # changes the caller's array
    return np.argsort(image_embeddings @ text_embedding)[::-1][:top_k]


q2 = Exercise(
    "Rank images by cosine similarity",
    "Write `rank_by_cosine(image_embeddings, text_embedding, top_k)`: `image_embeddings` is an (n, d) array, "
    "`text_embedding` a (d,) array (neither normalized), `1 <= top_k <= n`; return the positions (row indices) of "
    "the `top_k` images most similar to the text by cosine, best first, as a list or array of ints. Images with "
    "the same similarity may come in either order.",
    [Case((_IMAGES, _TEXT, k), _ranked(_IMAGES, _TEXT, k)) for k in (3, 1, 6)]
    + [Case((_TIED, _TIED_TEXT, k), _ranked(_TIED, _TIED_TEXT, k)) for k in (2, 4)],
    [
        "Cosine similarity is the dot product of unit vectors: normalize the images (rows) and the text first.",
        "`images @ text` gives one score per image; `np.argsort` sorts ascending, so sort the negated scores.",
        "Unnormalized dot products favour long vectors: the images here have different lengths on purpose.",
    ],
    rank_by_cosine,
    wrong=[
        lambda i, t, k: np.argsort(-(i @ t))[:k],  # no normalization
        lambda i, t, k: np.argsort(normalize(i) @ t)[:k],  # worst first
        lambda i, t, k: np.argsort(-(normalize(i) @ t))[: k + 1],  # one too many
        lambda i, t, k: np.argsort(-(normalize(i) @ t)),  # k ignored
        lambda i, t, k: np.sort(normalize(i) @ t)[::-1][:k],  # the scores, not the positions
        lambda i, t, k: np.argsort(-(i @ (t / np.linalg.norm(t))))[:k],  # only the text normalized
        lambda i, t, k: np.argsort(np.linalg.norm(i - t, axis=1))[:k],  # Euclidean distance, unnormalized
        lambda i, t, k: np.argpartition(-(normalize(i) @ t), k - 1)[:k][::-1],  # the best k, unordered
        lambda i, t, k: np.argsort(-(normalize(i) @ t))[:k] + 1,  # counted from 1
    ],
    variants=[
        _rank_torch,
        _rank_loop,
        _rank_in_place,
        lambda i, t, k: list(np.argsort(normalize(i) @ t, kind="stable")[::-1][:k]),
    ],
)


def _new_ids_dict(batch_ids, stored_ids):
    return [i for i in dict.fromkeys(batch_ids) if i not in stored_ids]


def _new_ids_growing(batch_ids, stored_ids):
    new = []
    for image_id in batch_ids:
        if image_id not in stored_ids:
            stored_ids.add(image_id)  # adds to the caller's set
            new.append(image_id)
    return new


q3 = Exercise(
    "Embed only what is new",
    "Write `new_ids(batch_ids, stored_ids)`: `batch_ids` is a list of ints (it may repeat an id, or be empty), "
    "`stored_ids` a set of ints; return the list of the batch's ids that are not in `stored_ids`, each once, "
    "in the order they first appear in the batch.",
    [
        Case(([5, 3, 5, 9, 1], {3}), _ids([5, 9, 1])),
        Case(([2, 2, 2], set()), _ids([2])),
        Case(([7, 8], {7, 8}), _ids([])),
        Case(([], {1}), _ids([])),
        Case(([9, 4, 1, 4, 9, 6], {6, 11}), _ids([9, 4, 1])),
        Case(([30, 20, 10, 20], {40}), _ids([30, 20, 10])),
    ],
    [
        "An id is a hash of the file's bytes: the same photo always has the same id.",
        "Skip ids in `stored_ids`, and ids you already kept from this batch (keep a `seen` set).",
    ],
    new_ids,
    wrong=[
        lambda batch, stored: [i for i in batch if i not in stored],  # duplicates inside the batch stay
        lambda batch, stored: sorted(set(batch) - stored),  # loses the order
        lambda batch, stored: list(dict.fromkeys(batch)),  # ignores what is stored
        lambda batch, stored: [i for i in batch if batch.count(i) == 1 and i not in stored],  # drops repeated ids
        lambda batch, stored: [int(i) for i in np.unique([i for i in batch if i not in stored])],  # sorted
        lambda batch, stored: [i for i in dict.fromkeys(batch) if i in stored],  # the stored ones
        lambda batch, stored: [i for n, i in enumerate(batch) if i not in stored and i not in batch[n + 1 :]],
        lambda batch, stored: list(set(batch) - stored),  # a set's order
    ],
    variants=[
        _new_ids_dict,
        _new_ids_growing,
        lambda b, s: sorted({i for i in b if i not in s}, key=b.index),
        lambda b, s: [i for n, i in enumerate(b) if i not in s and i not in b[:n]],
    ],
)

EXERCISES = {"nb01.q1": q1, "nb01.q2": q2, "nb01.q3": q3}
