"""A collection moved to another text tower by re-projection: no photo is read again (notebook 02).

A ConSE image vector is the weighted mean of its top ImageNet classes' text embeddings, so it lives in the text
tower's space: a new text tower needs new image vectors, but not a new look at the photos. The store keeps what the
image model said (schema 4: `classes`, `class_weights`), and the new encoder embeds those classes again
(`embed_classes`). A row stored before schema 4 has no classes: they are recovered from its vector, a
non-negative mix of a few class embeddings of the old tower, by non-negative least squares (`recover_classes`).

Resumable, nothing lost: rows are written into `<collection>__moving`, made for the new encoder; a row already
there is not done again. Only when every row is there is the collection dropped, made anew for the new encoder
and filled from `__moving`, which is dropped last. Run again after a cut-off, the move goes on where it stopped.

Example:
    >>> report = move_collection(Config(), "conse-effnet-use-pow0.5")
    >>> report.rows, report.recovered                     # rows of schema 3 have no classes stored
    (785, 0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..config import ENGLISH_ONLY, MULTILINGUAL_ENCODER, Config
from ..models.encoders import load_encoder
from .collection import CLASS_FIELDS, StoreError, moving_name
from .connection import read_meta
from .image_store import ROW_FIELDS, ImageStore

SLICE_ROWS = 2000  # rows re-projected per step (ids are uniform hashes: the id range is cut into equal slices)
MAX_RESIDUAL = 1e-3  # a recovered mix further than this from the vector was not made by the old tower (~1e-7 if so)


class MoveReport(NamedTuple):
    """What a move did: rows in the collection, rows re-projected by this run, of those how many had their classes
    recovered from their vectors, seconds, and the encoders."""

    rows: int
    moved: int
    recovered: int
    seconds: float
    source: str
    target: str


def recover_classes(vectors: np.ndarray, class_embeddings: np.ndarray, top_t: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-`top_t` class ids and weights whose ConSE mix makes each of `vectors` (`[n, dim]`, unit rows).

    Solves min ||E^T w - v|| with w >= 0 over all classes (scipy's active-set NNLS; the mix's classes are exactly
    found, ~30-50 ms a row: the nearest classes alone miss the small weights, whose classes can lie far from v),
    keeps the `top_t` largest weights and scales them to sum to 1.

    Raises:
        StoreError: a vector is no mix of the old tower's class embeddings (it came from another encoder).
    """
    from scipy.optimize import nnls  # imported here: the engine imports this module for `move_hint` alone

    ids = np.zeros((len(vectors), top_t), np.int32)
    weights = np.zeros((len(vectors), top_t), np.float32)
    basis = np.ascontiguousarray(class_embeddings.T, dtype=np.float64)
    for i, vector in enumerate(vectors):
        mix, residual = nnls(basis, vector.astype(np.float64))
        if residual > MAX_RESIDUAL * max(np.linalg.norm(vector), 1e-12):
            raise StoreError(
                f"a stored vector is no mix of the collection's encoder's classes (residual {residual:.3f}): "
                "it cannot be moved without indexing its photos again"
            )
        order = np.argsort(-mix, kind="stable")[:top_t]
        ids[i], weights[i] = order, mix[order] / max(mix[order].sum(), 1e-12)
    return ids, weights


def move_hint(meta: dict) -> str:
    """One sentence on moving a collection whose text tower reads English only to the multilingual encoder (`""`
    for any other collection)."""
    if meta.get("encoder") not in ENGLISH_ONLY:
        return ""
    return (
        f"this collection's encoder {meta['encoder']!r} reads queries in English only: `t2i move` moves it to "
        f"{MULTILINGUAL_ENCODER!r} (queries in 16 languages) without reading a photo"
    )


def _loaded(spec: str, role: str):
    encoder = load_encoder(spec)
    if not hasattr(encoder, "embed_classes") or getattr(encoder, "head", None) is not None:
        raise StoreError(
            f"the {role} encoder {spec!r} does not make its image vectors from image classes (only ConSE encoders "
            "without a trained head do): a collection moves between those only; index the photos into another "
            "--collection instead"
        )
    return encoder


def move_collection(config: Config, encoder: str, progress: Callable[[int, int], None] | None = None) -> MoveReport:
    """Move `config.collection` to the text tower of `encoder`, re-projecting every row; resumable.

    Args:
        config: where the collection is (its `encoder` is ignored: the collection says which made it).
        encoder: the encoder to move to, a name `load_encoder` accepts, with the same image model.
        progress: called with (rows done, rows in all) after each step.

    Returns:
        What was done (`MoveReport`); nothing when the collection already uses `encoder`.

    Raises:
        StoreError: no such collection, an encoder that does not build vectors from classes, another image model.
    """
    start = time.perf_counter()
    target = _loaded(encoder, "new")
    temp_config = config.with_(collection=moving_name(config.collection))
    meta, moving = read_meta(config), read_meta(temp_config)
    if meta is None and moving is None:
        raise StoreError(f"there is no collection {config.collection!r} at {config.uri} to move")
    if moving is not None and (meta is None or meta["encoder"] == moving["encoder"]):
        return _finish(config, temp_config, moving, start, moved=0, recovered=0)  # cut off after the drop
    source_spec = meta.get("encoder_spec", meta["encoder"])
    if meta["encoder"] == target.name:
        return MoveReport(0, 0, 0, time.perf_counter() - start, meta["encoder"], target.name)
    if moving is not None and moving["encoder"] != target.name:
        raise StoreError(
            f"a move of {config.collection!r} to {moving['encoder']!r} was cut off: finish it with "
            f"`t2i move --encoder {moving['encoder']}` first"
        )
    source = _loaded(source_spec, "collection's")
    if (getattr(source, "variant", None), source.class_embeddings.shape[0]) != (
        getattr(target, "variant", None),
        target.class_embeddings.shape[0],
    ):
        raise StoreError(f"{source.name!r} and {target.name!r} have different image models: a move keeps it")
    old = ImageStore(config, meta["encoder"], meta["dim"], encoder_spec=source_spec)  # migrates an older schema
    new = ImageStore(temp_config, target.name, target.dim, encoder_spec=encoder)
    moved = recovered = 0
    try:
        total = old.count()
        done = {int(r["id"]) for r in new.scan(["id"])}
        slices = max(1, total // SLICE_ROWS + 1)
        bounds = np.linspace(0, (1 << 63) - 1, slices + 1, dtype=np.float64)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            low, high = int(lo), min(int(hi), (1 << 63) - 1)
            rows = [dict(r) for r in old.scan([*ROW_FIELDS, "embedding"], low, high) if int(r["id"]) not in done]
            if rows:
                recovered += _reproject(rows, source, target)
                new.insert(rows, np.stack([r.pop("vector") for r in rows]))
                moved += len(rows)
                done.update(int(r["id"]) for r in rows)
            if progress:
                progress(len(done), total)
        new.flush()
        stale = done - {int(r["id"]) for r in old.scan(["id"])}  # deleted from the collection meanwhile
        new.delete(stale)
        if new.count() != old.count():
            raise StoreError(
                f"{moving_name(config.collection)!r} holds {new.count()} of {old.count()} rows (the collection "
                "changed while it moved): run the move again"
            )
        old.client.drop_collection(config.collection)  # every row is in `__moving` now
    finally:
        old.close()
        new.close()
    return _finish(config, temp_config, read_meta(temp_config), start, moved, recovered, source.name)


def _reproject(rows: list[dict], source, target) -> int:
    """Give each row its new vector (`row["vector"]`) from its classes, recovered first where not stored; how
    many were recovered."""
    missing = [r for r in rows if not r["classes"]]
    if missing:
        vectors = np.asarray([r["embedding"] for r in missing], np.float32)
        ids, weights = recover_classes(vectors, source.class_embeddings, source.top_t)
        weights = weights ** (1 / getattr(source, "power", 1.0))  # the mix's weights were raised to `power`
        weights /= weights.sum(axis=1, keepdims=True)
        for row, i, w in zip(missing, ids.tolist(), weights.tolist()):
            row.update(classes=i, class_weights=w)
    width = max(len(r["classes"]) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    weights = np.zeros((len(rows), width), np.float32)
    for k, row in enumerate(rows):
        ids[k, : len(row["classes"])] = row["classes"]
        weights[k, : len(row["class_weights"])] = row["class_weights"]
    for row, vector in zip(rows, target.embed_classes(ids, weights)):
        row["vector"] = vector
        row.pop("embedding")
        row.update({k: list(row[k]) for k in CLASS_FIELDS})
    return len(missing)


def _finish(
    config: Config, temp_config: Config, moving: dict, start: float, moved: int, recovered: int, source: str = ""
) -> MoveReport:
    """Make the collection anew for the new encoder, fill it from `__moving`, drop `__moving`."""
    new = ImageStore(temp_config, moving["encoder"], moving["dim"], encoder_spec=moving.get("encoder_spec"))
    try:
        if not new.client.has_collection(config.collection):
            new._create(config.collection)
        new._copy_rows(temp_config.collection, config.collection)
        rows = new._count(config.collection)
        new.client.drop_collection(temp_config.collection)
    finally:
        new.close()
    return MoveReport(rows, moved, recovered, time.perf_counter() - start, source, moving["encoder"])
