"""The viewer and upload page in real headless Chromium (SwiftShader WebGL) against the real service on loopback.

Known scenes: a ring of z-up training cameras and a few bright, large Gaussians placed around the orbit target;
their centres are projected with the page's own camera pose, and the screenshot must show each colour there.
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
                                       project_threejs, ring_scene, serve, write_checkpoint)

pytestmark = [pytest.mark.browser, pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))]

W, H = 640, 400  # viewport = training image size, so the start view is the training view pixel for pixel
POLL = "poll=300"
RGB = np.array([[1.0, 0.05, 0.05], [0.05, 1.0, 0.05], [0.1, 0.2, 1.0]])
CMY = np.array([[0.05, 1.0, 1.0], [1.0, 0.05, 1.0], [1.0, 1.0, 0.05]])


# ---- the known job ------------------------------------------------------------------------------------------
def blob_centres(start: dict[str, Any]) -> np.ndarray:
    """(3, 3) world points around the orbit target: left, right-up, right-down in the start view."""
    target, up = np.asarray(start["target"]), np.asarray(start["up"])
    forward = target - np.asarray(start["position"])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    return np.stack([target - 0.9 * right, target + 0.6 * right + 0.45 * up, target + 0.6 * right - 0.45 * up])


class Service:
    """The real app (splatworks.service: routes, store, pages) with a data folder of its own, served by uvicorn
    on 127.0.0.1. Its executor is held (``testing.held_executor``): the test plays the training worker and
    publishes checkpoints, so no SfM/training competes with Chromium for the 2 cores."""

    def __init__(self, data_dir: Path) -> None:
        from splatworks.service.app import create_app
        from splatworks.service.settings import ServiceSettings

        self.settings = ServiceSettings(data_dir=data_dir, train_preset="tiny", max_concurrent_jobs=1)
        self.app = create_app(self.settings, executor=held_executor())

    def import_job(self, folder: Path) -> tuple[str, str]:
        from splatworks.service.admin import import_job_dir

        return import_job_dir(self.settings, folder)

    def job_dir(self, job_id: str) -> Path:
        return Path(self.settings.jobs_dir) / job_id

    def publish(self, job_id: str, iteration: int, params: dict[str, Any], **fields: Any) -> None:
        """What a training worker does at a checkpoint: write the files, then record it in the job store."""
        from splatworks.service.store import open_store

        write_checkpoint(self.job_dir(job_id) / "gs_output", iteration, params)
        store = open_store(self.settings.resolved_database_url)
        try:
            store.update(job_id, latest_checkpoint=iteration, **fields)
        finally:
            store.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    svc = Service(tmp_path_factory.mktemp("viewer_service") / "data")
    with serve(svc.app) as url:
        yield svc, url


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserDriver]:
    with BrowserDriver(W, H) as b:
        yield b


@pytest.fixture(scope="module")
def known_job(service: tuple[Service, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    svc, _ = service
    folder = tmp_path_factory.mktemp("known_job")
    # A tilted world up (as SfM leaves it): a viewer that assumed y-up would show this scene rolled.
    scene = ring_scene(n=8, width_px=W, height_px=H, fov_y_deg=50.0, up=(0.5, 0.2, 1.0))
    start = viewer_start_camera(scene)
    centres = blob_centres(start)
    write_checkpoint(folder / "gs_output", 100, blob_params(centres, RGB, scale=0.16), ply=True)
    scene.save(folder / "colmap")
    job_id, pub_key = svc.import_job(folder)
    return {"job_id": job_id, "pub_key": pub_key, "start": start, "centres": centres,
            "training_camera": scene.camera(start["name"])}


def wait_rendered(b: BrowserDriver, loads: int = 1, timeout: float = 60.0) -> None:
    """Until ``loads`` splat files are on screen and Spark had time to sort and draw them."""
    b.wait(f"window.splatworks && window.splatworks.loadsCompleted >= {loads} && "
           "window.splatworks.framesRendered > 2", timeout)
    n = b.eval("window.splatworks.framesRendered")
    b.wait(f"window.splatworks.framesRendered > {n + 2}", 20)
    time.sleep(0.5)


def lit_fraction(img: np.ndarray) -> float:
    """Share of lit pixels in the band between the top panels and the bottom hint (splats only, no UI)."""
    return float((img[80:H - 50].max(axis=2) > 60).mean())


def assert_colours_at(img: np.ndarray, uv: np.ndarray, colours: np.ndarray, tol: float = 70.0) -> None:
    for (u, v), want in zip(uv, colours):
        assert 20 < u < W - 20 and 20 < v < H - 20, f"blob projected off screen at {(u, v)}"
        got = dominant_colour_at(img, (u, v))
        assert np.abs(got - 255 * want).max() < tol, f"at pixel {(round(u), round(v))}: got {got}, want {255 * want}"


# ---- tests ------------------------------------------------------------------------------------------------
def test_viewer_renders_known_splats_then_swaps_in_new_checkpoint(service, browser, known_job, tmp_path) -> None:
    svc, url = service
    b = browser
    assert b.goto(f"{url}/v/{known_job['pub_key']}?{POLL}") == 200
    wait_rendered(b)
    b.eval("window.__sameDocument = 42")
    img = b.screenshot(tmp_path / "first.png")

    pose = b.eval("window.splatworks.cameraPose()")
    np.testing.assert_allclose(pose["position"], known_job["start"]["position"], atol=1e-6)
    np.testing.assert_allclose(pose["target"], known_job["start"]["target"], atol=1e-6)
    np.testing.assert_allclose(pose["quaternion"], known_job["start"]["quaternion"], atol=1e-6)
    # The first view is the training view: each blob where the training camera (OpenCV, ours) sees it.
    uv, depth = known_job["training_camera"].project(known_job["centres"])
    assert (depth > 0).all()
    assert_colours_at(img, uv, RGB)
    # Not blank, and the background between the blobs stays background.
    lit = lit_fraction(img)
    assert 0.01 < lit < 0.6, f"{lit:.3f} of the page is lit"
    assert img[H - 60: H - 40, W // 2 - 10: W // 2 + 10].max() < 40
    assert "Finished" in b.call("text", selector="#status-text")
    # Software WebGL (SwiftShader here) gets the "fast" quality by default.
    assert "SwiftShader" in b.eval("window.splatworks.webglRenderer")
    assert b.eval("document.getElementById('quality').value") == "fast"

    # The user orbits, then training publishes a newer checkpoint with other colours.
    b.call("drag", **{"from": [W // 2, H // 2], "to": [W // 2 + 60, H // 2 + 10]})
    moved = b.eval("window.splatworks.cameraPose()")
    assert np.linalg.norm(np.subtract(moved["position"], pose["position"])) > 0.1
    svc.publish(known_job["job_id"], 200, blob_params(known_job["centres"], CMY, scale=0.16),
                status="RUNNING", stage="training", step=200, total=1000, percent=40.0)
    wait_rendered(b, loads=2, timeout=30)
    assert b.eval("window.__sameDocument") == 42, "the page reloaded"
    assert b.eval("window.splatworks.loadedCheckpoint") == 200
    after = b.eval("window.splatworks.cameraPose()")
    np.testing.assert_allclose(after["position"], moved["position"], atol=1e-9)
    np.testing.assert_allclose(after["quaternion"], moved["quaternion"], atol=1e-9)
    img2 = b.screenshot(tmp_path / "second.png")
    assert_colours_at(img2, project_threejs(after, known_job["centres"], W, H), CMY)
    assert "iteration 200 / 1000" in b.call("text", selector="#status-text")

    # Reset view returns to the training camera.
    b.call("click", selector="#reset-view")
    reset = b.eval("window.splatworks.cameraPose()")
    np.testing.assert_allclose(reset["position"], known_job["start"]["position"], atol=1e-6)
    assert not [line for line in b.logs() if line.startswith(("external:", "pageerror"))]


def test_mouse_and_touch_controls(service, browser, known_job) -> None:
    _, url = service
    b = browser
    b.goto(f"{url}/v/{known_job['pub_key']}?{POLL}")
    wait_rendered(b)

    def pose() -> tuple[np.ndarray, np.ndarray]:
        p = b.eval("window.splatworks.cameraPose()")
        return np.asarray(p["position"]), np.asarray(p["target"])

    def dist() -> float:
        pos, tgt = pose()
        return float(np.linalg.norm(pos - tgt))

    pos0, tgt0 = pose()
    d0 = dist()
    b.call("wheel", at=[W // 2, H // 2], dy=-400)  # wheel up: zoom in
    b.wait("true")
    assert dist() < 0.9 * d0
    b.call("click", selector="#reset-view")
    b.call("drag", **{"from": [W // 2, H // 2], "to": [W // 2 + 80, H // 2]}, button="right")  # pan
    pos1, tgt1 = pose()
    assert np.linalg.norm(tgt1 - tgt0) > 0.05 and dist() == pytest.approx(d0, rel=1e-6)
    np.testing.assert_allclose(pos1 - tgt1, pos0 - tgt0, atol=1e-6)  # moved together

    b.call("click", selector="#reset-view")
    x, y = W // 2, H // 2
    one = [{"type": "touchStart", "points": [[x, y]]}]
    one += [{"type": "touchMove", "points": [[x + 10 * k, y]]} for k in range(1, 8)]
    b.call("touch", steps=one + [{"type": "touchEnd", "points": []}])  # one finger: orbit
    pos2, tgt2 = pose()
    np.testing.assert_allclose(tgt2, tgt0, atol=1e-6)
    assert np.linalg.norm(pos2 - pos0) > 0.1 and dist() == pytest.approx(d0, rel=1e-6)

    b.call("click", selector="#reset-view")
    pinch = [{"type": "touchStart", "points": [[x - 20, y], [x + 20, y]]}]
    pinch += [{"type": "touchMove", "points": [[x - 20 - 15 * k, y], [x + 20 + 15 * k, y]]} for k in range(1, 8)]
    b.call("touch", steps=pinch + [{"type": "touchEnd", "points": []}])  # two fingers apart: zoom in
    assert dist() < 0.9 * d0


def test_splat_size_control_shrinks_the_gaussians(service, browser, known_job, tmp_path) -> None:
    _, url = service
    b = browser
    b.goto(f"{url}/v/{known_job['pub_key']}?{POLL}")
    wait_rendered(b)
    before = lit_fraction(b.screenshot(tmp_path / "size1.png"))
    b.eval("(() => { const s = document.getElementById('splat-size'); s.value = '0.4';"
           " s.dispatchEvent(new Event('input')); })()")
    n = b.eval("window.splatworks.framesRendered")
    b.wait(f"window.splatworks.framesRendered > {n + 3}", 20)
    time.sleep(0.5)
    after = lit_fraction(b.screenshot(tmp_path / "size2.png"))
    assert 0 < after < 0.4 * before, (before, after)


def test_ply_only_result_renders(service, browser, known_job, tmp_path) -> None:
    svc, url = service
    folder = tmp_path / "ply_job"
    write_checkpoint(folder / "gs_output", 50, blob_params(known_job["centres"], CMY, scale=0.16), ply=True, splat=False)
    ring_scene(n=8, width_px=W, height_px=H, up=(0.5, 0.2, 1.0)).save(folder / "colmap")
    _, pub_key = svc.import_job(folder)
    b = browser
    b.goto(f"{url}/v/{pub_key}?{POLL}")
    wait_rendered(b)
    assert b.eval("window.splatworks.loadedUrl").split("?")[0].endswith("/cloud.ply")
    uv, _ = known_job["training_camera"].project(known_job["centres"])
    assert_colours_at(b.screenshot(tmp_path / "ply.png"), uv, CMY)


def test_unknown_or_deleted_key_says_so(service, browser, known_job, tmp_path) -> None:
    svc, url = service
    b = browser
    assert b.goto(f"{url}/v/{'x' * 32}") == 404
    # The viewer page itself answers (status 404) and says so in its own message, not as raw JSON.
    b.wait("window.splatworks && window.splatworks.phase === 'not-found'", 20)
    assert "No reconstruction found" in b.call("text", selector="#message")
    # A job deleted while its viewer is open: the page says so instead of going blank or silent.
    folder = tmp_path / "doomed"
    write_checkpoint(folder / "gs_output", 5, blob_params(known_job["centres"], RGB, scale=0.16))
    job_id, pub_key = svc.import_job(folder)
    b.goto(f"{url}/v/{pub_key}?{POLL}")
    wait_rendered(b)
    import httpx

    assert httpx.delete(f"{url}/recon/jobs/{job_id}").status_code in (200, 204)
    b.wait("window.splatworks.phase === 'not-found'", 20)
    assert "No reconstruction found" in b.call("text", selector="#message")
    assert b.eval("!document.getElementById('message').hidden")


def test_failed_job_shows_its_error(service, browser, tmp_path) -> None:
    svc, url = service
    folder = tmp_path / "failed_job"
    (folder / "upload").mkdir(parents=True)
    job_id, pub_key = svc.import_job(folder)  # no result, no upload: imported as ERROR
    b = browser
    b.goto(f"{url}/v/{pub_key}?{POLL}")
    b.wait("window.splatworks && window.splatworks.phase === 'failed'", 20)
    text = b.call("text", selector="#message")
    assert "failed" in text and "neither results nor an upload" in text


def test_4d_player_scrubs_and_plays_a_known_sequence(service, browser, known_job, tmp_path) -> None:
    """A static layer (white blob, top) plus per-frame layers (one blob moving left to right, a colour per frame),
    described by a manifest and served by a test route on the real app."""
    from fastapi.staticfiles import StaticFiles

    from splatworks.splat.io import write_splat

    svc, url = service
    seq = tmp_path / "seq"
    seq.mkdir()
    start, target = known_job["start"], np.asarray(known_job["start"]["target"])
    up = np.asarray(start["up"])
    right = np.cross(target - np.asarray(start["position"]), up)
    right /= np.linalg.norm(right)
    colours = np.array([[1, 0.05, 0.05], [0.05, 1, 0.05], [0.1, 0.2, 1], [1, 1, 0.05]])
    positions = [target + (i - 1.5) * 0.6 * right for i in range(4)]
    static_pos = target + 0.55 * up
    write_splat(seq / "static.splat", blob_params(static_pos, [[1, 1, 1]], scale=0.12))
    for i in range(4):
        write_splat(seq / f"frame_{i:03d}.splat", blob_params(positions[i], colours[i:i + 1], scale=0.14))
    manifest = {"fps": 4, "frames": 4, "frames_ready": 3, "static": "static.splat",
                "frame_pattern": "frame_{frame}.splat", "frame_digits": 3, "format": "splat"}
    (seq / "manifest.json").write_text(json.dumps(manifest))
    svc.app.mount(f"/test4d/{tmp_path.name}", StaticFiles(directory=seq))

    b = browser
    b.goto(f"{url}/v/{known_job['pub_key']}?{POLL}&manifest=/test4d/{tmp_path.name}/manifest.json")
    b.wait("window.splatworks && window.splatworks.player && window.splatworks.player.displayedFrame === 0", 60)
    assert b.eval("!document.getElementById('player').hidden")
    # Scrub to frame 2 (paused): the blue layer and the static layer, nothing of frame 0.
    b.eval("(() => { const s = document.getElementById('scrub'); s.value = '2'; s.dispatchEvent(new Event('input')); })()")
    b.wait("window.splatworks.player.displayedFrame === 2", 30)
    n = b.eval("window.splatworks.framesRendered")
    b.wait(f"window.splatworks.framesRendered > {n + 2}", 20)
    time.sleep(0.5)
    pose = b.eval("window.splatworks.cameraPose()")
    img = b.screenshot(tmp_path / "frame2.png")
    uv = project_threejs(pose, np.stack([positions[2], static_pos, positions[0]]), W, H)
    assert_colours_at(img, uv[:2], np.array([colours[2], [1, 1, 1]]))
    assert dominant_colour_at(img, uv[2]).max() < 40, "frame 0's layer is still visible"
    assert b.call("text", selector="#frame-label").startswith("3 / 4")

    # Play: the playhead walks through the ready frames only (3 of 4), in order.
    b.eval("window.splatworks.player.play()")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(set(seen)) < 3:
        frame = b.eval("window.splatworks.player.displayedFrame")
        if not seen or seen[-1] != frame:
            seen.append(frame)
        time.sleep(0.05)
    assert set(seen) == {0, 1, 2}, seen
    # The fourth frame arrives (training published it): the player picks it up from the manifest.
    manifest["frames_ready"] = 4
    (seq / "manifest.json").write_text(json.dumps(manifest))
    b.wait("window.splatworks.player.framesReady === 4", 10)
    b.wait("window.splatworks.player.displayedFrame === 3", 20)
    b.eval("window.splatworks.player.pause()")


def test_upload_page_from_file_drop_to_viewer(service, browser, tmp_path) -> None:
    from PIL import Image

    svc, url = service
    b = browser
    files = []
    rng = np.random.default_rng(0)
    for i in range(3):
        path = tmp_path / f"photo_{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    assert b.goto(f"{url}/?{POLL}") == 200
    # Too few photos: the service refuses, and the page says why instead of hanging.
    b.call("setInputFiles", selector="#files", files=files[:1])
    b.call("click", selector="#start")
    b.wait("window.splatworksUpload.error !== null", 20)
    assert "Upload refused" in b.call("text", selector="#job-error")
    b.call("setInputFiles", selector="#files", files=files)
    assert "3 files" in b.call("text", selector="#chosen")
    b.call("click", selector="#start")
    b.wait("window.splatworksUpload.pubKey !== null || (window.splatworksUpload.phase !== 'uploading' && "
           "window.splatworksUpload.error !== null)", 30)
    state = b.eval("window.splatworksUpload")
    assert state["error"] is None, state["error"]
    share = b.eval("document.getElementById('share').value")
    assert share == f"{url}/v/{state['pubKey']}"
    assert b.eval("document.getElementById('open-viewer').href") == share
    # The job shows up with its state; once it publishes a result, the download links appear.
    b.wait("window.splatworksUpload.info !== null", 20)
    svc.publish(state["jobId"], 10, blob_params(np.zeros((1, 3)), [[1, 1, 1]], scale=0.2))
    b.wait("!document.getElementById('dl-splat').classList.contains('hidden')", 20)
    assert b.eval("document.getElementById('dl-splat').getAttribute('href')").endswith("scene.splat")
    # Open the viewer from the page's own link (no ?poll: it follows the job's server-sent events). No SfM
    # scene yet, so it frames the splats' bounds; each checkpoint replaces the last one in place.
    b.goto(share)
    wait_rendered(b)
    assert b.eval("window.splatworks.key") == state["pubKey"]
    centre = dominant_colour_at(b.screenshot(tmp_path / "upload_viewer_1.png"), (W / 2, H / 2))
    assert centre.min() > 180, centre  # the white checkpoint
    svc.publish(state["jobId"], 20, blob_params(np.zeros((1, 3)), [[1, 0.05, 0.05]], scale=0.2),
                status="RUNNING", stage="training", step=20, total=100, percent=50.0)
    wait_rendered(b, loads=2, timeout=30)
    centre = dominant_colour_at(b.screenshot(tmp_path / "upload_viewer_2.png"), (W / 2, H / 2))
    assert centre[0] > 180 and centre[1] < 80 and centre[2] < 80, centre
    assert "iteration 20 / 100" in b.call("text", selector="#status-text")
    assert b.eval("window.splatworks.updatesVia") == "events"
