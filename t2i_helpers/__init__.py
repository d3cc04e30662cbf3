"""t2i_helpers: the package behind the text-to-image search course.

Modules follow the pipeline: `datasets` -> `encoders` (`conse`, `clip`) -> `operators`/`pipelines` (Towhee)
-> `store` (Milvus) -> `engine` -> `metrics`/`queries`/`evaluate` -> `viz`/`widgets`/`app`/`api`/`server`/`cli`.

Example:
    >>> from t2i_helpers import SearchEngine
    >>> engine = SearchEngine.open()
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "SearchEngine": "engine",
    "load_encoder": "encoders",
    "ImageStore": "store",
    "load_source": "datasets",
    "load_bundled": "datasets",
}


def __getattr__(name: str):
    """Import on first use, so `import t2i_helpers` stays light."""
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
