"""One dynamic job through the service API on CMU Panoptic basketball: the numbers of issues 7 and 10 in one run.

Starts ``splatworks serve`` on loopback (its own data folder), uploads every ``videos/*.mp4`` plus the ground-truth
``calibration.json`` (the optional field) to ``POST /recon/dynamic-jobs`` with the service's DEFAULT settings
(held-out camera: the first by name; all frames), polls ``/recon/jobs/{id}/status`` until DONE, and downloads the
4D manifest and layers, the held-out video and ``metrics.json`` through the public routes. Every figure comes from
the job's own outputs, computed by the shared dynamic code (``pipeline/dynamic.py``: ``dynamic eval``'s
``evaluate_sequence``, ``training_summary`` of the trainer's per-frame lines, ``export_4d``'s byte counts):

- issue 7: per-frame training time (optimisation and wall; frame 0 apart), held-out per-frame PSNR / SSIM /
  static-pixel PSNR, drift (dB/frame), background flicker over ground truth, 4D export size per frame, the
  held-out side-by-side video;
- issue 10: upload time, the job's stage timings, time to the first playable frame, held-out metrics.

Files in OUT: ``progress.log`` (one line per status change: stage, frame k of n, ETA; ``tail -f`` it),
``pid``, ``summary.json``, ``bench.md`` (rows for BENCHMARKS.md), ``FINISHED`` (written last, also after a
failure), and ``bb_result.tar.gz`` (<= --tar-mb): summary, metrics, logs, the full manifest, and ``job/``, a
job-shaped folder (``job.json``, ``colmap/scene.json``, ``export/``: static layer, as many first frames as fit,
a trimmed manifest and metrics listing only those, the held-out video, re-encoded smaller when needed).

    python benchmarks/dynamic_service_basketball.py --data ../shared/data/panoptic_basketball -o /tmp/bbsvc
    # CPU smoke: ... --end-frame 2 --preset tiny --iterations-per-frame 10 --max-size 96
    # Local screenshot of an unpacked result (real viewer, headless Chromium; needs `make viewer browser`):
    python benchmarks/dynamic_service_basketball.py --view UNPACKED_DIR --shot docs/img/viewer_basketball.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import Any

import numpy as np

MB = 1e6
# Issue 7's acceptance bars.
BARS = {"frame_wall_s_mean": 10.0, "drift_abs_db_per_frame": 0.005, "flicker_levels": 1.0, "mb_per_frame": 2.0}


# ---- HTTP with the standard library only (the GPU host has no httpx) ------------------------------------------

def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 600) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    code, body = http(url, timeout=60)
    if code != 200:
        raise RuntimeError(f"GET {url}: {code} {body[:300]!r}")
    return json.loads(body)


def multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: files as (field, file name, bytes)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Server:
    """``python -m splatworks serve`` on a free loopback port, its log in ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "splatworks", "serve", "--port", str(self.port), "--data-dir",
                    str(data_dir), *args]
        self.log_path, self.proc = log_path, None

    def start(self, timeout: float = 180) -> "Server":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if http(self.url + "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class ProgressLog:
    def __init__(self, path: Path) -> None:
        self.path, self.t0 = path, time.monotonic()

    def __call__(self, line: str) -> None:
        text = f"{time.strftime('%H:%M:%S')} +{time.monotonic() - self.t0:7.1f}s {line}"
        print(text, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")


# ---- the run ---------------------------------------------------------------------------------------------------

def upload(url: str, data: Path, args: argparse.Namespace) -> tuple[dict[str, Any], float, int]:
    videos = sorted((data / "videos").glob("*.mp4"))
    if len(videos) < 2:
        raise SystemExit(f"no camera videos in {data / 'videos'}")
    files = [("videos", v.name, v.read_bytes()) for v in videos]
    if not args.no_calibration:
        files.append(("calibration", "calibration.json", (data / "calibration.json").read_bytes()))
    # Only what the user sets: everything else is the service's default.
    fields = {k: str(v) for k, v in (("end_frame", args.end_frame), ("max_size", args.max_size),
                                     ("iterations_per_frame", args.iterations_per_frame),
                                     ("held_out_camera", args.held_out)) if v}
    body, ctype = multipart(files, fields)
    t0 = time.perf_counter()
    code, answer = http(url + "/recon/dynamic-jobs", body, {"Content-Type": ctype})
    seconds = time.perf_counter() - t0
    if code != 200:
        raise RuntimeError(f"upload refused: {code} {answer[:500]!r}")
    return json.loads(answer), seconds, sum(len(f[2]) for f in files)


def follow(url: str, job: dict[str, Any], log: ProgressLog, timeout: float) -> dict[str, Any]:
    """Poll the job until DONE/ERROR; log every change; returns status, stage starts, first playable frame."""
    t0 = time.monotonic()
    key, last_key, last_line, last_log = job["pub_key"], None, "", 0.0
    stage_start: dict[str, float] = {}
    first_playable = None
    frame_times: list[tuple[int, float]] = []  # (frames done, seconds since upload) when a frame starts
    while True:
        s = get_json(f"{url}/recon/jobs/{job['job_id']}/status")
        now = time.monotonic() - t0
        stage = s["stage"] or "queued"
        head = "frame" if stage.startswith("frame ") else stage
        stage_start.setdefault(head, round(now, 1))
        done = n = None
        if stage.startswith("frame ") and " of " in stage:
            k, n = (int(x) for x in stage[len("frame "):].split(" of "))
            done = k - 1
            if not frame_times or frame_times[-1][0] != done:
                frame_times.append((done, now))
        if first_playable is None:
            code, body = http(f"{url}/recon/pub/{key}/4d/manifest.json", timeout=30)
            if code == 200 and json.loads(body).get("frames_ready", 0) >= 1:
                first_playable = round(now, 1)
                log(f"first frame playable after {first_playable} s: {url}/v/{key}")
        newest = next((x for x in reversed(s["log_tail"]) if x.startswith("frame ") and ":" in x), "")
        if (s["status"], stage) != last_key or now - last_log > 60:
            eta = ""
            later = [t for t in frame_times if t[0] >= 1]  # frame 0 (the static fit) is much slower
            if done is not None and n and len(later) >= 2:
                per = (later[-1][1] - later[0][1]) / (later[-1][0] - later[0][0])
                eta = f" | {per:.1f} s/frame, ETA {per * (n - done) / 60:.1f} min for {n - done} frames + scoring"
            server_eta = f", stage ETA {s['eta_seconds']:.0f} s" if s.get("eta_seconds") is not None else ""
            log(f"{s['status']:7s} {stage} {s['percent']:.1f}%{server_eta}{eta}"
                + (f" | {newest}" if newest and newest != last_line else ""))
            last_key, last_line, last_log = (s["status"], stage), newest, now
        if s["status"] in ("DONE", "ERROR"):
            break
        if now > timeout:
            log(f"giving up after {timeout:.0f} s (the job goes on in the server until it is stopped)")
            break
        time.sleep(2.0)
    stage_start.setdefault("done", round(time.monotonic() - t0, 1))
    return {"status": s, "job_s": round(time.monotonic() - t0, 1), "stage_start_s": stage_start,
            "first_playable_frame_s": first_playable}


def stage_seconds(starts: dict[str, float]) -> dict[str, float]:
    items = sorted(starts.items(), key=lambda kv: kv[1])
    return {k: round(items[i + 1][1] - t, 1) for i, (k, t) in enumerate(items[:-1])}


def summarise(out: Path, up: dict[str, Any], followed: dict[str, Any], metrics: dict[str, Any] | None,
              manifest: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    s = followed["status"]
    summary: dict[str, Any] = {
        "status": s["status"], "error": s["error"], "data": str(args.data), "settings": {
            "preset": args.preset, "end_frame": args.end_frame or "all", "iterations_per_frame":
            args.iterations_per_frame or "preset", "max_size": args.max_size or "server default",
            "held_out": args.held_out or "first", "calibration": not args.no_calibration},
        "upload_s": round(up["seconds"], 2), "upload_mb": round(up["bytes"] / MB, 1), "job_s": followed["job_s"],
        "first_playable_frame_s": followed["first_playable_frame_s"],
        "stage_start_s": followed["stage_start_s"], "stage_seconds": stage_seconds(followed["stage_start_s"]),
        "viewer": up["viewer"],
    }
    if metrics:
        h, t, tr = metrics.get("heldout") or {}, metrics.get("timings") or {}, metrics.get("training") or {}
        later = tr.get("later") or {}
        b = metrics.get("bytes") or {}
        summary.update({
            "cameras": len(metrics.get("cameras") or []), "held_out_camera": metrics.get("held_out_camera"),
            "frames": metrics.get("frames"), "job_timings_s": t, "dataset_timings_s": metrics.get("dataset_timings_s"),
            "frame0": tr.get("frame0"), "later_frames": later, "frames_stopped_early": tr.get("frames_stopped_early"),
            "heldout": h, "export_bytes": {k: b.get(k) for k in ("static", "per_frame_mean", "per_frame_max", "total")},
        })
        wall = (later.get("frame_wall_s") or {}).get("mean")
        checks = {"frame_wall_s_mean <= 10": wall is not None and wall <= BARS["frame_wall_s_mean"],
                  "|drift| <= 0.005 dB/frame": h.get("drift_db_per_frame") is not None
                  and abs(h["drift_db_per_frame"]) <= BARS["drift_abs_db_per_frame"],
                  "flicker <= 1/255": h.get("flicker_levels") is not None
                  and h["flicker_levels"] <= BARS["flicker_levels"],
                  # Storage per frame = the export over its frames (a delta export's frame 0 is the whole dynamic
                  # layer, later frames only what changed); the worst single frame is reported beside it.
                  "export <= 2 MB/frame (mean)": b.get("per_frame_mean") is not None
                  and b["per_frame_mean"] / MB <= BARS["mb_per_frame"],
                  "every frame <= 2 MB": b.get("per_frame_max") is not None
                  and b["per_frame_max"] / MB <= BARS["mb_per_frame"]}
        summary["issue7_checks"] = checks
    if manifest:
        summary["manifest"] = {k: manifest.get(k) for k in ("frames", "frames_ready", "fps", "static")}
    return summary


def markdown(summary: dict[str, Any]) -> str:
    h, t = summary.get("heldout") or {}, summary.get("job_timings_s") or {}
    f0, later, eb = summary.get("frame0") or {}, summary.get("later_frames") or {}, summary.get("export_bytes") or {}

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    sec, wall, its = (later.get(k) or {} for k in ("seconds", "frame_wall_s", "iterations"))
    run = (f"service job, {summary.get('cameras')} cams ({summary.get('held_out_camera')} held out), "
           f"{summary.get('frames')} frames, preset {summary['settings']['preset']}")
    seq = (f"| {run} | {num(f0.get('seconds'), '.1f')} s ({f0.get('iterations')} it) | "
           f"{num(sec.get('mean'), '.2f')} / {num(sec.get('median'), '.2f')} / {num(sec.get('max'), '.2f')} s | "
           f"{num(wall.get('mean'), '.2f')} / {num(wall.get('max'), '.2f')} s | {num(its.get('mean'), '.0f')} | "
           f"{num(h.get('psnr_mean'), '.2f')} dB | {num(h.get('ssim_mean'), '.3f')} | "
           f"{num(h.get('psnr_static_mean'), '.2f')} dB | {num(h.get('flicker_levels'), '+.2f')}/255 | "
           f"{num(h.get('drift_db_per_frame'), '+.4f')} dB/frame | "
           f"{num((eb.get('per_frame_mean') or 0) / MB, '.2f')} / {num((eb.get('per_frame_max') or 0) / MB, '.2f')} MB "
           f"(static {num((eb.get('static') or 0) / MB, '.1f')} MB) |")
    svc = (f"| {run} | {summary['upload_s']} s ({summary['upload_mb']} MB) | {summary['job_s']} s | "
           f"{summary.get('first_playable_frame_s')} s | {t.get('prepare_seconds')} s | {t.get('train_seconds')} s | "
           f"{t.get('evaluate_seconds')} s | {num(h.get('psnr_mean'), '.2f')} dB / {num(h.get('ssim_mean'), '.3f')} |")
    return ("## Sequential 4D\n\n| run | frame 0 | s/frame optimisation mean / median / max | s/frame wall mean / "
            "max | it/frame | held-out PSNR | SSIM | static-pixel PSNR | flicker | drift | export MB/frame mean / max |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + seq + "\n\n## Dynamic jobs in the service\n\n"
            "| run | upload | job (upload to DONE) | first frame playable | prepare | train | score + video | "
            "held-out PSNR / SSIM |\n|---|---|---|---|---|---|---|---|\n" + svc + "\n")


def download(url: str, key: str, out: Path, log: ProgressLog) -> tuple[dict | None, dict | None, list[str]]:
    """metrics.json, manifest.json, heldout.mp4 and every layer through the public routes, each checked against
    the manifest; returns (metrics, manifest, problems: what the API did not serve right)."""
    dl = out / "download"
    (dl / "frames").mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    def fetch(rel: str) -> bytes | None:
        try:
            code, body = http(f"{url}/recon/pub/{key}/{rel}")
        except (OSError, HTTPException) as exc:  # a route that fails mid-stream
            problems.append(f"{rel}: {exc!r}")
            return None
        if code != 200:
            problems.append(f"{rel}: HTTP {code} {body[:200]!r}")
            return None
        return body

    body = fetch("metrics.json")
    metrics = json.loads(body) if body else None
    body = fetch("4d/manifest.json")
    manifest = json.loads(body) if body else None
    body = fetch("heldout.mp4")
    if body:
        (dl / "heldout.mp4").write_bytes(body)
    if manifest:
        t0 = time.perf_counter()
        names = ([manifest["static"]] if manifest.get("static") else []) + list(manifest["frame_urls"])
        sizes = [manifest["bytes"]["static"]] if manifest.get("static") else []
        sizes += manifest["bytes"]["per_frame"]
        for rel, size in zip(names, sizes):
            body = fetch(f"4d/{rel}")
            if body is not None and (len(body) != size or len(body) % 32):
                problems.append(f"4d/{rel}: {len(body)} bytes, the manifest says {size}")
            elif body is not None:
                (dl / rel).write_bytes(body)
        log(f"downloaded {len(names)} layers ({sum(sizes) / MB:.1f} MB) in {time.perf_counter() - t0:.1f} s"
            + (f"; {len(problems)} problem(s): {problems[:3]}" if problems else ""))
    return metrics, manifest, problems


# ---- packing one tar for the way back ----------------------------------------------------------------------------

def small_video(src: Path, dst: Path, max_bytes: int) -> Path:
    """``src`` re-encoded (CRF 28, then half size) when it is larger than ``max_bytes``."""
    if src.stat().st_size <= max_bytes:
        shutil.copy(src, dst)
        return dst
    from PIL import Image

    from splatworks.dynamic.render import read_video, write_mp4

    frames = read_video(src)
    fps = 30.0
    try:
        import av

        with av.open(str(src)) as c:
            fps = float(c.streams.video[0].average_rate or 30)
    except Exception:  # noqa: BLE001 - the rate is only informative here
        pass
    write_mp4(frames, dst, fps, crf=28)
    if dst.stat().st_size > max_bytes:
        half = [np.asarray(Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2), Image.BILINEAR))
                for f in frames]
        write_mp4(half, dst, fps, crf=28)
    return dst


def trimmed(manifest: dict[str, Any], k: int) -> dict[str, Any]:
    """The manifest listing only the first ``k`` frames (a complete sequence of k frames for the viewer)."""
    m = json.loads(json.dumps(manifest))
    per = m["bytes"]["per_frame"][:k]
    m.update(frames=k, frames_ready=k, frame_files=m["frame_files"][:k], frame_urls=m["frame_urls"][:k],
             frame_numbers=m.get("frame_numbers", [])[:k], trimmed_from_frames=manifest["frames"])
    m["bytes"].update(per_frame=per, per_frame_mean=sum(per) / k, per_frame_max=max(per),
                      total=m["bytes"]["static"] + sum(per))
    return m


def pack(out: Path, job_dir: Path | None, metrics: dict | None, manifest: dict | None, budget: int,
         log: ProgressLog, layers_from: Path | None = None) -> dict[str, Any]:
    """Write ``out/bb_result.tar.gz`` (<= ``budget`` bytes); returns what went in. Layers and the video are read
    from ``layers_from`` (default: what was downloaded through the API, ``out/download``)."""
    dl = layers_from or out / "download"
    stage = out / "pack"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    entries: list[tuple[str, bytes]] = []  # (name in the tar, content), in priority order
    for name in ("summary.json", "bench.md", "progress.log"):
        if (out / name).exists():
            entries.append((name, (out / name).read_bytes()))
    if metrics:
        entries.append(("metrics.json", json.dumps(metrics, indent=1).encode()))
    if manifest:
        entries.append(("manifest.json", json.dumps(manifest, indent=1).encode()))
    if job_dir is not None:
        for name, rel in (("run.log", "run.log"), ("train_metrics.jsonl", "train/metrics.jsonl")):
            if (job_dir / rel).exists():
                entries.append((name, (job_dir / rel).read_bytes()[-2_000_000:]))
    if (out / "server.log").exists():
        entries.append(("server.log", (out / "server.log").read_bytes()[-500_000:]))
    video = None
    if (dl / "heldout.mp4").exists():
        video = small_video(dl / "heldout.mp4", stage / "heldout.mp4", max_bytes=min(5_000_000, budget // 3))
    frames_in = 0
    viewer: list[tuple[str, bytes]] = []
    if manifest and job_dir is not None:
        meta = json.loads((job_dir / "job.json").read_text())
        job_json = {k: meta.get(k) for k in ("kind", "config", "input_kind", "input_files", "input_bytes")}
        viewer.append(("job/job.json", json.dumps(job_json, indent=1).encode()))
        scene = job_dir / "colmap" / "scene.json"
        if scene.exists():
            viewer.append(("job/colmap/scene.json", scene.read_bytes()))
        if video is not None:
            viewer.append(("job/export/heldout.mp4", video.read_bytes()))
        if manifest.get("static"):
            viewer.append(("job/export/static.splat", (dl / manifest["static"]).read_bytes()))

    def cost(items: list[tuple[str, bytes]]) -> int:  # gzip size estimate (+ tar headers)
        return sum(len(zlib.compress(data, 6)) + 1024 for _, data in items)

    used = cost(entries) + cost(viewer) + 4096
    layers: list[tuple[str, bytes]] = []
    if manifest and job_dir is not None and used < budget:
        for i, rel in enumerate(manifest["frame_files"]):
            data = (dl / rel).read_bytes()
            c = cost([(rel, data)]) + 2048  # + the trimmed manifest / metrics growing
            if used + c > budget:
                break
            layers.append((f"job/export/{rel}", data))
            used += c
            frames_in = i + 1
    if frames_in:
        viewer.append(("job/export/manifest.json", json.dumps(trimmed(manifest, frames_in), indent=1).encode()))
        tm = dict(metrics or {}, frames_ready=frames_in, trimmed_from_frames=manifest["frames"])
        tm["video"] = "heldout.mp4" if video is not None else None
        viewer.append(("job/export/metrics.json", json.dumps(tm, indent=1).encode()))
        entries += viewer + layers
    elif video is not None:  # no room for a viewable sequence: the video alone
        entries.append(("heldout.mp4", video.read_bytes()))
    tar_path = out / "bb_result.tar.gz"
    while True:
        with tarfile.open(tar_path, "w:gz", compresslevel=6) as tar:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
        size = tar_path.stat().st_size
        if size <= budget or not layers:
            break
        drop = layers.pop()  # the estimate was short: one frame fewer
        entries = [e for e in entries if e[0] != drop[0]]
        frames_in -= 1
        entries = [e if e[0] != "job/export/manifest.json" else (e[0], json.dumps(trimmed(manifest, frames_in),
                   indent=1).encode()) for e in entries]
        entries = [e if e[0] != "job/export/metrics.json" else (e[0], json.dumps(
            dict(json.loads(e[1]), frames_ready=frames_in), indent=1).encode()) for e in entries]
    shutil.rmtree(stage, ignore_errors=True)
    info = {"tar": str(tar_path), "bytes": size, "frames_for_viewer": frames_in,
            "video_bytes": video.stat().st_size if video is not None and video.exists() else None,
            "files": [n for n, _ in entries]}
    log(f"packed {tar_path.name}: {size / MB:.2f} MB, {len(entries)} files, static layer + {frames_in} frame(s) "
        f"for the viewer")
    return info


# ---- a partial result, straight from the job folder, while the job still runs ----------------------------------

def partial(out: Path, args: argparse.Namespace) -> int:
    """Pack what the running (or stopped) job has finished so far: the trainer's per-frame lines (time, and its
    own held-out PSNR / SSIM / static PSNR per frame), the 4D export as far as it goes, the logs. For a device
    call that must end before the job does."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from splatworks.dynamic.metrics4d import psnr_drift
    from splatworks.dynamic.sequential import read_metrics
    from splatworks.pipeline.dynamic import training_summary

    log = ProgressLog(out / "progress.log")
    jobs = sorted((out / "data" / "jobs").iterdir(), key=lambda p: p.stat().st_mtime) if (out / "data" / "jobs").is_dir() else []
    if not jobs:
        log("partial: no job folder yet")
        return 1
    job_dir = jobs[-1]
    lines = read_metrics(job_dir / "train")
    export = job_dir / "export"
    manifest = json.loads((export / "manifest.json").read_text()) if (export / "manifest.json").exists() else None
    metrics = json.loads((export / "metrics.json").read_text()) if (export / "metrics.json").exists() else None
    psnr = [x["psnr"] for x in lines if "psnr" in x]
    summary = {"status": "DONE" if metrics else "PARTIAL: the job was still running", "frames_trained": len(lines),
               "training": training_summary(lines), "trainer_heldout": {
                   "note": "the trainer's own per-frame evaluation of the held-out camera (sequential.evaluate_frame)",
                   "psnr_mean": sum(psnr) / len(psnr) if psnr else None,
                   "ssim_mean": sum(x["ssim"] for x in lines if "ssim" in x) / max(1, len(psnr)),
                   "psnr_static_mean": (sum(x.get("psnr_static", 0.0) for x in lines) / max(1, len(psnr))),
                   "drift_db_per_frame": psnr_drift(psnr) if len(psnr) > 1 else None,
                   "per_frame": {"frame": [x["frame"] for x in lines], "psnr": psnr}},
               "export_bytes": (manifest or {}).get("bytes"), "manifest_frames_ready": (manifest or {}).get("frames_ready")}
    (out / "summary_partial.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"partial: {len(lines)} frames trained, export has {summary['manifest_frames_ready']} frames")
    pack(out, job_dir, metrics, manifest, int(args.tar_mb * MB), log, layers_from=export)
    return 0


# ---- local screenshot of an unpacked result ---------------------------------------------------------------------

def view(unpacked: Path, shot: Path, width: int = 960, height: int = 540) -> list[Path]:
    """Import ``unpacked/job`` into a throw-away service (the real app), play it in the real viewer (headless
    Chromium) and screenshot its first and last included frames."""
    import tempfile

    from splatworks.service.admin import import_job_dir
    from splatworks.service.app import create_app
    from splatworks.service.settings import ServiceSettings
    from splatworks.viewer.testing import BrowserDriver, held_executor, serve

    written = []
    with tempfile.TemporaryDirectory(prefix="bb_view_") as tmp:
        settings = ServiceSettings(data_dir=Path(tmp) / "data")
        _, pub_key = import_job_dir(settings, unpacked / "job")  # DONE when the trimmed export is complete
        frames = json.loads((unpacked / "job" / "export" / "manifest.json").read_text())["frames"]
        with serve(create_app(settings, executor=held_executor())) as url, BrowserDriver(width, height) as b:
            b.goto(f"{url}/v/{pub_key}?quality=balanced")
            shots = [(0, shot)] + ([(frames - 1, shot.with_name(f"{shot.stem}-last{shot.suffix}"))] if frames > 1 else [])
            for k, path in shots:
                if k:  # the scrub bar, as a user would
                    b.eval(f"(() => {{ const s = document.getElementById('scrub'); s.value = '{k}'; "
                           "s.dispatchEvent(new Event('input')); })()")
                b.wait("window.splatworks && window.splatworks.player && "
                       f"window.splatworks.player.displayedFrame === {k}", 600)
                # Draw fresh frames now (the viewer only redraws on changes, which may be over already); on
                # SwiftShader a frame takes seconds and Spark's sort needs several of them to settle.
                b.eval("window.splatworks.measureFps(3, 0, 10)")
                time.sleep(1.0)
                path.parent.mkdir(parents=True, exist_ok=True)
                b.call("screenshot", path=str(path))
                written.append(path)
    for path in written:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return written


# ---- main ---------------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, out: Path, log: ProgressLog) -> int:
    server_args = ["--max-concurrent-jobs", "1"]
    if args.preset:
        server_args += ["--train-preset", args.preset]
    server = Server(out / "data", out / "server.log", *server_args)
    log(f"starting the service ({' '.join(server_args)}); data {out / 'data'}")
    server.start()
    job_dir = None
    try:
        created, seconds, nbytes = upload(server.url, args.data, args)
        job_dir = out / "data" / "jobs" / created["job_id"]
        up = {"seconds": seconds, "bytes": nbytes, "viewer": f"/v/{created['pub_key']}"}
        log(f"uploaded {nbytes / MB:.1f} MB in {seconds:.2f} s: job {created['job_id'][:8]}..., "
            f"viewer {server.url}/v/{created['pub_key']}")
        followed = follow(server.url, created, log, args.timeout)
        s = followed["status"]
        log(f"job {s['status']} after {followed['job_s']} s" + (f": {s['error']}" if s["error"] else ""))
        metrics, manifest, problems = download(server.url, created["pub_key"], out, log) \
            if s["status"] == "DONE" else (None, None, [])
    finally:
        server.stop()
    export = job_dir / "export" if job_dir is not None else None
    if followed["status"]["status"] == "DONE" and export is not None:  # what the API did not answer, from disk
        if metrics is None and (export / "metrics.json").exists():
            metrics = json.loads((export / "metrics.json").read_text())
        if manifest is None and (export / "manifest.json").exists():
            manifest = json.loads((export / "manifest.json").read_text())
    summary = summarise(out, up, followed, metrics, manifest, args)
    summary["api_download_problems"] = problems
    layers_from = None
    if problems and job_dir is not None:  # still pack the result: the job's own files are what the API serves
        log(f"the API did not serve {len(problems)} file(s) right; packing from the job folder instead")
        layers_from = job_dir / "export"
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "bench.md").write_text(markdown(summary))
    log("summary: " + json.dumps({k: summary.get(k) for k in ("status", "upload_s", "job_s", "first_playable_frame_s",
                                                              "issue7_checks")}))
    summary["pack"] = pack(out, job_dir, metrics, manifest, int(args.tar_mb * MB), log, layers_from)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))  # + what went into the tar
    return 0 if summary["status"] == "DONE" else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="panoptic_basketball folder (videos/*.mp4, calibration.json)")
    ap.add_argument("-o", "--out", type=Path, help="output folder (progress.log, summary.json, the tar)")
    ap.add_argument("--preset", default="", help="server's --train-preset (default: the server's default)")
    ap.add_argument("--end-frame", type=int, default=0, help="frames used (0 = all: the service's default)")
    ap.add_argument("--max-size", type=int, default=0, help="cap on the longest frame side (0 = server default)")
    ap.add_argument("--iterations-per-frame", type=int, default=0, help="override (0 = the preset's)")
    ap.add_argument("--held-out", default="", help="held-out camera (default: the service's 'first')")
    ap.add_argument("--no-calibration", action="store_true", help="calibrate by SfM instead of the GT file")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="stop following the job after this many s")
    ap.add_argument("--tar-mb", type=float, default=14.5, help="size cap of bb_result.tar.gz (MB)")
    ap.add_argument("--view", type=Path, help="screenshot an unpacked bb_result.tar.gz folder in the viewer")
    ap.add_argument("--shot", type=Path, default=Path("viewer_basketball.png"), help="PNG for --view")
    ap.add_argument("--partial", action="store_true", help="pack what the job in -o has finished so far (while it "
                    "runs, from another shell) into OUT/bb_result.tar.gz")
    args = ap.parse_args(argv)
    if args.partial:
        if not args.out:
            ap.error("--partial needs -o (the folder of the running benchmark)")
        return partial(args.out, args)
    if args.view:
        for path in view(args.view, args.shot):
            print(f"wrote {path}")
        return 0
    if not args.data or not args.out:
        ap.error("--data and -o are required (or --view DIR)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("FINISHED", "progress.log"):
        (out / name).unlink(missing_ok=True)
    (out / "pid").write_text(str(os.getpid()))
    log = ProgressLog(out / "progress.log")
    code = 1
    try:
        code = run(args, out, log)
    except BaseException as exc:  # noqa: BLE001 - the lead reads the log, not a terminal
        log(f"FAILED: {exc!r}")
        with open(out / "progress.log", "a") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        (out / "FINISHED").write_text(f"exit {code}\n")
        log(f"finished (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
