"""Pictures for the notebooks: image grids, search results and similarity heatmaps (notebook 01), faces boxed in
a photo (notebook 07).

Example:
    >>> fig = show_results("a red kangaroo", engine.search("a red kangaroo"))
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from ..data.images import ImageError, read_image
from ..store.image_store import Hit


def _load(path: str) -> np.ndarray:
    try:
        return read_image(path)[1]
    except ImageError:
        return np.full((8, 8, 3), 200, np.uint8)  # a grey tile for a file that vanished since indexing


def show_images(
    paths: Sequence[str], titles: Sequence[str] | None = None, columns: int = 5, size: float = 2.4, heading: str = ""
):
    """A grid of images with wrapped titles, under a `heading` laid out clear of them; returns the figure."""
    titles = list(titles or [""] * len(paths))
    rows = max(1, -(-len(paths) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.5)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path, title in zip(axes.flat, paths, titles):
        ax.imshow(_load(path))
        ax.set_title("\n".join(textwrap.wrap(title, 24)[:3]), fontsize=8)
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()  # leaves room for the heading too (a heading placed after it covered the titles)
    return fig


def show_results(query: str, hits: Sequence[Hit], columns: int = 5):
    """A query's hits as a grid titled with rank, score and caption."""
    titles = [f"{i}. {h.score:.2f} {h.caption or h.label}" for i, h in enumerate(hits, start=1)]
    return show_images([h.path for h in hits], titles, columns=columns, heading=f"“{query}”")


def similarity_heatmap(texts: Sequence[str], image_labels: Sequence[str], similarity: np.ndarray):
    """Text x image cosine similarities as an annotated heatmap (rows texts, columns images)."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(image_labels), 1.0 + 0.5 * len(texts)))
    im = ax.imshow(similarity, cmap="viridis")
    ax.set_xticks(range(len(image_labels)), [textwrap.shorten(s, 18) for s in image_labels], rotation=45, ha="right")
    ax.set_yticks(range(len(texts)), texts)
    middle = (np.max(similarity) + np.min(similarity)) / 2
    for (i, j), value in np.ndenumerate(similarity):  # dark text on the bright end of the colour map
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="k" if value > middle else "w", fontsize=7)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig


def show_faces(
    shape: Sequence[int],
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    points: Sequence[np.ndarray] = (),
    size: float = 9.0,
):
    """Where the faces of a photo of `shape` (height, width, ...) are: a box (x, y, w, h) around each, its label
    above it and, if given, its landmarks (x, y pairs), on a blank of the photo's size: the course never shows a
    photo of a real person (notebook 07). Returns the figure."""
    height, width = shape[:2]
    fig, ax = plt.subplots(figsize=(size, size * height / width + 0.3))
    ax.imshow(np.full((height, width), 0.92), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    for (x, y, w, h), label in zip(boxes, labels or [""] * len(boxes)):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="darkorange", linewidth=2))
        if label:
            ax.text(x, y - 3, label, fontsize=8, va="bottom", bbox={"facecolor": "yellow", "pad": 1, "lw": 0})
    for marks in points:
        ax.plot(*np.asarray(marks, float).reshape(-1, 2).T, "o", color="tab:blue", ms=3)
    fig.tight_layout()
    return fig
