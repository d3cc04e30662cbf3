"""The Ray ingest against a real Milvus server and a real two-node Ray cluster, both on 127.0.0.1.

Needs the `distributed` and `server` extras (`pip install -e ".[server,distributed]"`: Ray and the PyPI Milvus
server); without them these tests skip. Every Ray job runs under a time limit: a job that hangs fails its test
with a message instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from pymilvus import MilvusClient

from t2i_helpers.cli import main
from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_source
from t2i_helpers.pipelines import distributed
from t2i_helpers.pipelines.distributed import chunk_files, plan_resources
from t2i_helpers.pipelines.ingest import IngestError, ingest
from t2i_helpers.store.collection import PHOTO_FIELDS
from t2i_helpers.store.image_store import ImageStore, StoreError

from .conftest import T2I, index_counts, write_bad_files
from .photos import write_library

HAVE_RAY = importlib.util.find_spec("ray") is not None  # not imported here: Ray must be set up first (below)
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='the Ray ingest needs `pip install -e ".[distributed]"`')
JOB_LIMIT_S = 240  # one Ray ingest of at most ~150 photos on a shared 2-core machine takes 20-60 s


def within(seconds: float, call, what: str):
    """`call()`'s result, or a failed test if it has not returned after `seconds` (it keeps running, a daemon)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # re-raised in the test's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(
            f"{what} did not finish within {seconds:.0f} s: the Ray job hangs (an actor pool that claims every "
            "CPU starves the read tasks: 'backpressured:tasks(ResourceBudget)'); see distributed.plan_resources"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- sizing and chunking: plain functions ---------------------------------------------------------------


@pytest.mark.parametrize("nodes", [[0.75], [1], [2], [1, 1], [4], [16, 16], [8, 4, 0], [8] * 12])
@pytest.mark.parametrize("actors", [None, 1, 2, 5])
def test_the_actor_pool_always_leaves_cpus_for_the_read_and_write_tasks(nodes, actors):
    plan = plan_resources(nodes, actors)
    usable = [c for c in nodes if c]
    assert plan.actors == (actors or len(usable))  # by default one actor per node
    assert plan.cpus == sum(usable) and plan.actor_cpus > 0
    per_node = -(-plan.actors // len(usable))
    assert per_node * plan.actor_cpus + 2 * plan.task_cpus <= min(usable)  # a read and a write task always fit
    assert plan.actors * plan.actor_cpus + 2 * plan.task_cpus <= plan.cpus
    if actors is None and min(usable) >= 2:
        assert plan.actor_cpus >= 0.5 * min(usable)  # and the cluster is used, not left idle
    assert plan.tasks >= 1 and plan.actors * plan.actor_cpus + 2 * plan.tasks * plan.task_cpus <= plan.cpus + 1e-9


@pytest.mark.parametrize(("nodes", "tasks"), [([1], 1), ([1, 1], 2), ([0, 1, 1], 2), ([1] * 4, 4), ([4, 4], 4)])
def test_the_cpus_the_actors_leave_are_split_between_read_and_write_tasks(nodes, tasks):
    """Capped at these counts, Ray Data's budget runs them all: uncapped, two 1-CPU nodes ran one of each."""
    plan = plan_resources(nodes)
    assert plan.tasks == tasks
    assert plan.actors * plan.actor_cpus + 2 * plan.tasks * plan.task_cpus == pytest.approx(plan.cpus)


def test_a_cluster_too_small_for_any_job_is_refused():
    with pytest.raises(ValueError, match="needs 0.6"):
        plan_resources([0.5])
    with pytest.raises(ValueError):
        plan_resources([])


def test_copies_of_an_image_share_a_chunk_in_their_listed_order():
    sizes = [5, 7, 5, 9, 7, 5] + list(range(100, 140))
    records = [{"path": f"p{i}", "size": size} for i, size in enumerate(sizes)]
    chunks = chunk_files(records, files_per_chunk=8)
    assert sorted(r["path"] for c in chunks for r in c) == sorted(r["path"] for r in records)  # each file once
    for size in (5, 7):
        holding = [c for c in chunks if any(r["size"] == size for r in c)]
        assert len(holding) == 1  # every file of one size in one chunk
    for chunk in chunks:
        order = [int(r["path"][1:]) for r in chunk]
        assert order == sorted(order)  # the first listed copy is read first, as in the local ingest
    assert max(len(c) for c in chunks) <= 8 and len(chunks) >= len(records) // 8


def test_ray_is_an_optional_extra_that_nothing_imports_unasked():
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.startswith("ray")]
    assert project["optional-dependencies"]["distributed"] == ["ray[data]==2.60.*"]
    modules = "t2i_helpers.cli, t2i_helpers.engine, t2i_helpers.pipelines.distributed"
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr  # t2i works, and imports Ray only for --engine ray


def test_a_ray_address_without_the_ray_engine_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as usage:
        main(["index", "bundled", "--ray-address", "127.0.0.1:6379"])
    assert usage.value.code == 2 and "--ray-address is for --engine ray" in capsys.readouterr().err


def test_the_cli_refuses_milvus_lite_for_the_ray_engine_at_once(tmp_path, image_folder):
    started = time.perf_counter()
    done = subprocess.run(
        [T2I, "index", str(image_folder), "--uri", str(tmp_path / "t.db"), "--engine", "ray"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    expected = "milvus-lite" if HAVE_RAY else "pip install"
    assert lines[0].startswith("t2i: error: ") and expected in lines[0] and "Traceback" not in done.stderr
    if HAVE_RAY:
        assert "--uri http://" in lines[0]
    assert not (tmp_path / "t.db").exists()  # nothing was created
    assert time.perf_counter() - started < 60  # refused before the encoder or Ray loads


# --- against a Milvus server and a two-node Ray cluster ------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster of two nodes (one CPU each) on 127.0.0.1: separate raylets, object stores, workers."""
    if not HAVE_RAY:
        pytest.skip('needs `pip install -e ".[distributed]"`')
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray's first import: loopback
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_num_workers_soft_limit", str(distributed.IDLE_WORKERS))  # as the deployment's nodes
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 200 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "include_dashboard": False})
    cluster.add_node(**loopback)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def photos(bundled):
    """~120 bundled photos in six categories, with one image stored twice (two paths, one id)."""
    copies = bundled[bundled.path.str.endswith("/fireman240a.png")]
    assert len(copies) == 2
    picked = bundled[bundled.label.isin(["animals", "food", "vehicles", "plants", "sports", "town"])]
    return pd.concat([picked.groupby("label").head(20), copies]).drop_duplicates("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def local_ids(milvus_uri, encoder, photos):
    """What the local ingest stores for `photos` on the same server: {id: path} and its report."""
    store = ImageStore.open(Config(uri=milvus_uri, collection="local_reference"), encoder, reset=True)
    try:
        report = ingest(photos, encoder, store, progress=False)
        return store.paths(), report
    finally:
        store.close()


def ray_ingest(rows, encoder, uri, collection, cluster, reset=False, **options):
    store = ImageStore.open(Config(uri=uri, collection=collection), encoder, reset=reset)
    try:
        report = within(
            JOB_LIMIT_S,
            lambda: distributed.ingest(rows, encoder, store, ray_address=cluster.address, progress=False, **options),
            "the Ray ingest",
        )
        return report, store_ids(store)
    finally:
        store.close()


def store_ids(store: ImageStore) -> dict[int, str]:
    """Every stored id with its path, after checking that no id is stored twice."""
    rows = store.scan(["id", "path"])
    ids = [int(r["id"]) for r in rows]
    assert len(ids) == len(set(ids)) == store.count(), "an image is stored more than once"
    return {int(r["id"]): r["path"] for r in rows}


def test_the_ray_ingest_stores_what_the_local_ingest_stores(milvus_uri, ray_cluster, encoder, photos, local_ids):
    expected, local = local_ids
    report, stored = ray_ingest(photos, encoder, milvus_uri, "ray_same", ray_cluster, reset=True)
    assert (
        report.summary() == local.summary() == f"added {len(photos) - 1}, unchanged 0, updated 0, removed 0, skipped 1"
    )
    assert stored == expected  # the same ids (content hashes), each at the same path
    assert report.skipped == local.skipped  # the later copy, "same image as" the first, as the local ingest says
    assert report.files == len(photos) and report.seconds > 0

    config = Config(uri=milvus_uri, collection="ray_same")
    ray_store, local_store = (ImageStore.open(c, encoder) for c in (config, config.with_(collection="local_reference")))
    try:
        some = sorted(expected)[:8]
        vectors = [
            np.array([r["embedding"] for r in sorted(s.client.get(s.collection, ids=some), key=lambda r: r["id"])])
            for s in (ray_store, local_store)
        ]
        np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)  # the same decode and the same encoder
    finally:
        ray_store.close()
        local_store.close()

    again, stored = ray_ingest(photos, encoder, milvus_uri, "ray_same", ray_cluster)
    assert (again.added, again.unchanged, again.updated) == (0, len(photos) - 1, 0)  # skipped on the driver
    assert stored == expected


def test_a_rerun_with_nothing_new_never_starts_ray_and_ray_prints_nothing(
    milvus_uri, ray_cluster, encoder, image_folder
):
    animals = image_folder / "animals"
    (animals / "copy.png").write_bytes((animals / "0.png").read_bytes())  # never stored: read on every run
    bad = write_bad_files(image_folder)
    common = [T2I, "index", str(image_folder), "--uri", milvus_uri, "--collection", "ray_rerun"]
    first = subprocess.run(
        [*common, "--engine", "ray", "--ray-address", ray_cluster.address],
        capture_output=True,
        text=True,
        timeout=JOB_LIMIT_S,
    )
    assert first.returncode == 0, first.stderr
    assert index_counts(first.stdout) == f"added 9, unchanged 0, updated 0, removed 0, skipped {len(bad) + 1}"
    lines = first.stderr.strip().splitlines()  # Ray joined a cluster and ran the job: only t2i's own lines show
    assert len(lines) == len(bad) + 1 and all(line.startswith("skipped ") for line in lines), first.stderr

    with socket.socket() as free:  # no Ray listens here: a re-run that joined Ray would fail
        free.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{free.getsockname()[1]}"
    again = subprocess.run(
        [*common, "--engine", "ray", "--ray-address", nowhere], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert index_counts(again.stdout) == f"added 0, unchanged 9, updated 0, removed 0, skipped {len(bad) + 1}"
    assert again.stderr.splitlines() == lines  # the same skips, said the same way


def test_corrupt_files_are_reported_skips(milvus_uri, ray_cluster, encoder, tmp_path, image_folder):
    bad = write_bad_files(image_folder)
    rows = load_source(image_folder)
    report, stored = ray_ingest(rows, encoder, milvus_uri, "ray_corrupt", ray_cluster, reset=True)
    reasons = {os.path.basename(s.path): s.reason for s in report.skipped}
    assert set(reasons) == set(bad)
    for name, fragment in bad.items():
        assert fragment in reasons[name]
    assert report.added == len(stored) == len(rows) - len(bad)  # 8 photos and ok.png


def test_a_worker_killed_mid_job_is_retried_without_duplicates_or_gaps(
    milvus_uri, ray_cluster, encoder, photos, local_ids
):
    expected, _ = local_ids
    watch = ImageStore.open(Config(uri=milvus_uri, collection="ray_killed"), encoder, reset=True)
    killed: list[tuple[int, int]] = []  # (pid, rows stored when it was killed)

    def kill_an_embedder() -> None:
        deadline = time.monotonic() + JOB_LIMIT_S
        while time.monotonic() < deadline and not killed:
            stored = watch.count()
            actors = [
                p for p in psutil.process_iter(["cmdline"]) if "ImageEmbedder" in " ".join(p.info["cmdline"] or [])
            ]
            if stored > 0 and actors:
                os.kill(actors[0].pid, signal.SIGKILL)
                killed.append((actors[0].pid, stored))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_embedder, daemon=True)
    killer.start()
    try:
        report, stored = ray_ingest(photos, encoder, milvus_uri, "ray_killed", ray_cluster, batch_size=4, actors=2)
    finally:
        killer.join(5)
        watch.close()
    assert killed and killed[0][1] < len(expected), f"no embedding actor was killed mid-job ({killed})"
    assert not psutil.pid_exists(killed[0][0]) or psutil.Process(killed[0][0]).status() == psutil.STATUS_ZOMBIE
    assert stored == expected  # every image once: nothing missing, nothing twice
    assert report.summary() == f"added {len(expected)}, unchanged 0, updated 0, removed 0, skipped 1"


def test_upserts_of_the_same_ids_at_the_same_time_leave_each_row_once(milvus_uri, encoder):
    """The store's own guarantee under concurrency (Milvus 2.3 upsert = delete + insert at one timestamp)."""
    config = Config(uri=milvus_uri, collection="upsert_race")
    ImageStore.open(config, encoder, reset=True).close()
    rows = [
        {"id": i, "path": f"/photos/{i}.jpg", "label": "", "caption": "", "size": i, "mtime_ns": i} for i in range(300)
    ]
    start = threading.Barrier(4)

    def writer(seed: int) -> None:
        store = ImageStore.open(config, encoder)
        vectors = np.random.default_rng(seed).normal(size=(len(rows), encoder.dim)).astype(np.float32)
        try:
            start.wait()
            for lo in range(0, len(rows), 50):  # the same ids, batch by batch, from four clients at once
                store.insert(rows[lo : lo + 50], vectors[lo : lo + 50])
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    store = ImageStore.open(config, encoder)
    try:
        store.flush()
        assert sorted(store_ids(store)) == list(range(300))
        hits = store.search(np.ones((1, encoder.dim), np.float32), top_k=300)[0]
        assert len({h.id for h in hits}) == len(hits) == 300  # a search sees each row once too
    finally:
        store.close()


def test_concurrent_writers_on_overlapping_sets_store_every_image_once(
    milvus_uri, ray_cluster, encoder, photos, local_ids, tmp_path
):
    expected, _ = local_ids
    parts = [photos.iloc[: len(photos) * 2 // 3], photos.iloc[len(photos) // 3 :]]  # overlapping: together all
    csvs = []
    for i, part in enumerate(parts):
        csvs.append(tmp_path / f"part{i}.csv")
        part[["path", "label", "caption"]].to_csv(csvs[-1], index=False)
    ImageStore.open(Config(uri=milvus_uri, collection="ray_writers"), encoder, reset=True).close()
    common = ["--uri", milvus_uri, "--collection", "ray_writers"]
    commands = [  # a local `t2i index` and a Ray `t2i index` on the two-node cluster, at the same time
        [T2I, "index", str(csvs[0]), *common],
        [T2I, "index", str(csvs[1]), *common, "--engine", "ray", "--ray-address", ray_cluster.address],
    ]
    writers = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    try:
        outputs = [writer.communicate(timeout=JOB_LIMIT_S) for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err
        assert index_counts(out).startswith("added ")  # the same summary line for either engine
    store = ImageStore.open(Config(uri=milvus_uri, collection="ray_writers"), encoder)
    try:
        assert store_ids(store) == expected  # every image exactly once, whoever wrote it
    finally:
        store.close()


@needs_ray
def test_an_encoder_name_the_actors_cannot_load_is_refused_before_ray_starts(milvus_uri, encoder, photos):
    store = ImageStore.open(Config(uri=milvus_uri, collection="ray_bad_encoder"), encoder, reset=True)
    try:
        with pytest.raises(ValueError, match="unknown encoder 'no-such-encoder'"):
            distributed.ingest(photos, encoder, store, encoder_spec="no-such-encoder")
        with pytest.raises(StoreError, match="loads another encoder"):
            distributed.ingest(photos, encoder, store, encoder_spec="conse-effnet-lite0-minilm")
        assert store.count() == 0
    finally:
        store.close()


def test_a_job_that_fails_part_way_stops_with_one_line_instead_of_hanging(milvus_uri, ray_cluster, encoder, photos):
    config = Config(uri=milvus_uri, collection="ray_dropped")
    store = ImageStore.open(config, encoder, reset=True)
    # The collection is dropped once the job's tasks hold the cluster's CPUs, i.e. after the driver has listed the
    # files and while the job runs, however the shared CPU schedules it. (A named pipe as the last file used to
    # hold the job open; ingest now refuses pipes at once, so a read can no longer be made to wait.)
    dropped = []

    def drop_the_collection_once_the_job_runs() -> None:
        import ray

        deadline = time.monotonic() + JOB_LIMIT_S
        while time.monotonic() < deadline and not dropped:
            with contextlib.suppress(Exception):  # Ray not connected yet
                if ray.is_initialized() and ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
                    stored = store.count()
                    store.client.drop_collection(config.collection)
                    dropped.append(stored)
            time.sleep(0.02)

    dropper = threading.Thread(target=drop_the_collection_once_the_job_runs, daemon=True)
    dropper.start()
    try:
        with pytest.raises(IngestError) as failed:
            within(
                JOB_LIMIT_S,
                lambda: distributed.ingest(
                    photos, encoder, store, ray_address=ray_cluster.address, batch_size=4, progress=False
                ),
                "a Ray ingest whose collection was dropped",
            )
    finally:
        dropper.join(5)
        store.close()
    assert dropped and dropped[0] <= len(photos) - 1, f"the collection was not dropped mid-job ({dropped})"
    message = str(failed.value)
    assert message.startswith("the Ray ingest stopped after storing ") and "\n" not in message
    assert "collection" in message.lower() and "Traceback" not in message
    assert config.collection not in MilvusClient(uri=milvus_uri).list_collections()  # no worker made it anew


@needs_ray
def test_milvus_lite_is_refused(tmp_path, encoder, photos):
    store = ImageStore.open(Config(uri=str(tmp_path / "lite.db")), encoder)
    try:
        with pytest.raises(StoreError, match="milvus-lite .* allows one: index into a Milvus server"):
            distributed.ingest(photos, encoder, store)
    finally:
        store.close()


def test_the_ray_ingest_stores_each_photos_time_camera_and_place_as_the_local_one(
    milvus_uri, ray_cluster, encoder, tmp_path
):
    rows = load_source(next(iter(write_library(tmp_path / "photos").values())).parent)
    fields = {}
    for name in ("ray_photo_fields", "local_photo_fields"):
        if name.startswith("ray"):
            report, _ = ray_ingest(rows, encoder, milvus_uri, name, ray_cluster, reset=True)
        else:
            store = ImageStore.open(Config(uri=milvus_uri, collection=name), encoder, reset=True)
            report = ingest(rows, encoder, store, progress=False)
            store.close()
        assert report.added == len(rows)
        store = ImageStore.open(Config(uri=milvus_uri, collection=name), encoder)
        fields[name] = {r["path"]: {k: r[k] for k in PHOTO_FIELDS} for r in store.scan(["path", *PHOTO_FIELDS])}
        store.close()
    ray, local = fields["ray_photo_fields"], fields["local_photo_fields"]
    assert ray == local
    assert {f["place"] for f in ray.values()} >= {"Lisbon, Portugal", "Tokyo, Japan", "Rio de Janeiro, Brazil"}
    assert {f["taken_from"] for f in ray.values()} == {"exif", "file"}
