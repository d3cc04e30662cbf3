"""t2i_helpers: the package behind the text-to-image search course.

The package is laid out in wings, each importing only the wings below it (bottom to top):
`config` -> `data` (photos) -> `models` (encoders) -> `store` (Milvus) -> `pipelines` (Towhee: ingest and search)
-> `engine` (SearchEngine) -> `measure` (evaluation) -> `explore` (notebook views) -> `serve` (API, web app)
-> `cli`. `config`, `engine` and `cli` are the entrances.

Example:
    >>> from t2i_helpers import SearchEngine
    >>> engine = SearchEngine.open()
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "SearchEngine": "engine",
    "load_encoder": "models.encoders",
    "ImageStore": "store.image_store",
    "load_source": "data.datasets",
    "load_bundled": "data.datasets",
}


def __getattr__(name: str):
    """Import on first use, so `import t2i_helpers` stays light."""
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
