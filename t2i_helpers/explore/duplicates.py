"""Exact and near-duplicates and the photos farthest from their category, found through Milvus (notebook 05).

Exact duplicates (the same bytes at two paths) are one stored row, as the store keys rows by content hash;
near-duplicates are different stored images whose vectors nearly coincide, found by a range search of every
stored vector against the collection; outliers by a search for each category's centre within the category.

Example:
    >>> images = stored_images(engine.store)
    >>> near_duplicates(engine.store, images, threshold=0.99).head()
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from ..data.images import Thumbnails, read_image
from ..measure.queries import EvalData
from ..models.encoders import l2_normalize
from ..store.filters import label_filter
from ..store.image_store import OUTPUT_FIELDS, Hit, ImageStore, to_hits
from .questions import StoredImages

SEARCH_CHUNK = 256  # query vectors per Milvus call


def exact_duplicates(data: EvalData) -> pd.DataFrame:
    """Files with the same bytes (one content hash, so one stored row): one row per group, with every path."""
    groups = data.images.groupby("image_id").agg(files=("path", "size"), paths=("path", list), labels=("label", list))
    return groups[groups.files > 1].reset_index()


def range_search(store: ImageStore, embeddings: np.ndarray, radius: float, limit: int = 10) -> list[list[Hit]]:
    """Milvus range search: per query vector, up to `limit` images with cosine above `radius`, best first."""
    hits = []
    for start in range(0, len(embeddings), SEARCH_CHUNK):
        results = store.client.search(
            store.collection,
            data=np.asarray(embeddings[start : start + SEARCH_CHUNK], np.float32).tolist(),
            anns_field="embedding",
            limit=limit,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": store.metric, "params": {"radius": radius}},
        )
        hits += to_hits(results)
    return hits


def radius_check(store: ImageStore, embeddings: np.ndarray, radius: float, limit: int = 50) -> pd.DataFrame:
    """The same query vectors by plain search and by range search: results, how many score below `radius`, and
    the lowest score. Measures whether this deployment honours the radius (some ignore search parameters)."""
    rows = {}
    for name, hits in [
        ("search", store.search(embeddings, top_k=limit)),
        (f"range search, radius {radius:g}", range_search(store, embeddings, radius, limit)),
    ]:
        scores = np.array([h.score for found in hits for h in found])
        rows[name] = {
            "results": len(scores),
            "below radius": int((scores <= radius).sum()),
            "lowest score": scores.min(initial=np.inf),
        }
    return pd.DataFrame(rows).T


def near_duplicates(store: ImageStore, images: StoredImages, threshold: float = 0.99, limit: int = 10) -> pd.DataFrame:
    """Pairs of different stored images whose cosine similarity is above `threshold`, most similar first.

    Every stored vector is searched against the collection with Milvus range search (radius = threshold).

    Args:
        limit: neighbours looked at per image (its own row among them).
    """
    pairs = {}
    for image_id, hits in zip(images.ids, range_search(store, images.image_embeddings, threshold, limit + 1)):
        for hit in hits:
            if hit.id != image_id:
                pairs[tuple(sorted((int(image_id), hit.id)))] = hit.score
    where = {int(i): n for n, i in enumerate(images.ids)}
    rows = []
    for (a, b), score in pairs.items():
        row = {"similarity": score, "id_a": a, "id_b": b}
        for side, image_id in (("a", a), ("b", b)):
            row[f"path_{side}"] = images.paths[where[image_id]]
            row[f"caption_{side}"] = images.captions[where[image_id]]
        rows.append(row)
    columns = ["similarity", "id_a", "id_b", "path_a", "caption_a", "path_b", "caption_b"]
    return pd.DataFrame(rows, columns=columns).sort_values("similarity", ascending=False, ignore_index=True)


def pixel_similarity(thumbnails: Thumbnails, pairs: pd.DataFrame, size: int = 32) -> pd.Series:
    """For each pair, the correlation of the two thumbnails, padded square and shrunk to `size` x `size` grey.

    1 is the same picture; a crude check (a shifted or mirrored copy scores low), but it separates pictures that
    look alike from pictures the encoder merely describes alike.
    """

    def grey(image_id: int, path: str) -> np.ndarray:
        rgb = read_image(thumbnails.ensure(int(image_id), path))[1]
        side = max(rgb.shape[:2])  # padded to a square on white first, so that the shape's outline counts
        square = np.full((side, side, 3), 255, np.uint8)
        top, left = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
        square[top : top + rgb.shape[0], left : left + rgb.shape[1]] = rgb
        pixels = cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        pixels = pixels.astype(np.float32).ravel() - pixels.mean()
        return pixels / max(float(np.linalg.norm(pixels)), 1e-6)

    values = [float(grey(r.id_a, r.path_a) @ grey(r.id_b, r.path_b)) for r in pairs.itertuples()]
    return pd.Series(values, index=pairs.index, name="pixel similarity")


def category_outliers(store: ImageStore, images: StoredImages, n: int = 3) -> pd.DataFrame:
    """Per category, the `n` photos farthest from its centre, found by searching Milvus within the category.

    The centre is the normalized mean of the category's image embeddings; Milvus ranks every photo of the
    category by its cosine to the centre (a search filtered to the label), and the last `n` are the outliers.
    `nearest category` is the category whose centre the photo is closest to.
    """
    labels = sorted(set(images.labels) - {""})
    where = {int(i): n for n, i in enumerate(images.ids)}
    centres = l2_normalize(np.stack([images.image_embeddings[images.labels == c].mean(axis=0) for c in labels]))
    rows = []
    for label, centre in zip(labels, centres):
        size = int(np.sum(images.labels == label))
        ranked = store.client.search(
            store.collection,
            data=[centre.tolist()],
            anns_field="embedding",
            limit=size,
            filter=label_filter(label),
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": store.metric},
        )
        for hit in to_hits(ranked)[0][-n:][::-1]:
            vector = images.image_embeddings[where[hit.id]]
            rows.append(
                {
                    "label": label,
                    "similarity to centre": hit.score,
                    "nearest category": labels[int((centres @ vector).argmax())],
                    "caption": hit.caption,
                    "path": hit.path,
                    "id": hit.id,
                }
            )
    return pd.DataFrame(rows)
