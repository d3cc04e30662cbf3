"""Hostile files and hostile requests against the real `t2i index` and `t2i serve` (the security review's nine
findings, each with a file or request made here), and the service staying up while they arrive."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.images import ImageError, decode_image, read_bytes
from t2i_helpers.engine import SearchEngine
from t2i_helpers.serve.api import create_api
from t2i_helpers.serve.server import BackgroundServer, serve_app

from .conftest import T2I
from .hostile_files import jp2_with_a_smaller_header, pixel_bomb_png, progressive_scan_bomb, write_hostile_folder

KEY = "hostile-test-key-0123456789"


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The peak growth of this process's resident memory while the block runs (sampled every 2 ms), in MB."""

    def __enter__(self) -> PeakRss:
        self.start, self.peak, self._done = _rss_mb(), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss_mb() - self.start)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb() - self.start)


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, encoder, bundled):
    """Twenty bundled photos copied into a folder of their own and indexed (the tests delete and swap files)."""
    folder = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(bundled.path.head(20)):
        shutil.copy(path, folder / f"p{i}.png")
    engine = SearchEngine.open(Config(data_dir=tmp_path_factory.mktemp("data")), encoder)  # thumbnails there too
    engine.index(folder, progress=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(small_engine, tmp_path_factory):
    """The API and the web page over the small engine, without a key (the default: loopback only)."""
    app = serve_app(small_engine, upload_dir=tmp_path_factory.mktemp("uploads"))
    with BackgroundServer(app) as running:
        yield running


def _upload(url: str, name: str, data: bytes, content_type: str = "image/png") -> httpx.Response:
    return httpx.post(f"{url}/search/image", files={"file": (name, data, content_type)}, timeout=30)


# 1. JPEG 2000 whose header hides the size of its codestream


def test_a_jp2_whose_header_hides_its_size_is_refused_before_decoding(server):
    jp2 = jp2_with_a_smaller_header(real=1024, claimed=16)
    with Image.open(io.BytesIO(jp2)) as header:
        assert header.size == (16, 16)  # what the header says; the codestream holds 1024 x 1024
    with pytest.raises(ImageError, match="JPEG2000 pictures are not read"):
        decode_image(jp2, max_pixels=10_000)  # decoded before: a 1024 x 1024 array past a 10,000-pixel limit
    started = time.perf_counter()
    answer = _upload(server.url, "a.png", jp2)
    assert answer.status_code == 415 and time.perf_counter() - started < 2, answer.text


# 2. Progressive JPEG with thousands of scans


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_and_a_normal_one_is_read(bundled):
    with pytest.raises(ImageError, match="3010 scans"):
        decode_image(progressive_scan_bomb(scans=3000))
    photo = np.asarray(Image.open(bundled.path[0]).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(photo).save(out, "JPEG", progressive=True, quality=90)  # libjpeg's progression: 10 scans
    assert out.getvalue().count(b"\xff\xda") == 10
    assert decode_image(out.getvalue()).shape == photo.shape


# 3. A large body without the key


def test_a_body_without_the_key_is_refused_before_a_byte_of_it_is_read(small_engine, tmp_path):
    declared = 300 << 20
    app = create_api(small_engine, upload_dir=tmp_path / "uploads", api_key=KEY)
    with BackgroundServer(app) as running, socket.create_connection(running.url[7:].split(":")) as conn:
        host = running.url[7:]
        conn.sendall(
            f"POST /index HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
            + b"x" * (64 << 10)  # 64 KB of the 300 MB: a server that waits for the body never answers
        )
        conn.settimeout(10)
        answer = b""
        while b"}" not in answer:  # the status line and headers, then the JSON body, maybe in two packets
            answer += conn.recv(4096) or b"}"
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 401"), answer[:200]
    assert "X-API-Key header is missing" in answer
    assert not (tmp_path / "uploads").exists()


# 4. DNS rebinding and cross-site requests


def test_a_foreign_host_and_a_cross_site_write_are_refused(server, bundled):
    rebinding = httpx.get(f"{server.url}/search", params={"q": "a dog"}, headers={"Host": "attacker.example:80"})
    assert rebinding.status_code == 400 and "does not answer to host" in rebinding.json()["detail"]
    assert httpx.get(f"{server.url}/ui/", headers={"Host": "attacker.example"}).status_code == 400
    picture = Path(bundled.path[0]).read_bytes()
    for headers in ({"Origin": "http://attacker.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        posted = httpx.post(
            f"{server.url}/index", files={"files": ("a.png", picture, "image/png")}, headers=headers, timeout=30
        )
        assert posted.status_code == 403 and "another site" in posted.json()["detail"], headers
    same_site = httpx.post(
        f"{server.url}/search/image",
        files={"file": ("a.png", picture, "image/png")},
        headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
        timeout=30,
    )
    assert same_site.status_code == 200 and len(same_site.json()) == 5
    assert httpx.get(f"{server.url}/search", params={"q": "a dog"}, headers={"Host": "localhost"}).status_code == 200


# 5-7. A name that is not UTF-8, FIFOs, links to /dev/zero: reported skips, everything else indexed


def test_a_non_utf8_name_a_fifo_and_dev_zero_are_skips_and_the_rest_is_indexed(tmp_path, encoder, bundled):
    good, bad = write_hostile_folder(tmp_path / "photos", [Path(p) for p in bundled.path.head(3)])
    engine = SearchEngine.open(Config(data_dir=tmp_path / "data"), encoder)
    report = engine.index(tmp_path / "photos", progress=False)
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(skipped) == set(bad)
    for name, reason in bad.items():
        assert reason in skipped[name], (name, skipped[name])
    stored = engine.store.paths().values()
    assert {Path(p).name for p in stored} == good and report.added == len(good)
    captions = {h.path: h.caption for h in engine.search("a photo", top_k=3)}
    assert set(captions.values()) == {""}  # the FIFO and /dev/zero captions are no caption, not a hang
    engine.close()


def test_reads_are_regular_files_only_and_bounded(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"\0" * 2048)
    for name in ("pipe", "zero"):
        with pytest.raises(ImageError, match="not a regular file"):
            read_bytes(tmp_path / name)
    with pytest.raises(ImageError, match="larger than the 1,024-byte limit"):
        read_bytes(tmp_path / "big", max_bytes=1024)


def test_an_indexed_file_swapped_for_a_fifo_is_a_404_not_a_hung_worker(small_engine, server):
    hit = small_engine.search("a photo", top_k=1)[0]
    original = Path(hit.path).read_bytes()
    Path(hit.path).unlink()
    os.mkfifo(hit.path)
    try:
        answer = httpx.get(f"{server.url}/images/{hit.id}", timeout=10)
        assert answer.status_code == 404 and "not a regular file" in answer.json()["detail"]
    finally:
        Path(hit.path).unlink()
        Path(hit.path).write_bytes(original)
    assert httpx.get(f"{server.url}/images/{hit.id}", timeout=10).content == original


# 8. The web page's uploads: the API's check


def test_the_web_page_refuses_a_pixel_bomb_like_the_api(server, tmp_path):
    from gradio_client import Client, handle_file

    bomb = tmp_path / "huge.png"
    bomb.write_bytes(pixel_bomb_png(12_000))  # 144 MP in ~170 KB
    client = Client(f"{server.url}/ui/", verbose=False, download_files=False)
    started = time.perf_counter()
    with PeakRss() as memory:
        _, status = client.predict(  # the gallery and the status line (the state stays on the server)
            handle_file(str(bomb)), 5, "all categories", False, "", "", "", "", "", api_name="/by_image"
        )  # the picture, k, category, literal, then after, before, place, camera and text (no filter)
    elapsed = time.perf_counter() - started
    print(f"web page pixel bomb: {elapsed:.2f} s, peak RSS growth {memory.peak:.0f} MB")
    assert "over the 50,000,000-pixel limit" in status
    assert elapsed < 2 and memory.peak < 200  # before: 3.8 s and +1.4 GB, decoded by the page
    assert _upload(server.url, "huge.png", bomb.read_bytes()).status_code == 422  # the API says the same


# 9. DELETE removes what was derived from the image


def test_delete_removes_the_cached_thumbnail(small_engine, server, bundled):
    picture = Path(bundled.path[30]).read_bytes()
    added = httpx.post(f"{server.url}/index", files={"files": ("new.png", picture, "image/png")}, timeout=60).json()
    image_id = added["images"][0]["id"]
    assert httpx.get(f"{server.url}/images/{image_id}", params={"size": "thumb"}).status_code == 200
    thumbnail = small_engine.thumbnails.path(image_id)
    assert thumbnail.is_file()
    assert httpx.delete(f"{server.url}/images/{image_id}").json()["file_removed"] is True
    assert not thumbnail.exists()


def test_a_query_of_zero_width_characters_is_empty(server):
    for query in ("\u200b\u200b\u200b", "\ufeff \u2060", "\u200d"):
        answer = httpx.get(f"{server.url}/search", params={"q": query})
        assert answer.status_code == 422 and "the query is empty" in answer.json()["detail"], query
    assert httpx.get(f"{server.url}/search", params={"q": "a\u200bdog"}).status_code == 200


# Under attack: every hostile upload a quick 4xx, memory bounded, searches still answered


def test_under_attack_every_hostile_upload_is_a_quick_4xx_and_searches_go_on(server):
    hostile = {
        "jp2 named png": ("a.png", jp2_with_a_smaller_header(4096, 16), "image/png"),
        "scan bomb": ("s.jpg", progressive_scan_bomb(3000), "image/jpeg"),
        "pixel bomb": ("p.png", pixel_bomb_png(12_000), "image/png"),
        "not a picture": ("n.png", b"\x89PNG\r\n\x1a\n" + os.urandom(4000), "image/png"),
    }
    searching, searched, failures = threading.Event(), [], []

    def keep_searching() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not searching.is_set():
                answer = client.get("/search", params={"q": "a red kangaroo", "k": 3})
                (searched if answer.status_code == 200 and len(answer.json()) == 3 else failures).append(answer)

    with ThreadPoolExecutor(1) as pool:
        background = pool.submit(keep_searching)
        for name, (filename, data, content_type) in hostile.items():
            started = time.perf_counter()
            with PeakRss() as memory:
                answer = _upload(server.url, filename, data, content_type)
            elapsed = time.perf_counter() - started
            print(f"{name}: {answer.status_code} in {elapsed:.2f} s, peak RSS growth {memory.peak:.0f} MB")
            assert 400 <= answer.status_code < 500 and elapsed < 2 and memory.peak < 200, (name, answer.text)
        searching.set()
        background.result()
    assert searched and not failures


def test_t2i_index_on_a_hostile_folder_finishes_with_each_bad_file_a_reported_skip(tmp_path, bundled):
    good, bad = write_hostile_folder(tmp_path / "photos", [Path(p) for p in bundled.path.head(4)])
    env = {**os.environ, "T2I_DATA_DIR": str(tmp_path / "data")}  # the index and its thumbnails
    done = subprocess.run(
        [T2I, "index", str(tmp_path / "photos")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"added {len(good)}," in done.stdout and f"skipped {len(bad)}" in done.stdout
    for name, reason in bad.items():
        assert any(name in line and reason in line for line in done.stderr.splitlines()), (name, done.stderr)
    assert "Traceback" not in done.stderr
