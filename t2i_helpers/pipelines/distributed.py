"""Ingest as a Ray Data job: tasks read and decode, an actor pool embeds, a Milvus datasink writes (notebook 04).

    driver:  list files once, skip those stored with the same size and mtime (as the local ingest does)
             -> chunks of files, copies of one image (same size) always in one chunk
    tasks:   read, hash, drop stored images, decode (the local ingest's own functions)   [flat_map]
    actors:  one encoder per actor, a batch of images per call                           [map_batches]
    sink:    upsert rows, delete the rows they replace, final flush                      [write_datasink]

Ids (content hashes), de-duplication, the encoder check, updates and the flush are those of the local ingest,
because every stage calls the same functions (`operators.read_file`, `drop_stored`, `decode_file`,
`write_rows`) on an `ImageStore`. Ray is an optional extra: `pip install -e ".[distributed]"`.

Example:
    >>> report = ingest(load_source("photos/"), encoder, ImageStore.open(Config(uri=server), encoder),
    ...                 encoder_spec="conse-effnet-minilm")
    >>> report.summary()
    'added 784, unchanged 0, updated 0, removed 0, skipped 1'
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..config import Config
from ..data.images import Thumbnails
from ..models.encoders import Encoder, load_encoder
from ..store.collection import PHOTO_FIELDS
from ..store.image_store import ImageStore, StoreError
from .ingest import IngestError, list_files
from .operators import Decoded, IngestReport, Skipped, decode_file, drop_stored, read_file

FILES_PER_CHUNK = 32  # files per read task
TASK_CPUS = 0.25  # what a read or write task claims: they wait on files and Milvus as much as they compute
# Idle worker processes a Ray node keeps ($RAY_num_workers_soft_limit where its raylet starts). Ray's default, the
# node's free CPUs, is 0 while the actors and tasks claim them all: each idle worker is killed after 1 s and the
# next task starts a new one (seconds of imports on a busy core); on two 1-CPU nodes no task ran for minutes.
IDLE_WORKERS = 8
# Ray Data's cluster autoscaler, in the driver ($RAY_DATA_CLUSTER_AUTOSCALER). Its default, RATE_BASED, limits the
# job to the CPUs its throughput model asks for (1.25 of two 1-CPU nodes: a node's unasked fraction is not handed
# out), its budget reserves them upstream first, and no write task ran until every read and embedding was done.
# V2 asks for whole nodes, so the job keeps every CPU of nodes with whole CPUs (docs/distributed.md).
DATA_AUTOSCALER = "V2"
_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
# "ValueError: ..." lines of a worker's traceback: (the error's type, its message)
_RAISED = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception)\w*): (.+)$", re.MULTILINE)
INSTALL_HINT = 'the Ray ingest needs Ray: pip install -e ".[distributed]" (or pip install "ray[data]")'


class RayPlan(NamedTuple):
    """How a Ray ingest uses the cluster: embedding actors and their CPUs, read and write tasks and theirs."""

    cpus: float
    actors: int
    actor_cpus: float
    task_cpus: float
    tasks: int  # read tasks at once, and as many write tasks: what the actors leave of the CPUs


def plan_resources(node_cpus: list[float], actors: int | None = None) -> RayPlan:
    """Size the actor pool from the cluster's nodes so that read and write tasks always have CPUs left.

    An actor pool that claims every CPU starves the read tasks that feed it, and the job hangs
    ("backpressured:tasks(ResourceBudget)"). So on every node actors leave at least a quarter of its CPUs,
    and room for a read and a write task. By default there is one actor per node: an encoder already runs one
    forward pass per core of its machine (ConSE's ONNX passes, torch's threads), and two actors on two cores
    measured half the images/s of one (benchmarks/distributed.py).

    The CPUs the actors leave go to read and write tasks in equal numbers (`tasks` of each), and the job caps
    each stage at that. Uncapped, Ray Data's budget splits those CPUs by its own shares: on two 1-CPU nodes it
    ran one read and one write task at a time (a quarter of the CPUs unclaimed) and the actors waited for input.

    Args:
        node_cpus: the CPUs of each node (`ray.nodes()`); nodes without CPUs are ignored.
        actors: how many embedding actors; by default one per node.

    Returns:
        The plan; on each node the actors placed there claim no more than its CPUs less room for two tasks.
    """
    nodes = [c for c in node_cpus if c > 0]
    smallest = min(nodes, default=0.0)
    if smallest < 2 * TASK_CPUS + 0.1:
        raise ValueError(
            f"the Ray cluster's smallest node has {smallest:g} CPUs; the ingest needs {2 * TASK_CPUS + 0.1:g}"
        )
    actors = actors or len(nodes)
    per_node = -(-actors // len(nodes))  # actors per node, rounded up
    actor_cpus = math.floor(min(smallest * 0.75, smallest - 2 * TASK_CPUS) / per_node * 100) / 100
    tasks = max(1, math.floor((sum(nodes) - actors * actor_cpus) / (2 * TASK_CPUS) + 1e-9))
    return RayPlan(sum(nodes), actors, actor_cpus, TASK_CPUS, tasks)


def chunk_files(records: list[dict], files_per_chunk: int = FILES_PER_CHUNK) -> list[list[dict]]:
    """Records in chunks of about `files_per_chunk`, every file of one size in the same chunk, in order.

    Copies of an image have the same size, so each read task sees every copy in its chunk and skips the later
    ones exactly as the local ingest does ("same image as ..."), keeping the first in the records' order.
    """
    by_size: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        by_size.setdefault(record["size"], []).append(i)
    chunks: list[list[int]] = [[]]
    for group in by_size.values():
        if chunks[-1] and len(chunks[-1]) + len(group) > files_per_chunk:
            chunks.append([])
        chunks[-1].extend(group)
    return [[records[i] for i in sorted(chunk)] for chunk in chunks if chunk]


def read_chunk(
    item: dict, config: Config, encoder_name: str, dim: int, min_side: int | None, thumbnails: Thumbnails | None
) -> list[dict]:
    """A Ray task: read, hash and decode one chunk of files -> one row per new image, then one tally row.

    Image rows carry `image` and `replaces` (-1: none); the tally row (`tally`: JSON of the chunk's file count,
    unchanged count and skips) travels with them to the sink, so a retried task is counted once.
    """
    from .sink import open_store

    decoded, tally = read_files(open_store(config, encoder_name, dim), json.loads(item["files"]), min_side, thumbnails)
    return [*(_row(d.row, d.image) for d in decoded), _row({}, _NO_IMAGE, tally)]


def read_files(
    store: ImageStore, records: list[dict], min_side: int | None, thumbnails: Thumbnails | None
) -> tuple[list[Decoded], dict]:
    """Read, hash and decode files the store lacks -> (the decoded images, a tally of files, unchanged, skips)."""
    read = [read_file(row) for row in records]
    skipped = [r for r in read if isinstance(r, Skipped)]
    kept = drop_stored(store, [r for r in read if not isinstance(r, Skipped)], seen={})
    decoded = [decode_file(row, data, min_side, thumbnails) for row, data in kept.fresh]
    skipped += kept.skipped + [d for d in decoded if isinstance(d, Skipped)]
    tally = {"files": len(read), "unchanged": kept.unchanged, "skipped": [list(s) for s in skipped]}
    return [d for d in decoded if isinstance(d, Decoded)], tally


def nothing_new(store: ImageStore, todo: list[dict], report: IngestReport, min_side: int | None) -> bool:
    """Whether the few files left to read (at most a chunk) hold no new image: then Ray need not start.

    A re-run of an unchanged folder still lists the files that are never stored (a copy of another image, an
    unreadable file): read and hashed here, on the driver, they are counted as the local ingest counts them.
    """
    if len(todo) > FILES_PER_CHUNK:
        return False
    decoded, tally = read_files(store, todo, min_side, None)
    if not decoded:
        report.add(unchanged=tally["unchanged"], skipped=[Skipped(*s) for s in tally["skipped"]])
    return not decoded


def _row(row: dict, image: np.ndarray, tally: dict | None = None) -> dict:
    replaces = row.get("replaces")
    return {
        "id": int(row.get("id", -1)),
        **{k: str(row.get(k, "")) for k in ("path", "label", "caption")},
        **{k: int(row.get(k, -1)) for k in ("size", "mtime_ns")},
        "replaces": -1 if replaces is None else int(replaces),
        "photo": json.dumps({k: row[k] for k in PHOTO_FIELDS if k in row}),  # time, camera, place (exif.py)
        "image": image,
        "tally": json.dumps(tally) if tally else "",
    }


def check_ray_ready(config: Config) -> None:
    """Refuse a Ray ingest that cannot run, before anything is loaded: Ray missing, or a milvus-lite store.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
        StoreError: `config.uri` is a milvus-lite file (one writing process), not a Milvus server.
    """
    if importlib.util.find_spec("ray") is None:
        raise ImportError(INSTALL_HINT)
    if config.is_lite:
        raise StoreError(
            f"the Ray ingest writes from many processes and milvus-lite ({config.uri}) allows one: "
            "index into a Milvus server (--uri http://host:19530), or drop --engine ray"
        )


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Ray, joined at `address` (or `$RAY_ADDRESS`), or a local instance started for this block and stopped after.

    Quiet: no dashboard, no usage statistics, workers' logs and Ray's C++ error lines kept out of the terminal
    (set `RAY_BACKEND_LOG_LEVEL` to see those). A local instance, or a cluster on this machine (a loopback
    address), is reached on 127.0.0.1 only: Ray's `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes it bind there,
    which must be set before Ray is first imported in the process. A Ray already initialized is used as it is,
    and the environment is left as it is then (a token mode set here would reach clusters started after).
    """
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        yield
        return
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or "local"  # "local": never join a cluster by accident
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    if address == "local" or host in ("localhost", "::1") or host.startswith("127."):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind to, and connect over, 127.0.0.1
    if address == "local":
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a local instance, without its warning
        os.environ.setdefault("RAY_num_workers_soft_limit", str(IDLE_WORKERS))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray

    with _stderr_silenced():  # Ray's C++ core prints a line on stderr as it starts, whatever its log level
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def ingest(
    rows: pd.DataFrame,
    encoder: Encoder,
    store: ImageStore,
    encoder_spec: str | None = None,
    ray_address: str | None = None,
    batch_size: int = Config.batch_size,
    actors: int | None = None,
    progress: bool = True,
    sync_root: str | Path | None = None,
    verify: bool = False,
    thumbnails: Thumbnails | None = None,
) -> IngestReport:
    """Index a dataset (columns path, label, caption) as a Ray Data job into a Milvus server collection.

    The same incremental, resumable ingest as `pipelines.ingest`, with the same report; the files are listed
    and the unchanged ones skipped here, on the driver, and the rest is read, embedded and written on the cluster.

    Args:
        encoder: the encoder, loaded here (its name, dimension and input size); each actor loads its own.
        store: the collection, opened on a Milvus server (milvus-lite allows one writing process).
        encoder_spec: the name each actor passes to `load_encoder`; by default `encoder.name`.
        ray_address: a Ray cluster to join (`host:6379`, `ray://host:10001`); None joins `$RAY_ADDRESS`, or
            starts a local Ray for this run and stops it after.
        batch_size: images per actor call (one forward batch of the encoder).
        actors: embedding actors; by default one per node (`plan_resources`).
        progress: show Ray Data's progress bars.
        sync_root, verify: as for `pipelines.ingest`.
        thumbnails: where the read tasks write each new image's thumbnail (on a cluster: a folder every node
            shares at the same path); None writes none.

    Returns:
        The report: added, unchanged, updated, removed and skipped (with reasons), and the time it took.

    Raises:
        ImportError: Ray is not installed.
        StoreError: `store` is a milvus-lite file, or `encoder_spec` loads another encoder.
        ValueError: `encoder_spec` is not a name `load_encoder` knows.
        IngestError: the job stopped part way; run it again to finish (stored images are not embedded again).
    """
    check_ray_ready(store.config)
    spec = encoder_spec or encoder.name
    loaded = load_encoder(spec)  # the encoder given, from load_encoder's cache, unless spec names another
    if (loaded.name, loaded.dim) != (encoder.name, encoder.dim):
        raise StoreError(
            f"encoder name {spec!r} loads another encoder than {encoder.name!r}: pass the name it was loaded with "
            "as encoder_spec, so that every Ray actor loads the same encoder"
        )
    started = time.perf_counter()
    report = IngestReport()
    records, todo = list_files(rows, store, report, sync_root, verify, thumbnails)
    stored_before = store.count()
    try:
        if todo and not nothing_new(store, todo, report, getattr(encoder, "image_size", None)):
            with ray_session(ray_address):
                from ray.data import DataContext  # imported once ray_session has set Ray's environment

                from .sink import MilvusDatasink

                DataContext.get_current().enable_progress_bars = progress
                os.environ.setdefault("RAY_DATA_CLUSTER_AUTOSCALER", DATA_AUTOSCALER)  # read as each job starts
                plan = cluster_plan(actors)
                plan = plan._replace(tasks=min(plan.tasks, len(chunk_files(todo))))  # no more tasks than chunks
                stages = ingest_dataset(todo, encoder, spec, store.config, plan, batch_size, thumbnails)
                sink = MilvusDatasink(store, report)
                with _quiet("ray.data"), _quiet("pymilvus"):  # both log a failure in full before it is raised
                    stages.write_datasink(sink, ray_remote_args={"num_cpus": plan.task_cpus}, concurrency=plan.tasks)
    except Exception as err:
        with contextlib.suppress(Exception):  # tasks' counts only reach the report at the end: ask the collection
            report.added = max(report.added, store.count() - stored_before)
        raise IngestError(
            f"the Ray ingest stopped after storing {report.added} new images: {_cause(err)}. Fix the cause and "
            "run it again: images already stored are not embedded again.",
            report,
        ) from err
    finally:
        report.finish(started, len(records))
    return report


def cluster_plan(actors: int | None = None) -> RayPlan:
    """`plan_resources` for the cluster Ray is connected to."""
    import ray

    return plan_resources([n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]], actors)


def ingest_dataset(
    todo: list[dict],
    encoder: Encoder,
    encoder_spec: str,
    config: Config,
    plan: RayPlan,
    batch_size: int = Config.batch_size,
    thumbnails: Thumbnails | None = None,
):
    """The Ray Dataset of the ingest, not run yet: chunks of files -> read tasks -> embedding actors.

    Returns:
        A lazy `ray.data.Dataset` of embedded image rows and tally rows, for `MilvusDatasink`.
    """
    import ray.data

    from .sink import ImageEmbedder

    name, dim = encoder.name, encoder.dim
    chunks = [{"files": json.dumps(chunk)} for chunk in chunk_files(todo)]
    read_options = {"config": config, "encoder_name": name, "dim": dim, "thumbnails": thumbnails}
    return (
        ray.data.from_items(chunks, override_num_blocks=len(chunks))
        .flat_map(
            read_chunk,
            fn_kwargs={**read_options, "min_side": getattr(encoder, "image_size", None)},
            compute=ray.data.TaskPoolStrategy(size=plan.tasks),  # Ray Data's budget then gives reads their share
            num_cpus=plan.task_cpus,
        )
        .map_batches(
            ImageEmbedder,
            fn_constructor_kwargs={"encoder_spec": encoder_spec, "encoder_name": name, "dim": dim},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(plan.actors, len(chunks))),  # no idle actors
            num_cpus=plan.actor_cpus,
        )
    )


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send this process's file descriptor 2 to /dev/null for a block (what C++ code writes there too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a logger for a block: Ray Data logs each failure with its stack before raising it."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _cause(err: BaseException) -> str:
    """What went wrong, in one line, from under Ray's wrapping (the innermost error that says something)."""
    chain: list[BaseException] = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = getattr(err, "cause", None) or err.__cause__
    for inner in reversed(chain):
        text = str(inner).strip()
        if type(inner).__module__.startswith("ray"):  # its text holds the worker's traceback: take the error line
            raised = [message for kind, message in _RAISED.findall(text) if not kind.startswith("ray.")]
            if raised:  # the last error the user's code raised, not Ray's "UDF failed" wrapper around it
                return raised[-1].strip()
        elif text:
            return text.splitlines()[0]
    return type(chain[0]).__name__
