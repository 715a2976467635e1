"""End to end against a real ``splatworks serve`` on loopback: real synthetic photos, a .zip and a video go through
real pycolmap SfM and CPU training (tiny budget) to DONE; results download and parse; at most N jobs run at
once, in order; a failing job ends ERROR with its reason and harms nobody; cancel, list, SSE, delete; a server
killed with SIGKILL mid-training is started again and finishes every job, losing no job or upload."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
from plyfile import PlyData

from splatworks.service.testing import ServerProcess, multipart_files, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path] | Path]:
    """16 orbit views (128x96) of the synthetic room: 8 as photos, all 16 as a video."""
    from splatworks.synthetic import make_static_scene
    from splatworks.synthetic.scenes import encode_video

    root = tmp_path_factory.mktemp("svc-photos")
    make_static_scene(root, n_views=16, width=128, height=96, seed=3)
    views = sorted((root / "images").glob("*.png"))
    video = encode_video(views, root / "walk.mp4", fps=8)
    return {"images": views[::2], "video": video, "all": views}


def zip_bytes(paths: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__MACOSX/._junk", b"finder metadata")
        for p in paths:
            zf.write(p, f"holiday/{p.name}")
    return buf.getvalue()


def noise_images(n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(("files", (f"noise{i}.png", buf.getvalue(), "image/png")))
    return out


def check_results(client: httpx.Client, status: dict) -> int:
    """Download .ply and .splat of a DONE job and parse them; returns the Gaussian count."""
    pub = status["pub_key"]
    r_ply = client.get(f"/recon/pub/{pub}/cloud.ply")
    r_splat = client.get(f"/recon/pub/{pub}/scene.splat")
    assert r_ply.status_code == 200 and r_splat.status_code == 200
    assert int(r_ply.headers["x-splatworks-iteration"]) == status["latest_checkpoint"]
    ply = PlyData.read(io.BytesIO(r_ply.content))
    v = ply["vertex"]
    names = set(v.data.dtype.names)
    assert {"x", "y", "z", "opacity", "scale_0", "rot_0", "f_dc_0"} <= names
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    assert len(xyz) > 10 and np.isfinite(xyz).all()
    assert len(r_splat.content) == 32 * len(xyz)  # one 32-byte record per Gaussian
    splat_xyz = np.frombuffer(r_splat.content, dtype=np.float32).reshape(-1, 8)[:, :3]
    assert np.isfinite(splat_xyz).all()
    assert np.allclose(np.sort(splat_xyz[:, 0]), np.sort(xyz[:, 0]), atol=1e-4)  # same Gaussians, other order
    return len(xyz)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("svc-jobs") / "data"
    with ServerProcess(data, "--train-preset", "tiny", "--max-concurrent-jobs", "2", "--video-frames", "8",
                       "--cancel-grace-seconds", "3") as srv:
        yield srv


def test_jobs_run_in_order_at_most_n_and_finish(server: ServerProcess, photos: dict) -> None:
    client = httpx.Client(base_url=server.url, timeout=60)
    mine = {"X-Client-Token": "my-own-random-client-token"}
    jobs = {}
    jobs["images"] = client.post("/recon/jobs", files=multipart_files(photos["images"]), headers=mine).json()
    jobs["zip"] = client.post("/recon/jobs", files=[("files", ("photos.zip", zip_bytes(photos["images"]),
                                                               "application/zip"))]).json()
    jobs["video"] = client.post("/recon/jobs", files=multipart_files([photos["video"]]), headers=mine).json()
    jobs["noise"] = client.post("/recon/jobs", files=noise_images(4)).json()
    jobs["cancel"] = client.post("/recon/jobs", files=multipart_files(photos["images"])).json()
    for name, j in jobs.items():
        assert len(j["job_id"]) >= 32 and len(j["pub_key"]) >= 32 and j["job_id"] != j["pub_key"], name

    # The 5th is queued behind 4 others: cancel it before it starts.
    first = client.get(f"/recon/jobs/{jobs['cancel']['job_id']}/status").json()
    assert first["status"] == "PENDING" and first["queue_position"] >= 2
    cancelled = client.post(f"/recon/jobs/{jobs['cancel']['job_id']}/cancel").json()
    assert cancelled["status"] == "ERROR" and cancelled["cancelled"] and "cancelled" in cancelled["error"]

    max_running = 0
    deadline = time.monotonic() + 540
    while True:
        st = {n: client.get(f"/recon/jobs/{j['job_id']}/status").json() for n, j in jobs.items()}
        running = [n for n, s in st.items() if s["status"] == "RUNNING"]
        max_running = max(max_running, len(running))
        if all(s["status"] in ("DONE", "ERROR") for s in st.values()):
            break
        assert time.monotonic() < deadline, {n: (s["status"], s["log_tail"][-3:]) for n, s in st.items()}
        time.sleep(0.25)
    assert max_running <= 2
    for name in ("images", "zip", "video"):
        assert st[name]["status"] == "DONE", (name, st[name]["error"], st[name]["log_tail"])
        assert st[name]["percent"] == 100.0 and st[name]["latest_checkpoint"] == 6
        assert st[name]["viewer_url"] == f"/v/{jobs[name]['pub_key']}"
    assert st["video"]["input_kind"] == "video" and st["zip"]["input_kind"] == "zip"
    video_log = (server.data_dir / "jobs" / jobs["video"]["job_id"] / "run.log").read_text()
    assert "kept 8 of 16 sampled video frames" in video_log
    # The failing job: ERROR with its reason in error and log_tail; the others were not harmed (DONE above).
    noise = st["noise"]
    assert noise["status"] == "ERROR" and not noise["cancelled"] and noise["error"]
    assert any(noise["error"][:40] in line for line in noise["log_tail"])

    # Exactly-once, in-order scheduling, from the timestamps the store kept: never more than 2 at once, and
    # jobs started in submission order.
    spans = sorted((s["started_at"], s["finished_at"]) for n, s in st.items() if s["started_at"])
    for t, _ in spans:
        assert sum(1 for a, b in spans if a <= t < b) <= 2
    starts = [st[n]["started_at"] for n in ("images", "zip", "video", "noise")]
    assert starts == sorted(starts)
    assert st["video"]["started_at"] >= min(st["images"]["finished_at"], st["zip"]["finished_at"]) - 0.01

    counts = [check_results(client, st[n]) for n in ("images", "zip", "video")]
    assert all(c > 10 for c in counts)
    for name in ("images", "video"):
        pub = jobs[name]["pub_key"]
        assert client.get(f"/v/{pub}").status_code == 200
        info = client.get(f"/recon/pub/{pub}/info").json()
        assert info["status"] == "DONE" and info["kind"] == "static" and info["latest_checkpoint"] == 6
        assert info["files"]["splat"].endswith("/scene.splat") and info["files"]["ply"].endswith("/cloud.ply")
        assert info["start_camera"] and len(info["start_camera"]["position"]) == 3
        assert "job_id" not in info and "log_tail" not in info  # the public key reveals no management data

    # List my jobs: by the token sent at creation, and by ids.
    by_token = client.get("/recon/jobs", headers=mine).json()
    assert {j["job_id"] for j in by_token} == {jobs["images"]["job_id"], jobs["video"]["job_id"]}
    by_ids = client.get("/recon/jobs", params={"ids": f"{jobs['zip']['job_id']},{jobs['noise']['job_id']}"}).json()
    assert {j["status"] for j in by_ids} == {"DONE", "ERROR"}

    # Server-sent events of a finished job: its log lines, a status event, then the end.
    text = client.get(f"/recon/jobs/{jobs['images']['job_id']}/events").text
    events = [b.split("\n", 1) for b in text.strip().split("\n\n")]
    kinds = [e[0] for e in events]
    assert "event: status" in kinds and kinds[-1] == "event: end" and "event: log" in kinds
    status_event = json.loads(events[kinds.index("event: status")][1][len("data: "):])
    assert status_event["status"] == "DONE"

    # Delete: the job and its files are gone; its public links too.
    job_dir = server.data_dir / "jobs" / jobs["zip"]["job_id"]
    assert (job_dir / "gs_output").is_dir()
    assert client.delete(f"/recon/jobs/{jobs['zip']['job_id']}").json()["deleted"]
    assert client.get(f"/recon/jobs/{jobs['zip']['job_id']}/status").status_code == 404
    assert client.get(f"/recon/pub/{jobs['zip']['pub_key']}/cloud.ply").status_code == 404
    assert not job_dir.exists()
    # Job folders have the documented layout.
    d = server.data_dir / "jobs" / jobs["images"]["job_id"]
    for part in ("upload", "colmap", "work", "gs_output/point_cloud/iteration_6", "run.log", "job.json"):
        assert (d / part).exists(), part
    # Training reported its progress through the job (6 tiny iterations can finish between two polls on an idle
    # machine, so a poll seeing "training, iteration k" is asserted in the restart test below, whose run is long).
    run_log = (d / "run.log").read_text()
    for line in ("training 6 iterations", "checkpoint iteration_2", "checkpoint iteration_4", "done: iteration 6"):
        assert line in run_log, (line, run_log[-800:])
    client.close()


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_sigkill_mid_training_then_restart_finishes_everything(tmp_path: Path, photos: dict) -> None:
    data = tmp_path / "data"
    # Enough iterations after the first checkpoint that a loaded machine cannot finish them between two polls.
    srv = ServerProcess(data, "--train-preset", "tiny", "--train-iterations", "40", "--checkpoint-steps", "2", "4",
                        "6", "40", "--max-concurrent-jobs", "1")
    srv.start()
    try:
        client = httpx.Client(base_url=srv.url, timeout=60)
        a = client.post("/recon/jobs", files=multipart_files(photos["images"])).json()
        b = client.post("/recon/jobs", files=multipart_files(photos["all"][1::2])).json()
        st = wait_for(client, a["job_id"], lambda s: (s["latest_checkpoint"] or 0) >= 2 or s["status"] != "RUNNING"
                      and s["status"] != "PENDING", timeout=300, poll=0.2)
        assert st["status"] == "RUNNING" and st["stage"] == "training", st
        assert st["iteration"] and st["total"] == 40 and 0 < st["percent"] < 100
        assert client.get(f"/recon/pub/{a['pub_key']}/cloud.ply").status_code == 200  # served while training
        assert client.get(f"/recon/jobs/{b['job_id']}/status").json()["status"] == "PENDING"
        worker_pid = int(next(l for l in st["log_tail"] if "worker pid" in l).split("worker pid ")[1].rstrip(")"))
        uploads = {j["job_id"]: _hashes(data / "jobs" / j["job_id"] / "upload") for j in (a, b)}

        srv.kill(signal.SIGKILL)
        deadline = time.monotonic() + 10  # the worker dies with the server (no orphan keeps writing)
        while Path(f"/proc/{worker_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{worker_pid}").exists(), "the job's worker outlived the killed server"

        srv.start()
        done_a = wait_for(client, a["job_id"], timeout=400)
        done_b = wait_for(client, b["job_id"], timeout=400)
        for done in (done_a, done_b):
            assert done["status"] == "DONE", (done["error"], done["log_tail"])
            assert done["latest_checkpoint"] == 40
            check_results(client, done)
        log = (data / "jobs" / a["job_id"] / "run.log").read_text()
        assert "attempt 2 started" in log
        assert "server restarted" in log
        metrics = json.loads((data / "jobs" / a["job_id"] / "gs_output" / "metrics.json").read_text())
        assert metrics["resumed_from"] and metrics["resumed_from"] >= 2  # resumed, not restarted from zero
        for j in (a, b):
            assert _hashes(data / "jobs" / j["job_id"] / "upload") == uploads[j["job_id"]]
        assert client.get("/health").json()["jobs"]["DONE"] == 2

        # A worker killed from outside (the OOM killer, say): its job ends ERROR with the reason; the server
        # and its published results stay as they were.
        c = client.post("/recon/jobs", files=multipart_files(photos["images"])).json()
        st = wait_for(client, c["job_id"], lambda s: any("worker pid" in l for l in s["log_tail"]), timeout=120,
                      poll=0.1)
        pid = int(next(l for l in st["log_tail"] if "worker pid" in l).split("worker pid ")[1].rstrip(")"))
        os.kill(pid, signal.SIGKILL)
        dead = wait_for(client, c["job_id"], timeout=60)
        assert dead["status"] == "ERROR" and "worker process died" in dead["error"] and "signal 9" in dead["error"]
        assert any("worker process died" in l for l in dead["log_tail"])
        assert client.get("/health").json()["jobs"] == {"PENDING": 0, "RUNNING": 0, "DONE": 2, "ERROR": 1}

        # Cancel a running job: it stops at its next progress report; its worker is gone soon after.
        d = client.post("/recon/jobs", files=multipart_files(photos["images"])).json()
        st = wait_for(client, d["job_id"], lambda s: s["stage"] is not None, timeout=120, poll=0.1)
        pid = int(next(l for l in st["log_tail"] if "worker pid" in l).split("worker pid ")[1].rstrip(")"))
        assert client.post(f"/recon/jobs/{d['job_id']}/cancel").status_code == 200
        stopped = wait_for(client, d["job_id"], timeout=60)
        assert stopped["status"] == "ERROR" and stopped["cancelled"] and "cancelled" in stopped["error"]
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists()
        client.close()
    finally:
        srv.kill(signal.SIGKILL)
