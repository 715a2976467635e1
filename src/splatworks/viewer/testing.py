"""Helpers for the viewer's browser tests and benchmark: known scenes, a loopback server, a Chromium driver.

Not used by the service at run time. ``BrowserDriver`` speaks line-delimited JSON with
``tests/browser/driver.mjs`` (playwright-core from this package's node_modules, Debian's /usr/bin/chromium,
WebGL on SwiftShader); the assertions stay in Python.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..scene.camera import Camera, Scene

VIEWER_DIR = Path(__file__).resolve().parent
REPO_DIR = VIEWER_DIR.parents[2]
DRIVER_JS = REPO_DIR / "tests" / "browser" / "driver.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def browser_missing() -> str | None:
    """Why browser tests cannot run here (a reason to skip), or None when node, Chromium and the bundle exist."""
    from .build import is_built

    if shutil.which("node") is None:
        return "node not found (install Node.js >= 18)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (run `make browser`)"
    if not (VIEWER_DIR / "node_modules" / "playwright-core").is_dir() or not is_built():
        return "viewer bundle not built (run `make viewer`)"
    return None


# ---- known scenes -------------------------------------------------------------------------------------------
def look_at_world_to_camera(center: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV world_to_camera of a camera at ``center`` looking at ``target`` with image-up ``up``."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)  # OpenCV camera: x right, y down, z forward (right-handed)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ center
    return w2c


def ring_scene(n: int = 8, radius: float = 4.0, height: float = 1.0, width_px: int = 320, height_px: int = 240,
               fov_y_deg: float = 50.0, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Scene:
    """``n`` cameras on a ring around the origin, all looking at it, world up = ``up`` (z-up by default, so a
    viewer that assumes y-up would show the scene on its side)."""
    up_v = np.asarray(up, dtype=np.float64)
    up_v /= np.linalg.norm(up_v)
    a = np.cross(up_v, [1.0, 0.0, 0.0] if abs(up_v[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up_v, a)
    fy = height_px / (2 * math.tan(math.radians(fov_y_deg) / 2))
    cams = []
    for i in range(n):
        phi = 2 * math.pi * i / n
        center = radius * (math.cos(phi) * a + math.sin(phi) * b) + height * up_v
        cams.append(Camera(name=f"r_{i}.png", width=width_px, height=height_px, fx=fy, fy=fy, cx=width_px / 2,
                           cy=height_px / 2, world_to_camera=look_at_world_to_camera(center, np.zeros(3), up_v)))
    return Scene(cameras=cams)


def start_camera_as_camera(start: dict[str, Any], width: int, height: int) -> Camera:
    """The viewer's start camera as an OpenCV ``Camera`` of a ``width`` x ``height`` canvas (vertical fov kept),
    after three.js's ``lookAt`` towards ``target`` with ``up`` (what the page shows after OrbitControls.update)."""
    pos, target, up = (np.asarray(start[k], dtype=np.float64) for k in ("position", "target", "up"))
    fy = height / (2 * math.tan(math.radians(start["fov"]) / 2))
    return Camera(name="viewer", width=width, height=height, fx=fy, fy=fy, cx=width / 2, cy=height / 2,
                  world_to_camera=look_at_world_to_camera(pos, target, up))


def project_threejs(pose: dict[str, Any], points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(P, 2) pixel coordinates of world points (P, 3) as three.js draws them from ``pose`` (``position``,
    ``quaternion`` xyzw, vertical ``fov`` in degrees; OpenGL camera axes), on a ``width`` x ``height`` canvas."""
    from .camera import quaternion_xyzw_to_rotation

    R = quaternion_xyzw_to_rotation(pose["quaternion"])  # camera-to-world rotation
    cam = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - np.asarray(pose["position"])) @ R
    f = 1.0 / math.tan(math.radians(pose["fov"]) / 2)
    ndc_x = f * height / width * cam[:, 0] / -cam[:, 2]
    ndc_y = f * cam[:, 1] / -cam[:, 2]
    return np.stack([(ndc_x + 1) * width / 2, (1 - ndc_y) * height / 2], axis=1)


def blob_params(centers: np.ndarray, colors: np.ndarray, scale: float, opacity: float = 0.99) -> dict[str, Any]:
    """Raw Gaussian parameters (``splat.io`` layout) of round blobs: centers (N, 3), colors (N, 3) RGB in [0, 1]."""
    import torch

    from ..splat.io import SH_C0

    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 3)
    n = len(centers)
    colors = np.asarray(colors, dtype=np.float64).reshape(n, 3)
    t = torch.from_numpy
    return {
        "means": t(centers.copy()),
        "quats": t(np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))),
        "scales": t(np.full((n, 3), math.log(scale), np.float32)),
        "opacities": t(np.full((n,), math.log(opacity / (1 - opacity)), np.float32)),
        "sh0": t(((np.clip(colors, 0.001, 0.999) - 0.5) / SH_C0).astype(np.float32)[:, None, :]),
        "shN": torch.zeros(n, 0, 3),
    }


def random_params(n: int, radius: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """``n`` random small Gaussians in a ball (a benchmark load, not a picture)."""
    import torch

    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    pts *= (radius * rng.random((n, 1)) ** (1 / 3) / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    t = torch.from_numpy
    return {"means": t(pts), "quats": t(q / np.linalg.norm(q, axis=1, keepdims=True)),
            "scales": t(np.log(rng.uniform(0.002, 0.02, (n, 3))).astype(np.float32)),
            "opacities": t(rng.normal(1.0, 1.0, n).astype(np.float32)),
            "sh0": t(rng.normal(0, 1, (n, 1, 3)).astype(np.float32)), "shN": torch.zeros(n, 0, 3)}


def write_checkpoint(gs_output: Path, iteration: int, params: dict[str, Any], ply: bool = False,
                     splat: bool = True) -> Path:
    """Write ``gs_output/point_cloud/iteration_N/scene.splat`` and/or ``point_cloud.ply`` the way the trainer
    does: into a temporary folder renamed into place, so a reader never sees half a checkpoint."""
    from ..splat.io import POINT_CLOUD_DIR, write_ply, write_splat

    root = Path(gs_output) / POINT_CLOUD_DIR
    tmp = root / f".tmp_iteration_{iteration}"
    tmp.mkdir(parents=True, exist_ok=True)
    if splat:
        write_splat(tmp / "scene.splat", params)
    if ply:
        write_ply(tmp / "point_cloud.ply", params)
    final = root / f"iteration_{iteration}"
    tmp.replace(final)
    return final


def dominant_colour_at(img: np.ndarray, uv: tuple[float, float], radius: int = 3) -> np.ndarray:
    """(3,) median RGB of the (2r+1)^2 pixels around pixel coordinate ``uv`` (pixel centres at +0.5)."""
    x, y = int(uv[0]), int(uv[1])
    patch = img[max(0, y - radius): y + radius + 1, max(0, x - radius): x + radius + 1, :3]
    return np.median(patch.reshape(-1, 3), axis=0)


# ---- a loopback server --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def held_executor() -> Any:
    """A service executor that leaves queued jobs queued: the caller plays the training worker (it publishes
    checkpoints with ``write_checkpoint`` and records them in the job store)."""
    from ..service.executor import Executor

    class HeldExecutor(Executor):
        def start(self) -> None: ...
        def wake(self) -> None: ...
        def cancel(self, job_id: str, wait: float = 0.0) -> bool: return False
        def running(self) -> list[str]: return []
        def shutdown(self, timeout: float = 10.0) -> None: ...

    return HeldExecutor()


# ---- the Chromium driver ------------------------------------------------------------------------------------
class BrowserError(RuntimeError):
    pass


class BrowserDriver:
    """One headless Chromium page, driven through ``tests/browser/driver.mjs``."""

    def __init__(self, width: int = 320, height: int = 240, driver: Path = DRIVER_JS) -> None:
        env = dict(os.environ, SPLATWORKS_VIEWER_DIR=str(VIEWER_DIR), VIEWPORT_W=str(width),
                   VIEWPORT_H=str(height), CHROMIUM=CHROMIUM)
        self.width, self.height = width, height
        self.proc = subprocess.Popen(["node", str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO_DIR))

    def call(self, cmd: str, **kw: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise BrowserError(f"browser driver exited: {err[-3000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"{cmd} failed: {answer['error']}\npage log:\n" + "\n".join(answer.get("logs", [])))
        return answer.get("value")  # undefined in the page: no "value" key

    def goto(self, url: str) -> int | None:
        return self.call("goto", url=url)

    def eval(self, expr: str) -> Any:
        return self.call("eval", expr=expr)

    def wait(self, expr: str, timeout: float = 30.0) -> None:
        self.call("wait", expr=expr, timeout_ms=int(timeout * 1000))

    def screenshot(self, path: Path) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the page; also saved at ``path``."""
        from PIL import Image

        self.call("screenshot", path=str(path))
        return np.asarray(Image.open(path).convert("RGB"))

    def logs(self) -> list[str]:
        return self.call("logs")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("close")
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "BrowserDriver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
