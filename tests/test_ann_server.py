"""The ANN study on a real Milvus 2.3 server (PyPI `milvus`, started by `milvus_server`): the server builds HNSW
and IVF and honours `ef` and `nprobe`, which milvus-lite ignores. Without the package these tests skip."""

from __future__ import annotations

import socket
import sys
from urllib.parse import urlparse

import numpy as np
import pytest
from pymilvus import MilvusClient

from t2i_helpers.measure.ann import COLLECTION, IndexSweep, cheapest_at, index_study, index_support
from t2i_helpers.models.encoders import l2_normalize
from t2i_helpers.store.milvus_server import MilvusServerError, milvus_server, server_available

needs_server = pytest.mark.skipif(not server_available(), reason='the server tests need pip install -e ".[server]"')


@pytest.fixture(scope="module")
def collection():
    """5,000 random unit vectors (64-d) and 100 random queries: no clusters, so a cheap search parameter
    loses neighbours."""
    rows = l2_normalize(np.random.default_rng(0).normal(size=(5100, 64)).astype(np.float32))
    return rows[:5000], rows[5000:]


@needs_server
def test_the_server_honours_ef_and_nprobe(milvus_uri, collection):
    vectors, queries = collection
    sweeps = [
        IndexSweep("FLAT", {}),
        IndexSweep("IVF_FLAT", {"nlist": 64}, ({"nprobe": 1}, {"nprobe": 64})),
        IndexSweep("IVF_SQ8", {"nlist": 64}, ({"nprobe": 1}, {"nprobe": 64})),
        IndexSweep("HNSW", {"M": 16, "efConstruction": 100}, ({"ef": 10}, {"ef": 200})),
    ]
    table = index_study(vectors, queries, sweeps, n_latency=5, uri=milvus_uri)
    recall = dict(zip(table["index"] + " " + table.params, table["recall@10"]))
    assert table.backend.tolist() == ["numpy"] + ["milvus server"] * 7
    assert recall["FLAT "] == 1.0  # searches that do not wait for new writes still see every flushed row
    assert recall["IVF_FLAT nlist=64 nprobe=1"] < 0.9 and recall["IVF_FLAT nlist=64 nprobe=64"] == 1.0
    assert recall["IVF_SQ8 nlist=64 nprobe=1"] < recall["IVF_SQ8 nlist=64 nprobe=64"]
    assert recall["IVF_SQ8 nlist=64 nprobe=64"] >= 0.9  # 8-bit codes lose a little even when every list is read
    assert recall["HNSW M=16, efConstruction=100 ef=10"] < recall["HNSW M=16, efConstruction=100 ef=200"]
    assert recall["HNSW M=16, efConstruction=100 ef=200"] >= 0.95
    assert (table.p50_ms > 0).all() and (table.build_s[1:] > 0).all()
    picked = cheapest_at(table, recall=0.95)
    assert picked[picked["index"] == "IVF_FLAT nlist=64"].params.tolist() == ["nprobe=64"]
    assert not MilvusClient(uri=milvus_uri).has_collection(COLLECTION)  # the study leaves nothing behind


@needs_server
def test_the_server_builds_what_milvus_lite_refuses(milvus_uri, collection):
    vectors, queries = collection
    table = index_support(vectors[:2000], queries[:20], ["HNSW", "IVF_SQ8", "NO_SUCH_INDEX"], uri=milvus_uri)
    assert table.builds.tolist() == [True, True, False]
    assert (table["recall@10"].iloc[:2] > 0.5).all() and "NO_SUCH_INDEX" in table.note.iloc[2]


@needs_server
def test_a_second_server_runs_beside_the_first_and_stops_when_the_block_ends(milvus_uri):
    with milvus_server() as uri:
        assert uri != milvus_uri
        client = MilvusClient(uri=uri)
        client.create_collection("probe", dimension=4)
        assert client.list_collections() == ["probe"]
        client.close()
        assert "probe" not in MilvusClient(uri=milvus_uri).list_collections()  # its own etcd, its own data
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", urlparse(uri).port), timeout=2).close()
    first = MilvusClient(uri=milvus_uri)  # the first one still works
    first.create_collection("after", dimension=4)
    assert "after" in first.list_collections()
    first.drop_collection("after")


@needs_server
def test_a_server_that_does_not_start_in_time_is_stopped_with_a_clear_error():
    with pytest.raises(MilvusServerError, match="did not start"):
        with milvus_server(start_timeout_s=0.01):
            pytest.fail("the block must not run")


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "milvus", None)  # how Python marks a module as not importable
    assert not server_available()
    with pytest.raises(MilvusServerError, match=r'pip install -e "\.\[server\]"'):
        with milvus_server():
            pytest.fail("the block must not run")
