"""Photo-library ingest: phone-style 12 MP JPEGs (some EXIF-rotated) and HEICs against the bundled stamps.

In one run, with the default encoder and a fresh milvus-lite file for each:
  (a) the bundled stamps ingest rate (785 small PNGs);
  (b) the photo-folder ingest rate: N 4032x3024 JPEGs at quality 90 (every third one stored sideways with
      EXIF orientation 6) plus a few HEICs, made from the bundled stamps on the backgrounds that ship with
      scikit-learn (`load_sample_images`), with camera-like noise, once, under data/bench/ (never committed);
  (c) a re-index of the unchanged photo folder;
  (d) what reading the header costs the ingest (time taken, camera, place reverse-geocoded: `exif.photo_metadata`;
      the photos carry a date, a camera and, on two in three, GPS of one of six cities): the stamps and the photo
      folder ingested again into fresh files with the metadata read and with it left out (every row stored with
      "not known", as before schema 3), three times each in the order with, without, without, with, with,
      without, after one warm-up read (GeoNames loads once); the best rate of each counts.
It prints `ratio photos/stamps` = b/a, `ratio reindex/index` = time(c)/time(b),
`ratio ingest_with_metadata/ingest_before` (12 MP photos) and `ratio stamps_with_metadata/stamps_before`, the
decode and model costs per photo measured apart (one thread each), and the retrieval quality of reduced-scale
JPEG decoding: caption -> photo R@10 over the bundled photos re-encoded as 2816 px JPEGs, decoded at full size
and at reduced scale.

    .venv/bin/python benchmarks/photos.py               # ~1,000 photos: about 12 minutes on 2 CPU cores
    .venv/bin/python benchmarks/photos.py --photos 200  # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.data.exif import photo_metadata
from t2i_helpers.data.images import MAX_SIDE, ORIENTATION_TAG, decode_image, read_image, shrink
from t2i_helpers.data.library import CAMERA, CITIES, PHONE, photo_exif
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.finetune import caption_recall
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.pipelines import operators

SIZE = (4032, 3024)  # a 12 MP phone photo, landscape


@functools.cache
def _backgrounds() -> list[np.ndarray]:
    """scikit-learn's two sample photos, scaled to the photo size once per process."""
    from sklearn.datasets import load_sample_images

    return [cv2.resize(image, SIZE, interpolation=cv2.INTER_CUBIC) for image in load_sample_images().images]


@functools.cache
def _noise() -> tuple[np.ndarray, np.ndarray]:
    """Camera-like noise (sigma 3) as two uint8 frames, added and subtracted with saturation."""
    noise = np.random.default_rng(0).normal(0, 3.0, (SIZE[1], SIZE[0], 3))
    return np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)


def phone_photo(stamp: str, index: int) -> np.ndarray:
    """A 4032x3024 RGB photo: a bundled stamp at a random place and size on a background, plus sensor noise."""
    rng = np.random.default_rng(index)
    canvas = _backgrounds()[index % 2].copy()
    rgba = np.asarray(Image.open(stamp).convert("RGBA"))
    scale = int(rng.integers(1200, 2600)) / max(rgba.shape[:2])
    rgba = cv2.resize(rgba, (max(1, int(rgba.shape[1] * scale)), max(1, int(rgba.shape[0] * scale))))
    top, left = int(rng.integers(0, SIZE[1] - rgba.shape[0] + 1)), int(rng.integers(0, SIZE[0] - rgba.shape[1] + 1))
    alpha = rgba[:, :, 3:].astype(np.float32) / 255
    region = canvas[top : top + rgba.shape[0], left : left + rgba.shape[1]]
    region[:] = (rgba[:, :, :3] * alpha + region * (1 - alpha)).astype(np.uint8)
    more, less = _noise()
    return cv2.subtract(cv2.add(canvas, more), less)


def _write_photo(job: tuple[int, str, str]) -> None:
    index, stamp, target = job
    if Path(target).exists():  # made by an earlier, interrupted run
        return
    taken = dt.datetime(2022, 1 + index % 12, 1 + index % 28, 12, index % 60)
    city = CITIES[index % len(CITIES)] if index % 3 else None  # GPS on two photos in three
    exif = photo_exif(taken, PHONE if index % 2 else CAMERA, city)
    image, partial = Image.fromarray(phone_photo(stamp, index)), f"{target}.part"
    if target.endswith(".heic"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        image.save(partial, format="HEIF", quality=80, exif=exif.tobytes())
    else:
        if index % 3 == 1:  # held sideways: the pixels are stored turned, the tag says how to show them
            image, exif[ORIENTATION_TAG] = image.transpose(Image.Transpose.ROTATE_90), 6
        image.save(partial, "JPEG", quality=90, exif=exif.tobytes())
    Path(partial).replace(target)


def photo_folder(n: int, heic: int, stamps: list[str]) -> Path:
    """`n` phone-style photos (`heic` of them HEIC) under the data folder, made once (two processes) and reused."""
    folder = Config().data_dir / "bench" / f"photos-exif-{n}-{heic}"
    if (folder / "complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"IMG_{i:05d}.{'heic' if i < heic else 'jpg'}" for i in range(n)]
    jobs = [(i, stamps[i % len(stamps)], str(folder / name)) for i, name in enumerate(names)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_photo, jobs, chunksize=8))
    (folder / "complete").write_text(f"{n} photos, {heic} HEIC\n")
    return folder


def index(source, folder: Path, name: str):
    """SearchEngine.index into the milvus-lite file `folder/name.db` (thumbnails on, under `folder/name`); its
    milvus-lite server is stopped after (idle servers of earlier runs would share the CPU with later ones)."""
    from milvus_lite.server_manager import server_manager_instance

    engine = SearchEngine.open(Config(uri=str(folder / f"{name}.db"), data_dir=folder / name))
    report = engine.index(source, progress=False)
    engine.close()
    server_manager_instance.release_server(str(folder / f"{name}.db"))
    return report


@contextlib.contextmanager
def without_metadata():
    """The ingest as before schema 3: no header read for time, camera or place (every row "not known")."""
    unknown = photo_metadata(None, -1)
    original = operators.photo_metadata
    operators.photo_metadata = lambda exif, mtime_ns: unknown
    try:
        yield
    finally:
        operators.photo_metadata = original


ORDER = (True, False, False, True, True, False)  # with the header read (True) or not: balanced against drift


def metadata_cost(source, folder: Path, name: str) -> tuple[float, float]:
    """Best images/s of the ingest of `source` with the header read and without (fresh files, in `ORDER`)."""
    rates = {True: [], False: []}
    for run, with_metadata in enumerate(ORDER):
        with contextlib.nullcontext() if with_metadata else without_metadata():
            rates[with_metadata].append(index(source, folder, f"{name}-{run}").images_per_s)
    shown = {k: ", ".join(f"{r:.1f}" for r in v) for k, v in rates.items()}
    print(f"    {name}: with metadata {shown[True]}; without {shown[False]} images/s")
    return max(rates[True]), max(rates[False])


def per_photo_costs(paths: list[Path], encoder) -> dict[str, float]:
    """Milliseconds per photo, one thread: full decode, reduced-scale decode (what ingest does), the model."""
    datas = [p.read_bytes() for p in paths]
    costs = {}
    for label, min_side in (("full decode + shrink", None), ("reduced-scale decode", encoder.image_size)):
        start = time.perf_counter()
        images = [shrink(decode_image(d, min_side=min_side), MAX_SIDE) for d in datas]
        costs[label] = 1000 * (time.perf_counter() - start) / len(datas)
    encoder.encode_images(images[:8])  # warm-up
    start = time.perf_counter()
    encoder.encode_images(images)
    costs["model (all cores)"] = 1000 * (time.perf_counter() - start) / len(images)
    return costs


def jpeg_quality(rows, encoder, side: int = 2816) -> tuple[float, float]:
    """Caption -> photo R@10 over the bundled photos as big JPEGs: decoded at full size vs at reduced scale."""
    full, reduced = [], []
    for path in rows.path:
        image = read_image(path)[1]
        scale = side / max(image.shape[:2])
        big = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), cv2.INTER_CUBIC)
        out = io.BytesIO()
        Image.fromarray(big).save(out, "JPEG", quality=90)
        full.append(shrink(decode_image(out.getvalue()), MAX_SIDE))
        reduced.append(shrink(decode_image(out.getvalue(), min_side=encoder.image_size), MAX_SIDE))
    captions = encoder.encode_texts(list(rows.caption))
    return tuple(caption_recall(captions, encoder.encode_images(images), (10,))["R@10"] for images in (full, reduced))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000, help="phone-style photos to make (default 1000)")
    parser.add_argument("--heic", type=int, default=10, help="how many of them are HEIC (default 10)")
    parser.add_argument("--skip-quality", action="store_true", help="skip the reduced-decode R@10 check")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from

    rows = load_bundled()
    encoder = load_encoder()
    start = time.perf_counter()
    photos = photo_folder(args.photos, args.heic, list(rows.path))
    mb = np.mean([p.stat().st_size for p in photos.glob("IMG_*")]) / 1e6
    print(f"{args.photos} photos ({args.heic} HEIC), {SIZE[0]}x{SIZE[1]}, mean {mb:.1f} MB, in {photos} "
          f"(ready in {time.perf_counter() - start:.0f} s)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="t2i-photos-") as tmp:
        stamps = index(rows, Path(tmp), "stamps")
        print(f"(a) bundled stamps: {stamps.throughput()}; {stamps.summary()}")
        first = index(photos, Path(tmp), "photos")
        print(f"(b) photo folder: {first.throughput()}; {first.summary()}")
        again = index(photos, Path(tmp), "photos")
        print(f"(c) re-index of the unchanged folder: {again.seconds:.2f} s; {again.summary()}")
        print("(d) the ingest with the header read (time, camera, place) and without, best of three each:")
        photo_metadata(photo_exif(dt.datetime(2022, 1, 1), PHONE, CITIES[0]), 0)  # GeoNames' cities load once
        stamps_with, stamps_without = metadata_cost(rows, Path(tmp), "stamps")
        photos_with, photos_without = metadata_cost(photos, Path(tmp), "photos")
    costs = per_photo_costs(sorted(photos.glob("*.jpg"))[:40], encoder)
    for label, ms in costs.items():
        print(f"  {label}: {ms:.1f} ms per photo ({1000 / ms:.0f} images/s)")

    print(f"ratio photos/stamps = {first.images_per_s / stamps.images_per_s:.2f}")
    print(f"ratio reindex/index = {again.seconds / first.seconds:.3f}")
    print(f"ratio ingest_with_metadata/ingest_before = {photos_with / photos_without:.2f}")
    print(f"ratio stamps_with_metadata/stamps_before = {stamps_with / stamps_without:.2f}")
    print(f"ratio reduced_decode/full_decode = {costs['reduced-scale decode'] / costs['full decode + shrink']:.2f}")
    if not args.skip_quality:
        full, reduced = jpeg_quality(rows, encoder)
        print(f"R@10 full decode = {full:.3f}, R@10 reduced decode = {reduced:.3f}, difference = {reduced - full:+.3f}")


if __name__ == "__main__":
    main()
