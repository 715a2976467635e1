"""The viewer plays a dynamic job's 4D sequence in real headless Chromium, served by the real app on loopback.

A known tiny sequence is published in a dynamic job's folder exactly as ``pipeline/dynamic.py`` lays it out
(``export/manifest.json``, ``static.splat``, ``frames/NNNNNN.splat``; the rig in ``colmap/scene.json`` gives the
start view). The page is opened as ``/v/{pub_key}`` with no manifest parameter: it must find the 4D sequence from
``/info`` (kind "dynamic") and the job's ``/4d/`` routes. Screenshots at two times must differ where the object
moved and match where nothing moved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from splatworks.viewer.camera import viewer_start_camera
from splatworks.viewer.testing import (BrowserDriver, blob_params, browser_missing, dominant_colour_at, held_executor,
                                       project_threejs, ring_scene, serve)

pytestmark = [pytest.mark.browser, pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))]

W, H = 480, 320
RED, WHITE = np.array([1.0, 0.05, 0.05]), np.array([1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from splatworks.service.app import create_app
    from splatworks.service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("viewer_dyn") / "data", max_concurrent_jobs=1)
    app = create_app(settings, executor=held_executor())  # the test plays the worker: no training here
    with serve(app) as url:
        yield settings, url


def publish_sequence(settings: Any, n_frames: int = 4, ready: int = 3) -> dict[str, Any]:
    """A dynamic job whose export holds a white static blob and a red blob moving left to right."""
    from splatworks.service.jobs import JobPaths, new_id
    from splatworks.service.store import JobRecord, open_store
    from splatworks.splat.io import write_splat

    job_id, pub_key = new_id(), new_id()
    root = JobPaths.of(settings.jobs_dir, job_id).make().root
    scene = ring_scene(n=8, width_px=W, height_px=H, fov_y_deg=50.0, up=(0.0, 0.0, 1.0))
    scene.save(root / "colmap")
    start = viewer_start_camera(scene)
    target, up = np.asarray(start["target"]), np.asarray(start["up"])
    right = np.cross(target - np.asarray(start["position"]), up)
    right /= np.linalg.norm(right)
    static_pos = target + 0.75 * up
    moving = [target + (i - (n_frames - 1) / 2) * 0.7 * right + 0.1 * up for i in range(n_frames)]
    export = root / "export"
    (export / "frames").mkdir(parents=True)
    write_splat(export / "static.splat", blob_params(static_pos[None], WHITE[None], scale=0.14))
    files = []
    for i, p in enumerate(moving):
        files.append(f"frames/{i:06d}.splat")
        write_splat(export / files[-1], blob_params(p[None], RED[None], scale=0.14))

    def manifest(frames_ready: int) -> None:
        m = {"schema": "splatworks.4d/1", "format": "splat", "fps": 4.0, "frames": n_frames,
             "frames_ready": frames_ready, "static": "static.splat", "frame_files": files[:frames_ready],
             "frame_urls": files[:frames_ready], "frame_pattern": "frames/{frame}.splat", "frame_digits": 6}
        tmp = export / "manifest.json.tmp"
        tmp.write_text(json.dumps(m))
        tmp.replace(export / "manifest.json")

    manifest(ready)
    store = open_store(settings.resolved_database_url)
    try:
        store.create(JobRecord(job_id=job_id, pub_key=pub_key, kind="dynamic", status="RUNNING", stage="frame 3 of 4",
                               input_kind="videos", input_files=4, created_at=time.time()))
    finally:
        store.close()
    return {"pub_key": pub_key, "static": static_pos, "moving": moving, "manifest": manifest}


def settle(b: BrowserDriver, frame: int) -> None:
    b.wait(f"window.splatworks.player.displayedFrame === {frame}", 60)
    n = b.eval("window.splatworks.framesRendered")
    b.wait(f"window.splatworks.framesRendered > {n + 3}", 30)
    time.sleep(0.5)


def seek(b: BrowserDriver, frame: int) -> None:
    b.eval(f"(() => {{ const s = document.getElementById('scrub'); s.value = '{frame}'; "
           "s.dispatchEvent(new Event('input')); })()")


def patch(img: np.ndarray, uv: np.ndarray, r: int = 6) -> np.ndarray:
    u, v = int(round(uv[0])), int(round(uv[1]))
    return img[v - r:v + r + 1, u - r:u + r + 1].astype(float)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserDriver]:
    with BrowserDriver(W, H) as b:
        yield b


def test_viewer_plays_a_dynamic_job_from_its_4d_routes(served, browser, tmp_path) -> None:
    settings, url = served
    seq = publish_sequence(settings)
    b = browser
    b.goto(f"{url}/v/{seq['pub_key']}?poll=300")
    b.wait("window.splatworks && window.splatworks.player && window.splatworks.player.displayedFrame === 0", 90)
    assert b.eval("!document.getElementById('player').hidden")
    assert b.eval("window.splatworks.player.framesReady") == 3  # streams what is published, not all 4
    settle(b, 0)
    pose = b.eval("window.splatworks.cameraPose()")
    first = b.screenshot(tmp_path / "t0.png")
    seek(b, 2)
    settle(b, 2)
    assert b.eval("JSON.stringify(window.splatworks.cameraPose())") == json.dumps(pose, separators=(",", ":"))
    later = b.screenshot(tmp_path / "t2.png")

    uv = project_threejs(pose, np.stack([seq["static"], seq["moving"][0], seq["moving"][2]]), W, H)
    for u, v in uv:
        assert 20 < u < W - 20 and 20 < v < H - 20, f"a blob projects off screen at {(u, v)}"
    # Where the object moved: red at its old place at t0 only, at its new place at t2 only.
    assert np.abs(dominant_colour_at(first, uv[1]) - 255 * RED).max() < 70
    assert dominant_colour_at(later, uv[1]).max() < 60, "the object is still drawn where it was at t0"
    assert np.abs(dominant_colour_at(later, uv[2]) - 255 * RED).max() < 70
    assert dominant_colour_at(first, uv[2]).max() < 60, "the object is drawn at its t2 place already at t0"
    assert np.abs(patch(first, uv[1]) - patch(later, uv[1])).max(axis=2).mean() > 60
    # Where nothing moved: the static blob and the empty corners match between the two times.
    assert np.abs(dominant_colour_at(first, uv[0]) - 255 * WHITE).max() < 70
    assert np.abs(patch(first, uv[0]) - patch(later, uv[0])).max(axis=2).mean() < 8
    corner = (slice(90, 130), slice(10, 60))
    assert np.abs(first[corner].astype(float) - later[corner].astype(float)).mean() < 4

    # Training publishes the fourth frame: the player picks it up from the manifest and plays it.
    seq["manifest"](4)
    b.wait("window.splatworks.player.framesReady === 4", 15)
    b.eval("window.splatworks.player.play()")
    b.wait("window.splatworks.player.displayedFrame === 3", 30)
    b.eval("window.splatworks.player.pause()")


def test_upload_page_sends_multi_view_videos_as_a_dynamic_job(served, browser, tmp_path) -> None:
    from splatworks.synthetic.scenes import make_dynamic_rig

    settings, url = served
    rig = make_dynamic_rig(tmp_path / "rig", n_cameras=3, n_frames=2, width=32, height=24, fps=5)
    videos = [str(p) for _, p in sorted(rig.videos.items())]
    b = browser
    assert b.goto(f"{url}/?poll=300") == 200
    assert b.eval("document.getElementById('dynamic-options').classList.contains('hidden')")
    b.call("click", selector="input[name=kind][value=dynamic]")
    assert not b.eval("document.getElementById('dynamic-options').classList.contains('hidden')")
    b.screenshot(tmp_path / "upload_dynamic.png")
    # One video is not a rig: the service refuses and the page says why.
    b.call("setInputFiles", selector="#files", files=videos[:1])
    b.call("click", selector="#start")
    b.wait("window.splatworksUpload.error !== null", 30)
    assert "at least 2" in b.call("text", selector="#job-error")
    b.call("setInputFiles", selector="#files", files=videos)
    b.call("setInputFiles", selector="#calibration", files=[str(rig.calibration)])
    b.eval("document.getElementById('held-out').value = 'cam02'")
    b.call("click", selector="#start")
    b.wait("window.splatworksUpload.pubKey !== null || window.splatworksUpload.phase === 'failed'", 30)
    state = b.eval("window.splatworksUpload")
    assert state["pubKey"] and state["error"] is None, state
    b.wait("window.splatworksUpload.info !== null", 20)
    info = b.eval("window.splatworksUpload.info")
    assert info["kind"] == "dynamic" and info["status"] == "PENDING"
    from splatworks.service.store import open_store

    store = open_store(settings.resolved_database_url)
    try:
        job = store.get(state["jobId"])
    finally:
        store.close()
    assert job.config["held_out_camera"] == "cam02" and job.config["calibration_file"] is True
    upload_dir = Path(settings.jobs_dir) / state["jobId"] / "upload"
    assert sorted(p.name for p in upload_dir.iterdir()) == ["calibration.json", "cam00.mp4", "cam01.mp4",
                                                             "cam02.mp4"]
    b.goto("about:blank")  # stop the page's polling before the server shuts down
