"""Measuring faces and people: pairs of faces and their distances, the precision/recall curve of a threshold, a
grouping scored against the truth, and what faces cost beside an embedding and OCR (notebook 07).

    pairwise   over every pair of faces: precision = pairs put together that are one person / pairs put together;
               recall = pairs put together that are one person / pairs that are one person
    B-cubed    for each face: precision = faces in its group that are its person / faces in its group; recall =
               faces in its group that are its person / faces of its person; each averaged over the faces

Pairwise scores weigh a large person more (its pairs grow with the square of its faces); B-cubed weighs every face
alike. Both are 1.0 for a perfect grouping; two people merged into one lower the precision, one person split in
two the recall.

Example:
    >>> pairs = face_pairs(embeddings, people)                # i, j, distance, same
    >>> threshold_curve(pairs)                                 # threshold, precision, recall
    >>> pairwise_scores(truth, predicted), bcubed_scores(truth, predicted)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..models.encoders import Encoder
from ..models.faces import FaceReader
from ..pipelines.people import APART, cluster
from ..store.face_store import FaceRow


class Scores(NamedTuple):
    """Precision, recall and their harmonic mean F1."""

    precision: float
    recall: float
    f1: float


def _scores(precision: float, recall: float) -> Scores:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(float(precision), float(recall), float(f1))


def face_pairs(embeddings: np.ndarray, people: Sequence) -> pd.DataFrame:
    """Every pair of faces (i < j) with its cosine distance (unit embeddings, one a row) and whether the two are
    one person."""
    i, j = np.triu_indices(len(people), k=1)
    who = np.asarray(people)
    distance = 1 - np.einsum("ij,ij->i", embeddings[i], embeddings[j])
    return pd.DataFrame({"i": i, "j": j, "distance": distance, "same": who[i] == who[j]})


def threshold_curve(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairwise precision and recall when every pair at a distance of at most `threshold` is called one person, at
    every distance found (scikit-learn's `precision_recall_curve` on the negated distance), nearest first."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(pairs.same, -pairs.distance.to_numpy())
    curve = pd.DataFrame({"threshold": -thresholds, "precision": precision[:-1], "recall": recall[:-1]})
    return curve.sort_values("threshold", ignore_index=True)


def pairwise_scores(truth: Sequence, predicted: Sequence) -> Scores:
    """Pairwise precision, recall and F1 of a grouping (a label per face) against the truth (a person per face); a
    grouping that puts no two faces together has precision 1, a truth with no two faces alike recall 1."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    (_, wrongly_together), (wrongly_apart, together) = pair_confusion_matrix(truth, predicted)
    precision = together / (together + wrongly_together) if together + wrongly_together else 1.0
    recall = together / (together + wrongly_apart) if together + wrongly_apart else 1.0
    return _scores(precision, recall)


def bcubed_scores(truth: Sequence, predicted: Sequence) -> Scores:
    """B-cubed precision, recall and F1 of a grouping against the truth (see the module's docstring)."""
    from sklearn.metrics.cluster import contingency_matrix

    counts = contingency_matrix(truth, predicted).astype(float)  # person x group: faces in both
    faces = counts.sum()
    precision = (counts**2 / counts.sum(axis=0, keepdims=True)).sum() / faces
    recall = (counts**2 / counts.sum(axis=1, keepdims=True)).sum() / faces
    return _scores(precision, recall)


def grouping_sweep(
    embeddings: np.ndarray, truth: Sequence, photos: Sequence[int], thresholds: Sequence[float]
) -> pd.DataFrame:
    """The faces grouped as a full regroup does (`people.cluster`: average linkage, two faces of one photo never
    together) at each threshold, and scored against the truth: people found, pairwise and B-cubed scores."""
    distance = np.clip(1 - embeddings @ embeddings.T, 0, 2).astype(np.float64)
    photo = np.asarray(photos)
    distance[photo[:, None] == photo[None, :]] = APART
    np.fill_diagonal(distance, 0)
    rows = []
    for threshold in thresholds:
        labels = cluster(distance, threshold)
        pairwise, bcubed = pairwise_scores(truth, labels), bcubed_scores(truth, labels)
        rows.append(
            {"threshold": threshold, "people": len(set(labels))}
            | {f"pairwise {k}": v for k, v in pairwise._asdict().items()}
            | {f"B-cubed {k}": v for k, v in bcubed._asdict().items()}
        )
    return pd.DataFrame(rows).set_index("threshold")


def true_people(faces: Sequence[FaceRow], paths: Mapping[int, str], truth: pd.DataFrame) -> list[str]:
    """The truth's person for each stored face: in the face's photo (by file name), the one whose place
    (x, y, w, h) holds the face's centre; "" where none does (a face the truth does not know)."""
    found = []
    for face in faces:
        x, y, w, h = face.box
        cx, cy = x + w / 2, y + h / 2
        rows = truth[truth.file == Path(paths[face.photo_id]).name]
        inside = rows[(rows.x <= cx) & (cx < rows.x + rows.w) & (rows.y <= cy) & (cy < rows.y + rows.h)]
        found.append(inside.person.iloc[0] if len(inside) else "")
    return found


def stage_costs(
    photos: Sequence[np.ndarray],
    encoder: Encoder,
    read_texts: Callable[[Sequence[np.ndarray]], list[str]],
    reader: FaceReader,
) -> pd.DataFrame:
    """What each stage costs on the same RGB photos, after a warm-up on the first: the image embedding (one batch),
    OCR, and the face read, whole and split into detection (a photo) and embedding (a face found). A row per stage:
    ms, per what ("photo" or "face"), how many were timed, and ms as a multiple of the image embedding's."""

    def timed(run: Callable[[], object]) -> float:
        started = time.perf_counter()
        run()
        return (time.perf_counter() - started) * 1000

    encoder.encode_images(photos[:1])  # warm-up: first calls load and allocate
    read_texts(photos[:1])
    reader.read(photos[0])
    found: list = []
    n, embed, ocr = len(photos), timed(lambda: encoder.encode_images(photos)), timed(lambda: read_texts(photos))
    detect = timed(lambda: [reader.detect(p) for p in photos])
    read = timed(lambda: found.extend(reader.read(p) for p in photos))
    faces = sum(len(f) for f in found)
    rows = {
        "image embedding": (embed / n, "photo", n),
        "OCR": (ocr / n, "photo", n),
        "faces": (read / n, "photo", n),
        "face detection": (detect / n, "photo", n),
        "face embedding": ((read - detect) / max(faces, 1), "face", faces),
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["ms", "per", "timed"])
    table["x the embedding"] = table.ms / table.ms["image embedding"]
    return table
