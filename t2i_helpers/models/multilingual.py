"""Two text towers over one ConSE image side: MiniLM for English, USE for 16 languages (notebook 02).

A photo is stored once, as both of its ConSE vectors side by side: `[MiniLM-space vector, USE-space vector] / √2`
(896-d, unit length). A query then chooses its half. Routed: the language identifier (py3langid, whose model
ships in its wheel) reads the query; English is embedded by MiniLM into the first half, any other language by USE
into the second, so the inner product is that tower's cosine / √2 and the ranking is that tower's. Fused: every
query is embedded by both towers, and the score is the mean of the two cosines. Routed and fused search the same
stored vectors (they share a name).

Example:
    >>> enc = BilingualConSEEncoder(queries="routed")
    >>> [language_of(q) for q in ("a frog", "ein Frosch")]
    ['en', 'de']
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from .conse import MINILM_DIM, ConSEEncoder, class_text_embeddings
from .encoders import l2_normalize
from .use_tower import USE_DIM, UseTower

# USE v3's 16 languages as the identifier names them (zh-CN and zh-TW are one code there).
USE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")
QUERY_MODES = ("routed", "fused")


@functools.lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as err:
        raise ImportError("the language identifier is missing: pip install py3langid") from err
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    identifier.set_languages(USE_LANGUAGES)
    return identifier


def language_of(text: str) -> str:
    """The language of `text` among USE's 16, as an ISO 639-1 code (~0.01 ms; short texts are guessed)."""
    return _identifier().classify(text)[0]


def surely_not_english(text: str, margin: float = 5.0) -> bool:
    """Whether `text` is in another language than English by a clear margin of the identifier's log-probability
    (short English queries are often read as Dutch or Spanish by a hair: "a red kangaroo", "a cat")."""
    ranked = dict(_identifier().rank(text))
    return max(ranked.values()) - ranked["en"] > margin


class BilingualConSEEncoder(ConSEEncoder):
    """ConSE with two text towers: a photo is stored in both spaces, a query picks (routed) or joins (fused) them.

    Args:
        queries: "routed" (English -> MiniLM, other languages -> USE) or "fused" (both towers for every query).
        **kwargs: those of `conse.ConSEEncoder` (the MiniLM tower's `text_backend` included), without `head`.
    """

    dim = MINILM_DIM + USE_DIM
    tower = "minilm-use"

    def __init__(self, queries: str = "routed", **kwargs: object) -> None:
        if queries not in QUERY_MODES:
            raise ValueError(f"queries must be one of {QUERY_MODES}, not {queries!r}")
        if "head" in kwargs:
            raise ValueError("a projection head is trained for the MiniLM space alone")
        self.queries = queries
        super().__init__(**kwargs)

    def _load_text_tower(self) -> None:
        super()._load_text_tower()
        self.use = UseTower()
        _identifier()  # loaded now, not inside the first search

    @cached_property
    def class_embeddings(self) -> np.ndarray:
        """[1000, 896]: each class's MiniLM embedding beside its USE embedding (each half of unit length)."""
        minilm = class_text_embeddings(self._encode_texts_torch, "minilm", self.prompts, self.cache_dir)
        use = class_text_embeddings(self.use.encode, "use", self.prompts, self.cache_dir)
        return np.concatenate([minilm, use], axis=1)

    def embed_classes(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """ConSE in each space, `[n, 896]`: both normalized weighted sums side by side, scaled to unit length."""
        sums = np.einsum("nt,ntd->nd", self.class_weights(weights), self.class_embeddings[np.asarray(ids)])
        halves = [l2_normalize(sums[:, :MINILM_DIM]), l2_normalize(sums[:, MINILM_DIM:])]
        return l2_normalize(np.concatenate(halves, axis=1))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as normalized float32 `[n, 896]`: MiniLM's half, USE's half, or both (see the class)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if self.queries == "fused":
            out[:, :MINILM_DIM], out[:, MINILM_DIM:] = super().encode_texts(texts), self.use.encode(texts)
            return l2_normalize(out)
        english = np.array([language_of(t) == "en" for t in texts], bool)
        if english.any():
            out[english, :MINILM_DIM] = super().encode_texts([t for t, e in zip(texts, english) if e])
        if not english.all():
            out[~english, MINILM_DIM:] = self.use.encode([t for t, e in zip(texts, english) if not e])
        return out
