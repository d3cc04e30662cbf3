"""The Ray ingest against the local ingest: the same photos into the same Milvus server, on this machine.

In one run, against a Milvus server started here on 127.0.0.1 (the `server` extra), each ingest into a fresh
collection of its own:
  (a) the local ingest (`t2i index`: the Towhee pipeline in this process);
  (b) the Ray ingest as `t2i index --engine ray` runs it: a local Ray started for the job and stopped after;
  (c) inside one Ray session that is already up: a job of a few images (what a job costs before any image:
      actors start and load the encoder), then the whole set with 1 and with 2 embedding actors;
  (a') the local ingest again, so that the baseline brackets the Ray runs on a shared machine.
It prints `ratio ray/local` (images/s of b over the mean of a and a': below 1, Ray is slower),
`ratio ray_warm/local` (c with the default plan over the same), the fixed costs (Ray's start, a job's start)
and the images/s per actor once a job runs (its images over its time less the small job's). On one machine Ray
can only add overhead: the same cores read, decode and embed, plus Ray's processes and the copies between them.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/distributed.py   # 785 photos, ~5 min on 2 cores
    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/distributed.py --photos 200

With `--scaling`: a Ray cluster on this machine whose nodes are each confined to one CPU core (a raylet of
`num_cpus=1`, as `ray start --num-cpus 1` starts it, pinned to its core with its workers; a head node with no
CPUs beside them), against a Milvus server started here. The same folder (`--photos`, default 2,400: the
bundled photos plus the transformed copies benchmarks/search.py makes, written under data/bench/scaling/) is
ingested into fresh collections by the local ingest pinned to the first core, by Ray on one node and by Ray on
two nodes. Each rate is the job's steady rate: the collection's row count, sampled every 0.5 s from another
connection, between 10% and 90% of the rows (the start-up of Ray's workers and actors left out). The driver,
Ray's head and the Milvus server are not pinned: they share the two cores with the nodes.

    flock /tmp/t2i-bench.lock .venv/bin/python benchmarks/distributed.py --scaling   # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pymilvus import MilvusClient
from search import make_photos  # benchmarks/search.py: the bundled photos plus transformed copies

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.models.cpu import describe
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.pipelines import distributed
from t2i_helpers.pipelines.ingest import ingest
from t2i_helpers.store.image_store import ImageStore
from t2i_helpers.store.milvus_server import INSTALL_HINT, milvus_server

SMALL_JOB = 8  # images in the job that measures what a job costs before its images
BENCH_DIR = Path("data/bench/scaling")


def timed_ingest(engine: str, rows, encoder, uri: str, collection: str, **options):
    """(report, stored ids) of one ingest into a fresh collection."""
    store = ImageStore.open(Config(uri=uri, collection=collection), encoder, reset=True)
    try:
        if engine == "local":
            report = ingest(rows, encoder, store, progress=False)
        else:
            report = distributed.ingest(rows, encoder, store, progress=False, **options)
        return report, set(store.paths())
    finally:
        store.close()


def main() -> None:
    """Run (a), (b), (c) and (a') and print the ratios; or, with --scaling, the scaling run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=0, help="index only the first N photos (0: all, or 2,400)")
    parser.add_argument("--scaling", action="store_true", help="Ray on 1 and 2 single-core nodes (see above)")
    args = parser.parse_args()
    print(describe(), flush=True)  # first: which CPU the figures below come from
    needs = {"ray": distributed.INSTALL_HINT, "milvus": INSTALL_HINT}  # the distributed and server extras
    missing = [hint for package, hint in needs.items() if importlib.util.find_spec(package) is None]
    if missing:  # before anything starts
        print(f"skipped: {'; '.join(missing)}")
        return
    if args.scaling:
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        scaling(args.photos or 2400, cores=[0, 1])
        return
    rows = load_bundled()
    rows = rows.head(args.photos) if args.photos else rows
    encoder = load_encoder()
    with milvus_server() as uri:
        local, local_ids = timed_ingest("local", rows, encoder, uri, "bench_local")
        print(f"(a) local ingest: {local.summary()}; {local.throughput()}")

        cold, cold_ids = timed_ingest("ray", rows, encoder, uri, "bench_ray_cold")
        print(f"(b) Ray ingest, Ray started for the job: {cold.summary()}; {cold.throughput()}")
        assert cold_ids == local_ids and cold.summary() == local.summary(), "the two ingests stored different rows"

        started = time.perf_counter()
        with distributed.ray_session():
            ray_start = time.perf_counter() - started
            plan = distributed.cluster_plan()
            print(
                f"(c) Ray session up in {ray_start:.1f} s: {plan.cpus:g} CPUs; default plan {plan.actors} "
                f"actor(s) x {plan.actor_cpus:g} CPU, {plan.tasks} read and {plan.tasks} write task(s) "
                f"x {plan.task_cpus:g} CPU"
            )
            small, _ = timed_ingest("ray", rows.head(SMALL_JOB), encoder, uri, "bench_ray_small")
            print(f"    a job of {SMALL_JOB} images: {small.seconds:.1f} s (actors start and load the encoder)")
            warm = {}
            for actors in sorted({1, 2, plan.actors}):
                report, ids = timed_ingest("ray", rows, encoder, uri, f"bench_ray_{actors}", actors=actors)
                assert ids == local_ids, "the Ray ingest stored different rows"
                per_image = (report.files - SMALL_JOB) / max(report.seconds - small.seconds, 1e-9)
                warm[actors] = report
                print(
                    f"    {actors} actor(s): {report.throughput()}; beyond a job's start {per_image:.0f} images/s, "
                    f"{per_image / actors:.0f} images/s per actor"
                )
        again, _ = timed_ingest("local", rows, encoder, uri, "bench_local_again")
        print(f"(a') local ingest again: {again.throughput()}")
    baseline = (local.images_per_s + again.images_per_s) / 2
    print(f"fixed costs: Ray start {ray_start:.1f} s, a job's start {small.seconds:.1f} s")
    print(f"ratio ray/local = {cold.images_per_s / baseline:.2f}")
    print(f"ratio ray_warm/local = {warm[plan.actors].images_per_s / baseline:.2f}")


# --- --scaling: Ray nodes each confined to one core ----------------------------------------------------------


class Progress:
    """The rows a collection holds, sampled every `every_s` from another connection while an ingest runs."""

    def __init__(self, uri: str, collection: str, every_s: float = 0.5) -> None:
        self.client, self.collection, self.every_s = MilvusClient(uri=uri), collection, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def _sample(self) -> None:
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs each query refused while one is made
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(Exception):  # the collection is being (re)created
                rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
                self.samples.append((time.perf_counter(), int(rows)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def timeline(self, step_s: float = 10.0) -> str:
        """The rows stored every `step_s` seconds of the job: "10 s 0, 20 s 96, ..." (rows held back show as 0s)."""
        marks, start = [], self.samples[0][0] if self.samples else 0.0
        for at, rows in self.samples:
            if at - start >= step_s * (len(marks) + 1):
                marks.append(f"{step_s * (len(marks) + 1):.0f} s {rows}")
        return ", ".join(marks)

    def steady_rate(self, total: int) -> float:
        """Images/s between the samples holding 10% and 90% of `total` rows: the job's rate after its start-up."""
        low = next((s for s in self.samples if s[1] >= 0.1 * total), None)
        high = next((s for s in self.samples if s[1] >= 0.9 * total), None)
        if low is None or high is None or high[0] <= low[0]:
            return float("nan")
        return (high[1] - low[1]) / (high[0] - low[0])


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's name and the CPU seconds it has used (user + system), from /proc.

    A Python process is named by its module or script (`python -m pytest` is "pytest"); this process is
    "this driver", and a process whose ancestors include it is marked "(ours)", to tell them from other work.
    """
    tick, parents, found = os.sysconf("SC_CLK_TCK"), {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text, pid = stat.read_text(), int(stat.parent.name)
            fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) ": state, ppid, ... utime, stime
            name = text[text.index("(") + 1 : text.rindex(")")]
            if name.startswith("python"):
                args = [a.decode(errors="replace") for a in (stat.parent / "cmdline").read_bytes().split(b"\0")[1:]]
                words = [a for a in args if a and not a.startswith("-")]
                name = "python -c" if "-c" in args else Path(words[0]).name[:40] if words else name
            parents[pid] = int(fields[1])
            found[pid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    for pid, (name, cpu) in found.items():
        ancestor, seen = parents.get(pid), 0
        while ancestor and ancestor != os.getpid() and seen < 64:
            ancestor, seen = parents.get(ancestor), seen + 1
        if pid == os.getpid():
            found[pid] = ("this driver", cpu)
        elif ancestor == os.getpid():
            found[pid] = (f"{name} (ours)", cpu)
    return found


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Print, after the block, what ran meanwhile: the processes (by name) that used the most CPU, as a share of
    one core over the block's time (processes that started and ended inside it are not seen)."""
    before, start = cpu_seconds(), time.perf_counter()
    try:
        yield
    finally:
        seconds, used = time.perf_counter() - start, {}
        for pid, (name, cpu) in cpu_seconds().items():
            count, total = used.get(name, (0, 0.0))
            used[name] = (count + 1, total + cpu - before.get(pid, (name, 0.0))[1])
        top = sorted(used.items(), key=lambda item: -item[1][1])[:8]
        shown = [
            f"{name}{f' x{n}' if n > 1 else ''} {cpu / seconds:.0%}" for name, (n, cpu) in top if cpu > 0.02 * seconds
        ]
        print(f"    CPU during {label} ({seconds:.1f} s; 100% = one core): {', '.join(shown)}", flush=True)


def processes() -> dict[int, int]:
    """Every living (not zombie) process with its parent, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) ": state, ppid, ...
            if fields[0] != "Z":
                parents[int(stat.parent.name)] = int(fields[1])
    return parents


def descendants(pid: int | None = None) -> set[int]:
    """Every living process whose ancestors include `pid` (this process by default)."""
    parents, found, frontier = processes(), set(), {pid or os.getpid()}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def descendants_of(pids: set[int]) -> set[int]:
    """Every living process whose ancestors include one of `pids`, but for this process."""
    return set().union(*(descendants(pid) for pid in pids - {os.getpid()}))


def pin(pids: set[int], core: int) -> None:
    """Every thread of `pids` onto `core`; what they start later inherits it (a thread's mask is copied on fork)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):  # gone meanwhile
                os.sched_setaffinity(int(task.name), {core})


def stop(pids: set[int], grace_s: float = 15.0) -> None:
    """Wait up to `grace_s` for `pids` to exit, then SIGKILL those left (workers a stopped raylet leaves behind)."""
    deadline = time.monotonic() + grace_s
    while (left := pids & processes().keys()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def ray_nodes(cores: list[int]) -> Iterator[str]:
    """A Ray cluster on 127.0.0.1: a head without CPUs, then one node of 1 CPU per core, its processes pinned there.

    Each node is what `ray start --num-cpus 1` starts (a raylet with its object store, its agents, its workers
    forked from it), started here through `ray.cluster_utils.Cluster` (as the tests do: it binds to 127.0.0.1,
    where `ray start` on this Ray would join only over the machine's address). A node starts on every core, and
    once it is up every thread of every process it started is pinned to its core (`pin`): the workers its raylet
    forks later inherit that. Started pinned, the raylet, its two Python agents and the log monitor shared one
    core with whatever else ran there (the embedding actor of the cluster before, still exiting; the head's
    agents, still starting; other work), and Ray gives a raylet a fixed 30 s to register: "The current node timed
    out during startup" (docs/distributed.md). The whole cluster is stopped at the end, and every process it
    started is gone before this returns, whatever failed.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray's first import: loopback
    os.environ.setdefault("RAY_num_workers_soft_limit", str(distributed.IDLE_WORKERS))  # as deploy/kubernetes
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 400 << 20}
    before, cluster = descendants(), None  # the Milvus server is one of ours already: never stopped here
    try:
        with phase("the Ray head's start"):
            cluster = Cluster(
                initialize_head=True, head_node_args={**loopback, "num_cpus": 0, "include_dashboard": False}
            )
        for core in cores:
            started = descendants()
            with phase(f"the start of the node for core {core} (on every core, then pinned)"):
                cluster.add_node(**loopback, num_cpus=1)
            pin(descendants() - descendants_of(started) - started, core)  # the node's, not the head's new workers
        yield cluster.address
    finally:
        ours = descendants() - before  # before the raylets stop: their workers are orphaned then, no longer ours
        if cluster is not None:
            cluster.shutdown()
        stop(ours)


def wait_for_cpus(cpus: int, timeout_s: float = 60) -> None:
    """Until the joined cluster shows `cpus` CPUs (its nodes have registered)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.cluster_resources().get("CPU", 0) < cpus:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs, not {cpus}")
        time.sleep(0.5)


def scaling(photos: int, cores: list[int]) -> None:
    """Local ingest on one core against the Ray ingest on 1 and on 2 single-core nodes: steady rates, ratios."""
    bundled = load_bundled()
    rows = make_photos(bundled, BENCH_DIR, photos) if photos > len(bundled) else bundled.head(photos)
    total = len(rows)
    encoder = load_encoder()
    rates = {}
    with milvus_server() as uri:
        driver_cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cores[0]})  # the local ingest on the first node's core, and nothing else
        try:
            with phase("the local ingest"), Progress(uri, "scale_local") as progress:
                report, _ = timed_ingest("local", rows, encoder, uri, "scale_local")
        finally:
            os.sched_setaffinity(0, driver_cores)
        rates["local"] = progress.steady_rate(total - len(report.skipped))
        print(
            f"local ingest pinned to core {cores[0]}: {report.summary()}; {report.throughput()}; "
            f"steady {rates['local']:.1f} images/s"
        )
        for count in (1, len(cores)):
            with phase("the 3 s before the Ray cluster starts"):
                time.sleep(3)
            with ray_nodes(cores[:count]) as address, distributed.ray_session(address):
                wait_for_cpus(count)
                plan = distributed.cluster_plan()
                name = f"scale_ray_{count}"
                with phase(f"the Ray ingest on {count} node(s)"), Progress(uri, name) as progress:
                    report, _ = timed_ingest("ray", rows, encoder, uri, name, ray_address=address)
                rates[count] = progress.steady_rate(total - len(report.skipped))
                print(
                    f"Ray, {count} node(s) of 1 core ({plan.actors} actor(s) x {plan.actor_cpus:g} CPU, "
                    f"{plan.tasks} read and {plan.tasks} write task(s) x {plan.task_cpus:g} CPU): "
                    f"{report.summary()}; {report.throughput()}; steady {rates[count]:.1f} images/s"
                )
                print(f"    rows stored over the job: {progress.timeline()}")
    print(f"ratio ray_2nodes/ray_1node = {rates[len(cores)] / rates[1]:.2f}")
    print(f"ratio ray_steady/local = {rates[1] / rates['local']:.2f}")


if __name__ == "__main__":
    main()
