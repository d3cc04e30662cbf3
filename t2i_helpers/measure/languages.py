"""Queries in other languages: caption -> photo R@10 per language, over the bundled photos' translated captions
(notebook 02, benchmarks/languages.py).

Every Tux Paint stamp's caption file holds, after its English first line, the translations its translators wrote
(`de.utf8=Ein Frosch.`). Each distinct English caption is one query whose right answer is the first photo that
carries it (the protocol of issue 33's table: 674 captions; today's default scores R@10 0.276 in English with
fp32 towers); in another language the query is that photo's translation, where there is one. Every ConSE
encoder shares the image side, so the image logits are computed once and each text tower re-projects them
(`top_classes`, `embed_classes`: what a collection move does).

Example:
    >>> data = translated_captions()
    >>> logits = image_logits(data, load_encoder(backend="onnx"))
    >>> recall_by_language(load_encoder("conse-effnet-use"), data, logits, ["en", "de"])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..data.datasets import MAX_CAPTION_BYTES, load_bundled
from ..data.images import content_id, read_bytes, read_image
from ..models.conse import ConSEEncoder, softmax
from ..models.encoders import Encoder
from .metrics import exact_top_k, hit_rate_at_k, relevance_matrix

# The 16 languages USE v3 was trained on, as Tux Paint's translations name them (`zh_CN.utf8=`).
USE_LOCALES = {
    "ar": "ar", "de": "de", "en": "en", "es": "es", "fr": "fr", "it": "it", "ja": "ja", "ko": "ko",
    "nl": "nl", "pl": "pl", "pt": "pt", "ru": "ru", "th": "th", "tr": "tr", "zh-CN": "zh_CN", "zh-TW": "zh_TW",
}  # fmt: skip
MIN_CAPTIONS = 500  # a translation language is measured when it has at least this many of the captions


@dataclass(frozen=True)
class TranslatedCaptions:
    """The bundled photos (one per content id) and, per distinct English caption, its photo and translations.

    `captions`: one row per distinct English caption, one column per language (`en` and Tux Paint's locale
    codes), "" where the caption has no translation; `target[i]`: the index in `paths` of caption i's photo.
    """

    paths: list[str]
    target: np.ndarray
    captions: pd.DataFrame

    def queries(self, language: str) -> tuple[list[str], np.ndarray]:
        """The captions in `language` that exist, and the index of each one's photo."""
        column = self.captions[language]
        keep = (column != "").to_numpy()
        return list(column[keep]), self.target[keep]

    def sample(self, n: int, seed: int = 0) -> TranslatedCaptions:
        """`n` captions drawn at random with their photos only: a smaller, easier search, for quick runs."""
        rows = np.sort(np.random.default_rng(seed).choice(len(self.captions), n, replace=False))
        photos, target = np.unique(self.target[rows], return_inverse=True)
        return TranslatedCaptions(
            [self.paths[i] for i in photos], target, self.captions.iloc[rows].reset_index(drop=True)
        )

    def counts(self) -> pd.Series:
        """How many captions each language has, most first."""
        return (self.captions != "").sum().sort_values(ascending=False, kind="stable")


def read_translations(path: str | Path) -> dict[str, str]:
    """A Tux Paint caption file's translations: `{locale: text}` from its `xx.utf8=` lines (empty ones left out)."""
    text = read_bytes(path, MAX_CAPTION_BYTES).decode("utf-8", errors="replace")
    pairs = (line.split(".utf8=", 1) for line in text.splitlines()[1:] if ".utf8=" in line)
    return {locale.strip(): caption.strip() for locale, caption in pairs if caption.strip()}


def translated_captions(rows: pd.DataFrame | None = None) -> TranslatedCaptions:
    """The bundled photos' captions in every language their files hold (`rows` defaults to `load_bundled()`)."""
    rows = load_bundled() if rows is None else rows
    ids = [content_id(read_bytes(p)) for p in rows.path]
    distinct = list(dict.fromkeys(ids))
    position = {image_id: i for i, image_id in enumerate(distinct)}
    paths = [rows.path.iloc[ids.index(image_id)] for image_id in distinct]
    first = rows.assign(image_id=ids).drop_duplicates("caption")
    table = [{"en": c, **read_translations(Path(p).with_suffix(".txt"))} for c, p in zip(first.caption, first.path)]
    captions = pd.DataFrame(table).fillna("")
    return TranslatedCaptions(paths, np.array([position[i] for i in first.image_id]), captions)


def measured_languages(data: TranslatedCaptions, at_least: int = MIN_CAPTIONS) -> list[str]:
    """The translation languages with at least `at_least` captions, English first, then by how many."""
    counts = data.counts()
    return ["en", *(lang for lang in counts.index if counts[lang] >= at_least and lang != "en")]


def image_logits(data: TranslatedCaptions, encoder: ConSEEncoder) -> np.ndarray:
    """The image tower's logits `[n_photos, 1000]` for every photo, computed once for every text tower."""
    return encoder.image_logits([read_image(p)[1] for p in data.paths])


def image_vectors(encoder: ConSEEncoder, logits: np.ndarray) -> np.ndarray:
    """The photos' vectors in `encoder`'s space from shared logits, as a collection move makes them."""
    return encoder.embed_classes(*encoder.top_classes(softmax(logits)))


def recall_by_language(
    encoder: ConSEEncoder, data: TranslatedCaptions, logits: np.ndarray, languages: Sequence[str], k: int = 10
) -> pd.Series:
    """Caption -> photo R@k per language (exact search over every photo), for a ConSE-family `encoder`."""
    images = image_vectors(encoder, logits)
    recall = {}
    for language in languages:
        texts, target = data.queries(language)
        ranked, _ = exact_top_k(encoder.encode_texts(texts), images, k)
        recall[language] = float(hit_rate_at_k(relevance_matrix(ranked, [{t} for t in target]), k).mean())
    return pd.Series(recall, name=f"R@{k}")


def translation_similarity(encoder: Encoder, data: TranslatedCaptions, language: str) -> tuple[float, float]:
    """Mean cosine of an English caption to its own translation into `language`, and to other captions' ones."""
    keep = (data.captions[language] != "").to_numpy()
    english = encoder.encode_texts(list(data.captions.en[keep]))
    sims = english @ encoder.encode_texts(list(data.captions[language][keep])).T
    n = len(sims)
    return float(np.trace(sims) / n), float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def query_ms(encoders: Sequence[Encoder], texts: Sequence[str], warmup: int = 3) -> list[float]:
    """Median milliseconds to embed one text query (`encode_texts` of one text) for each encoder, timed in turns,
    query by query, so that every encoder meets the same load on the machine."""
    for text in texts[:warmup]:
        for encoder in encoders:
            encoder.encode_texts([text])
    times = np.zeros((len(encoders), len(texts)))
    for j, text in enumerate(texts):
        for i, encoder in enumerate(encoders):
            start = time.perf_counter()
            encoder.encode_texts([text])
            times[i, j] = 1000 * (time.perf_counter() - start)
    return [float(t) for t in np.median(times, axis=1)]


class Targets(NamedTuple):
    """Issue 33's three targets for a new default against today's, and whether each is met."""

    english: float  # english_new / english_now, at least 0.98
    worst_language: str  # the worst of USE's 16 languages for the new encoder
    worst: float  # worst_claimed / english_new, at least 0.75
    query: float  # query_new / query_now (p50), at most 1.0

    @property
    def met(self) -> dict[str, bool]:
        """Each target: met or not."""
        return {"english": self.english >= 0.98, "languages": self.worst >= 0.75, "query": self.query <= 1.0}


def targets(now: pd.Series, new: pd.Series, query_now_ms: float, query_new_ms: float) -> Targets:
    """The targets from two encoders' `recall_by_language` (USE's 16 languages among them) and query times."""
    claimed = new[list(USE_LOCALES.values())]
    worst = str(claimed.idxmin())
    return Targets(new["en"] / now["en"], worst, claimed[worst] / new["en"], query_new_ms / query_now_ms)
