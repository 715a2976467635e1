"""Benchmark a dynamic job through the service API (issue 10): the 12 basketball videos in, DONE out.

Starts ``splatworks serve`` on loopback (its own data folder), uploads every ``videos/*.mp4`` of the CMU Panoptic
basketball folder plus its ``calibration.json`` to ``POST /recon/dynamic-jobs`` (the first camera held out),
polls ``/recon/jobs/{id}/status`` until DONE, then downloads the 4D manifest and layers, the held-out video and
``metrics.json``. Reports the upload time, time to the first playable frame, per-stage timings and the held-out
metrics; optionally screenshots the viewer playing the result (needs `make viewer` + `make browser`).

    python benchmarks/dynamic_service_basketball.py --data ../shared/data/panoptic_basketball -o /tmp/bbsvc \\
        [--end-frame 150] [--preset default|fast] [--iterations-per-frame N] [--screenshot]

Device run (from /work/main): copy the data into a git-ignored folder that travels (``.device/<name>/``), then
``python3 benchmarks/dynamic_service_basketball.py --data .device/<name>/panoptic_basketball -o $OUT/bb
--preset fast``; OUT/summary.json holds everything below and a Markdown row for BENCHMARKS.md is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

from splatworks.service.testing import ServerProcess


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="panoptic_basketball folder (videos/, calibration.json)")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--end-frame", type=int, default=150, help="frames used from the start of the videos")
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--max-size", type=int, default=0, help="cap on the longest frame side (0 = the videos' size)")
    ap.add_argument("--preset", default="default", help="training preset of the server (default, fast)")
    ap.add_argument("--iterations-per-frame", type=int, default=0, help="override (0 = the preset's)")
    ap.add_argument("--backend", default="gaussians", choices=("gaussians", "mixvoxels"))
    ap.add_argument("--no-calibration", action="store_true", help="calibrate by SfM instead of the GT file")
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--screenshot", action="store_true", help="screenshot the viewer playing the result")
    args = ap.parse_args(argv)

    videos = sorted((args.data / "videos").glob("*.mp4"))
    if len(videos) < 2:
        print(f"no camera videos in {args.data / 'videos'}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"cameras": len(videos), "end_frame": args.end_frame, "preset": args.preset,
                     "backend": args.backend}
    server = ServerProcess(args.out / "data", "--train-preset", args.preset, "--max-concurrent-jobs", "1")
    server.start(timeout=120)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            files = [("videos", (v.name, v.read_bytes(), "video/mp4")) for v in videos]
            if not args.no_calibration:
                files.append(("calibration", ("calibration.json", (args.data / "calibration.json").read_bytes(),
                                              "application/json")))
            fields = {"end_frame": str(args.end_frame), "stride": str(args.stride), "backend": args.backend,
                      "max_size": str(args.max_size)}
            if args.iterations_per_frame:
                fields["iterations_per_frame"] = str(args.iterations_per_frame)
            t0 = time.perf_counter()
            r = c.post("/recon/dynamic-jobs", files=files, data=fields)
            summary["upload_s"] = round(time.perf_counter() - t0, 2)
            summary["upload_mb"] = round(sum(v.stat().st_size for v in videos) / 1e6, 1)
            if r.status_code != 200:
                print(f"upload refused: {r.status_code} {r.text}", file=sys.stderr)
                return 1
            job_id, pub_key = r.json()["job_id"], r.json()["pub_key"]
            print(f"job {job_id}: viewer {server.url}/v/{pub_key}", flush=True)
            t_job, first_frame_s, stage_times, last_stage = time.perf_counter(), None, {}, None
            while True:
                s = c.get(f"/recon/jobs/{job_id}/status").json()
                now = time.perf_counter() - t_job
                stage = (s["stage"] or "queued").split(" ")[0]
                if stage != last_stage:
                    stage_times[stage] = round(now, 1)
                    last_stage = stage
                    print(f"{now:8.1f}s {s['status']} {s['stage']} {s['percent']:.1f}% eta {s['eta_seconds']}",
                          flush=True)
                if first_frame_s is None and c.get(f"/recon/pub/{pub_key}/4d/manifest.json").status_code == 200:
                    first_frame_s = round(now, 1)
                if s["status"] in ("DONE", "ERROR") or now > args.timeout:
                    break
                time.sleep(2.0)
            summary.update({"status": s["status"], "error": s["error"], "job_s": round(now, 1),
                            "first_playable_frame_s": first_frame_s, "stage_start_s": stage_times,
                            "log_tail": s["log_tail"][-10:]})
            if s["status"] == "DONE":
                metrics = c.get(f"/recon/pub/{pub_key}/metrics.json").json()
                summary["metrics"] = metrics
                (args.out / "heldout.mp4").write_bytes(c.get(f"/recon/pub/{pub_key}/heldout.mp4").content)
                if args.backend == "gaussians":
                    m = c.get(f"/recon/pub/{pub_key}/4d/manifest.json").json()
                    summary["manifest"] = {k: m[k] for k in ("frames", "frames_ready", "fps", "bytes")}
                    t0 = time.perf_counter()
                    got = sum(len(c.get(f"/recon/pub/{pub_key}/4d/{u}").content) for u in m["frame_urls"][:10])
                    summary["download_10_frames_s"] = round(time.perf_counter() - t0, 3)
                    summary["download_10_frames_mb"] = round(got / 1e6, 2)
            if args.screenshot and s["status"] == "DONE":
                summary["screenshot"] = screenshot(server.url, pub_key, args.out)
    finally:
        server.stop()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    h = (summary.get("metrics") or {}).get("heldout") or {}
    t = (summary.get("metrics") or {}).get("timings") or {}
    print(json.dumps({k: summary.get(k) for k in ("status", "upload_s", "job_s", "first_playable_frame_s")}))
    print(f"| service dynamic job, basketball {len(videos)} cams, {args.end_frame} frames, {args.preset} | "
          f"upload {summary.get('upload_s')} s | job {summary.get('job_s')} s | first frame playable "
          f"{summary.get('first_playable_frame_s')} s | prepare {t.get('prepare_seconds')} s | train "
          f"{t.get('train_seconds')} s ({t.get('seconds_per_frame_mean')} s/frame) | held-out PSNR "
          f"{h.get('psnr_mean')} SSIM {h.get('ssim_mean')} |")
    return 0 if summary.get("status") == "DONE" else 1


def screenshot(url: str, pub_key: str, out: Path) -> str:
    from splatworks.viewer.testing import BrowserDriver

    with BrowserDriver(960, 540) as b:
        b.goto(f"{url}/v/{pub_key}?poll=1000")
        b.wait("window.splatworks && window.splatworks.player && window.splatworks.player.displayedFrame === 0", 180)
        b.wait("window.splatworks.framesRendered > 5", 60)
        path = out / "viewer_basketball.png"
        b.screenshot(path)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
