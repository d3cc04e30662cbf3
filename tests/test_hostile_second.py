"""The second security review's hostile files (issue 35), each built here: EXIF offsets past +-14:00, file times
past 2262 and 9999, captions that link out of the folder, 16-bit pictures small on disk, PNGs of millions of
chunks, text-dense pictures and a failing OCR reader. The server's side (Host, timeouts, uploads) and the whole
`t2i index` on a folder of them are in test_hostile.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.bounds import DECODES
from t2i_helpers.data.datasets import scan_folder
from t2i_helpers.data.exif import NO_OFFSET, header_metadata, taken_iso
from t2i_helpers.data.images import ImageError, decode_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.models.ocr import MAX_BOXES, MAX_SECONDS, OcrError, TextReader
from t2i_helpers.pipelines.ocr_pass import read_text, unread
from t2i_helpers.serve.uploads import decode_upload

from .hostile_files import YEAR_2300, _png, deep_png, dense_text, many_chunks_png, pixel_bomb_png, with_offset

YEAR_10000 = 253_402_300_800 + 86_400 * 40  # 10000-02-10: past what Python's dates hold
OUTSIDE = "not read as its photo's caption: it links outside the indexed folder"
MAY_4_2021 = 1_620_124_200  # 2021-05-04 10:30 (as stored: local wall-clock seconds)


# 1. EXIF offsets: read as no offset, and a stored one never fails showing its row


@pytest.mark.parametrize(("offset", "kind"), [("+99:99", "JPEG"), ("-24:00", "PNG"), ("+14:60", "JPEG")])
def test_an_exif_offset_past_14_hours_or_with_60_minutes_is_no_offset(offset, kind):
    meta = header_metadata(with_offset(offset, kind), mtime_ns=0)
    assert (meta["taken_from"], meta["taken_offset"]) == ("exif", NO_OFFSET)
    assert taken_iso(meta["taken_at"], meta["taken_offset"], "exif") == "2021-05-04T10:30:00"


def test_real_offsets_are_kept():
    assert header_metadata(with_offset("+14:00"), 0)["taken_offset"] == 14 * 60
    assert header_metadata(with_offset("-09:30", "PNG"), 0)["taken_offset"] == -570
    assert taken_iso(MAY_4_2021, -570, "exif") == "2021-05-04T10:30:00-09:30"


def test_a_stored_time_that_cannot_be_shown_is_shown_without_it_never_an_error():
    assert taken_iso(MAY_4_2021, 6039, "exif") == "2021-05-04T10:30:00"  # an old row's "+99:99"
    assert taken_iso(MAY_4_2021, -1440, "exif") == "2021-05-04T10:30:00"
    assert taken_iso(10**15, 0, "file") is None  # past year 9999


# 2. File times past what int64 nanoseconds (2262) or Python's dates (9999) hold


@pytest.mark.parametrize("seconds", [YEAR_2300, YEAR_10000], ids=["2300", "10000"])
def test_a_file_dated_past_2262_is_indexed_without_a_time(seconds, encoder, bundled):
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        folder = Path(tmp) / "photos"  # tmpfs keeps times past 2446 (ext4 does not)
        folder.mkdir()
        shutil.copy(bundled.path[0], folder / "now.png")
        shutil.copy(bundled.path[1], folder / "later.png")
        os.utime(folder / "later.png", (seconds, seconds))
        if (folder / "later.png").stat().st_mtime != seconds:
            pytest.skip(f"this file system cannot date a file at {seconds} s")
        assert (folder / "later.png").stat().st_mtime_ns > (1 << 63)  # more than int64 nanoseconds hold
        engine = SearchEngine.open(Config(data_dir=Path(tmp) / "data", thumbnail_size=0), encoder)
        try:
            report = engine.index(folder, progress=False)  # before: "ingest stopped after storing 0 new images"
            assert (report.added, report.skipped) == (2, [])
            times = {Path(h.path).name: h.taken_at for h in engine.search("a photo", top_k=2)}
            assert times["later.png"] is None and times["now.png"] is not None
            assert engine.index(folder, progress=False).unchanged == 2  # its stored time compares alike
        finally:
            engine.close()


# 3. Captions beside a photo: not read through a link out of the folder


def test_a_caption_linking_out_of_the_folder_is_a_reported_skip_and_one_inside_is_read(tmp_path):
    folder, secret = tmp_path / "photos", tmp_path / "secret.txt"
    (folder / "sub").mkdir(parents=True)
    secret.write_text("T2I_MILVUS_TOKEN=root:Milvus\n")
    for name in "abcde":
        (folder / f"{name}.png").write_bytes(_png(np.full((16, 16, 3), 60, np.uint8)))
    (folder / "a.txt").symlink_to(secret)
    (folder / "b.txt").symlink_to("/proc/self/environ")
    (folder / "c.txt").symlink_to("../secret.txt")  # relative, out
    (folder / "sub" / "words.txt").write_text("a red kangaroo\n")
    (folder / "d.txt").symlink_to("sub/words.txt")  # inside the folder: read
    (folder / "e.txt").write_text("a caption\n")
    linked = tmp_path / "linked"
    linked.symlink_to(folder)  # the folder named through a link: its own files are inside it
    for source in (folder, linked):
        rows = scan_folder(source)
        captions = {Path(p).name: c for p, c in zip(rows.path, rows.caption)}
        assert captions == {"a.png": "", "b.png": "", "c.png": "", "d.png": "a red kangaroo", "e.png": "a caption"}
        skipped = {Path(p).name: reason for p, reason in rows.attrs["skipped"]}
        assert skipped == dict.fromkeys(("a.txt", "b.txt", "c.txt"), OUTSIDE)


# 4. Memory counted in decoded bytes, one budget for every decode


RSS = """
import os, sys, threading
from t2i_helpers.data.images import decode_image
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
data, peak, done = open(sys.argv[1], "rb").read(), [0.0], threading.Event()
def sample():
    while not done.wait(0.001):
        peak[0] = max(peak[0], rss())
before = rss()
thread = threading.Thread(target=sample)
thread.start()
image = decode_image(data, max_side=1024)
done.set()
thread.join()
print(image.shape[0], image.shape[1], max(peak[0], rss()) - before)
"""


def test_a_16_bit_png_small_on_disk_is_shrunk_before_it_is_made_8_bit(tmp_path):
    path = tmp_path / "deep.png"
    path.write_bytes(deep_png(7000))  # 49 MP in ~95 KB: 98 MB as Pillow decodes it
    done = subprocess.run(
        [sys.executable, "-c", RSS, str(path)], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    height, width, growth = done.stdout.split()
    print(f"16-bit 49 MP PNG of {path.stat().st_size:,} bytes: peak RSS growth {float(growth):.0f} MB")
    assert (int(height), int(width)) == (1024, 1024)
    assert float(growth) < 250  # before: ~800 MB (a float64 copy of every pixel, then float32, then RGB)


def test_every_decode_waits_for_the_one_budget_and_one_over_it_is_refused():
    picture = _png(np.full((64, 64, 3), 200, np.uint8))
    answers = []
    with DECODES.hold(DECODES.total):  # all of it held (as by other uploads): the web page's decode waits
        waiting = threading.Thread(target=lambda: answers.append(decode_upload("a.png", picture)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not answers
    waiting.join(30)
    assert answers and answers[0][1].shape == (64, 64, 3)
    with pytest.raises(ImageError, match="decoding budget"):  # 44 MP of gray at full size: 570 MB of arrays
        decode_image(pixel_bomb_png(6_600))
    assert DECODES.used == 0


# 5. PNG chunks


def test_a_png_of_millions_of_tiny_chunks_is_refused_before_pillow_walks_them():
    bomb = many_chunks_png(200_000)  # 2.4 MB of 12-byte chunks after the image data
    with pytest.raises(ImageError, match="more than 10,000 chunks"):
        decode_image(bomb)
    with pytest.raises(HTTPException) as refused:
        decode_upload("c.png", bomb)
    assert refused.value.status_code == 422 and "chunks" in refused.value.detail
    noise = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    assert (decode_image(_png(noise)) == noise).all()  # a normal PNG is read
    assert decode_image(many_chunks_png(5_000)).shape == (32, 32, 3)  # a few thousand chunks still are


# 6. OCR bounded per photo; a reader's failure on one photo is a skip


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """The real fp32 reader, reading at most 12 boxes a photo (the cap is what is tested: 12 keeps it quick)."""
    return TextReader(int8=False, max_boxes=12, cache_dir=tmp_path_factory.mktemp("ocr-cache"))


def test_a_text_dense_picture_is_read_within_its_bounds(reader, tmp_path):
    page = dense_text()  # ~600 words
    default = TextReader(int8=False, cache_dir=tmp_path)
    assert len(default.detect(page)) == MAX_BOXES  # hundreds found, the first MAX_BOXES in reading order kept
    text = reader([page])[0]
    assert 0 < len(text.split()) <= 12 and "lemon" in text.lower()  # the first words of the first line
    reader.max_seconds = 0.0
    try:
        assert reader([page]) == [""]  # past its time, nothing more is read
    finally:
        reader.max_seconds = MAX_SECONDS


def test_a_reader_failing_on_one_photo_is_a_reported_skip_and_the_pass_goes_on(reader, tmp_path, encoder, bundled):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        shutil.copy(bundled.path[i], folder / f"p{i}.png")
    Image.new("RGB", (64, 64), (255, 0, 255)).save(folder / "magenta.png")

    def failing(images: list[np.ndarray]) -> list[str]:  # the pass's reader call: fails on the magenta photo
        if any((image == (255, 0, 255)).all() for image in images):
            raise OcrError("reading text failed in the OCR models (an error made by the test)")
        return reader(images)

    engine = SearchEngine.open(Config(data_dir=tmp_path / "data", thumbnail_size=0), encoder)
    try:
        engine.index(folder, progress=False)
        report = read_text(engine.store, failing, folder, progress=False)  # before: OcrError out of the pass
        assert report.read == 3
        assert [(Path(s.path).name, s.reason) for s in report.skipped] == [
            ("magenta.png", "the text could not be read (OcrError: reading text failed in the OCR models (an "
             "error made by the test))")
        ]  # fmt: skip
        assert [Path(r["path"]).name for r in unread(engine.store, folder)] == ["magenta.png"]
    finally:
        engine.close()
