"""How the face thresholds in t2i_helpers/models/faces.py were chosen, measured again in one run.

On the sample faces that ship in installed packages (`data/portraits.py`: Grace Hopper, the astronaut, the
cameraman), each as it is and in five changed copies, alone and in group photos, and on bundled Tux Paint stamps
(cartoons, no people), with the detector's floor at 0.5 and no size limit:
  (a) detector scores of the real faces against those of anything found on the stamps -> MIN_SCORE;
  (b) the same person's copies shrunk until the face is N px high, their distance to the person's other copies
      and to the other people -> MIN_FACE_PX (the smallest size where the two still do not overlap);
  (c) cosine distances, same person against different people, over every pair of copies -> SAME_PERSON;
  (d) detection ms a photo at 1024 px and embedding ms a face (one thread of OpenCV's, as the pass runs).

    .venv/bin/python benchmarks/face_thresholds.py              # about 30 s on 2 cores
    .venv/bin/python benchmarks/face_thresholds.py --stamps 50  # quicker
"""

from __future__ import annotations

import argparse
import itertools
import time

import cv2
import numpy as np

from t2i_helpers.data.datasets import load_source, tuxpaint_csv
from t2i_helpers.data.images import read_image
from t2i_helpers.data.portraits import group_photo, portraits, variants
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.faces import MIN_FACE_PX, MIN_SCORE, SAME_PERSON, FaceReader

SIZES = (16, 24, 32, 40, 48, 64, 96)  # face heights tried in (b), in px


def copies() -> list[tuple[str, str, np.ndarray]]:
    """(person, copy name, RGB photo) for every sample person as it is and changed five ways."""
    return [
        (person, name, photo)
        for person, image in portraits().items()
        for name, photo in {"original": image, **variants(image)}.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=int, default=200, help="bundled stamps searched for false faces")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    reader = FaceReader(min_score=0.5, min_face=0)
    print(describe(), flush=True)  # first: which CPU the figures below come from

    # (a) scores: real faces (alone and in group photos) against stamps
    found = [(person, name, reader.read(photo)) for person, name, photo in copies()]
    missed = [f"{p}/{n}" for p, n, faces in found if not faces]
    real = [faces[0].score for _, _, faces in found if faces]
    people = portraits()
    group, _ = group_photo(list(people.values()), height=360)
    in_group = reader.read(group)
    real += [f.score for f in in_group]
    stamps = load_source(tuxpaint_csv()).path.tolist()[: args.stamps]
    false = [f.score for path in stamps for f in reader.read(read_image(path, 1024)[1])]
    print(f"(a) real faces: {len(real)}, scores {min(real):.3f}-{max(real):.3f}; missed: {missed or 'none'}")
    print(f"    faces in a group photo of {len(people)}: {len(in_group)}")
    print(
        f"    stamps: {len(stamps)}, detections {len(false)}"
        + (f", scores {min(false):.3f}-{max(false):.3f}" if false else "")
        + f"; at MIN_SCORE {MIN_SCORE}: {sum(s >= MIN_SCORE for s in false)} false, "
        f"{sum(s < MIN_SCORE for s in real)} real faces lost"
    )

    # (c) same person against different people over every pair of copies
    vectors = [(p, faces[0].embedding) for p, _, faces in found if faces]
    same, other = [], []
    for (p1, v1), (p2, v2) in itertools.combinations(vectors, 2):
        (same if p1 == p2 else other).append(1 - float(v1 @ v2))
    print(
        f"(c) cosine distance, same person: {min(same):.3f}-{max(same):.3f} (median {np.median(same):.3f}, "
        f"{len(same)} pairs); different people: {min(other):.3f}-{max(other):.3f} ({len(other)} pairs)"
    )
    print(f"    at SAME_PERSON {SAME_PERSON}: {sum(d >= SAME_PERSON for d in same)} same pairs apart, "
          f"{sum(d < SAME_PERSON for d in other)} different pairs together")  # fmt: skip

    # (b) faces shrunk to N px: distance to the person's full-size copies, and to the other people
    for size in SIZES:
        worst_same, best_other, lost = 0.0, 2.0, 0
        for person, name, photo in copies():
            full = [f for f in found if f[0] == person and f[1] == name][0][2]
            if not full:
                continue
            scale = size / full[0].box[3]
            small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            canvas = np.full((max(480, small.shape[0] + 40), max(640, small.shape[1] + 40), 3), 200, np.uint8)
            canvas[20 : 20 + small.shape[0], 20 : 20 + small.shape[1]] = small
            faces = reader.read(canvas)
            if not faces:
                lost += 1
                continue
            for p, v in vectors:
                distance = 1 - float(faces[0].embedding @ v)
                if p == person:
                    worst_same = max(worst_same, distance)
                else:
                    best_other = min(best_other, distance)
        print(
            f"(b) faces {size:>3} px high: not found {lost:>2} of {len(found)}; same person up to {worst_same:.3f}, "
            f"different people from {best_other:.3f}" + ("  <- MIN_FACE_PX" if size == MIN_FACE_PX else "")
        )

    # (d) speed: detection on a 1024 px photo, embedding per face
    photo = cv2.resize(group, (1024, round(1024 * group.shape[0] / group.shape[1])))
    rows, small, _ = reader.detect(photo)
    started, rounds = time.perf_counter(), 20
    for _ in range(rounds):
        reader.detect(photo)
    detect_ms = (time.perf_counter() - started) / rounds * 1000
    started = time.perf_counter()
    for _ in range(rounds):
        for row in rows:
            reader.embedder.feature(reader.embedder.alignCrop(small, row))
    embed_ms = (time.perf_counter() - started) / rounds / len(rows) * 1000
    size = f"{photo.shape[1]}x{photo.shape[0]}"
    print(f"(d) detection {detect_ms:.1f} ms a photo at {size}, embedding {embed_ms:.1f} ms a face")


if __name__ == "__main__":
    main()
