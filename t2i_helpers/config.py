"""The project's one configuration object (taught in notebook 01).

Nothing happens at import: a `Config` is built from arguments, or from environment variables with
`Config.from_env()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_ENCODER = "conse-effnet-minilm"
# Queries in 16 languages (issue 33, benchmarks/languages.py): not the default, which reads English best, while
# some of those languages stay below 0.75 of English; English-only collections move to it with `t2i move`.
MULTILINGUAL_ENCODER = "conse-effnet-use-pow0.5"
ENGLISH_ONLY = ("conse-effnet-minilm", "conse-effnet-minilm-pow0.5")
DEFAULT_COLLECTION = "t2i_images"


def default_data_dir() -> Path:
    """The folder for fetched photos and the embedded Milvus file.

    `T2I_DATA_DIR` wins; otherwise the checkout's `data/` folder (editable install), else `~/.cache/t2i`.
    """
    if os.environ.get("T2I_DATA_DIR"):
        return Path(os.environ["T2I_DATA_DIR"]).expanduser()
    checkout = Path(__file__).resolve().parents[1] / "data"
    if (checkout.parent / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".cache" / "t2i"


@dataclass(frozen=True)
class Config:
    """Where the index lives and how it is built and searched.

    Args:
        uri: a milvus-lite file path (embedded, the default) or `http(s)://host:port` of a Milvus server.
        token: Milvus token (`user:password` or an API key) for a server; empty for milvus-lite.
        collection: Milvus collection name.
        encoder: encoder name for `t2i_helpers.models.encoders.load_encoder`.
        batch_size: images per pipeline batch during ingest: one Milvus insert, split by the encoder into its
            own forward passes (32 measured fastest on 2 cores, see benchmarks/ingest.py).
        decode_workers: threads that decode images while the model runs.
        top_k: results per query.
        query_cache: how many recent query texts keep their embedding, so that a repeated query skips the text
            encoder (`search.QueryCache`); 0 keeps none.
        index_type: Milvus index type; FLAT is exact (see notebook 03 for the ANN study).
        metric: similarity metric; IP, which on the unit vectors stored here is their cosine similarity, and
            which a FLAT scan computes without reading every stored vector's length again on each search as
            COSINE does (a FLAT COSINE index of an older collection is rebuilt as IP on open; docs/performance.md).
        index_params: extra index build parameters (e.g. `{"M": 16, "efConstruction": 200}` for HNSW).
        data_dir: folder for fetched data sets, the default milvus-lite file and the thumbnail cache.
        thumbnail_size: the longer side of the thumbnails written at ingest and shown by the app, the widget
            and the API (`data_dir/thumbnails/SIZE/`); 0 writes none at ingest (they are then made on first use).

    Example:
        >>> Config(uri="http://localhost:19530").collection
        't2i_images'
    """

    uri: str = ""
    token: str = ""
    collection: str = DEFAULT_COLLECTION
    encoder: str = DEFAULT_ENCODER
    batch_size: int = 32
    decode_workers: int = 2
    top_k: int = 5
    query_cache: int = 1024
    index_type: str = "FLAT"
    metric: str = "IP"
    index_params: dict = field(default_factory=dict, hash=False)
    data_dir: Path = field(default_factory=default_data_dir)
    thumbnail_size: int = 384

    def __post_init__(self) -> None:
        if not self.uri:
            object.__setattr__(self, "uri", str(Path(self.data_dir) / "t2i.db"))
        if self.batch_size < 1 or self.decode_workers < 1 or self.top_k < 1:
            raise ValueError("batch_size, decode_workers and top_k must be at least 1")
        if self.query_cache < 0:
            raise ValueError("query_cache must be 0 (none) or a number of queries")
        if self.thumbnail_size < 0:
            raise ValueError("thumbnail_size must be 0 (none at ingest) or a size in pixels")

    @property
    def thumbnail_dir(self) -> Path:
        """The thumbnail cache: `data_dir/thumbnails` (one sub-folder per size)."""
        return Path(self.data_dir) / "thumbnails"

    @property
    def is_lite(self) -> bool:
        """True when `uri` names an embedded milvus-lite file rather than a server."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        """Build from `T2I_MILVUS_URI`, `T2I_MILVUS_TOKEN`, `T2I_COLLECTION`, `T2I_ENCODER`, then overrides.

        Overrides that are None are ignored, so CLI options can be passed straight through.
        """
        env = {
            "uri": os.environ.get("T2I_MILVUS_URI"),
            "token": os.environ.get("T2I_MILVUS_TOKEN"),
            "collection": os.environ.get("T2I_COLLECTION"),
            "encoder": os.environ.get("T2I_ENCODER"),
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**{k: v for k, v in env.items() if v is not None}, **given})

    def with_(self, **changes: object) -> Config:
        """A copy with some fields changed."""
        return replace(self, **changes)
