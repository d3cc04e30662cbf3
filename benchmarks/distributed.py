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
"""

from __future__ import annotations

import argparse
import time

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import load_bundled
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.pipelines import distributed
from t2i_helpers.pipelines.ingest import ingest
from t2i_helpers.store.image_store import ImageStore
from t2i_helpers.store.milvus_server import milvus_server

SMALL_JOB = 8  # images in the job that measures what a job costs before its images


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
    """Run (a), (b), (c) and (a') and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=0, help="index only the first N bundled photos (0: all)")
    args = parser.parse_args()
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
                f"actor(s) x {plan.actor_cpus:g} CPU, tasks {plan.task_cpus:g} CPU"
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


if __name__ == "__main__":
    main()
