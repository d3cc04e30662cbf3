"""Faces at library scale: people grouped against the truth, the pass against a naive one, 12 MP throughput (issue 34).

The library is made at run time in a temporary folder (never committed): 12 MP (4032x3024) phone-style JPEGs of
the only three people whose photos ship in installed packages with a clear license (data/portraits.py: Grace
Hopper, the astronaut Eileen Collins, the cameraman), each pasted changed at random (`portraits.changed`: mirrored,
softer, lighter or darker, a colour cast, turned up to 15 degrees) alone or 2-3 side by side at random sizes
(faces ~60-800 px high), on a gradient; two stored sideways with an EXIF orientation; and bundled Tux Paint stamps
(no people). ONLY 3 IDENTITIES, far apart in SFace's space (cosine distance 0.8-0.96): no other face photos with a
clear license ship in any package, so the grouping figures are an upper bound for a real library of many people,
relatives among them. Photos of 4 people (one of the three twice, small) are read in (2) only: no real photo shows
one person twice, and the pass rightly never makes two faces of one photo one person (in a first run with 7% of
them in the library, each person split in two: pairwise recall 0.81 after the pass).

    (1) grouping: `t2i index FOLDER` then its face pass (`SearchEngine.index`, `read_faces`) into a milvus-lite
        file; `pairwise precision = X, recall = Y` of the people against the truth (over the faces found), after
        the pass and after `regroup`; each person named, `--person NAME` (`SearchEngine.find`) checked to return
        exactly that person's photos
    (2) `ratio faces_fast/faces_naive = N` on every K-th photo and the photos of 4, timed photo by photo in turn:
        the pass's reading
        (`FaceReader.read_photo`: the JPEG decoded at 1/4, detection there, small faces again from a finer
        decode) against decoding whole, detecting at full resolution and embedding one face a call; the face
        recall of both, and of the reduced decode alone (small faces dropped, as before SHARP_FACE_PX), by face
        height (YuNet finds no face under ~25 px in its input, nor, at full resolution, most over ~500 px)
    (3) photos/s of the face pass as run in (1), and a 50,000-photo library's time on 2 cores, estimated from it

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/faces.py           # 300 photos, ~5 min on 2 cores
    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/faces.py --small   # 60 photos, ~1.5 min
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_source, tuxpaint_csv
from t2i_helpers.data.images import decode_bounded, decode_image, read_image
from t2i_helpers.data.portraits import PHONE, SAMPLES, changed, phone_photo, portraits
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.people import pairwise_scores
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.faces import MIN_FACE_PX, SHARP_FACE_PX, FaceReader
from t2i_helpers.store.filters import Filters

Box = tuple[int, int, int, int]
NAMES = {"hopper": "Grace Hopper", "astronaut": "Eileen Collins", "cameraman": "Cameraman"}
# the kinds of photo and their shares; (people in it, range of its people's height in px in the 12 MP photo)
KINDS = {"alone": (0.30, 1, (900, 2200)), "two": (0.33, 2, (700, 1800)), "three": (0.25, 3, (560, 1250)),
         "stamp": (0.12, 0, (0, 0))}  # fmt: skip
FOURS = {"four": (1.0, 4, (400, 950))}  # read in (2) only: one of the three twice
PASS_HOURS_FOR = 50_000
BANDS = ((0, 128), (128, 256), (256, 512), (512, 4096))  # face heights in the 12 MP photo, for (2)'s recall


def build_library(folder: Path, count: int, kinds: dict = KINDS, seed: int = 34) -> dict[str, list[tuple[str, Box]]]:
    """`count` 12 MP JPEGs in `folder` of `kinds` (share, people, their height range); who is in each file and
    where (the region of each pasted photo)."""
    rng, people = np.random.default_rng(seed), portraits()
    stamps = load_source(tuxpaint_csv()).path.tolist()
    truth: dict[str, list[tuple[str, Box]]] = {}
    for i in range(count):
        kind = list(kinds)[rng.choice(len(kinds), p=[k[0] for k in kinds.values()])]
        _, many, (low, high) = kinds[kind]
        name = f"{i:04d}_{kind}.jpg"
        if many == 0:
            stamp = read_image(stamps[int(rng.integers(len(stamps)))])[1]
            photo, truth[name] = phone_photo([stamp], int(rng.integers(1000, 2700)), rng)[0], []
        else:
            who = [str(w) for w in rng.permutation(SAMPLES)][: min(many, 3)]
            who += [str(rng.choice(SAMPLES))] * (many - len(who))  # four: one of the three twice
            photo, boxes = phone_photo([changed(people[w], rng) for w in who], int(rng.integers(low, high)), rng)
            truth[name] = list(zip(who, boxes))
        if i % 150 == 7:  # stored sideways, turned upright by its EXIF orientation (6: turn right to view)
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.rot90(photo, 1)).save(folder / name, exif=exif.tobytes(), quality=90)
        else:
            cv2.imwrite(str(folder / name), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(82, 95))])
    return truth


def who_is(box: Box, truth: list[tuple[str, Box]]) -> int | None:
    """The index of the truth region a found face's centre lies in; None if in none (a false face)."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return next((i for i, (_, (x, y, w, h)) in enumerate(truth) if x <= cx < x + w and y <= cy < y + h), None)


def grouping(engine: SearchEngine, truth: dict[str, list[tuple[str, Box]]]) -> tuple[list[int], list[object]]:
    """Each stored face's person, and who it truly is (a false face: a label of its own)."""
    paths = engine.store.paths()
    predicted, actual = [], []
    for face in engine.store.faces.faces():
        file = Path(paths[face.photo_id]).name
        where = who_is(face.box, truth[file])
        predicted.append(face.person)
        actual.append(truth[file][where][0] if where is not None else ("false face", face.id))
    return predicted, actual


def recall(found: dict[str, list[Box]], truth: dict[str, list[tuple[str, Box]]]) -> tuple[set, int]:
    """The true faces (file, region) found in the photos of `found`; how many faces found are in no region."""
    hit = {(f, i) for f, boxes in found.items() for b in boxes if (i := who_is(b, truth[f])) is not None}
    false = sum(who_is(b, truth[f]) is None for f, boxes in found.items() for b in boxes)
    return hit, false


def face_heights(truth: dict[str, list[tuple[str, Box]]]) -> dict[tuple[str, int], float]:
    """Each true face's height in its photo, estimated: its region's height times the share of its portrait's
    height the face has there (measured by the detector on the unchanged portrait)."""
    share = {name: FaceReader().read(image)[0].box[3] / image.shape[0] for name, image in portraits().items()}
    return {(f, i): share[who] * box[3] for f, faces in truth.items() for i, (who, box) in enumerate(faces)}


def compare_paths(folder: Path, truth: dict[str, list[tuple[str, Box]]], every: int, fours: int) -> None:
    """(2): the pass's reading against the naive one, photo by photo in turn, on every `every`-th photo and
    `fours` photos of 4 people (written beside the library, not indexed)."""
    fast, naive = FaceReader(), FaceReader(side=max(PHONE))  # naive: detects at full size, no finer decode
    files = sorted(truth)[::every]
    (folder / "fours").mkdir()
    truth = {**truth, **{f"fours/{f}": v for f, v in build_library(folder / "fours", fours, FOURS, 4).items()}}
    files += sorted(f for f in truth if f.startswith("fours/"))
    seconds, found = {"fast": 0.0, "naive": 0.0}, {"fast": {}, "naive": {}, "reduced": {}}
    for file in files:
        started = time.perf_counter()
        found["fast"][file] = [f.box for f in fast.read_photo((folder / file).read_bytes())]
        seconds["fast"] += time.perf_counter() - started
        started = time.perf_counter()
        found["naive"][file] = [f.box for f in naive.read(decode_image((folder / file).read_bytes()))]
        seconds["naive"] += time.perf_counter() - started
        reduced, scale = decode_bounded((folder / file).read_bytes(), fast.side, fast.side * 3 // 4)
        found["reduced"][file] = [f.box for f in fast.read(reduced, scale)]  # the same pixels: no finer decode
    rates = {k: len(files) / s for k, s in seconds.items()}
    faces = sum(len(truth[f]) for f in files)
    print(f"(2) {len(files)} photos (1 in {every} of the library, {fours} of 4 people), {faces} faces, timed in turn:")
    print(f"    pass as built (1/4 JPEG decode, detect at {fast.side} px, small faces from a finer decode): "
          f"{rates['fast']:.2f} photos/s")  # fmt: skip
    print(f"    naive (whole decode, detect at {max(PHONE)} px, one face a call): {rates['naive']:.2f} photos/s")
    print(f"    ratio faces_fast/faces_naive = {rates['fast'] / rates['naive']:.2f}")
    heights = {face: h for face, h in face_heights(truth).items() if face[0] in found["fast"]}
    bands = {f"{low}-{high} px": [f for f, h in heights.items() if low <= h < high] for low, high in BANDS}
    for key, label in (("fast", "pass as built"), ("naive", "naive"), ("reduced", "reduced decode alone")):
        hit, false = recall(found[key], truth)
        by_band = ", ".join(f"{band} {len(hit & set(faces))}/{len(faces)}" for band, faces in bands.items())
        print(f"    face recall, {label}: {len(hit) / len(heights):.3f} ({false} faces found outside any person); "
              f"by face height in the 12 MP photo (estimated): {by_band}")  # fmt: skip
    print(f"    (reduced decode alone: faces under {MIN_FACE_PX} px there dropped, none read again from more pixels; "
          f"the pass reads faces under {SHARP_FACE_PX} px again)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="60 photos instead of 300: a quick run")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    count, every, fours = (60, 6, 4) if args.small else (300, 8, 10)
    with tempfile.TemporaryDirectory(prefix="t2i-faces-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        started = time.perf_counter()
        truth = build_library(folder, count)
        kinds = Counter(f.split("_", 1)[1][:-4] for f in truth)
        faces = sum(len(t) for t in truth.values())
        print(f"library: {count} photos of {PHONE[0]}x{PHONE[1]} ({dict(kinds)}), {faces} faces of ONLY 3 people "
              f"(no other face photos with a clear license ship in any package: the grouping figures below are an "
              f"upper bound), made in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

        engine = SearchEngine.open(Config(uri=str(Path(tmp) / "faces.db"), data_dir=Path(tmp) / "data"))
        started = time.perf_counter()
        engine.index(folder, progress=False)
        indexed = time.perf_counter() - started
        started = time.perf_counter()
        report = engine.read_faces(folder, progress=False)
        passed = time.perf_counter() - started
        print(f"(1) {report.summary()}")
        predicted, actual = grouping(engine, truth)
        scores = pairwise_scores([repr(a) for a in actual], predicted)
        print(f"    after the pass: pairwise precision = {scores.precision:.3f}, recall = {scores.recall:.3f}")
        people = engine.regroup_people()
        predicted, actual = grouping(engine, truth)
        scores = pairwise_scores([repr(a) for a in actual], predicted)
        print(
            f"    after regroup ({people} people): pairwise precision = {scores.precision:.3f}, "
            f"recall = {scores.recall:.3f}"
        )
        check_search(engine, predicted, actual, truth)

        print(
            f"(3) face pass: {report.read} photos in {passed:.1f} s = {report.read / passed:.2f} photos/s "
            f"(12 MP JPEGs, {report.faces / max(report.read, 1):.2f} faces a photo; Milvus writes and grouping in)"
        )
        print(f"    estimate, not measured: {PASS_HOURS_FOR:,} such photos on these 2 cores: "
              f"{PASS_HOURS_FOR / (report.read / passed) / 3600:.1f} h for the face pass, "
              f"{PASS_HOURS_FOR / (count / indexed) / 3600:.1f} h for the image index before it "
              f"({count / indexed:.2f} photos/s measured)")  # fmt: skip
        engine.close()
        compare_paths(folder, truth, every, fours)


def check_search(
    engine: SearchEngine, predicted: list[int], actual: list[object], truth: dict[str, list[tuple[str, Box]]]
) -> None:
    """Name each true person's largest person after them; check that `--person NAME` returns exactly that
    person's photos, and count them against the photos the true person is in."""
    for who in SAMPLES:
        mine = Counter(p for p, a in zip(predicted, actual) if a == who)
        if not mine:
            print(f"    {NAMES[who]}: no face found")
            continue
        person = mine.most_common(1)[0][0]
        engine.name_person(person, NAMES[who])
        paths = {engine.store.paths()[f.photo_id] for f in engine.faces_of(person)}
        hits = {h.path for h in engine.find(None, Filters(person=NAMES[who]), top_k=10_000).hits}
        really = {f for f, faces in truth.items() if any(w == who for w, _ in faces)}
        right = sum(Path(h).name in really for h in hits)
        print(f"    --person {NAMES[who]!r}: {len(hits)} photos, exactly person {person}'s photos: "
              f"{'yes' if hits == paths else 'NO'}; {right} of the {len(really)} photos {NAMES[who]} is in, "
              f"{len(hits) - right} others (of the {sum(mine.values())} faces of {NAMES[who]} found, "
              f"{mine[person]} are person {person}'s, the others in {len(mine) - 1} other people)")  # fmt: skip


if __name__ == "__main__":
    main()
