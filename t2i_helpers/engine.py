"""`SearchEngine`: an encoder, a Milvus store and the Towhee pipelines held together (notebooks 01, 04).

The notebooks, the CLI, the app and the API all use this one object.

Example:
    >>> engine = SearchEngine.open()                      # default encoder, data/t2i.db
    >>> engine.index("data/tuxpaint/stamps.csv").summary()
    'added 784, unchanged 0, updated 0, removed 0, skipped 1'
    >>> [h.caption for h in engine.search("a red kangaroo", top_k=2)]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .datasets import load_source
from .encoders import Encoder, ImageLike, load_encoder
from .operators import IngestReport, read_image
from .pipelines import Query, ingest, prepare_query, search_pipeline
from .store import Hit, ImageStore


class SearchEngine:
    """Text-to-image (and image-to-image) search over one Milvus collection."""

    def __init__(self, config: Config, encoder: Encoder, store: ImageStore) -> None:
        self.config, self.encoder, self.store = config, encoder, store
        self._search = search_pipeline(encoder, store)

    @classmethod
    def open(cls, config: Config | None = None, encoder: Encoder | None = None, reset: bool = False) -> SearchEngine:
        """Load the encoder named in `config` (unless given) and open its collection.

        Args:
            config: where the index lives; `Config.from_env()` if None.
            encoder: an already loaded encoder; by default `load_encoder(config.encoder)`.
            reset: drop the collection first (its rows are lost).
        """
        config = config or Config.from_env()
        encoder = encoder or load_encoder(config.encoder)
        if encoder.name != config.encoder:
            config = config.with_(encoder=encoder.name)
        return cls(config, encoder, ImageStore.open(config, encoder, reset=reset))

    def index(self, source: str | Path | pd.DataFrame, progress: bool = True, sync: bool = False) -> IngestReport:
        """Index a folder of images, a dataset CSV or a DataFrame; only new or changed files are embedded.

        Args:
            sync: also remove rows of files that are gone from the folder (or from the CSV's folder).
        """
        if isinstance(source, pd.DataFrame):
            if sync:
                raise ValueError("sync needs a folder or CSV source, to know which stored rows belong to it")
            rows, root = source, None
        else:
            rows = load_source(source)
            root = Path(source).expanduser() if Path(source).is_dir() else Path(source).expanduser().parent
        return ingest(
            rows,
            self.encoder,
            self.store,
            self.config.batch_size,
            self.config.decode_workers,
            progress,
            sync_root=root if sync else None,
        )

    def prepare_query(self, text: str) -> Query:
        """The cleaned query as the encoder will read it, with a notice if it was shortened."""
        return prepare_query(text, self.encoder)

    def search(self, query: str | Query, top_k: int | None = None, category: str | None = None) -> list[Hit]:
        """The images that best match `query`, best first (through the Towhee search pipeline).

        Args:
            query: a text (cleaned and shortened here), or a `Query` from `prepare_query` (used as it is).
        """
        text = query.text if isinstance(query, Query) else self.prepare_query(query).text
        return self._search(text, top_k or self.config.top_k, category or "").get()[0]

    def search_image(
        self, image: ImageLike | str | Path, top_k: int | None = None, category: str | None = None
    ) -> list[Hit]:
        """Images similar to `image` (a path, PIL image or RGB array): "more like this"."""
        if isinstance(image, (str, Path)):
            image = read_image(image)[1]
        return self.search_vector(self.encoder.encode_images([image])[0], top_k, category)

    def search_vector(self, embedding: np.ndarray, top_k: int | None = None, category: str | None = None) -> list[Hit]:
        """Nearest images to one embedding, e.g. query arithmetic like `dog - grass + snow`."""
        return self.store.search(embedding[None, :], top_k or self.config.top_k, category or None)[0]

    def info(self) -> dict:
        """Collection, URI, encoder, dim, index and count."""
        return self.store.info()

    def close(self) -> None:
        """Release the store (and milvus-lite's file lock)."""
        self.store.close()
