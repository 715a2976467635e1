"""Load benchmark of the reconstruction service on loopback.

A real ``splatworks serve`` (2 concurrent jobs) runs two training jobs the whole time, while ``--pollers`` clients
poll job status and ``--uploaders`` clients upload photo sets (each upload becomes a queued job). Measures the
status latency (p50/p95/p99/max, client side) and the upload throughput. Loops are bounded by ``--seconds``.

    .venv/bin/python benchmarks/service_load.py --seconds 30 --out /tmp/service_load.json

Client and server share this machine's cores (as on the 2-core dev box), so the numbers include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import PIL.Image


def make_photos(n: int, width: int, height: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """JPEG photos with texture (so they are as large as real ones of that size)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
        img = (img.astype(np.int16) + rng.integers(-20, 20, img.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append((f"photo_{i:03d}.jpg", buf.getvalue()))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def run_load(url: str, job_ids: list[str], photos: list[tuple[str, bytes]], seconds: float, pollers: int,
                   uploaders: int, poll_interval: float) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: dict[str, int] = {}
    uploads: list[tuple[int, float]] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=pollers + uploaders + 4)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def poller(i: int) -> None:
            job = job_ids[i % len(job_ids)]
            await asyncio.sleep(poll_interval * i / pollers)  # spread the clients over the interval
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    r = await client.get(f"/recon/jobs/{job}/status")
                    dt = time.perf_counter() - t
                    if r.status_code == 200 and r.json()["status"] in ("RUNNING", "PENDING", "DONE"):
                        latencies.append(dt)
                        timing = r.headers.get("server-timing", "")
                        if "dur=" in timing:
                            server_ms.append(float(timing.split("dur=")[1]))
                    else:
                        errors[f"status {r.status_code}"] = errors.get(f"status {r.status_code}", 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(max(0.0, poll_interval - (time.perf_counter() - t)))

        async def uploader(i: int) -> None:
            size = sum(len(b) for _, b in photos)
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    r = await client.post("/recon/jobs", files=[("files", (n, b, "image/jpeg")) for n, b in photos])
                    if r.status_code == 200:
                        uploads.append((size, time.perf_counter() - t))
                    else:
                        errors[f"upload {r.status_code}"] = errors.get(f"upload {r.status_code}", 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*[poller(i) for i in range(pollers)], *[uploader(i) for i in range(uploaders)])
        wall = time.perf_counter() - t0

    ms = [x * 1000 for x in latencies]
    wall = max(wall, 1e-9)
    total_bytes = sum(s for s, _ in uploads)
    return {
        "status_requests": len(ms), "status_rps": len(ms) / wall,
        "status_ms": {"p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99), "max": max(ms) if ms else None,
                      "mean": statistics.fmean(ms) if ms else None},
        "status_server_ms": {"p50": pct(server_ms, 50), "p99": pct(server_ms, 99)},
        "uploads": len(uploads), "upload_mb_total": total_bytes / 1e6,
        "upload_mb_per_s": total_bytes / 1e6 / wall,
        "upload_seconds_p50": pct([d for _, d in uploads], 50), "errors": errors, "wall_seconds": wall,
    }


def _uploaders_process(queue: "multiprocessing.Queue", url: str, jobs: list[str], photos: list[tuple[str, bytes]],
                       seconds: float, uploaders: int) -> None:
    queue.put(asyncio.run(run_load(url, jobs, photos, seconds, 0, uploaders, 1.0)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the load phase")
    ap.add_argument("--pollers", type=int, default=50)
    ap.add_argument("--uploaders", type=int, default=5)
    ap.add_argument("--poll-interval", type=float, default=0.5, help="seconds between one client's status polls")
    ap.add_argument("--photos", type=int, default=12, help="photos per upload")
    ap.add_argument("--photo-size", default="1280x960", help="WxH of the uploaded JPEGs")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    from splatworks.service.testing import ServerProcess, multipart_files, wait_for
    from splatworks.synthetic import make_static_scene

    w, h = (int(x) for x in args.photo_size.split("x"))
    with tempfile.TemporaryDirectory(prefix="sw-load-") as tmp:
        tmp = Path(tmp)
        make_static_scene(tmp / "scene", n_views=8, width=128, height=96, seed=1)
        views = sorted((tmp / "scene" / "images").glob("*.png"))
        photos = make_photos(args.photos, w, h)
        # Training jobs long enough to run through the whole load phase.
        srv = ServerProcess(tmp / "data", "--train-preset", "tiny", "--train-iterations", "100000",
                            "--checkpoint-steps", "100000", "--max-concurrent-jobs", "2",
                            "--limits.min-free-disk-bytes", "0")
        srv.start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                jobs = [c.post("/recon/jobs", files=multipart_files(views)).json()["job_id"] for _ in range(2)]
                for j in jobs:
                    wait_for(c, j, lambda s: s["stage"] == "training" or s["status"] in ("DONE", "ERROR"),
                             timeout=300)
                running = [c.get(f"/recon/jobs/{j}/status").json()["status"] for j in jobs]
            assert running == ["RUNNING", "RUNNING"], running
            # Uploaders in a process of their own: building 7 MB request bodies must not delay the pollers' loop.
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            up = ctx.Process(target=_uploaders_process, args=(queue, srv.url, jobs, photos, args.seconds,
                                                              args.uploaders))
            up.start()
            result = asyncio.run(run_load(srv.url, jobs, [], args.seconds, args.pollers, 0, args.poll_interval))
            upload_result = queue.get(timeout=args.seconds + 300)
            up.join(30)
            for k in ("uploads", "upload_mb_total", "upload_mb_per_s", "upload_seconds_p50"):
                result[k] = upload_result[k]
            for k, v in upload_result["errors"].items():
                result["errors"][k] = result["errors"].get(k, 0) + v
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                result["jobs_running_at_end"] = sum(
                    c.get(f"/recon/jobs/{j}/status").json()["status"] == "RUNNING" for j in jobs)
        finally:
            srv.kill()
    result["setup"] = {"pollers": args.pollers, "uploaders": args.uploaders, "poll_interval_s": args.poll_interval,
                       "photos_per_upload": args.photos, "photo_size": args.photo_size,
                       "upload_mb": sum(len(b) for _, b in photos) / 1e6, "seconds": args.seconds,
                       "cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_avg_1min": os.getloadavg()[0]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
