"""Device run: lego photos uploaded to a real `splatworks serve` on the GPU machine, polled to DONE.

Writes $OUT/e2e.json (timeline, stage timings, metrics, file checks), $OUT/run.log, $OUT/server.log.
Then, if time allows, runs benchmarks/service_load.py (16 cores, no contention) into $OUT/load.json.

Preparing a device call (issue 4's GPU acceptance run; not run yet, see BENCHMARKS.md "Service"):
- wheels (Python 3.12, x86-64) in a git-ignored folder: gsplat, plyfile, pycolmap 4.2.1, fastapi, starlette,
  uvicorn, pydantic, pydantic_core, annotated_types, annotated_doc, typing_inspection, python_multipart
  (`../shared/gpu/wheelhouse.sh pycolmap==4.2.1 fastapi ...` with --no-deps names each one);
- lego composited on white as JPEG (PNG + pycolmap exceed the 64 MiB transfer cap) in PHOTOS (default
  .device/h4/lego);
- run: `OUT=$OUT python3 benchmarks/service_lego_e2e.py` after the wheelhouse preamble. Settings by environment:
  PRESET (fast), STEPS ("2000 4000 7000"), ITERS, MAXSIZE (800), DATA.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

T0 = time.time()
OUT = Path(os.environ["OUT"])
sys.path.insert(0, str(Path.cwd() / "src"))
from splatworks.service.testing import ServerProcess  # noqa: E402

data = Path(os.environ.get("DATA", "/tmp/swdata"))
photos = sorted(Path(os.environ.get("PHOTOS", ".device/h4/lego")).glob("*.[jp][pn]g"))
steps = os.environ.get("STEPS", "2000 4000 7000").split()
srv = ServerProcess(data, "--train-preset", os.environ.get("PRESET", "fast"), "--checkpoint-steps", *steps,
                    "--max-concurrent-jobs", "2", "--limits.min-free-disk-bytes", "0", "--max-image-size", os.environ.get("MAXSIZE", "800"),
                    *(["--train-iterations", os.environ["ITERS"]] if os.environ.get("ITERS") else []))
srv.start()
timeline, result = [], {}
try:
    c = httpx.Client(base_url=srv.url, timeout=120)
    t = time.time()
    r = c.post("/recon/jobs", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
    r.raise_for_status()
    job = r.json()
    result["upload_seconds"] = time.time() - t
    result["upload_mb"] = sum(p.stat().st_size for p in photos) / 1e6
    last = None
    first_ckpt = None
    while True:
        s = c.get(f"/recon/jobs/{job['job_id']}/status").json()
        key = (s["status"], s["stage"], s["substage"], s["latest_checkpoint"])
        if key != last:
            timeline.append({"t": round(time.time() - t, 1), "status": s["status"], "stage": s["stage"],
                             "substage": s["substage"], "iteration": s["iteration"], "percent": s["percent"],
                             "eta": s["eta_seconds"], "ckpt": s["latest_checkpoint"]})
            print(timeline[-1], flush=True)
            last = key
        if s["latest_checkpoint"] and first_ckpt is None and s["status"] == "RUNNING":
            rr = c.get(f"/recon/pub/{job['pub_key']}/scene.splat")
            first_ckpt = {"t": round(time.time() - t, 1), "status": rr.status_code, "bytes": len(rr.content),
                          "iteration": rr.headers.get("x-splatworks-iteration")}
        if s["status"] in ("DONE", "ERROR") or time.time() - T0 > float(os.environ.get("DEADLINE", "500")):
            break
        time.sleep(1.0)
    result["final"] = {k: s[k] for k in ("status", "error", "latest_checkpoint", "metrics", "percent")}
    result["job_seconds"] = time.time() - t
    result["mid_training_download"] = first_ckpt
    if s["status"] == "DONE":
        ply = c.get(f"/recon/pub/{job['pub_key']}/cloud.ply")
        splat = c.get(f"/recon/pub/{job['pub_key']}/scene.splat")
        from plyfile import PlyData
        import io
        n = len(PlyData.read(io.BytesIO(ply.content))["vertex"])
        result["files"] = {"ply_bytes": len(ply.content), "ply_gaussians": n, "splat_bytes": len(splat.content),
                           "splat_records": len(splat.content) // 32, "match": len(splat.content) == 32 * n}
        result["viewer_status"] = c.get(f"/v/{job['pub_key']}").status_code
        info = c.get(f"/recon/pub/{job['pub_key']}/info").json()
        result["info_start_camera"] = bool(info["start_camera"])
        jd = data / "jobs" / job["job_id"]
        result["metrics_json"] = json.loads((jd / "gs_output" / "metrics.json").read_text())
        result["result_json"] = json.loads((jd / "gs_output" / "result.json").read_text())
        sfm = json.loads((jd / "colmap" / "scene.json").read_text()).get("meta", {}).get("sfm", {})
        result["sfm_report"] = {k: sfm.get(k) for k in ("registered", "total", "points", "mean_reprojection_error",
                                                        "seconds")}
        # The trained result for the viewer screenshots (issue 5): latest checkpoint's scene.splat + cameras + scene.
        import tarfile
        ckpts = sorted((jd / "gs_output" / "point_cloud").glob("iteration_*"), key=lambda q: int(q.name.split("_")[1]))
        with tarfile.open(OUT / "lego_result.tgz", "w:gz") as tar:
            for rel in ("gs_output/cameras.json", "gs_output/metrics.json", "colmap/scene.json", "colmap/points.npz",
                        f"gs_output/point_cloud/{ckpts[-1].name}/scene.splat"):
                if (jd / rel).exists():
                    tar.add(jd / rel, arcname=rel)
    result["timeline"] = timeline
    (OUT / "run.log").write_text((data / "jobs" / job["job_id"] / "run.log").read_text())
finally:
    srv.kill()
    (OUT / "server.log").write_text(srv.log_tail(400))
    result["total_seconds"] = time.time() - T0
    (OUT / "e2e.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k not in ("timeline", "metrics_json")}, indent=1,
                     default=str)[:6000])

if time.time() - T0 < 420 and not os.environ.get("NO_LOAD"):
    subprocess.run([sys.executable, "benchmarks/service_load.py", "--seconds", "20", "--out", str(OUT / "load.json")],
                   timeout=max(30, 560 - (time.time() - T0)))
