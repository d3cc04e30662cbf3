"""Reliability: malformed files, incremental and resumable indexing, folder sync, hostile query text."""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from t2i_helpers.cli import main
from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine
from t2i_helpers.pipelines.ingest import IngestError
from t2i_helpers.pipelines.search import MAX_QUERY_CHARS, clean_query, prepare_query

from .conftest import T2I, index_counts

rng = np.random.default_rng(0)


def _save(path, image: Image.Image, **kwargs) -> None:
    image.save(path, **kwargs)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_malformed_folder(folder) -> tuple[dict[str, str], set[str]]:
    """Write odd but valid images and broken files; returns ({broken name: reason fragment}, valid names)."""
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    valid = {
        "rgb.jpg": lambda p: _save(p, photo),
        "rgba.png": lambda p: _save(p, Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8))),
        "gray.png": lambda p: _save(p, photo.convert("L")),
        "palette-transparent.png": lambda p: _save(p, photo.convert("P"), transparency=0),
        "cmyk.jpg": lambda p: _save(p, photo.convert("CMYK")),
        "sixteen-bit.png": lambda p: _save(p, Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))),
        "animated.gif": lambda p: _save(p, photo, save_all=True, append_images=[photo.rotate(90)] * 2),
        "photo.webp": lambda p: _save(p, photo.rotate(45)),
        "photo.tiff": lambda p: _save(p, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "tiny.png": lambda p: _save(p, Image.new("RGB", (1, 1), (9, 99, 199))),
    }
    for name, write in valid.items():
        write(folder / name)
    jpeg = (folder / "rgb.jpg").read_bytes()
    png = (folder / "rgba.png").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all")
    (folder / "random.png").write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    (folder / "bomb.png").write_bytes(_png_header_only(20_000, 20_000))
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    broken = {
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "zero.png": "empty file",
        "text.jpg": "not an image",
        "random.png": "not an image",
        "bomb.png": "decompression-bomb guard",
        "dangling.jpg": "not found",
    }
    return broken, set(valid)


def test_malformed_files_are_skipped_with_reasons_and_the_rest_indexed(tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    broken, valid = make_malformed_folder(folder)
    (folder / "folder.jpg").mkdir()  # a directory named like an image: unreadable, via a CSV row
    rows = pd.DataFrame({"path": [str(folder / "folder.jpg")], "label": [""], "caption": [""]})
    engine = SearchEngine.open(Config(uri=str(tmp_path / "m.db")), encoder)
    report = engine.index(folder, progress=False)
    reasons = {os.path.basename(s.path): s.reason for s in report.skipped}
    assert set(reasons) == set(broken)
    for name, fragment in broken.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert report.added == len(valid) == engine.store.count()
    assert {os.path.basename(p) for p in engine.store.paths().values()} == valid
    unreadable = engine.index(rows, progress=False)
    assert "unreadable" in unreadable.skipped[0].reason
    engine.close()


def _copy_photos(bundled, folder, count: int, start: int = 0) -> list:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, source in enumerate(bundled.path.iloc[start : start + count]):
        target = folder / f"{start + i:04d}.png"
        shutil.copyfile(source, target)
        paths.append(target)
    return paths


def test_incremental_index_update_and_sync(tmp_path, encoder, bundled, capsys):
    folder, uri = tmp_path / "photos", str(tmp_path / "inc.db")
    paths = _copy_photos(bundled, folder, 6)
    assert main(["index", str(folder), "--uri", uri]) == 0
    assert index_counts(capsys.readouterr().out) == "added 6, unchanged 0, updated 0, removed 0, skipped 0"

    _copy_photos(bundled, folder, 1, start=50)  # a new file
    shutil.copyfile(bundled.path.iloc[60], paths[0])  # a changed file
    paths[1].unlink()  # a deleted file
    assert main(["index", str(folder), "--uri", uri]) == 0  # without --sync the deleted file's row stays
    assert index_counts(capsys.readouterr().out) == "added 1, unchanged 4, updated 1, removed 0, skipped 0"
    assert main(["index", str(folder), "--uri", uri, "--sync"]) == 0
    assert index_counts(capsys.readouterr().out) == "added 0, unchanged 6, updated 0, removed 1, skipped 0"

    engine = SearchEngine.open(Config(uri=uri), encoder)
    stored = engine.store.paths()
    assert sorted(stored.values()) == sorted(str(p) for p in folder.glob("*.png"))
    assert engine.search_image(paths[0], top_k=1)[0].path == str(paths[0])  # the new content is indexed
    engine.close()


def test_sync_only_touches_rows_under_the_source_folder(tmp_path, encoder, bundled):
    a, b = tmp_path / "a", tmp_path / "b"
    _copy_photos(bundled, a, 2)
    _copy_photos(bundled, b, 2, start=10)
    engine = SearchEngine.open(Config(uri=str(tmp_path / "s.db")), encoder)
    engine.index(a, progress=False)
    engine.index(b, progress=False)
    for p in a.glob("*.png"):
        p.unlink()
    report = engine.index(a, progress=False, sync=True)
    assert report.removed == 2 and engine.store.count() == 2
    assert all(path.startswith(str(b)) for path in engine.store.paths().values())
    with pytest.raises(ValueError, match="sync needs a folder"):
        engine.index(bundled.head(2), sync=True)
    engine.close()


def test_killed_ingest_resumes_without_duplicates_or_gaps(tmp_path, encoder, bundled):
    """SIGKILL a real `t2i index` part way, run it again: every image exactly once."""
    folder, uri, count = tmp_path / "photos", str(tmp_path / "killed.db"), 240
    _copy_photos(bundled, folder, count)
    child = subprocess.Popen([T2I, "index", str(folder), "--uri", uri], stderr=subprocess.PIPE, start_new_session=True)
    seen, done, deadline = b"", [0], time.monotonic() + 240
    # Kill without warning once a batch is in: the progress bar may skip from one batch to the end (seen on an
    # idle machine: 0, 32, 160 of 160), so waiting for a later count could miss the job.
    while time.monotonic() < deadline and max(done) == 0:
        if select.select([child.stderr], [], [], 1)[0]:
            seen += os.read(child.stderr.fileno(), 4096)
        done = [0, *(int(n) for n in re.findall(rb"(\d+)/%d" % count, seen))]
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert 0 < max(done) < count, "the ingest was not killed part way"

    engine = SearchEngine.open(Config(uri=uri), encoder)
    report = engine.index(folder, progress=False)
    assert report.added + report.unchanged == count and report.skipped == []
    assert report.added < count  # rows inserted before the kill were kept, not embedded again
    stored = engine.store.paths()
    assert len(stored) == engine.store.count() == count
    assert len(set(stored.values())) == count
    engine.close()


def test_long_query_is_cut_with_a_notice(encoder, engine, capsys):
    long_query = "a small brown dog playing on a sandy beach near the water " * 25  # ~1,500 characters
    query = prepare_query(long_query, encoder)
    assert query.notice and "cut" in query.notice
    assert clean_query(long_query).startswith(query.text) and len(query.text) < len(clean_query(long_query))
    assert engine.search(long_query, top_k=3)
    short = prepare_query("a dog", encoder)
    assert short == ("a dog", None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2500))
def test_clean_query_property(text):
    try:
        cleaned = clean_query(text)
    except ValueError:
        assert (
            not text.strip()
            or len(" ".join(text.split())) > MAX_QUERY_CHARS
            or not re.sub(r"[\x00-\x1f\x7f]", "", text).strip()
        )
        return
    assert cleaned and cleaned == cleaned.strip() and len(cleaned) <= MAX_QUERY_CHARS
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", cleaned)
    assert "  " not in cleaned


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=300).filter(lambda t: t.strip()))
def test_any_text_embeds_to_a_unit_vector(encoder, text):
    try:
        query = prepare_query(text, encoder)
    except ValueError:
        return  # only control characters: refused with a message
    vector = encoder.encode_texts([query.text])
    assert vector.dtype == np.float32 and np.isfinite(vector).all()
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_image_bytes_roundtrip_through_decoder():
    from t2i_helpers.data.images import decode_image

    out = io.BytesIO()
    Image.new("RGBA", (5, 3), (10, 20, 30, 0)).save(out, format="PNG")
    decoded = decode_image(out.getvalue())
    assert decoded.shape == (3, 5, 3) and decoded.dtype == np.uint8
    assert decoded[0, 0].tolist() == [255, 255, 255]  # transparent -> white


class _SlowEncoder:
    """A stand-in image model that is slow and can fail: lets tests watch the pipeline's flow control."""

    name, dim = "slow-test-encoder", 4

    def __init__(self, fail_on_call: int = 0) -> None:
        self.calls, self.fail_on_call, self.images_embedded, self.ahead = 0, fail_on_call, 0, []

    def encode_images(self, images):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("model exploded")
        time.sleep(0.05)
        self.images_embedded += len(images)
        return np.tile(np.float32([0.5, 0.5, 0.5, 0.5]), (len(images), 1))

    def encode_texts(self, texts):
        return np.tile(np.float32([0.5, 0.5, 0.5, 0.5]), (len(texts), 1))


def test_reading_stays_a_bounded_number_of_batches_ahead(tmp_path, bundled, monkeypatch):
    import t2i_helpers.pipelines.ingest as pipelines
    import t2i_helpers.pipelines.operators as operators

    encoder, read = _SlowEncoder(), []
    real_read = operators.read_bytes

    def counting_read(path):
        read.append(path)
        encoder.ahead.append(len(read) - encoder.images_embedded)
        return real_read(path)

    monkeypatch.setattr(operators, "read_bytes", counting_read)
    monkeypatch.setattr(pipelines, "IMAGES_IN_FLIGHT", 32)  # 8 batches of 4
    engine = SearchEngine.open(Config(uri=str(tmp_path / "flow.db"), batch_size=4), encoder)
    report = engine.index(bundled.head(200), progress=False)
    assert report.added + len(report.skipped) == 200
    # 8 batches in flight (Towhee's queues alone would allow 1,000 batches): never more than 9 x 4 images ahead
    assert max(encoder.ahead) <= 9 * 4
    engine.close()


def test_a_failing_model_stops_the_ingest_and_keeps_what_was_inserted(tmp_path, bundled):
    engine = SearchEngine.open(Config(uri=str(tmp_path / "fail.db"), batch_size=8), _SlowEncoder(fail_on_call=3))
    with pytest.raises(IngestError, match="model exploded.*run it again") as stopped:
        engine.index(bundled.head(200), progress=False)
    # batches embedded before the failure may or may not have reached Milvus; what did is flushed and counted
    assert stopped.value.report.added == engine.store.count() <= 16
    engine.close()
