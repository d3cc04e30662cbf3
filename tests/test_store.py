"""The Milvus store on a real milvus-lite file: schema checks, exact results, counts, locking."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from t2i_helpers.config import Config
from t2i_helpers.store import connection
from t2i_helpers.store.collection import EncoderMismatchError
from t2i_helpers.store.image_store import VECTOR_WINDOW, ImageStore, StoreError

SIT_IDLE = """
import sys, time
import numpy as np
from t2i_helpers.config import Config
from t2i_helpers.store.image_store import ImageStore
closed, held = (Config(uri=uri) for uri in sys.argv[1:])
store = ImageStore(closed, "enc-a", 4)
store.insert([{"id": 1, "path": "a.png"}], np.ones((1, 4), np.float32))
store.close()
ImageStore(closed, "enc-a", 4).close()
kept = ImageStore(held, "enc-a", 4)  # its server keeps running: pings would reach it
kept.insert([{"id": 1, "path": "a.png"}], np.ones((1, 4), np.float32))
time.sleep(40)  # three pings' worth
again = ImageStore(closed, "enc-a", 4)
print("reopened", again.count(), "held", kept.count())
again.close()
kept.close()
"""


@pytest.fixture(scope="module", autouse=True)
def sat_idle(tmp_path_factory):
    """A process that sits idle 40 s with milvus-lite files (see the last test), started with the module so that
    its wait overlaps the module's other tests; killed at the end of the module if still running."""
    folder = tmp_path_factory.mktemp("idle")
    files = [str(folder / "idle.db"), str(folder / "held.db")]
    process = subprocess.Popen([sys.executable, "-c", SIT_IDLE, *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def _rows(n: int, label: str = "x") -> list[dict]:
    return [{"id": i + 1, "path": f"/img/{i}.png", "label": label, "caption": f"image {i}"} for i in range(n)]


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_insert_count_get_delete(tmp_path):
    store = ImageStore(Config(uri=str(tmp_path / "s.db")), "enc-a", 8)
    assert store.insert(_rows(10), _vectors(10, 8)) == 10
    store.flush()
    assert store.count() == 10
    assert store.insert(_rows(10), _vectors(10, 8, seed=1)) == 10  # same ids: overwritten, not duplicated
    assert store.count() == 10
    assert store.existing_ids([1, 5, 99]) == {1, 5}
    assert store.get([3])[0]["caption"] == "image 2"
    store.delete([1, 2])
    assert store.count() == 8
    store.close()


def test_scan_returns_every_row_once_across_query_windows(tmp_path):
    store = ImageStore(Config(uri=str(tmp_path / "s.db")), "enc-a", 8)
    n = 3 * VECTOR_WINDOW + 17  # several windows of vectors (ids spread over the 63-bit range, as content hashes are)
    ids = np.random.default_rng(1).integers(1, 1 << 63, size=n, dtype=np.int64)
    rows = [{**row, "id": int(i)} for row, i in zip(_rows(n), ids, strict=True)]
    vectors = _vectors(n, 8)
    store.insert(rows, vectors)
    with_vectors = {r["id"]: r["embedding"] for r in store.scan(["id", "embedding"])}
    assert len(with_vectors) == n and set(with_vectors) == {int(i) for i in ids}
    assert np.allclose(with_vectors[int(ids[5])], vectors[5], atol=1e-6)
    assert len(store.scan(["path"])) == n  # without vectors, one window holds them all
    store.close()


def test_long_and_unicode_text_fields_are_kept_within_limits(tmp_path):
    store = ImageStore(Config(uri=str(tmp_path / "s.db")), "enc-a", 4)
    row = {"id": 7, "path": "/p/ü.png", "label": "🦘" * 300, "caption": "é" * 5000}
    store.insert([row], _vectors(1, 4))
    stored = store.get([7])[0]
    assert stored["caption"] == "é" * 1024  # 2,048 bytes of two-byte characters
    assert len(stored["label"].encode()) <= 512
    store.close()


def test_reopen_checks_encoder_and_dim(tmp_path):
    config = Config(uri=str(tmp_path / "s.db"))
    store = ImageStore(config, "enc-a", 8)
    store.insert(_rows(3), _vectors(3, 8))
    store.close()
    reopened = ImageStore(config, "enc-a", 8)  # released collection is loaded again on open
    assert reopened.count() == 3
    reopened.close()
    with pytest.raises(EncoderMismatchError, match="--encoder enc-a.*--reset"):
        ImageStore(config, "enc-b", 8)
    with pytest.raises(EncoderMismatchError, match="8-d vectors"):
        ImageStore(config, "enc-a", 16)
    rebuilt = ImageStore(config, "enc-b", 16, reset=True)
    assert rebuilt.count() == 0
    rebuilt.close()


def test_foreign_collection_is_refused(tmp_path):
    from pymilvus import MilvusClient

    client = MilvusClient(str(tmp_path / "s.db"))
    client.create_collection("t2i_images", dimension=4)
    client.close()
    with pytest.raises(StoreError, match="not made by t2i"):
        ImageStore(Config(uri=str(tmp_path / "s.db")), "enc-a", 4)


def test_search_matches_exact_numpy_search(engine, encoder, bundled):
    """FLAT (the default) must return exactly the brute-force top-k on the bundled set."""
    rows = engine.store.client.query(
        engine.store.collection, filter="", output_fields=["id", "embedding"], limit=10_000
    )
    ids = np.array([r["id"] for r in rows])
    matrix = np.array([r["embedding"] for r in rows], np.float32)
    queries = encoder.encode_texts(list(bundled.caption.sample(25, random_state=1)))
    hits = engine.store.search(queries, top_k=10)
    for q, found in zip(queries, hits):
        scores = matrix @ q
        expected = scores[np.argsort(-scores)[:10]]
        np.testing.assert_allclose([h.score for h in found], expected, atol=1e-4)
        assert set(h.id for h in found) <= set(ids[scores >= expected[-1] - 1e-4])


def test_category_filter_and_top_k_bounds(engine, encoder):
    query = encoder.encode_texts(["a bus"])
    hits = engine.store.search(query, top_k=20, category="vehicles")[0]
    assert len(hits) == 20 and {h.label for h in hits} == {"vehicles"}
    assert engine.store.search(query, top_k=5, category="no-such-category")[0] == []
    for bad in (0, 100_000):
        with pytest.raises(ValueError, match="top_k"):
            engine.store.search(query, top_k=bad)
    assert "vehicles" in engine.store.categories()


def test_second_process_gets_a_clear_error(tmp_path):
    config = Config(uri=str(tmp_path / "locked.db"))
    store = ImageStore(config, "enc-a", 4)
    code = (
        "from t2i_helpers.store.image_store import ImageStore, StoreError; from t2i_helpers.config import Config\n"
        f"try:\n    ImageStore(Config(uri={config.uri!r}), 'enc-a', 4)\n"
        "except StoreError as err:\n    print('REFUSED', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "REFUSED" in done.stdout and "another process" in done.stdout
    assert store.count() == 0  # the first process still works
    store.close()


def test_closing_the_last_store_of_a_lite_file_stops_its_server_and_frees_the_file(tmp_path):
    """Notebook 02 opened a file per encoder and kept each one's milvus-lite server running until the kernel exited
    (13 servers, 1.5 GB); a store's close now stops the server once no other store of the process uses the file."""
    config = Config(uri=str(tmp_path / "shared.db"))
    code = (
        "from t2i_helpers.store.image_store import ImageStore, StoreError; from t2i_helpers.config import Config\n"
        f"try:\n    ImageStore(Config(uri={config.uri!r}), 'enc-a', 4).close(); print('OPENED')\n"
        "except StoreError as err:\n    print('REFUSED', err)\n"
    )
    first, second = ImageStore(config, "enc-a", 4), ImageStore(config.with_(collection="other"), "enc-a", 4)
    first.close()
    first.close()  # a second close releases nothing more
    assert second.count() == 0  # the other store of the same file still works
    second.close()
    freed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OPENED" in freed.stdout, freed.stdout + freed.stderr[-2000:]


def test_a_milvus_lite_file_slow_to_answer_is_waited_for(tmp_path, monkeypatch):
    """A fresh file on a loaded machine once outlasted pymilvus's 10 s wait and was blamed on another process."""
    monkeypatch.setattr(connection, "LITE_FIRST_S", 1e-6)  # the first wait cannot succeed
    store = ImageStore(Config(uri=str(tmp_path / "slow.db")), "enc-a", 4)
    store.insert([{"id": 1, "path": "a.png"}], np.ones((1, 4), np.float32))
    assert store.count() == 1
    store.close()


def test_lite_refuses_index_types_it_cannot_build(tmp_path):
    with pytest.raises(StoreError, match="cannot build a DISKANN index.*Milvus server"):
        ImageStore(Config(uri=str(tmp_path / "s.db"), index_type="DISKANN"), "enc-a", 4)


def test_a_milvus_lite_3_folder_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "old.db").mkdir()
    with pytest.raises(StoreError, match="is a folder.*move it aside"):
        ImageStore(Config(uri=str(tmp_path / "old.db")), "enc-a", 4)


def test_index_build_parameters_reach_milvus_lite(tmp_path):
    config = Config(uri=str(tmp_path / "s.db"), index_type="IVF_FLAT", index_params={"nlist": 7})
    store = ImageStore(config, "enc-a", 8)
    described = store.client.describe_index(store.collection, "embedding")
    assert described["index_type"] == "IVF_FLAT" and described["nlist"] == "7"
    store.close()


def test_non_ascii_paths_and_categories(tmp_path):
    store = ImageStore(Config(uri=str(tmp_path / "s.db")), "enc-a", 4)
    names = ["café/été.png", 'a"quote.png', "back\\slash.png", "🦘 kangaroo.png"]
    store.insert([{"id": i + 1, "path": p, "label": p[:4], "caption": ""} for i, p in enumerate(names)], _vectors(4, 4))
    assert {p: state.id for p, state in store.file_states(names).items()} == {p: i + 1 for i, p in enumerate(names)}
    assert [h.path for h in store.search(_vectors(1, 4), 4, category="café")[0]] == ["café/été.png"]
    store.close()


def test_a_flat_cosine_collection_gets_an_ip_index_in_place_with_the_same_hits(tmp_path):
    uri, queries = str(tmp_path / "s.db"), _vectors(5, 8, seed=3)
    old = ImageStore(Config(uri=uri, metric="COSINE"), "enc-a", 8)  # as collections were made before IP
    old.insert(_rows(40), _vectors(40, 8))
    before = old.search(queries, top_k=10)
    old.close()
    store = ImageStore(Config(uri=uri), "enc-a", 8)
    assert store.metric == "IP" and store.info()["metric"] == "IP"
    assert store.client.describe_index(store.collection, "embedding")["metric_type"] == "IP"
    after = store.search(queries, top_k=10)
    assert store.count() == 40
    assert _ids(after) == _ids(before)
    scores = [[[h.score for h in hits] for hits in found] for found in (after, before)]
    np.testing.assert_allclose(*scores, atol=1e-5)
    store.client.release_collection(store.collection)  # a rebuild cut off between dropping the index and making it
    store.client.drop_index(store.collection, "embedding")
    store.close()
    again = ImageStore(Config(uri=uri), "enc-a", 8)
    assert _ids(again.search(queries, top_k=10)) == _ids(before)
    again.close()


def _ids(found: list[list]) -> list[list[int]]:
    return [[h.id for h in hits] for hits in found]


def test_a_collection_of_another_index_keeps_it_and_searches_with_its_metric(tmp_path):
    uri = str(tmp_path / "s.db")
    ImageStore(Config(uri=uri, metric="COSINE", index_type="IVF_FLAT", index_params={"nlist": 4}), "enc-a", 8).close()
    store = ImageStore(Config(uri=uri), "enc-a", 8)  # IVF is not rebuilt: it is trained on the rows
    store.insert(_rows(20), _vectors(20, 8))
    assert store.metric == "COSINE"
    assert [h.id for h in store.search(_vectors(20, 8)[:1], top_k=1)[0]] == [1]
    store.close()


def test_a_closed_milvus_lite_file_reopens_after_sitting_idle(sat_idle):
    """pymilvus's default 10 s keepalive drew GOAWAY "too_many_pings" from milvus-lite's server after ~30 s
    idle, and the next open of a file opened and closed twice before (a notebook re-run) failed, blaming
    another process. A store's close now stops the file's server, so the file held open is where the pings
    would reach a server: with pymilvus's defaults its log says "too_many_pings" (measured), with ours nothing.
    Last in the module: the 40 s idle process started with the module's first test (`sat_idle`)."""
    out, err = (text.decode(errors="replace") for text in sat_idle.communicate(timeout=180))
    assert sat_idle.returncode == 0, err[-2000:]
    assert out.split() == ["reopened", "1", "held", "1"]
    assert "too_many_pings" not in err and "GOAWAY" not in err, err[-2000:]
