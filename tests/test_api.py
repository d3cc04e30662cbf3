"""The REST API over real HTTP: uvicorn on 127.0.0.1, httpx, the real encoder and real milvus-lite files."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from t2i_helpers.config import Config
from t2i_helpers.data.images import content_id
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.load import load_test
from t2i_helpers.pipelines.search import MAX_QUERY_CHARS
from t2i_helpers.serve.api import create_api
from t2i_helpers.serve.server import BackgroundServer

from .conftest import T2I

MAX_UPLOAD = 2 << 20  # small limits, so the over-limit cases stay small
MAX_FILES = 4


@pytest.fixture(scope="module")
def api(engine, tmp_path_factory):
    """The API over the session engine (every bundled photo), read-only: its tests never write."""
    app = create_api(engine, upload_dir=tmp_path_factory.mktemp("uploads"), max_upload_bytes=MAX_UPLOAD)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def writable(encoder, bundled, tmp_path_factory):
    """The API over its own small milvus-lite file (8 photos), for uploads and deletes."""
    folder = tmp_path_factory.mktemp("writable")
    engine = SearchEngine.open(Config(uri=str(folder / "api.db")), encoder)
    engine.index(bundled[bundled.label.isin(["animals", "vehicles"])].groupby("label").head(4), progress=False)
    upload_dir = folder / "uploads"
    app = create_api(engine, upload_dir=upload_dir, max_upload_bytes=MAX_UPLOAD, max_files=MAX_FILES)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        client.engine, client.upload_dir = engine, upload_dir
        yield client
    engine.close()


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes(path: str, flip: bool = False) -> bytes:
    """A bundled photo as PNG bytes; `flip` mirrors it, which makes a new image (a new content id)."""
    with Image.open(path) as image:
        return png_of(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image)


def test_search_returns_ranked_hits_and_their_images(api, engine):
    response = api.get("/search", params={"q": "a fire truck", "k": 5})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    hits = response.json()
    fields = {"id", "score", "path", "caption", "label", "image_url", "thumbnail_url"}
    assert len(hits) == 5 and set(hits[0]) == fields | {"taken_at", "taken_from", "place", "camera", "text"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert [h["id"] for h in hits] == [h.id for h in engine.search("a fire truck", top_k=5)]
    assert hits[0]["path"].endswith("/vehicles/emergency/firetruck.png")

    image = api.get(hits[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == Path(hits[0]["path"]).read_bytes() and content_id(image.content) == hits[0]["id"]
    thumb = api.get(hits[0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as small, Image.open(hits[0]["path"]) as original:
        assert max(small.size) <= engine.config.thumbnail_size < max(original.size)
        assert abs(small.size[0] / small.size[1] - original.size[0] / original.size[1]) < 0.02
    assert api.get(hits[0]["image_url"], params={"size": "huge"}).status_code == 422

    in_food = api.get("/search", params={"q": "a fire truck", "k": 7, "category": "food"}).json()
    assert len(in_food) == 7 and {h["label"] for h in in_food} == {"food"}


def test_search_by_image_finds_the_same_photo_first(api, bundled):
    path = bundled[bundled.path.str.endswith("/animals/marsupials/kangaroo.png")].path.iloc[0]
    response = api.post(
        "/search/image", params={"k": 3}, files={"file": ("k.png", Path(path).read_bytes(), "image/png")}
    )
    assert response.status_code == 200
    hits = response.json()
    assert hits[0]["path"] == path and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_health_stats_and_openapi(api, engine):
    assert api.get("/health").json() == {"status": "ok"}
    stats = api.get("/stats").json()
    assert stats["count"] == engine.store.count() and stats["categories"] == engine.store.categories()
    assert stats["encoder"] == engine.encoder.name and stats["dim"] == engine.encoder.dim
    schema = api.get("/openapi.json").json()
    assert {"/search", "/search/image", "/images/{image_id}", "/index", "/health", "/stats"} <= set(schema["paths"])
    assert schema["paths"]["/search"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_a_query_cut_to_what_the_model_reads_says_so(api):
    longest = ("a dog on a beach " * 200)[:MAX_QUERY_CHARS]
    response = api.get("/search", params={"q": longest, "k": 2})
    assert response.status_code == 200 and len(response.json()) == 2
    assert "cut to its first" in response.headers["T2I-Query-Notice"]


@pytest.mark.parametrize(
    "query", ["un chien qui court 🐕", "🚒", "Feuerwehrauto", "消防车", "a\x00fire\ttruck\n", "' OR 1=1 --"]
)
def test_unusual_queries_are_searched(api, query):
    response = api.get("/search", params={"q": query, "k": 3})
    assert response.status_code == 200 and len(response.json()) == 3


TEXT_SEARCH_ERRORS = [
    ({"q": ""}, 422, "query is empty"),
    ({"q": " \t\n "}, 422, "query is empty"),
    ({"q": "x" * (MAX_QUERY_CHARS + 1)}, 422, f"the limit is {MAX_QUERY_CHARS}"),
    ({"q": "a dog", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"q": "a dog", "k": 10_000}, 422, "k: Input should be less than or equal to 100"),
    ({"q": "a dog", "k": "five"}, 422, "k: Input should be a valid integer"),
    ({"q": "a dog", "category": "dinosaurs"}, 404, "no images in category 'dinosaurs'; known: animals"),
    ({"q": "a dog", "category": "café 🐱"}, 404, "no images in category"),
]


@pytest.mark.parametrize(("params", "status", "message"), TEXT_SEARCH_ERRORS)
def test_bad_text_searches_get_a_clear_4xx(api, params, status, message):
    response = api.get("/search", params=params)
    assert (response.status_code, response.headers["content-type"]) == (status, "application/json")
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/images/123", 404, "no image with id 123 is indexed"),
        ("/images/-1", 422, "greater than or equal to 0"),
        ("/images/99999999999999999999", 422, "less than or equal to"),
        ("/images/abc", 422, "valid integer"),
        ("/images/..%2F..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
        ("/images/%2e%2e/%2e%2e/etc/passwd", 404, "Not Found"),
        ("/images/../../etc/passwd", 404, "Not Found"),
        ("/images/1/../../../../etc/passwd", 404, "Not Found"),
    ],
)
def test_image_ids_are_looked_up_never_used_as_paths(api, path, status, message):
    response = api.get(path)
    assert response.status_code == status and message in response.json()["detail"]
    assert b"root:" not in response.content


def test_bad_uploads_get_a_clear_4xx(api, bundled):
    def search(files=None, **params):
        response = api.post("/search/image", params=params, files=files)
        assert response.headers["content-type"] == "application/json"
        return response.status_code, response.json()["detail"]

    status, detail = search({"file": ("notes.txt", b"just text", "text/plain")})
    assert status == 415 and "'text/plain' is not accepted" in detail
    status, detail = search({"file": ("fake.png", b"just text", "image/png")})
    assert status == 422 and "fake.png: not an image file" in detail
    status, detail = search({"file": ("big.png", b"\x89PNG" + bytes(MAX_UPLOAD), "image/png")})
    assert status == 413 and "limit" in detail
    status, detail = search({"file": ("huge.png", bytes(4 * MAX_UPLOAD), "image/png")})
    assert status == 413 and "the request body is" in detail
    status, detail = search({"file": ("wide.png", png_of(Image.new("1", (10_000, 5_001))), "image/png")})
    assert status == 422 and "over the 50,000,000-pixel limit" in detail
    status, detail = search({"other": ("x.png", b"x", "image/png")})
    assert status == 422 and "file: Field required" in detail
    status, detail = search({"file": ("t.png", png_bytes(bundled.path.iloc[0]), "image/png")}, k=0)
    assert status == 422 and "k:" in detail


def test_upload_search_fetch_and_delete(writable, bundled):
    before = writable.get("/stats").json()["count"]
    stored = writable.engine.store.paths()
    fresh = bundled[~bundled.path.isin(stored.values()) & (bundled.label == "food")].head(2)
    new_a, new_b = (png_bytes(p) for p in fresh.path)
    old = Path(next(iter(stored.values()))).read_bytes()  # already indexed
    files = [
        ("files", ("banana_split.png", new_a, "image/png")),
        ("files", ("second.png", new_b, "image/png")),
        ("files", ("again.png", new_a, "image/png")),
        ("files", ("old.png", old, "image/png")),
    ]
    response = writable.post("/index", files=files, params={"label": "desserts"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["added"], report["unchanged"]) == (2, 1)
    assert report["skipped"] == [{"file": "again.png", "reason": "same image as banana_split.png"}]
    assert [i["file"] for i in report["images"]] == ["banana_split.png", "second.png", "old.png"]
    assert writable.get("/stats").json()["count"] == before + 2
    assert "desserts" in writable.get("/stats").json()["categories"]

    hits = writable.get("/search", params={"q": "food", "k": 2, "category": "desserts"}).json()
    assert {h["id"] for h in hits} == {content_id(new_a), content_id(new_b)}
    assert "banana split" in {h["caption"] for h in hits}  # the caption comes from the file name
    first = report["images"][0]
    assert writable.get(first["image_url"]).content == new_a
    assert Path(writable.upload_dir / f"{first['id']:016x}.png").read_bytes() == new_a

    deleted = writable.delete(f"/images/{first['id']}")
    assert deleted.json() == {"id": first["id"], "file_removed": True}
    assert not (writable.upload_dir / f"{first['id']:016x}.png").exists()
    assert writable.delete(f"/images/{first['id']}").status_code == 404
    assert writable.get(first["image_url"]).status_code == 404
    assert writable.get("/stats").json()["count"] == before + 1
    old_id = content_id(old)  # a photo that was not uploaded: its row goes, its file stays
    assert writable.delete(f"/images/{old_id}").json() == {"id": old_id, "file_removed": False}
    assert Path(stored[old_id]).exists()


def test_bad_index_requests_get_a_clear_4xx_and_store_nothing(writable, bundled):
    before = writable.get("/stats").json()["count"], sorted(writable.upload_dir.glob("*"))
    photo = png_bytes(bundled.path.iloc[-1], flip=True)
    cases = [
        ([("files", ("a.png", photo, "image/png")), ("files", ("b.txt", b"hi", "text/plain"))], {}, 415, "b.txt"),
        ([("files", ("a.png", photo, "image/png")), ("files", ("c.png", b"hi", "image/png"))], {}, 422, "c.png"),
        ([("files", ("a.png", photo, "image/png"))], {"label": "../etc"}, 422, "label: String should match"),
        ([("files", ("a.png", photo, "image/png"))] * (MAX_FILES + 1), {}, 400, f"number of files is {MAX_FILES}"),
        ([("other", ("a.png", photo, "image/png"))], {}, 422, "files: Field required; other: Extra inputs"),
    ]
    for files, data, status, message in cases:
        response = writable.post("/index", files=files, params=data)
        assert response.status_code == status and message in response.json()["detail"], response.text
    assert (writable.get("/stats").json()["count"], sorted(writable.upload_dir.glob("*"))) == before


def test_a_file_changed_after_indexing_is_not_served(writable, bundled):
    photo = png_bytes(bundled.path.iloc[0], flip=True)
    image = writable.post("/index", files={"files": ("flipped.png", photo, "image/png")}).json()["images"][0]
    path = writable.upload_dir / f"{image['id']:016x}.png"
    path.unlink()
    path.symlink_to("/etc/passwd")  # as if someone swapped the file for another one
    response = writable.get(image["image_url"])
    assert response.status_code == 404 and "changed after indexing" in response.json()["detail"]
    path.unlink()
    response = writable.get(image["image_url"])
    assert response.status_code == 404 and "gone from the server" in response.json()["detail"]


def test_concurrent_searches_under_load(api, engine):
    queries = ["a fire truck", "a dog", "something to eat", "a musical instrument", "a boat", "a bird", "a house"]
    expected = {q: [h.id for h in engine.search(q, top_k=5)] for q in queries}
    report = load_test(str(api.base_url), queries, clients=8, seconds=3, top_k=5)
    print(f"\nAPI load on loopback: {report.summary()}")
    assert report.errors == [] and len(report.latencies_ms) >= 50
    assert report.answers == expected  # answers under load (batched) are the answers one at a time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_t2i_serve_runs_api_and_web_app_and_stops_on_ctrl_c(tmp_path, image_folder):
    uri, port, uploads = str(tmp_path / "serve.db"), free_port(), tmp_path / "uploads"
    server = subprocess.Popen(
        [T2I, "serve", "--uri", uri, "--port", str(port), "--upload-dir", str(uploads)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.3)
        for label in ("animals", "vehicles"):  # a fresh collection, filled over HTTP
            files = [
                ("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((image_folder / label).glob("*.png"))
            ]
            assert httpx.post(f"{base}/index", files=files, params={"label": label}, timeout=120).json()["added"] == 4
        hits = httpx.get(f"{base}/search", params={"q": "a car", "k": 3, "category": "vehicles"}).json()
        assert len(hits) == 3 and all(Path(h["path"]).parent == uploads for h in hits)
        config = httpx.get(f"{base}/ui/config").json()
        assert config["title"] == "t2i · text-to-image search" and config["analytics_enabled"] is False
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    assert f"serving 0 images: API http://127.0.0.1:{port}/docs, web app http://127.0.0.1:{port}/ui/" in output
    reopened = SearchEngine.open(Config(uri=uri))  # the server let go of the milvus-lite file
    assert reopened.store.count() == 8 and reopened.store.categories() == ["animals", "vehicles"]
    reopened.close()
