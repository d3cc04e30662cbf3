"""The same code against a real Milvus server (PyPI `milvus`: an embedded Milvus 2.3 standalone, no Docker).

The server comes from the `server` extra (`pip install -e ".[server]"`); without it these tests skip.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from pymilvus import MilvusClient

from t2i_helpers.config import Config
from t2i_helpers.engine import NoIndexError, SearchEngine
from t2i_helpers.serve.api import create_api
from t2i_helpers.serve.server import BackgroundServer
from t2i_helpers.store.collection import EncoderMismatchError
from t2i_helpers.store.face_store import FACE_DIM, FaceRow, face_id, read_marker
from t2i_helpers.store.filters import Filters
from t2i_helpers.store.image_store import ImageStore
from t2i_helpers.store.milvus_server import server_available

pytestmark = pytest.mark.skipif(not server_available(), reason='the server tests need pip install -e ".[server]"')


@pytest.fixture
def photos(bundled):
    """Twelve real photos in three categories, with the fire truck among them."""
    picked = bundled[bundled.label.isin(["animals", "vehicles", "food"])].groupby("label").head(4)
    truck = bundled[bundled.path.str.endswith("/vehicles/emergency/firetruck.png")]
    return pd.concat([picked.iloc[:11], truck]).drop_duplicates("path")


def test_index_search_serve_delete_on_a_server(milvus_uri, encoder, photos):
    config = Config(uri=milvus_uri, collection="server_test")
    engine = SearchEngine.open(config, encoder, reset=True)
    try:
        assert not engine.config.is_lite
        report = engine.index(photos, progress=False)
        assert (report.added, report.skipped) == (len(photos), [])
        assert engine.store.count() == len(photos)

        hits = engine.search("a fire truck", top_k=3)
        assert hits[0].path.endswith("firetruck.png") and hits[0].score >= hits[1].score >= hits[2].score
        assert {h.label for h in engine.search("a fire truck", top_k=4, category="food")} == {"food"}
        assert engine.store.categories() == sorted(photos.label.unique())
        again = engine.index(photos, progress=False)
        assert (again.added, again.unchanged) == (0, len(photos))

        with BackgroundServer(create_api(engine)) as server:  # the REST API over the server, too
            found = httpx.get(f"{server.url}/search", params={"q": "a fire truck", "k": 3}).json()
            stats = httpx.get(f"{server.url}/stats").json()
            image = httpx.get(f"{server.url}{found[0]['image_url']}")
        assert found[0]["id"] == hits[0].id
        assert stats["uri"] == milvus_uri and stats["count"] == len(photos)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

        doomed = [h.id for h in engine.search("something to eat", top_k=2)]
        engine.store.delete(doomed)
        assert engine.store.count() == len(photos) - 2  # Strong consistency: the count sees the delete
        assert not set(doomed) & {h.id for h in engine.search("something to eat", top_k=len(photos))}
    finally:
        engine.close()

    reopened = SearchEngine.open(config, encoder)  # an existing collection, loaded again
    try:
        assert reopened.store.count() == len(photos) - 2
    finally:
        reopened.close()


def test_server_collection_refuses_another_encoder(milvus_uri, encoder):
    config = Config(uri=milvus_uri, collection="server_mismatch")
    ImageStore.open(config, encoder, reset=True).close()
    with pytest.raises(EncoderMismatchError, match=f"--encoder {encoder.name}"):
        ImageStore(config, "conse-effnet-lite0-minilm", encoder.dim)
    with pytest.raises(EncoderMismatchError, match="512-d"):
        ImageStore(config, encoder.name, 512)


def test_search_on_a_server_opens_only_what_exists(milvus_uri, encoder, photos):
    missing = Config(uri=milvus_uri, collection="never_indexed")
    with pytest.raises(NoIndexError, match="no index at .* \\(collection 'never_indexed'\\) yet"):
        SearchEngine.open_index(missing)
    assert "never_indexed" not in MilvusClient(uri=milvus_uri).list_collections()  # nothing was created

    built = Config(uri=milvus_uri, collection="server_recorded")
    SearchEngine.open(built, encoder, reset=True).close()
    engine = SearchEngine.open_index(built.with_(encoder="conse-effnet-lite0-minilm"))  # config's name is ignored
    try:
        assert engine.encoder.name == encoder.name
    finally:
        engine.close()


def test_hybrid_search_on_a_2_3_server_is_refused_in_one_sentence(milvus_uri, encoder, photos):
    """Milvus 2.3 has no sparse vectors nor BM25 (measured by the store's probe): no keyword field, a clear refusal,
    and vector search, range search and near-duplicates work as on milvus-lite."""
    from t2i_helpers.explore.duplicates import near_duplicates, radius_check
    from t2i_helpers.explore.questions import stored_images
    from t2i_helpers.pipelines.hybrid import keyword_search
    from t2i_helpers.store.connection import read_meta
    from t2i_helpers.store.image_store import StoreError
    from t2i_helpers.store.keywords import keyword_support

    config = Config(uri=milvus_uri, collection="server_hybrid")
    engine = SearchEngine.open(config, encoder, reset=True)
    try:
        assert engine.store.meta["keywords"] is False and read_meta(config)["keywords"] is False
        assert "104" in keyword_support(engine.store.client, config)  # "create index on 104 field is not supported"
        assert not [c for c in MilvusClient(uri=milvus_uri).list_collections() if "probe" in c]  # the probe is gone
        engine.index(photos, progress=False)
        assert engine.search("a fire truck", top_k=1)[0].path.endswith("firetruck.png")
        refusal = r"^keyword and hybrid search need sparse vectors and BM25, which this Milvus server \(v2\.3\.5"
        with pytest.raises(StoreError, match=refusal + r".*\) lacks: use Milvus >= 2\.5 or milvus-lite$"):
            engine.hybrid_search("a fire truck")
        with pytest.raises(StoreError, match=refusal):
            keyword_search(engine.store, ["a fire truck"])

        images = stored_images(engine.store)
        check = radius_check(engine.store, images.image_embeddings, radius=0.8, limit=len(photos))
        assert check.iloc[0]["below radius"] > 0 and check.iloc[1]["below radius"] == 0  # the server honours it
        assert (near_duplicates(engine.store, images, threshold=0.95).similarity > 0.95).all()
    finally:
        engine.close()


def test_the_faces_collection_on_a_server(milvus_uri):
    """Faces beside photos on Milvus 2.3 (hand-made rows: no face model needed): the box array, a person's photos
    in one query, a photo's deletion taking its faces with it."""
    store = ImageStore(Config(uri=milvus_uri, collection="server_faces"), "test", 4, reset=True)
    try:
        store.insert([{"id": i, "path": f"/photos/{i}.jpg"} for i in (1, 2)], np.eye(4, dtype=np.float32)[:2])
        store.faces.ensure()
        unit = np.eye(FACE_DIM, dtype=np.float32)
        store.faces.write(
            [
                FaceRow(face_id(1, 0), 1, True, (1, 2, 30, 40), 0.9, 0, "Anna", unit[0]),
                FaceRow(face_id(2, 0), 2, True, (5, 6, 50, 60), 0.9, 0, "Anna", unit[1]),
                FaceRow(face_id(2, 1), 2, True, (70, 6, 50, 60), 0.8, 1, "Bob", unit[2]),
                read_marker(1),
                read_marker(2),
            ]
        )
        assert store.faces.photos_of(["anna"]) == {1, 2} and store.faces.photos_of(["Anna", "Bob"]) == {2}
        assert [h.id for h in store.newest(5, filters=Filters(person="Bob"))] == [2]
        store.delete([2])
        assert store.faces.read_photos() == {1}
        assert [(f.photo_id, f.box, f.name) for f in store.faces.faces()] == [(1, (1, 2, 30, 40), "Anna")]
    finally:
        store.close()
