"""Questions to ask of a collection: zero-shot labels, a 2-D map, and query arithmetic (taught in notebook 05).

Each function computes; `plot_map` and the notebook show. Everything starts from what the collection stores
(`stored_images`); near-duplicates and outliers are in `duplicates.py`.

Example:
    >>> images = stored_images(engine.store)
    >>> zero_shot(engine.encoder, images).accuracy
    >>> engine.search_vector(query_vector(engine, "a car - a car + a truck"))
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import ImageError, Thumbnails, read_image
from ..measure.queries import DEFAULT_TEMPLATES, category_name, query_embeddings
from ..models.encoders import Encoder, l2_normalize
from ..store.image_store import ImageStore


@dataclass(frozen=True)
class StoredImages:
    """Every stored image, sorted by path: ids, paths, labels, captions and `image_embeddings` `[n, dim]`."""

    ids: np.ndarray
    paths: list[str]
    labels: np.ndarray
    captions: list[str]
    image_embeddings: np.ndarray


def stored_images(store: ImageStore) -> StoredImages:
    """Read every row of the collection, with its vector."""
    rows = sorted(store.scan(["id", "path", "label", "caption", "embedding"]), key=_path)
    return StoredImages(
        np.array([r["id"] for r in rows], dtype=np.int64),
        [r["path"] for r in rows],
        np.array([r["label"] for r in rows], dtype=object),
        [r["caption"] for r in rows],
        np.array([r["embedding"] for r in rows], dtype=np.float32).reshape(len(rows), store.meta["dim"]),
    )


def _path(row: dict) -> str:
    return row["path"]


# --- zero-shot classification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZeroShot:
    """Each image labelled with its best category prompt; `scores[i, j]`: image i's cosine to category j."""

    categories: list[str]
    labels: np.ndarray  # the stored (folder) labels
    predicted: np.ndarray
    scores: np.ndarray

    @property
    def accuracy(self) -> float:
        """The share of images whose predicted category is their label."""
        return float(np.mean(self.predicted == self.labels))

    @property
    def balanced_accuracy(self) -> float:
        """The mean over categories of the share of that category's images labelled right (chance: 1 / categories)."""
        return float(np.mean([np.mean(self.predicted[self.labels == c] == c) for c in np.unique(self.labels)]))

    @property
    def chance(self) -> float:
        """The accuracy of a uniform random guess."""
        return 1.0 / len(self.categories)

    @property
    def majority(self) -> float:
        """The accuracy of always guessing the largest category."""
        return float(pd.Series(self.labels).value_counts(normalize=True).iloc[0])

    def confusion(self) -> pd.DataFrame:
        """Counts of (label, predicted) pairs: rows the labels, columns the predicted categories."""
        table = pd.crosstab(pd.Series(self.labels, name="label"), pd.Series(self.predicted, name="predicted"))
        return table.reindex(index=self.categories, columns=self.categories, fill_value=0)


def zero_shot(
    encoder: Encoder, images: StoredImages, templates: Sequence[str] = DEFAULT_TEMPLATES, categories=None
) -> ZeroShot:
    """Label each labelled image with the category whose prompt is most similar (several templates are averaged).

    Args:
        encoder: the collection's encoder, for the prompts.
        images: from `stored_images`; images without a label are left out.
        templates: prompt templates with `{category}`, e.g. "a photo of a {category}.".
        categories: the candidate labels (default: the labels present); shown as words (`sea_life` -> sea life).
    """
    keep = images.labels != ""
    categories = sorted(categories or set(images.labels[keep]))
    prompts = query_embeddings(
        encoder, [tuple(t.format(category=category_name(c)) for t in templates) for c in categories]
    )
    scores = images.image_embeddings[keep] @ prompts.T
    return ZeroShot(categories, images.labels[keep], np.array(categories, dtype=object)[scores.argmax(axis=1)], scores)


def compare_prompts(encoder: Encoder, images: StoredImages, variants: dict[str, Sequence[str]]) -> pd.DataFrame:
    """Zero-shot accuracy for each named list of templates, with the category predicted most often and its share."""
    rows = []
    for name, templates in variants.items():
        result = zero_shot(encoder, images, templates)
        counts = pd.Series(result.predicted).value_counts(normalize=True)
        rows.append(
            {
                "prompts": name,
                "accuracy": result.accuracy,
                "balanced accuracy": result.balanced_accuracy,
                "most predicted": counts.index[0],
                "its share": counts.iloc[0],
            }
        )
    return pd.DataFrame(rows).set_index("prompts")


# --- the embedding map ----------------------------------------------------------------------------------------


def embedding_map(image_embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D coordinates `[n, 2]` for the image embeddings, by t-SNE (scikit-learn) or UMAP (umap-learn), cosine."""
    if method not in ("tsne", "umap"):
        raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
    try:
        from sklearn.manifold import TSNE

        if method == "umap":
            import umap
    except ImportError as err:
        raise ImportError(f"the {method} map needs {err.name}: pip install -e '.[notebooks]' (umap-learn)") from err
    if method == "umap":
        reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1)
    else:
        perplexity = min(30.0, (len(image_embeddings) - 1) / 3)
        reducer = TSNE(perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return reducer.fit_transform(image_embeddings)


def map_quality(image_embeddings: np.ndarray, coords: np.ndarray, k: int = 10) -> dict[str, float]:
    """How well a map keeps neighbourhoods: trustworthiness and the share of each image's k nearest kept.

    trustworthiness (scikit-learn, 0-1) penalizes 2-D neighbours that are far apart in the embedding space;
    kNN kept is the mean share of each image's k nearest neighbours (cosine) that are among its k nearest on
    the map. Both compare all pairs: fine for a few thousand images, sample a larger collection.
    """
    from sklearn.manifold import trustworthiness

    near = _neighbours(1 - image_embeddings @ image_embeddings.T, k)
    on_map = _neighbours(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1), k)
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(near, on_map)])
    return {
        "trustworthiness": float(trustworthiness(image_embeddings, coords, n_neighbors=k, metric="cosine")),
        f"{k}-NN kept": float(kept),
    }


def _neighbours(distances: np.ndarray, k: int) -> np.ndarray:
    distances = distances.copy()
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


@dataclass(frozen=True)
class MapComparison:
    """`table`: per method, seconds and map quality; `coords`: each method's map."""

    table: pd.DataFrame
    coords: dict[str, np.ndarray]


def compare_maps(
    image_embeddings: np.ndarray, methods: Sequence[str] = ("umap", "tsne"), k: int = 10, seed: int = 0
) -> MapComparison:
    """Make each map, timed (UMAP's first call in a process includes compiling it with numba), and score it."""
    rows, coords = [], {}
    for method in methods:
        started = time.perf_counter()
        coords[method] = embedding_map(image_embeddings, method, seed)
        seconds = time.perf_counter() - started
        rows.append({"method": method, "seconds": seconds, **map_quality(image_embeddings, coords[method], k)})
    return MapComparison(pd.DataFrame(rows).set_index("method"), coords)


def spread_sample(coords: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` point indices spread over the map (greedy farthest-point sampling from a random start)."""
    chosen = [int(np.random.default_rng(seed).integers(len(coords)))]
    distance = ((coords - coords[chosen[0]]) ** 2).sum(1)
    while len(chosen) < min(n, len(coords)):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, ((coords - coords[chosen[-1]]) ** 2).sum(1))
    return np.array(chosen)


def plot_map(
    images: StoredImages,
    coords: np.ndarray,
    thumbnails: Thumbnails | None = None,
    n_thumbnails: int = 30,
    title: str = "",
    seed: int = 0,
):
    """The map as a scatter plot coloured by category, with cached thumbnails drawn at a spread-out sample.

    Args:
        thumbnails: the engine's thumbnail cache (`engine.thumbnails`); None draws points only.
    """
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    fig, ax = plt.subplots(figsize=(12, 9))
    colours = plt.get_cmap("tab20")
    for i, label in enumerate(sorted(set(images.labels))):
        mine = images.labels == label
        ax.scatter(*coords[mine].T, s=10, color=colours(i % 20), label=label or "(none)")
    for i in spread_sample(coords, n_thumbnails, seed) if thumbnails else []:
        try:
            picture = read_image(thumbnails.ensure(int(images.ids[i]), images.paths[i]), max_side=64)[1]
        except ImageError:
            continue  # a file gone since indexing: its point stays
        ax.add_artist(AnnotationBbox(OffsetImage(picture, zoom=0.6), coords[i], frameon=True, pad=0.1))
    ax.legend(fontsize=8, markerscale=2, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


# --- query arithmetic -----------------------------------------------------------------------------------------

_TERM = re.compile(r"\s+([+-])\s+")  # " + " and " - " with spaces around: "t-shirt" stays one term


def parse_expression(expression: str) -> list[tuple[float, str]]:
    """`"dog - grass + snow"` -> `[(1.0, "dog"), (-1.0, "grass"), (1.0, "snow")]`."""
    parts = _TERM.split(f" + {expression.strip()} ")
    terms = [(1.0 if sign == "+" else -1.0, term.strip()) for sign, term in zip(parts[1::2], parts[2::2])]
    if any(term in ("", "+", "-") for _, term in terms):
        raise ValueError(f"cannot read {expression!r} as terms joined by ' + ' and ' - ', e.g. 'dog - grass + snow'")
    return terms


def query_vector(engine, terms: str | Sequence[tuple[float, str | Path]]) -> np.ndarray:
    """The normalized weighted sum of the terms' embeddings; a term naming an existing file is an image.

    Args:
        engine: a `SearchEngine` (its encoder embeds texts; `engine.embed_image` reads images as ingest does).
        terms: an expression such as `"dog - grass + snow"` or `"photo.png + red"`, or (weight, text or path)
            pairs.
    """
    terms = parse_expression(terms) if isinstance(terms, str) else list(terms)
    vectors = [
        engine.embed_image(term) if Path(term).is_file() else engine.encoder.encode_texts([str(term)])[0]
        for _, term in terms
    ]
    return l2_normalize(sum(weight * vector for (weight, _), vector in zip(terms, vectors)))


def arithmetic_effect(
    engine, queries: dict[str, str | Sequence], pattern: str, photo: str | None = None, top_k: int = 10
) -> pd.DataFrame:
    """What each named query finds: the share of its top k whose caption matches `pattern`, the rank of the first
    that does, the rank of `photo` (a stored path: is "this photo" still there?) and the first captions.

    Args:
        engine: a `SearchEngine`.
        queries: name -> an expression or (weight, text or path) pairs, as `query_vector` takes them.
        pattern: a regular expression for the captions the change should bring in (case ignored).
    """
    wanted = re.compile(pattern, re.IGNORECASE)
    rows = []
    for name, terms in queries.items():
        hits = engine.search_vector(query_vector(engine, terms), top_k)
        matches = [i for i, h in enumerate(hits, start=1) if wanted.search(h.caption)]
        row = {
            "query": name,
            f"top {top_k} matching": len(matches) / top_k,
            "first match": min(matches, default=np.nan),
        }
        if photo is not None:
            row["rank of the photo"] = next((i for i, h in enumerate(hits, start=1) if h.path == str(photo)), np.nan)
        rows.append({**row, "first results": " | ".join(h.caption for h in hits[:3])})
    return pd.DataFrame(rows).set_index("query")
