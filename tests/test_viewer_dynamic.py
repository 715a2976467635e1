"""The viewer plays a dynamic job's 4D sequence in real headless Chromium, served by the real app on loopback.

A known tiny sequence is published in a dynamic job's folder exactly as ``pipeline/dynamic.py`` lays it out
(``export/manifest.json``, ``static.splat``, ``frames/NNNNNN.splat``; the rig in ``colmap/scene.json`` gives the
start view). The page is opened as ``/v/{pub_key}`` with no manifest parameter: it must find the 4D sequence from
``/info`` (kind "dynamic") and the job's ``/4d/`` routes. Screenshots at two times must differ where the object
moved and match where nothing moved.

A delta-encoded export (``dynamic/export4d.py``: frame 0's layer, then only the changed rows per frame) of a
trained run in the trainer's own layout is played the same way: frames reached forward, backward and forward again
show what they should, and what a full-layer export of the same run shows; a damaged delta says so on screen.
Its SWD3 deltas hold all three record kinds: motion+rgba records (a blob that moves while its colour and opacity
change, as sequential training's default motion+opacity frames write them), motion records (a bar that only turns)
and a full record (a pruned blob); the layer the viewer materialises is byte for byte what ``load_frame_layers``
reads. The same export rewritten with SWD1 deltas (older exports) still plays and shows the same pictures. The
viewer's delta parser (``delta4d.js``, run in node) decodes the Python encoder's SWD3, SWD2 and SWD1 files byte for
byte and rejects the same damaged files.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

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


def new_dynamic_job(settings: Any) -> tuple[Path, str, np.ndarray, np.ndarray, np.ndarray]:
    """A running dynamic job with the rig of its start view: (job folder, pub_key, target, up, right)."""
    from splatworks.service.jobs import JobPaths, new_id
    from splatworks.service.store import JobRecord, open_store

    job_id, pub_key = new_id(), new_id()
    root = JobPaths.of(settings.jobs_dir, job_id).make().root
    scene = ring_scene(n=8, width_px=W, height_px=H, fov_y_deg=50.0, up=(0.0, 0.0, 1.0))
    scene.save(root / "colmap")
    start = viewer_start_camera(scene)
    target, up = np.asarray(start["target"]), np.asarray(start["up"])
    right = np.cross(target - np.asarray(start["position"]), up)
    right /= np.linalg.norm(right)
    store = open_store(settings.resolved_database_url)
    try:
        store.create(JobRecord(job_id=job_id, pub_key=pub_key, kind="dynamic", status="RUNNING", stage="frame 3 of 4",
                               input_kind="videos", input_files=4, created_at=time.time()))
    finally:
        store.close()
    return root, pub_key, target, up, right


def publish_sequence(settings: Any, n_frames: int = 4, ready: int = 3) -> dict[str, Any]:
    """A dynamic job whose export holds a white static blob and a red blob moving left to right."""
    from splatworks.splat.io import write_splat

    root, pub_key, target, up, right = new_dynamic_job(settings)
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


GREEN, BLUE, YELLOW = np.array([0.05, 1.0, 0.05]), np.array([0.1, 0.3, 1.0]), np.array([1.0, 1.0, 0.05])
BAR_LONG, BAR_SHORT = 0.22, 0.05  # the turning bar's scales (world units) along its own x, and y and z
TURNED = (1, 2)                   # frames where the bar stands upright (lies along the screen's x elsewhere)
MOVING_OPACITY = (0.99, 0.96, 0.93, 0.9)  # the moving blob fades a little as it moves (motion+rgba records)
SCENE = (slice(56, 176), slice(0, W))  # the rows where the blobs are, clear of the status panel and the player bar


def bar_quats(right: np.ndarray, up: np.ndarray, turned: bool) -> np.ndarray:
    """(4,) wxyz rotation taking the bar's own x axis to ``right`` (lying) or to ``up`` (turned upright)."""
    from scipy.spatial.transform import Rotation

    x, y = (up, -right) if turned else (right, up)
    x_yzw = Rotation.from_matrix(np.stack([x, y, np.cross(x, y)], axis=1)).as_quat()
    return np.roll(x_yzw, 1).astype(np.float32)


def moving_colour(frame: int) -> np.ndarray:
    """RGB of the moving blob at ``frame``: red, turning magenta (its blue channel rises 0.3 a frame)."""
    return RED + np.array([0.0, 0.0, 0.3 * frame])


def publish_trained_run(settings: Any, tmp_path: Path, n_frames: int = 4, ready: int = 3) -> dict[str, Any]:
    """A trained run in the trainer's layout (static.pt + frames/NNNNNN.pt), exported delta-encoded for one job
    and full-layer for another. Static: a white blob; dynamic layer (ids 1, 2, 3, 4): a red blob moving left to
    right (position-only changes), a green one that never changes (bit-identical rows), a blue one pruned at frame
    2, a yellow bar that only turns (upright at frames 1 and 2: rotation-only changes). The moving blob also turns
    from red to magenta and fades a little (``moving_colour``, MOVING_OPACITY: colour and opacity changes)."""
    from splatworks.dynamic import sequence_io as sio
    from splatworks.dynamic.export4d import export_4d

    root, delta_key, target, up, right = new_dynamic_job(settings)
    full_root, full_key, *_ = new_dynamic_job(settings)  # the same rig, so the same start view
    run = tmp_path / "run"

    def save(path: Path, ids: list[int], centres: list[np.ndarray], colours: list[np.ndarray], turned: bool = False,
             frame: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        params = blob_params(np.stack(centres), np.stack(colours), scale=0.14)
        if frame is not None:  # the moving blob (id 1) fades
            params["opacities"][ids.index(1)] = float(np.log(MOVING_OPACITY[frame] / (1 - MOVING_OPACITY[frame])))
        if 4 in ids:  # the bar: long along its own x, turned by its rotation only
            k = ids.index(4)
            params["scales"][k] = torch.log(torch.tensor([BAR_LONG, BAR_SHORT, BAR_SHORT]))
            params["quats"][k] = torch.from_numpy(bar_quats(right, up, turned))
        torch.save({"ids": torch.tensor(ids), **params}, path)

    static_pos = target + 0.75 * up
    moving = [target + (i - (n_frames - 1) / 2) * 0.7 * right + 0.1 * up for i in range(n_frames)]
    green, blue = target + 0.75 * up - right, target + 0.75 * up + right  # beside the white one (clear of the UI)
    bar = target + 0.4 * up + 1.6 * right  # right of the moving blob's path, below the blue one
    save(run / sio.STATIC_FILE, [0], [static_pos], [WHITE])
    for i in range(n_frames):
        ids, centres, colours = [1, 2], [moving[i], green], [moving_colour(i), GREEN]
        if i < 2:
            ids, centres, colours = ids + [3], centres + [blue], colours + [BLUE]
        save(sio.frame_file(run, i), ids + [4], centres + [bar], colours + [YELLOW], turned=i in TURNED, frame=i)
    (run / "source.json").write_text(json.dumps({"fps": 4.0}))

    def train_until(done: int) -> None:  # training finishes frames; the pipeline re-exports after each
        (run / sio.STATE_FILE).write_text(json.dumps({"frames_done": list(range(done)), "frames_total": n_frames}))
        export_4d(run, root / "export")
        export_4d(run, full_root / "export", encoding="full")

    train_until(ready)
    return {"delta": delta_key, "full": full_key, "export": root / "export", "static": static_pos,
            "moving": moving, "green": green, "blue": blue, "bar": bar, "up": up, "right": right,
            "train_until": train_until}


def test_viewer_plays_a_delta_encoded_sequence_like_the_full_layers(served, browser, tmp_path) -> None:
    settings, url = served
    seq = publish_trained_run(settings, tmp_path)
    b = browser
    b.goto(f"{url}/v/{seq['delta']}?poll=300")
    b.wait("window.splatworks && window.splatworks.player && window.splatworks.player.displayedFrame === 0", 90)
    player = "window.splatworks.player"
    assert b.eval(f"{player}.encoding") == "delta" and b.eval(f"{player}.framesReady") == 3
    settle(b, 0)
    # No layer cache and no prefetch: every frame below is materialised from frame 0's bytes and the deltas.
    b.eval(f"(() => {{ const p = {player}; p.cacheSize = 1; p.prefetch = 0; p.evict(); }})()")
    assert b.eval(f"[...{player}.cache.keys()]") == [0]
    pose = b.eval("window.splatworks.cameraPose()")
    bar, along, across = seq["bar"], 0.12 * seq["right"], 0.12 * seq["up"]  # on the lying bar, beside it
    uv = project_threejs(pose, np.stack([seq["static"], seq["green"], seq["blue"], bar + along, bar - along,
                                         bar + across, bar - across, *seq["moving"]]), W, H)
    for u, v in uv:
        assert 20 < u < W - 20 and 20 < v < H - 20, f"a blob projects off screen at {(u, v)}"
    uv_static, uv_green, uv_blue, uv_lying, uv_upright, uv_moving = uv[0], uv[1], uv[2], uv[3:5], uv[5:7], uv[7:]
    assert all(SCENE[0].start + 10 < v < SCENE[0].stop - 10 for _, v in uv[3:7])
    shots: dict[int, np.ndarray] = {0: b.screenshot(tmp_path / "d0.png")}

    def materialised_as_python_reads_it(frame: int) -> None:
        """The layer the viewer patched together for ``frame`` (its DeltaLayers cursor, whose copy the frame's mesh
        was built from) is byte for byte the export's, and decodes to what ``load_frame_layers`` returns."""
        from splatworks.dynamic.export4d import dynamic_layer_records, load_frame_layers
        from splatworks.splat.io import read_splat

        got = b.eval(f"(() => {{ const c = {player}.deltaLayers.cursor; return [c.frame, Array.from(c.bytes)]; }})()")
        assert got[0] == frame
        viewer = np.array(got[1], dtype=np.uint8).reshape(-1, 32)
        assert np.array_equal(viewer, dynamic_layer_records(seq["export"], frame)), frame
        (tmp_path / "viewer_layer.splat").write_bytes(viewer.tobytes())
        shown, python = read_splat(tmp_path / "viewer_layer.splat"), load_frame_layers(seq["export"], frame)
        for k in ("means", "quats", "scales", "opacities", "sh0"):
            assert torch.equal(shown[k], python[k][1:]), (frame, k)  # row 0 of python's: the static layer

    def show(frame: int, patched_from: int) -> np.ndarray:
        seek(b, frame)
        settle(b, frame)
        assert b.eval(f"{player}.deltaLayers.lastPatch") == {"from": patched_from, "to": frame}
        materialised_as_python_reads_it(frame)
        assert b.eval(f"{player}.displayedSplats") == 4  # frame 0's rows, the pruned one included
        assert b.eval("JSON.stringify(window.splatworks.cameraPose())") == json.dumps(pose, separators=(",", ":"))
        return b.screenshot(tmp_path / f"d{frame}_{patched_from}.png")

    def check(img: np.ndarray, frame: int) -> None:
        colour = dominant_colour_at(img, uv_moving[frame])
        assert np.abs(colour - 255 * moving_colour(frame)).max() < 70, (frame, colour)
        if frame == 3:  # magenta now, red at frame 0: motion+rgba records recolour it
            assert colour[2] > 150, colour
        for other in range(len(seq["moving"])):
            if other != frame:
                assert dominant_colour_at(img, uv_moving[other]).max() < 60, (frame, other)
        assert np.abs(dominant_colour_at(img, uv_static) - 255 * WHITE).max() < 70
        assert np.abs(dominant_colour_at(img, uv_green) - 255 * GREEN).max() < 70
        if frame < 2:
            assert np.abs(dominant_colour_at(img, uv_blue) - 255 * BLUE).max() < 70
        else:
            assert dominant_colour_at(img, uv_blue).max() < 60, "a pruned Gaussian is still drawn"
        drawn, empty = (uv_upright, uv_lying) if frame in TURNED else (uv_lying, uv_upright)  # motion records turn it
        for p in drawn:
            assert np.abs(dominant_colour_at(img, p) - 255 * YELLOW).max() < 70, (frame, "bar", p)
        for p in empty:
            assert dominant_colour_at(img, p).max() < 60, (frame, "the bar is not turned", p)

    check(shots[0], 0)
    shots[2] = show(2, 2)   # the initial prefetch left the cursor at frame 2: nothing to apply
    shots[1] = show(1, 0)   # backwards: starts again from frame 0's bytes, applies delta 1
    seq["train_until"](4)   # training finishes frame 3: the player picks it up from the manifest
    b.wait(f"{player}.framesReady === 4", 15)
    # SWD3 files: a motion+rgba record for the red blob every frame (it moves, recolours and fades), motion
    # records for the bar (it turns at frames 1 and 3), a full record for the blue blob when it is pruned (frame 2).
    # Rows: ids 1, 2, 3, 4 in order.
    from splatworks.dynamic.export4d import decode_delta, load_manifest

    manifest = load_manifest(seq["export"])
    assert manifest["delta_format"] == "SWD3"
    kinds = []
    for rel in manifest["frame_files"][1:]:
        data = (seq["export"] / rel).read_bytes()
        d = decode_delta(data, 4)
        kinds.append((d.full_rows.tolist(), d.motion_rows.tolist(), d.motion_rgba_rows.tolist()))
        assert data[:4] == b"SWD3" and len(data) == 20 + 36 * len(d.full_rows) + 20 * len(d.motion_rows) + 24 * len(
            d.motion_rgba_rows)
    assert kinds == [([], [3], [0]), ([2], [], [0]), ([], [3], [0])]
    assert manifest["records"] == {"full": [4, 0, 1, 0], "motion": [0, 1, 0, 1], "motion_rgba": [0, 1, 1, 1]}
    shots[3] = show(3, 1)   # forwards from the cursor: deltas 2 and 3
    again = show(2, 0)
    for frame, img in shots.items():
        check(img, frame)
    same = np.abs(again[SCENE].astype(float) - shots[2][SCENE].astype(float))
    assert same.mean() < 0.2 and same.max() < 24  # the same frame materialised twice: the same picture
    assert np.abs(patch(shots[0], uv_moving[0]) - patch(shots[2], uv_moving[0])).max(axis=2).mean() > 60
    assert np.abs(patch(shots[0], uv_green) - patch(shots[3], uv_green)).max(axis=2).mean() < 8

    # The full-layer export of the same run shows the same pictures.
    b.goto(f"{url}/v/{seq['full']}?poll=300")
    b.wait(f"window.splatworks && {player} && {player}.displayedFrame === 0", 90)
    assert b.eval(f"{player}.encoding") == "full"
    for frame in (2, 3):
        seek(b, frame)
        settle(b, frame)
        assert b.eval(f"{player}.displayedSplats") == 3  # the pruned Gaussian is not in these frames' files
        full = b.screenshot(tmp_path / f"f{frame}.png")
        same = np.abs(full[SCENE].astype(float) - shots[frame][SCENE].astype(float))
        assert same.mean() < 0.2 and same.max() < 24, (frame, same.mean(), same.max())

    # A damaged delta: the player says which file and why, keeps the last good frame, and recovers once fixed.
    bad = seq["export"] / "frames" / "000003.swd"
    good = bad.read_bytes()
    bad.write_bytes(good[:-7])
    b.goto(f"{url}/v/{seq['delta']}?poll=300")
    b.wait(f"window.splatworks && {player} && {player}.displayedFrame === 0", 90)
    seek(b, 3)
    b.wait(f"{player}.lastError !== null", 30)
    error = b.eval(f"{player}.lastError")
    assert "000003.swd" in error and "truncated" in error, error
    assert not b.eval("document.getElementById('message').hidden")
    assert "000003.swd" in b.eval("document.getElementById('message').textContent")
    assert b.eval(f"{player}.displayedFrame") == 0
    bad.write_bytes(good)
    seek(b, 3)
    settle(b, 3)
    assert b.eval(f"{player}.lastError") is None and b.eval("document.getElementById('message').hidden")

    # The same export as one written before SWD2 (SWD1 deltas: full records only) still plays, the same pictures.
    rewrite_as_swd1(seq["export"])
    b.goto(f"{url}/v/{seq['delta']}?poll=300")
    b.wait(f"window.splatworks && {player} && {player}.displayedFrame === 0", 90)
    settle(b, 0)
    b.eval(f"(() => {{ const p = {player}; p.cacheSize = 1; p.prefetch = 0; p.evict(); }})()")
    for frame, patched_from in ((1, 0), (3, 1)):  # back to frame 1 from the prefetched ones, then deltas 2 and 3
        seek(b, frame)
        settle(b, frame)
        assert b.eval(f"{player}.deltaLayers.lastPatch") == {"from": patched_from, "to": frame}
        materialised_as_python_reads_it(frame)
        img = b.screenshot(tmp_path / f"swd1_{frame}.png")
        check(img, frame)
        same = np.abs(img[SCENE].astype(float) - shots[frame][SCENE].astype(float))
        assert same.mean() < 0.2 and same.max() < 24, (frame, same.mean(), same.max())
    assert b.eval(f"{player}.lastError") is None
    b.goto("about:blank")


def rewrite_as_swd1(export: Path) -> None:
    """Rewrite a delta export's .swd files as SWD1 (the format before SWD2) holding the same frames."""
    from splatworks.dynamic import export4d as e4

    m = e4.load_manifest(export)
    layers = [e4.dynamic_layer_records(export, i, m) for i in range(len(m["frame_files"]))]
    for i in range(1, len(layers)):
        rows = e4.changed_rows(layers[i - 1], layers[i])
        data = e4.encode_swd1(rows, layers[i][rows], m["dynamic_count"])
        (export / m["frame_files"][i]).write_bytes(data)
        m["bytes"]["per_frame"][i] = len(data)
    m["delta_format"] = "SWD1"
    (export / "manifest.json").write_text(json.dumps(m))
    assert all(np.array_equal(e4.dynamic_layer_records(export, i), layer) for i, layer in enumerate(layers))


NODE_APPLY = """
import { readFileSync, writeFileSync } from "node:fs";
import { applyDelta, parseDelta } from "%s";
const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = jobs.map(({ layer, delta, m }) => {
  const bytes = new Uint8Array(readFileSync(layer)), data = new Uint8Array(readFileSync(delta));
  const before = bytes.slice();
  try {
    const parsed = parseDelta(data, m, delta.split("/").pop());
    applyDelta(bytes, parsed);
    writeFileSync(layer + ".out", bytes);
    return { format: parsed.format, full: parsed.fullRows.length, motion: parsed.motionRows.length,
             motionRgba: parsed.motionRgbaRows.length };
  } catch (err) {
    return { error: err.message, untouched: Buffer.compare(Buffer.from(bytes), Buffer.from(before)) === 0 };
  }
});
console.log(JSON.stringify(out));
"""


def test_viewer_delta_parser_matches_the_python_encoder(tmp_path) -> None:
    """delta4d.js (in node, no browser) applies the Python encoder's SWD3, SWD2 and SWD1 files byte for byte, and
    rejects damaged ones before patching a byte, with the reason the Python reader gives."""
    from splatworks.dynamic import export4d as e4
    from splatworks.viewer.build import VIEWER_DIR

    rng = np.random.default_rng(5)
    m = 300
    prev = rng.integers(0, 256, size=(m, 32), dtype=np.uint8)
    cur = prev.copy()
    pick = rng.permutation(m)[:150]
    moved, turned, faded, resized = pick[:40], pick[40:80], pick[80:120], pick[120:]
    cur[moved, :12] ^= 0x3C                           # position bytes: a motion record
    cur[turned, 28:] ^= 0x5A                          # rotation bytes only: a motion record
    cur[faded, 27] ^= 0x81                            # alpha only: a motion+rgba record
    cur[faded[:20], 24] ^= 0x0F                       # and colour for half of them
    cur[faded[20:30], 30] ^= 0x44                     # some faded rows turn too: still motion+rgba
    cur[moved[:10], 25] ^= 0xFF                       # some moved rows recolour too: motion+rgba
    cur[resized, 14] ^= 0x11                          # a scale byte: a full record
    cur[turned[:10], 20] ^= 0x22                      # some turned rows change size too: full
    swd3 = e4.Delta.between(prev, cur)
    assert sorted(swd3.full_rows) == sorted([*resized, *turned[:10]])
    assert sorted(swd3.motion_rgba_rows) == sorted([*faded, *moved[:10]])
    assert sorted(swd3.motion_rows) == sorted([*moved[10:], *turned[10:]])
    good = swd3.encode()
    f, p, q = (len(r) for r in (swd3.full_rows, swd3.motion_rows, swd3.motion_rgba_rows))
    assert len(good) == 20 + 36 * f + 20 * p + 24 * q
    rows = e4.changed_rows(prev, cur)
    at, aq = 20 + 36 * f, 20 + 36 * f + 20 * p  # where the motion and the motion+rgba rows start

    def swap(data: bytes, at: int) -> bytes:
        return data[:at] + data[at + 4:at + 8] + data[at:at + 4] + data[at + 8:]

    files = {
        "swd3": good,
        "swd2": e4.Delta.between(prev, cur, b"SWD2").encode(b"SWD2"),
        "swd1": e4.encode_swd1(rows, cur[rows], m),
        "empty": e4.Delta.between(prev, prev.copy()).encode(),
        "truncated": good[:-3],
        "SWD3, SWD2 or SWD1": b"SWD4" + good[4:],
        "layer of 301 rows": good[:16] + (m + 1).to_bytes(4, "little") + good[20:],
        "motion row indices must be strictly ascending": swap(good, at),
        "motion+rgba row indices must be strictly ascending": swap(good, aq),
        "both a full and a motion record": e4.Delta(m, swd3.full_rows, swd3.full_records,
                                                    np.sort(np.append(swd3.motion_rows[1:], swd3.full_rows[3])),
                                                    swd3.motion_records, swd3.motion_rgba_rows,
                                                    swd3.motion_rgba_records).encode(),
        "both a full and a motion+rgba record": e4.Delta(
            m, swd3.full_rows, swd3.full_records, swd3.motion_rows, swd3.motion_records,
            np.sort(np.append(swd3.motion_rgba_rows[1:], swd3.full_rows[5])), swd3.motion_rgba_records).encode(),
        "20-byte header": good[:17],
    }
    jobs = []
    for name, data in files.items():
        (tmp_path / f"{name}.swd").write_bytes(data)
        (tmp_path / f"{name}.layer").write_bytes(prev.tobytes())
        jobs.append({"layer": str(tmp_path / f"{name}.layer"), "delta": str(tmp_path / f"{name}.swd"), "m": m})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    script = tmp_path / "apply.mjs"
    script.write_text(NODE_APPLY % (VIEWER_DIR / "static" / "delta4d.js").as_uri())
    run = subprocess.run(["node", str(script), str(tmp_path / "jobs.json")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    results = dict(zip(files, json.loads(run.stdout)))
    readable = ("swd3", "swd2", "swd1", "empty")
    for name in readable:
        expect = cur if name != "empty" else prev
        out = np.frombuffer((tmp_path / f"{name}.layer.out").read_bytes(), np.uint8).reshape(m, 32)
        assert np.array_equal(out, expect), name
        python = prev.copy()
        e4.decode_delta(files[name], m).apply(python)
        assert np.array_equal(out, python), name
    assert results["swd3"] == {"format": "SWD3", "full": f, "motion": p, "motionRgba": q}
    assert results["swd2"] == {"format": "SWD2", "full": f + q, "motion": p, "motionRgba": 0}
    assert results["swd1"] == {"format": "SWD1", "full": len(rows), "motion": 0, "motionRgba": 0}
    for name, data in files.items():
        if name in readable:
            continue
        assert name in results[name]["error"] and f"{name}.swd" in results[name]["error"], results[name]
        assert results[name]["untouched"], name  # nothing patched
        with pytest.raises(Exception):
            e4.decode_delta(data, m)


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
