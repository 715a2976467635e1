"""Dynamic (multi-view video) jobs through the real service: ``splatworks serve`` on loopback, CPU, tiny budgets.

One synthetic rig (4 cameras, 5 frames, 64x48, camera cam00 held out) is uploaded twice: as separate videos with a
3-frame range (runs to DONE; every 4D file and the held-out video are downloaded and checked) and as one .zip of
all 5 frames, whose server is SIGKILLed mid-sequence and restarted (finished frames are not trained again).
Bad inputs get their 4xx without running anything. Budget: about 1 minute on 2 cores.
"""

from __future__ import annotations

import io
import json
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import PIL.Image  # noqa: F401  (before anything that may load pycolmap)
from splatworks.service.testing import ServerProcess, wait_for

N_CAMERAS, N_FRAMES, W, H, FPS = 4, 5, 64, 48, 10


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from splatworks.synthetic.scenes import make_dynamic_rig

    return make_dynamic_rig(tmp_path_factory.mktemp("dyn-rig"), n_cameras=N_CAMERAS, n_frames=N_FRAMES, width=W,
                            height=H, fps=FPS)


@pytest.fixture(scope="module")
def videos(rig: Any) -> list[Path]:
    return sorted(Path(p) for p in rig.videos.values())


def _server(data: Path) -> ServerProcess:
    return ServerProcess(data, "--train-preset", "tiny", "--train-iterations", "40", "--max-concurrent-jobs", "1",
                         "--cancel-grace-seconds", "3")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with _server(tmp_path_factory.mktemp("svc-dyn") / "data") as srv:
        yield srv


def upload(client: httpx.Client, files: list[tuple[str, Path]] | list[tuple[str, tuple[str, bytes]]],
           **fields: Any) -> httpx.Response:
    parts = []
    for field, f in files:
        name, data = (f.name, f.read_bytes()) if isinstance(f, Path) else f
        parts.append((field, (name, data, "application/octet-stream")))
    return client.post("/recon/dynamic-jobs", files=parts, data={k: str(v) for k, v in fields.items()})


def read_splat_bytes(data: bytes, pruned_rows: bool = False) -> np.ndarray:
    assert len(data) > 0 and len(data) % 32 == 0, f"{len(data)} bytes is not a .splat"
    rec = np.frombuffer(data, dtype=[("p", "<f4", 3), ("s", "<f4", 3), ("c", "u1", 4), ("r", "u1", 4)])
    # A delta layer keeps pruned Gaussians as rows that draw nothing: scales 0 and opacity byte 0.
    drawn = rec["c"][:, 3] > 0 if pruned_rows else np.ones(len(rec), dtype=bool)
    assert np.isfinite(rec["p"]).all() and (rec["s"][drawn] > 0).all() and (rec["s"][~drawn] == 0).all()
    return rec


def test_videos_upload_runs_to_done_and_4d_files_video_and_metrics_download(server, videos, rig, tmp_path) -> None:
    import av

    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = upload(c, [("videos", v) for v in videos] + [("calibration", Path(rig.calibration))], end_frame=3,
                   iterations_per_frame=20)
        assert r.status_code == 200, r.text
        job_id, pub_key = r.json()["job_id"], r.json()["pub_key"]
        stages, etas = set(), []

        def watch(s: dict[str, Any]) -> bool:
            stages.add(s["stage"])
            if s["stage"] and s["stage"].startswith("frame ") and s["eta_seconds"] is not None:
                etas.append(s["eta_seconds"])
            return s["status"] in ("DONE", "ERROR")

        status = wait_for(c, job_id, done=watch, timeout=240, poll=0.2)
        assert status["status"] == "DONE", status
        assert status["kind"] == "dynamic" and status["percent"] == 100.0
        assert any(s and s.startswith("frame ") and s.endswith(" of 3") for s in stages), stages
        assert etas and all(e >= 0 for e in etas), "no ETA was reported while frames trained"
        assert any("held-out cam00 PSNR" in line for line in status["log_tail"]), status["log_tail"]

        info = c.get(f"/recon/pub/{pub_key}/info").json()
        assert info["kind"] == "dynamic" and info["manifest"] == f"/recon/pub/{pub_key}/4d/manifest.json"
        assert info["video"] and info["metrics_url"]
        assert info["start_camera"] is not None  # the viewer starts at one of the rig's cameras
        m = c.get(info["manifest"]).json()
        assert (m["frames"], m["frames_ready"], m["fps"], m["static"]) == (3, 3, float(FPS), "static.splat")
        base = httpx.URL(server.url + info["manifest"])
        static = c.get(str(base.join(m["static"])))
        assert static.status_code == 200 and len(static.content) == m["bytes"]["static"]
        read_splat_bytes(static.content)
        # Delta encoding (dynamic/export4d.py): frame 0's whole layer, then only the changed rows per frame.
        from splatworks.dynamic.export4d import decode_delta

        assert m["encoding"] == "delta" and m["frame_urls"][0].endswith(".splat")
        layers, current = [], None
        for i, rel in enumerate(m["frame_urls"]):
            r = c.get(str(base.join(rel)))
            assert r.status_code == 200 and len(r.content) == m["bytes"]["per_frame"][i]
            if i == 0:
                current = np.frombuffer(read_splat_bytes(r.content).tobytes(), np.uint8).reshape(-1, 32).copy()
                assert len(current) == m["dynamic_count"]
            else:
                assert rel.endswith(".swd")
                decode_delta(r.content, len(current), rel).apply(current)  # full, then motion-only records
            layers.append(read_splat_bytes(current.tobytes(), pruned_rows=True))
        # The moving objects' Gaussians move between the first and the last frame (ids line up: no pruning here).
        if len(layers[0]) == len(layers[-1]):
            assert np.abs(layers[0]["p"] - layers[-1]["p"]).max() > 1e-4
        assert c.get(f"/recon/pub/{pub_key}/4d/frames/000009.splat").status_code == 404
        assert c.get(f"/recon/pub/{pub_key}/4d/frames/000009.swd").status_code == 404
        assert c.get(f"/recon/pub/{pub_key}/4d/frames/000001.txt").status_code == 404
        assert c.get(f"/recon/pub/{pub_key}/4d/frames/..%2Fmanifest.json").status_code == 404

        video = c.get(info["video"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        (tmp_path / "heldout.mp4").write_bytes(video.content)
        with av.open(str(tmp_path / "heldout.mp4")) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 3 and frames[0].shape == (H, 2 * W, 3)  # rendering | ground truth
        truth = np.asarray(PIL.Image.open(Path(rig.frames_dir) / "cam00" / "000000.png"))
        assert np.abs(frames[0][:, W:].astype(float) - truth[..., :3]).mean() < 12  # right half = camera cam00

        metrics = c.get(info["metrics_url"]).json()
        assert metrics["held_out_camera"] == "cam00" and metrics["frames"] == 3
        assert 5 < metrics["heldout"]["psnr_mean"] < 60 and len(metrics["heldout_per_frame"]["psnr"]) == 3
        assert metrics["timings"]["frames_trained_this_attempt"] == 3


def test_restart_resumes_from_the_last_finished_frame(videos, rig, tmp_path) -> None:
    """A .zip of all 5 frames; the server is SIGKILLed after frame 2 and restarted: done frames are kept."""
    data = tmp_path / "data"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for v in videos:
            zf.write(v, f"rig/{v.name}")
        zf.write(rig.calibration, "rig/calibration.json")
        zf.writestr("rig/README.txt", "four cameras")
    srv = _server(data).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = upload(c, [("videos", ("rig.zip", buf.getvalue()))], iterations_per_frame=60)
            assert r.status_code == 200, r.text
            job_id = r.json()["job_id"]
        train = data / "jobs" / job_id / "train"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if len(json.loads((train / "state.json").read_text())["frames_done"]) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the job never finished 2 frames")
        srv.kill(signal.SIGKILL)  # the worker dies with the server (PR_SET_PDEATHSIG)
        time.sleep(1.0)
        done_before = json.loads((train / "state.json").read_text())["frames_done"]
        assert 2 <= len(done_before) < N_FRAMES, done_before
        mtimes = {p.name: p.stat().st_mtime_ns for p in (train / "frames").glob("*.pt")}
        assert len(mtimes) >= len(done_before)
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            status = wait_for(c, job_id, timeout=240)
            assert status["status"] == "DONE", status
            pub_key = status["pub_key"]
            m = c.get(f"/recon/pub/{pub_key}/4d/manifest.json").json()
            assert m["frames"] == m["frames_ready"] == N_FRAMES
            metrics = c.get(f"/recon/pub/{pub_key}/metrics.json").json()
        for f in done_before:  # finished frames were not trained again
            name = f"{f:06d}.pt"
            assert (train / "frames" / name).stat().st_mtime_ns == mtimes[name], f"frame {f} was retrained"
        lines = [json.loads(x) for x in (train / "metrics.jsonl").read_text().splitlines()]
        assert [x["frame"] for x in lines] == list(range(N_FRAMES)), "a frame was trained twice or skipped"
        assert metrics["timings"]["frames_trained_this_attempt"] == N_FRAMES - len(done_before)
        log = (data / "jobs" / job_id / "run.log").read_text()
        assert f"resuming after {len(done_before)} finished frame(s) of {N_FRAMES}" in log, log[-2000:]
    finally:
        srv.stop()


# ---- bad inputs: each a clear 4xx, nothing queued --------------------------------------------------------------

def _reencode(rig: Any, camera: str, out: Path, fps: int, n: int) -> Path:
    from splatworks.synthetic.scenes import encode_video

    frames = Path(rig.frames_dir) / camera
    out.parent.mkdir(parents=True, exist_ok=True)
    return encode_video([frames / f"{i:06d}.png" for i in range(n)], out, fps)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_bad_inputs_get_clear_answers(server, videos, rig, tmp_path) -> None:
    fake = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8  # says MP4, holds no video
    png = (Path(rig.frames_dir) / "cam00" / "000000.png").read_bytes()
    other_rate = _reencode(rig, "cam01", tmp_path / "cam01.mp4", 15, N_FRAMES)
    bad_calib = json.loads(Path(rig.calibration).read_text())
    bad_calib["cameras"] = bad_calib["cameras"][:2]
    cases = [
        ("one camera", [("videos", videos[0])], {}, 422, "at least 2"),
        ("unreadable", [("videos", videos[0]), ("videos", ("cam01.mp4", fake)), ("videos", videos[2])], {}, 422,
         "cannot read video"),
        ("not a video", [("videos", videos[0]), ("videos", ("cam01.png", png))], {}, 415, "is not a video"),
        ("frame rates", [("videos", videos[0]), ("videos", other_rate), ("videos", videos[2])], {}, 422,
         "different frame rates"),
        ("same name", [("videos", videos[0]), ("videos", ("cam00.mov", videos[1].read_bytes()))], {}, 422,
         "two videos are named"),
        ("held-out", [("videos", v) for v in videos], {"held_out_camera": "cam09"}, 422, "not one of the cameras"),
        ("backend", [("videos", v) for v in videos], {"backend": "nerf"}, 422, "backend"),
        ("option", [("videos", v) for v in videos], {"colour": "red"}, 400, "unknown form field"),
        ("range", [("videos", v) for v in videos], {"start_frame": 40}, 422, "shortest video has 5 frames"),
        ("calibration", [("videos", v) for v in videos] + [("calibration", ("c.json", json.dumps(bad_calib).encode()))],
         {}, 422, "calibration file cannot be used"),
        ("zip bomb", [("videos", ("rig.zip", _zip({"cam00.mp4": bytes(4_000_000), "cam01.mp4": videos[1].read_bytes()})))],
         {}, 413, "zip-bomb"),
        ("zip traversal", [("videos", ("rig.zip", _zip({"../cam00.mp4": videos[0].read_bytes()}, zipfile.ZIP_STORED)))],
         {}, 422, "climbs out"),
        ("wrong field", [("files", videos[0])], {}, 400, "videos"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for what, files, fields, code, words in cases:
            r = upload(c, files, **fields)
            assert r.status_code == code, f"{what}: {r.status_code} {r.text}"
            assert words in r.json()["detail"], f"{what}: {r.json()['detail']}"
        jobs_dir = server.data_dir / "jobs"
        before = {p.name for p in jobs_dir.iterdir()}
        # Different frame counts: accepted, trimmed to the shortest, with a warning in the job's log.
        short = _reencode(rig, "cam01", tmp_path / "short" / "cam01.mp4", FPS, 3)
        r = upload(c, [("videos", videos[0]), ("videos", short), ("videos", videos[2]), ("videos", videos[3])])
        assert r.status_code == 200, r.text
        status = c.get(f"/recon/jobs/{r.json()['job_id']}/status").json()
        assert any("different frame counts" in line and "first 3 frames" in line for line in status["log_tail"])
        c.delete(f"/recon/jobs/{r.json()['job_id']}")
        # Refused uploads left nothing behind.
        assert {p.name for p in jobs_dir.iterdir()} <= before


# ---- the other backends and workflows, through the job function itself (no server: no worker start-up) --------

@pytest.mark.parametrize("variant", ["mixvoxels", "depth_distill"])
def test_job_function_runs_mixvoxels_and_depth_distill(variant, videos, rig, tmp_path) -> None:
    import shutil

    from splatworks.pipeline.dynamic import DynamicJobConfig, run_dynamic_job

    job = tmp_path / "job"
    (job / "upload").mkdir(parents=True)
    for v in videos:
        shutil.copy(v, job / "upload" / v.name)
    shutil.copy(rig.calibration, job / "upload" / "calibration.json")
    cfg = DynamicJobConfig(preset="tiny", calibration_file=True, device="cpu", end_frame=3, iterations_per_frame=20,
                           iterations_first_frame=40)
    if variant == "mixvoxels":
        cfg.backend, cfg.iterations_per_frame, cfg.iterations_first_frame = "mixvoxels", 100, None
    else:
        cfg.depth = "distill"
    stages: list[str] = []
    summary = run_dynamic_job(job, cfg, lambda ev: stages.append(ev.stage))
    assert summary["held_out_camera"] == "cam00" and 5 < summary["heldout"]["psnr_mean"] < 60
    assert (job / "export" / "heldout.mp4").stat().st_size > 0
    assert json.loads((job / "export" / "metrics.json").read_text())["backend"] == cfg.backend
    if variant == "mixvoxels":
        assert summary["manifest"] is None and "training" in stages  # jointly trained: no per-frame layers
        assert (job / "train" / "checkpoint.pt").exists()
    else:
        depth = np.load(job / "depth" / "all_depth.npy")
        assert np.isfinite(depth).all() and (depth > 0).mean() > 0.3  # the static model's depth covers the room
        assert summary["train_config"]["depth"] == "distill" and summary["frames_ready"] == 3
        assert "frame 3 of 3" in stages
