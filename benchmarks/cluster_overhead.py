"""Cluster benchmark: scheduling overhead per job on the ray executor, and the API's status latency under a queue.

Starts the real parts on this machine: PostgreSQL (Debian's package, loopback), a Ray cluster of ``--nodes``
worker nodes each declaring one GPU (head runs no jobs), and ``splatworks serve --executor ray``. Then:

1. **Scheduling overhead**: ``--jobs`` probe jobs that do no work (0 steps) are queued at once; per job, the
   time from queued to claimed on a node (``started_at - created_at``) and from queued to DONE, and the total
   wall time over the number of jobs (throughput with ``--nodes`` GPUs). This is what a job pays for Ray
   placement + a worker process + the database round trips, on top of its own work.
2. **Status latency with 20 queued jobs**: two long probe jobs occupy both GPUs, 20 more wait PENDING; ``--pollers``
   clients poll status (each every ``--poll-interval`` s) for ``--seconds``; p50/p95/p99/max client side.

    .venv/bin/python benchmarks/cluster_overhead.py --out /tmp/cluster_overhead.json

Client, API, PostgreSQL and the Ray nodes share this machine's cores, so the numbers include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from splatworks.service.cluster_testing import PostgresServer, ray_cluster
from splatworks.service.jobs import JobPaths, new_id, write_json_atomic
from splatworks.service.probe_job import ProbeConfig
from splatworks.service.store import DONE, PENDING, JobRecord, open_store
from splatworks.service.testing import ServerProcess


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def submit(store, data_dir: Path, cfg: ProbeConfig) -> JobRecord:
    job_id, pub_key = new_id(), new_id()
    paths = JobPaths.of(data_dir / "jobs", job_id).make()
    write_json_atomic(paths.job_json, {"job_id": job_id, "pub_key": pub_key, "kind": "probe", "config": vars(cfg)})
    return store.create(JobRecord(job_id=job_id, pub_key=pub_key, kind="probe", config=vars(cfg)))


def wait_all(store, ids: list[str], timeout: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [store.get(i) for i in ids]
        if all(j.finished for j in jobs):
            return jobs
        time.sleep(0.1)
    raise TimeoutError("jobs did not finish")


async def poll_status(url: str, job_ids: list[str], seconds: float, pollers: int, interval: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=pollers + 2)) as client:
        async def poller(i: int) -> None:
            nonlocal errors
            await asyncio.sleep(interval * i / pollers)
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                r = await client.get(f"/recon/jobs/{job_ids[i % len(job_ids)]}/status")
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    latencies.append(dt)
                else:
                    errors += 1
                await asyncio.sleep(max(0.0, interval - dt))

        await asyncio.gather(*(poller(i) for i in range(pollers)))
    ms = [x * 1000 for x in latencies]
    return {"requests": len(ms), "errors": errors, "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
            "p99_ms": pct(ms, 99), "max_ms": max(ms) if ms else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2, help="Ray worker nodes, one declared GPU each")
    ap.add_argument("--jobs", type=int, default=20, help="no-work jobs for the overhead measurement")
    ap.add_argument("--queued", type=int, default=20, help="jobs waiting PENDING during the latency measurement")
    ap.add_argument("--pollers", type=int, default=20, help="concurrent status clients")
    ap.add_argument("--poll-interval", type=float, default=0.5, help="seconds between one client's polls")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the latency measurement")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    pg = PostgresServer().start()
    cluster, _ = ray_cluster(workers=args.nodes)
    tmp = Path(tempfile.mkdtemp(prefix="sw-cluster-bench-"))
    data_dir = tmp / "data"
    url = pg.new_database("bench")
    server = ServerProcess(data_dir, "--executor", "ray", "--database-url", url, "--ray-address", cluster.address,
                           "--max-concurrent-jobs", str(args.nodes), "--heartbeat-seconds", "2",
                           "--heartbeat-timeout-seconds", "30")
    store = open_store(url)
    out: dict = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
                 "python": sys.version.split()[0], "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                 "nodes": args.nodes}
    try:
        server.start(timeout=180)
        # Warm-up: the first task on each node starts a Ray worker process and imports splatworks.
        warm = [submit(store, data_dir, ProbeConfig(steps=0, points=8)).job_id for _ in range(args.nodes)]
        wait_all(store, warm, 180)

        t0 = time.time()
        ids = [submit(store, data_dir, ProbeConfig(steps=0, points=8)).job_id for _ in range(args.jobs)]
        jobs = wait_all(store, ids, 600)
        wall = time.time() - t0
        assert all(j.status == DONE for j in jobs), [j.error for j in jobs if j.status != DONE]
        to_start = [j.started_at - j.created_at for j in jobs]
        to_done = [j.finished_at - j.created_at for j in jobs]
        # Run time of the job body itself (claim -> DONE) is the part a real job would replace with its work.
        body = [j.finished_at - j.started_at for j in jobs]
        out["overhead"] = {"jobs": args.jobs, "wall_s": round(wall, 2),
                           "per_job_s_throughput": round(wall / args.jobs * args.nodes, 3),
                           "queued_to_done_p50_s": round(statistics.median(to_done), 3),
                           "first_job_queued_to_claimed_s": round(min(to_start), 3),
                           "claimed_to_done_p50_s": round(statistics.median(body), 3)}
        print(json.dumps(out["overhead"]), flush=True)

        busy = [submit(store, data_dir, ProbeConfig(steps=400, step_seconds=0.25, points=8)).job_id
                for _ in range(args.nodes)]
        deadline = time.monotonic() + 120
        while sum(store.get(i).status != PENDING for i in busy) < args.nodes and time.monotonic() < deadline:
            time.sleep(0.2)
        queued = [submit(store, data_dir, ProbeConfig(steps=1, points=8)).job_id for _ in range(args.queued)]
        counts = store.counts()
        lat = asyncio.run(poll_status(server.url, queued + busy, args.seconds, args.pollers, args.poll_interval))
        lat["counts_at_start"] = counts
        out["status_latency"] = {"queued": args.queued, "pollers": args.pollers,
                                 "poll_interval_s": args.poll_interval, **lat}
        print(json.dumps(out["status_latency"]), flush=True)
    finally:
        server.stop()
        store.close_all()
        cluster.shutdown()
        pg.stop()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
