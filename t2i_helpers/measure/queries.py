"""What to ask: evaluation data sets and their query sets, each query with its right answers (notebook 03).

Images are identified by content hash, as the store keys them, so one photo shipped at two paths is one image.
Three kinds of query:

* caption -> its own image: text-to-image retrieval as in the Flickr30k and MS-COCO papers;
* category prompt ("a photo of a {category}.") -> every image of that category;
* the Karpathy-split caption files `dataset_flickr30k.json` / `dataset_coco.json` for your own copy of those
  images, so that numbers can be set beside published CLIP results.

Example:
    >>> data = load_eval_data("bundled")
    >>> [s.name for s in default_query_sets(data)]
    ['caption->image', 'category->images']
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.datasets import DatasetError, load_bundled, load_source
from ..data.images import content_id
from ..models.encoders import Encoder, l2_normalize
from ..pipelines.search import prepare_query

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
