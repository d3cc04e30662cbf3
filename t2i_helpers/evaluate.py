"""How good is the search? Recall@k and friends, measured on the real path (taught in notebook 03).

Every query comes with the set of images that count as right answers. Images are identified by content hash,
as the store keys them, so one photo shipped at two paths is one image. Three kinds of query:

* caption -> its own image: text-to-image retrieval as in the Flickr30k and MS-COCO papers;
* category prompt ("a photo of a {category}.") -> every image of that category;
* the Karpathy-split caption files `dataset_flickr30k.json` / `dataset_coco.json` for your own copy of those
  images, so that numbers can be set beside published CLIP results.

The metrics, for one query with R relevant images and a ranked list (rel_i = 1 if result i is relevant):

    hit_rate@k   1 if a relevant image is in the top k, else 0. Flickr30k/COCO papers report this as "R@k"
                 (recall@k): with exactly one relevant image per caption the two are equal.
    recall@k     relevant images in the top k / R
    precision@k  relevant images in the top k / k
    MRR          mean over queries of 1 / rank of the first relevant result (0 when it is below the depth searched)
    mAP@k        mean over queries of AP@k = sum_{i<=k} precision@i * rel_i / min(R, k)
    nDCG@k       DCG@k = sum_{i<=k} rel_i / log2(i + 1), divided by the best possible DCG@k (min(R, k) hits on top)

Example:
    >>> data = load_eval_data("bundled")
    >>> result = evaluate(load_encoder(), data)        # indexes into a temporary milvus-lite file
    >>> result.summary[["recall@1", "recall@10", "MRR"]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .datasets import DatasetError, load_bundled, load_source
from .encoders import Encoder, l2_normalize, load_encoder
from .images import content_id
from .pipelines import ingest, prepare_query
from .store import ImageStore, StoreError

DEFAULT_TEMPLATES = ("a photo of a {category}.",)
# Our own phrasings for prompt ensembling (CLIP's paper averages 80 such templates for ImageNet).
ENSEMBLE_TEMPLATES = (
    "a photo of a {category}.",
    "a photo of {category}.",
    "a picture of {category}.",
    "a close-up photo of a {category}.",
    "a cut-out photo of a {category} on a white background.",
    "{category}.",
    "an example of {category}.",
    "something to do with {category}.",
)
SEARCH_CHUNK = 256  # queries per Milvus search call


# ---------------------------------------------------------------- metrics


def relevance_matrix(ranked: np.ndarray, relevant: Sequence[Collection[int]]) -> np.ndarray:
    """`hits[q, i]`: whether result i of query q is one of its relevant ids.

    Args:
        ranked: result ids `[n_queries, depth]`, best first; -1 pads lists shorter than `depth`.
        relevant: for each query, the ids that count as right answers.

    Example:
        >>> relevance_matrix(np.array([[7, 3, -1]]), [{3}])
        array([[False,  True, False]])
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(relevant):
        raise ValueError(f"ranked has shape {ranked.shape}, but there are {len(relevant)} relevant sets")
    owner = np.repeat(np.arange(len(relevant)), [len(r) for r in relevant])
    ids = np.fromiter((i for r in relevant for i in r), dtype=np.int64, count=len(owner))
    vocab = np.unique(np.concatenate([ids, ranked.ravel()]))  # (query, id) pairs as one int64 key each
    ranked_keys = np.arange(len(ranked))[:, None] * len(vocab) + np.searchsorted(vocab, ranked)
    relevant_keys = owner * len(vocab) + np.searchsorted(vocab, ids)
    return np.isin(ranked_keys, relevant_keys) & (ranked >= 0)


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    hits = np.asarray(hits, dtype=bool)
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} is outside 1..{hits.shape[1]}, the depth that was searched")
    return hits[:, :k]


def _counts(n_relevant: np.ndarray) -> np.ndarray:
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if (n_relevant < 1).any():
        raise ValueError("every query needs at least one relevant image")
    return n_relevant


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant results in the top k / number of relevant images."""
    return _top(hits, k).sum(axis=1) / _counts(n_relevant)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant results in the top k / k."""
    return _top(hits, k).sum(axis=1) / k


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if any of the top k is relevant (the papers' "R@k" with one relevant image), else 0.0."""
    return _top(hits, k).any(axis=1).astype(float)


def reciprocal_rank(hits: np.ndarray) -> np.ndarray:
    """Per query: 1 / rank of the first relevant result, 0.0 if none was found; its mean is the MRR."""
    hits = np.asarray(hits, dtype=bool)
    return np.where(hits.any(axis=1), 1.0 / (hits.argmax(axis=1) + 1), 0.0)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: sum of precision@i at each relevant rank i <= k, / min(R, k); its mean is mAP@k."""
    top = _top(hits, k)
    precision = top.cumsum(axis=1) / np.arange(1, k + 1)
    return (precision * top).sum(axis=1) / np.minimum(_counts(n_relevant), k)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: binary-gain DCG@k divided by the ideal DCG@k (all min(R, k) relevant images on top)."""
    top = _top(hits, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(_counts(n_relevant), k) - 1]
    return (top * discounts).sum(axis=1) / ideal


def metrics_table(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> pd.DataFrame:
    """Every metric per query: recall@k, hit_rate@k, precision@k, AP@k, nDCG@k for each k, and RR."""
    columns = {}
    for name, metric in [
        ("recall", lambda k: recall_at_k(hits, n_relevant, k)),
        ("hit_rate", lambda k: hit_rate_at_k(hits, k)),
        ("precision", lambda k: precision_at_k(hits, k)),
        ("AP", lambda k: average_precision_at_k(hits, n_relevant, k)),
        ("nDCG", lambda k: ndcg_at_k(hits, n_relevant, k)),
    ]:
        columns.update({f"{name}@{k}": metric(k) for k in ks})
    columns["RR"] = reciprocal_rank(hits)
    return pd.DataFrame(columns)


# ---------------------------------------------------------------- data and queries


@dataclass(frozen=True)
class EvalData:
    """What to index and what to ask.

    `images`: path, label, caption, image_id (content hash), one row per file; `captions`: image_id, caption,
    one row per caption (Flickr30k has five per image).
    """

    name: str
    images: pd.DataFrame
    captions: pd.DataFrame

    @classmethod
    def from_rows(cls, name: str, rows: pd.DataFrame, captions: pd.DataFrame | None = None) -> EvalData:
        """Identify each file by content hash; `captions` (path, caption) defaults to the rows' own captions.

        Raises:
            DatasetError: some files cannot be read (scores without them would not be comparable).
        """
        ids, missing = {}, []
        for path in dict.fromkeys(rows["path"]):
            try:
                ids[path] = content_id(Path(path).read_bytes())
            except OSError as err:
                missing.append(f"{path} ({err.strerror or err})")
        if missing:
            raise DatasetError(f"{len(missing)} of {len(ids) + len(missing)} images cannot be read, e.g. {missing[0]}")
        images = rows[["path", "label", "caption"]].reset_index(drop=True).assign(image_id=rows["path"].map(ids).values)
        captions = rows[["path", "caption"]] if captions is None else captions
        captions = pd.DataFrame({"image_id": captions["path"].map(ids).values, "caption": captions["caption"].values})
        captions = captions[captions.caption.str.strip() != ""].reset_index(drop=True)
        return cls(name, images, captions)


def load_karpathy(path: str | Path, images_root: str | Path | None = None, split: str = "test") -> EvalData:
    """One split of a Karpathy-split caption file (`dataset_flickr30k.json`, `dataset_coco.json`).

    The format: `{"images": [{"filename", "filepath" (COCO only), "split", "sentences": [{"raw"}, ...]}]}`.
    Published zero-shot results use split "test": 1,000 Flickr30k images with 5,000 captions, 5,000 COCO images
    with 25,000 captions.

    Args:
        images_root: the folder holding the images (COCO: the one with `val2014/`); default the JSON's folder.
    """
    path = Path(path)
    entries = json.loads(path.read_text(encoding="utf-8"))["images"]
    chosen = [e for e in entries if e.get("split") == split]
    if not chosen:
        found = sorted({str(e.get("split")) for e in entries})
        raise DatasetError(f"{path} has no images in split {split!r}; its splits are {found}")
    root = Path(images_root or path.parent).expanduser()
    paths = [str(root / e.get("filepath", "") / e["filename"]) for e in chosen]
    sentences = [[s["raw"].strip() for s in e["sentences"]] for e in chosen]
    images = pd.DataFrame({"path": paths, "label": "", "caption": [s[0] if s else "" for s in sentences]})
    captions = pd.DataFrame([(p, s) for p, group in zip(paths, sentences) for s in group], columns=["path", "caption"])
    return EvalData.from_rows(f"{path.stem.removeprefix('dataset_')}_{split}", images, captions)


def load_eval_data(
    source: str | Path = "bundled", images_root: str | Path | None = None, split: str = "test"
) -> EvalData:
    """`"bundled"`, a dataset CSV, a folder of captioned images, or a Karpathy-split JSON, as `EvalData`."""
    if str(source) == "bundled":
        return EvalData.from_rows("bundled", load_bundled())
    if Path(source).suffix.lower() == ".json":
        return load_karpathy(source, images_root, split)
    return EvalData.from_rows(Path(source).stem, load_source(source))


@dataclass(frozen=True)
class QuerySet:
    """Queries of one kind. Each query is one or more texts (their embeddings are averaged) with the ids of its
    relevant images and a label to group results by (the image's label, or the category)."""

    name: str
    texts: list[tuple[str, ...]]
    relevant: list[frozenset[int]]
    labels: list[str]

    def __post_init__(self) -> None:
        if not len(self.texts) == len(self.relevant) == len(self.labels):
            raise ValueError("texts, relevant and labels must have one entry per query")
        if any(not r for r in self.relevant):
            raise ValueError(f"{self.name}: every query needs at least one relevant image")


def caption_queries(data: EvalData, merge_identical: bool = False) -> QuerySet:
    """Each caption -> its own image, as in Flickr30k/COCO (one file stored at two paths gives one query).

    Args:
        merge_identical: one query per distinct caption text, with every image carrying that exact caption
            relevant (the bundled set has six photos captioned "A flower."). Off: the published protocol.
    """
    label = data.images.groupby("image_id").label.first()
    pairs = data.captions.drop_duplicates(["caption", "image_id"])
    if merge_identical:
        groups = pairs.groupby("caption", sort=False).image_id.agg(frozenset)
        return QuerySet("caption->image", [(c,) for c in groups.index], list(groups), [label[min(g)] for g in groups])
    ids = pairs.image_id.tolist()
    return QuerySet("caption->image", [(c,) for c in pairs.caption], [frozenset([i]) for i in ids], list(label[ids]))


def category_name(label: str) -> str:
    """A folder label as words: `sea_life` -> `sea life`."""
    return re.sub(r"[_\-]+", " ", label).strip()


def category_queries(data: EvalData, templates: Sequence[str] = DEFAULT_TEMPLATES) -> QuerySet:
    """Each category -> every image with that label; several `templates` are averaged (prompt ensembling)."""
    pairs = data.images[data.images.label != ""].drop_duplicates(["label", "image_id"])
    groups = pairs.groupby("label").image_id.agg(frozenset)
    texts = [tuple(t.format(category=category_name(c)) for t in templates) for c in groups.index]
    return QuerySet("category->images", texts, list(groups), list(groups.index))


def default_query_sets(data: EvalData, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[QuerySet]:
    """Caption queries when there are captions, category queries when there are at least two labels."""
    sets = [caption_queries(data)] if len(data.captions) else []
    if data.images.label[data.images.label != ""].nunique() >= 2:
        sets.append(category_queries(data, templates))
    if not sets:
        raise DatasetError(f"{data.name} has neither captions nor labels: nothing to evaluate")
    return sets


def query_embeddings(encoder: Encoder, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
    """One unit vector per query: the mean of its texts' embeddings, renormalized (cleaned like live queries)."""
    unique = list(dict.fromkeys(t for group in texts for t in group))
    position = {t: i for i, t in enumerate(unique)}
    embedded = encoder.encode_texts([prepare_query(t, encoder).text for t in unique])
    return l2_normalize(np.stack([embedded[[position[t] for t in group]].mean(axis=0) for group in texts]))


# ---------------------------------------------------------------- the real path


@contextlib.contextmanager
def temporary_store(encoder: Encoder) -> Iterator[ImageStore]:
    """A store in a throwaway milvus-lite file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="t2i-eval-") as tmp:
        uri = str(Path(tmp) / "eval.db")
        store = ImageStore.open(Config(uri=uri, collection="t2i_eval"), encoder)
        try:
            yield store
        finally:
            store.close()
            release_lite(uri)


def release_lite(uri: str) -> None:
    """Stop milvus-lite's server process for a file (it would hold the file until this process exits)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def index_data(encoder: Encoder, data: EvalData, store: ImageStore, progress: bool = False) -> None:
    """Ingest the images the store lacks; then the collection must hold exactly `data`'s images.

    Raises:
        StoreError: an image could not be indexed, or the collection holds other images too (they would
            compete in every ranking, and scores would not be comparable).
    """
    wanted = set(data.images.image_id)
    stored = _stored_ids(store, wanted)
    report = None
    if stored != wanted:
        todo = data.images[~data.images.image_id.isin(stored)]
        report = ingest(todo, encoder, store, store.config.batch_size, store.config.decode_workers, progress)
        stored = _stored_ids(store, wanted)
    if stored != wanted:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in (report.skipped if report else [])[:3])
        raise StoreError(f"{len(wanted - stored)} images of {data.name} could not be indexed ({reasons})")
    if (extra := store.count() - len(wanted)) > 0:
        raise StoreError(
            f"collection {store.collection!r} holds {extra} images that are not in {data.name}; evaluate on a "
            "collection of its own (the default: a temporary one)"
        )


def _stored_ids(store: ImageStore, ids: set[int]) -> set[int]:
    ordered = sorted(ids)
    return set().union(*(store.existing_ids(ordered[i : i + 1000]) for i in range(0, len(ordered), 1000)))


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product search: (row indices, scores), each `[n_queries, min(top_k, n_vectors)]`."""
    top_k = min(top_k, len(vectors))
    rows, scores = [], []
    for start in range(0, len(queries), 1024):  # bounded memory for 25,000 COCO captions
        sims = queries[start : start + 1024] @ vectors.T
        part = np.argpartition(-sims, top_k - 1, axis=1)[:, :top_k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        rows.append(np.take_along_axis(part, order, axis=1))
        scores.append(np.take_along_axis(sims, rows[-1], axis=1))
    return np.concatenate(rows), np.concatenate(scores)


def stored_embeddings(store: ImageStore) -> tuple[np.ndarray, np.ndarray]:
    """Every stored image's id and embedding: `(ids [n], image_embeddings [n, dim])`."""
    rows = store.scan(["embedding"])
    return np.array([r["id"] for r in rows], dtype=np.int64), np.array([r["embedding"] for r in rows], np.float32)


def rank(store: ImageStore, queries: np.ndarray, depth: int, search: str = "milvus") -> tuple[np.ndarray, np.ndarray]:
    """Result ids and scores `[n_queries, depth]` (-1 and NaN pad short lists) from Milvus or exact numpy."""
    ids = np.full((len(queries), depth), -1, dtype=np.int64)
    scores = np.full((len(queries), depth), np.nan, dtype=np.float32)
    if search == "exact":
        gallery, vectors = stored_embeddings(store)
        found, sims = exact_top_k(queries, vectors, depth)
        ids[:, : found.shape[1]], scores[:, : found.shape[1]] = gallery[found], sims
    elif search == "milvus":
        for start in range(0, len(queries), SEARCH_CHUNK):
            for row, hits in enumerate(store.search(queries[start : start + SEARCH_CHUNK], top_k=depth), start):
                ids[row, : len(hits)] = [h.id for h in hits]
                scores[row, : len(hits)] = [h.score for h in hits]
    else:
        raise ValueError(f"search must be 'milvus' or 'exact', got {search!r}")
    return ids, scores


@dataclass
class Evaluation:
    """One evaluation: `per_query` (one row per query, every metric), the rankings, and the images."""

    per_query: pd.DataFrame
    ranked: np.ndarray  # result ids [n_queries, depth], -1 pads
    hits: np.ndarray  # whether each result is relevant
    images: pd.DataFrame  # path, label, caption, indexed by image_id

    @property
    def summary(self) -> pd.DataFrame:
        """Mean of every metric per query set (and search): recall@k, ..., MRR, mAP@k, nDCG@k."""
        return summarize(self.per_query)

    def curve(self, metric: str = "recall") -> pd.DataFrame:
        """`metric` ("recall", "hit_rate" or "precision") at every k from 1 to the depth, one column per query set."""
        n_relevant = self.per_query.n_relevant.to_numpy()
        found = self.hits.cumsum(axis=1)
        per_k = {"recall": found / n_relevant[:, None], "hit_rate": found > 0, "precision": found / self._ks()}
        frame = pd.DataFrame(per_k[metric].astype(float), columns=self._ks(), index=self.per_query.index)
        table = frame.groupby(self.per_query.set, sort=False).mean().T
        table.index.name = "k"
        return table

    def by_label(self, query_set: str) -> pd.DataFrame:
        """Mean metrics of one query set per label (the image's folder or the category), lowest MRR first."""
        rows = self.per_query[self.per_query.set == query_set]
        metrics = [c for c in rows.columns if "@" in c or c == "RR"]
        table = rows.groupby("label")[metrics].mean()
        table.insert(0, "queries", rows.groupby("label").size())
        return table.sort_values("RR")

    def failure_gallery(self, query_set: str, n: int = 4, top: int = 4) -> tuple[list[str], list[str]]:
        """Paths and titles for `viz.show_images(..., columns=top + 1)`: per failed query, a wanted image then its
        top results. The worst are those with the lowest reciprocal rank, most confident first."""
        rows = self.per_query[self.per_query.set == query_set]
        worst = rows.sort_values(["RR", "top_score"], ascending=[True, False]).head(n)
        paths, titles = [], []
        for position, row in worst.iterrows():
            wanted = self.images.loc[row.relevant[0]]
            paths.append(wanted.path)
            titles.append(f"wanted for “{row.query}”: {wanted.caption or wanted.label}")
            found_ids = self.ranked[self.per_query.index.get_loc(position), :top]
            for i, image_id in enumerate(found_ids[found_ids >= 0], start=1):
                found = self.images.loc[image_id]
                paths.append(found.path)
                titles.append(f"{i}. {found.caption or found.label}")
        return paths, titles

    def _ks(self) -> np.ndarray:
        return np.arange(1, self.hits.shape[1] + 1)


def summarize(per_query: pd.DataFrame) -> pd.DataFrame:
    """Means per query set and search of a `per_query` table (several may be concatenated)."""
    metrics = [c for c in per_query.columns if "@" in c or c == "RR"]
    groups = per_query.groupby(["set", "search"], sort=False)
    table = groups[metrics].mean().rename(columns=lambda c: {"RR": "MRR"}.get(c, c.replace("AP@", "mAP@")))
    table.insert(0, "queries", groups.size())
    return table


def evaluate(
    encoder: Encoder,
    data: EvalData,
    store: ImageStore | None = None,
    ks: Sequence[int] = (1, 5, 10),
    depth: int | None = None,
    query_sets: Sequence[QuerySet] | None = None,
    search: str = "milvus",
    progress: bool = False,
) -> Evaluation:
    """Index `data`'s images (only those not stored yet), run every query and score the rankings.

    Args:
        encoder: embeds the images (at ingest) and the query texts.
        data: images and captions, from `load_eval_data`.
        store: a collection for `encoder` that holds only `data`'s images, or none yet (it is filled); None
            indexes into a temporary milvus-lite file, removed afterwards.
        ks: cut-offs for recall@k, hit_rate@k, precision@k, AP@k and nDCG@k.
        depth: results fetched per query, default max(ks); MRR counts a first hit below it as 0.
        query_sets: default `default_query_sets(data)`: caption->image, and category->images if labelled.
        search: "milvus" ranks with the collection's index (batched `store.search`, as the search pipeline
            does); "exact" by brute-force numpy over the same stored vectors: the reference that separates
            encoder quality from what an approximate index loses.

    Returns:
        An `Evaluation`; `.per_query` has one row per query, `.summary` the means per query set.
    """
    if store is None:
        with temporary_store(encoder) as store:
            return evaluate(encoder, data, store, ks, depth, query_sets, search, progress)
    ks = sorted(set(ks))
    depth = depth or ks[-1]
    query_sets = default_query_sets(data) if query_sets is None else query_sets
    index_data(encoder, data, store, progress)
    texts = [t for s in query_sets for t in s.texts]
    relevant = [r for s in query_sets for r in s.relevant]
    ranked, scores = rank(store, query_embeddings(encoder, texts), depth, search)
    hits = relevance_matrix(ranked, relevant)
    per_query = pd.DataFrame(
        {
            "set": [s.name for s in query_sets for _ in s.texts],
            "search": search,
            "query": [" | ".join(t) for t in texts],
            "label": [label for s in query_sets for label in s.labels],
            "n_relevant": [len(r) for r in relevant],
            "first_rank": np.where(hits.any(axis=1), hits.argmax(axis=1) + 1.0, np.nan),
            "top_score": scores[:, 0],
            "relevant": [sorted(r) for r in relevant],
        }
    )
    per_query = pd.concat([per_query, metrics_table(hits, per_query.n_relevant.to_numpy(), ks)], axis=1)
    images = data.images.drop_duplicates("image_id").set_index("image_id")
    return Evaluation(per_query, ranked, hits, images)


def compare_templates(
    encoder: Encoder,
    data: EvalData,
    store: ImageStore,
    templates: Sequence[str] = ENSEMBLE_TEMPLATES,
    ks: Sequence[int] = (1, 5, 10),
    depth: int | None = None,
) -> pd.DataFrame:
    """Category queries with each template alone, then with all of them averaged (prompt ensembling)."""
    variants = {t: (t,) for t in templates} | {f"ensemble of all {len(templates)}": tuple(templates)}
    rows = [
        evaluate(encoder, data, store, ks, depth, [category_queries(data, group)]).summary.iloc[0].rename(name)
        for name, group in variants.items()
    ]
    return pd.DataFrame(rows).rename_axis("templates")


# ---------------------------------------------------------------- `t2i eval`


def eval_collection(data_name: str, encoder_name: str) -> str:
    """The default collection for an evaluation: its own, so that no other images compete."""
    return re.sub(r"\W", "_", f"eval_{data_name}_{encoder_name}")[:255]


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `t2i eval` to the `t2i` parser's subcommands."""
    parser = subparsers.add_parser("eval", help="measure search quality: recall@k, MRR, mAP, nDCG")
    parser.add_argument(
        "--dataset", default="bundled", help="'bundled', a dataset CSV, a folder, or a Karpathy-split JSON"
    )
    parser.add_argument("--images", help="the image folder of a Karpathy-split JSON (default: the JSON's folder)")
    parser.add_argument("--split", default="test", help="the Karpathy split to evaluate (default: test)")
    parser.add_argument("-k", dest="ks", type=int, nargs="+", default=[1, 5, 10], help="cut-offs (default 1 5 10)")
    parser.add_argument(
        "--depth", type=int, default=50, help="results fetched per query; MRR counts a first hit below as 0"
    )
    parser.add_argument("--ensemble", action="store_true", help="average several prompt templates per category")
    parser.add_argument("--exact", action="store_true", help="also rank by exact numpy search over the same vectors")
    parser.add_argument("--out", help="folder for the CSV and JSON results (default: DATA_DIR/eval)")
    parser.add_argument("--uri", help="milvus-lite file or http://host:19530 (default: $T2I_MILVUS_URI or data/t2i.db)")
    parser.add_argument("--token", help="Milvus token for a server (default: $T2I_MILVUS_TOKEN)")
    parser.add_argument("--collection", help="collection to index into (default: eval_<dataset>_<encoder>)")
    parser.add_argument("--encoder", help="encoder name (default: $T2I_ENCODER or conse-effnet-minilm)")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Run `t2i eval`: print the summary table, write per-query CSV and summary CSV/JSON; returns the exit status."""
    try:
        data = load_eval_data(args.dataset, args.images, args.split)
        config = Config.from_env(uri=args.uri, token=args.token, encoder=args.encoder)
        encoder = load_encoder(config.encoder)
        config = config.with_(
            encoder=encoder.name, collection=args.collection or eval_collection(data.name, encoder.name)
        )
        query_sets = default_query_sets(data, ENSEMBLE_TEMPLATES if args.ensemble else DEFAULT_TEMPLATES)
        store = ImageStore.open(config, encoder)
        try:
            index_type = store.client.describe_index(store.collection, "embedding").get("index_type", "?")
            searches = ["milvus", "exact"] if args.exact else ["milvus"]
            per_query = pd.concat(
                [
                    evaluate(
                        encoder, data, store, args.ks, max(args.depth, *args.ks), query_sets, s, progress=True
                    ).per_query
                    for s in searches
                ]
            )
        finally:
            store.close()
    except (DatasetError, StoreError, ValueError, ImportError, RuntimeError) as err:
        print(f"t2i: error: {err}", file=sys.stderr)
        return 1
    summary = summarize(per_query)
    summary.index = [s if search == "milvus" else f"{s} (exact)" for s, search in summary.index]
    print(f"{data.name}: {data.images.image_id.nunique()} images, encoder {encoder.name}, {index_type} index")
    print(summary.T.to_string(float_format=lambda x: f"{x:.3f}"))
    out = Path(args.out) if args.out else config.data_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{eval_collection(data.name, encoder.name)}"
    per_query.to_csv(f"{stem}-per_query.csv", index=False)
    summary.to_csv(f"{stem}-summary.csv", index_label="set")
    meta = {
        "dataset": data.name,
        "encoder": encoder.name,
        "uri": config.uri,
        "collection": config.collection,
        "depth": max(args.depth, *args.ks),
    }
    record = {**meta, "index_type": index_type, "summary": summary.to_dict(orient="index")}
    Path(f"{stem}-summary.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {stem}-per_query.csv, {stem}-summary.csv and {stem}-summary.json")
    return 0
