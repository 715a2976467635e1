"""COLMAP sparse models (``cameras``, ``images``, ``points3D``; binary ``.bin`` or text ``.txt``) <-> ``Scene``.

Both directions go through pycolmap 4.x (``pycolmap.Reconstruction``), never our own parser.

Conventions at this boundary: COLMAP already uses OpenCV axes, world-to-camera poses (``image.cam_from_world()``,
which in pycolmap 4 composes the image's frame/rig pose with the sensor-from-rig transform) and pixel centres at
+0.5, so poses and intrinsics are copied without conversion. Camera models map one-to-one to ``Camera.model``
(see ``camera.DISTORTION_PARAMS``); COLMAP models outside that table are refused with a message that says to
undistort first. Only registered images (with a pose) become cameras; cameras are sorted naturally by name.

Native code can crash on damaged files, so by default reading and writing run in a short-lived worker process
(``isolate=True``; one reused worker, ~1 s to start): a crash there becomes an ``InputError`` instead of taking the caller down. Code that
already runs inside a worker (the SfM stage) calls ``scene_from_reconstruction`` / ``reconstruction_from_scene``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

import PIL.Image  # noqa: F401  -- must be loaded before pycolmap (PNG/zlib clash, see tests/conftest.py)
import numpy as np

from splatworks.errors import InputError
from splatworks.scene.camera import DISTORTION_PARAMS, Camera, Scene, natural_key

# Models whose parameters start with one focal length (f, cx, cy, ...) instead of (fx, fy, cx, cy, ...).
SINGLE_FOCAL_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
# Lossless promotion when fx != fy must be stored in a single-focal model.
_TWO_FOCAL_EQUIVALENT = {"SIMPLE_PINHOLE": ("PINHOLE", 0), "SIMPLE_RADIAL": ("OPENCV", 3),
                         "RADIAL": ("OPENCV", 2)}
MODEL_FILES = ("cameras", "images", "points3D")


# ---- plain data (picklable, crosses the worker-process boundary) ------------------------------------------------

def intrinsics_from_colmap(model: str, params: Any) -> tuple[float, float, float, float, tuple[float, ...]]:
    """COLMAP ``(model, params)`` -> ``(fx, fy, cx, cy, distortion)``; InputError for unsupported models."""
    if model not in DISTORTION_PARAMS:
        raise InputError(f"COLMAP camera model {model} is not supported (supported: {', '.join(DISTORTION_PARAMS)}); "
                         "undistort the images first (colmap image_undistorter) or recalibrate with one of those.")
    p = [float(v) for v in params]
    if model in SINGLE_FOCAL_MODELS:
        fx = fy = p[0]
        cx, cy, rest = p[1], p[2], p[3:]
    else:
        fx, fy, cx, cy, rest = p[0], p[1], p[2], p[3], p[4:]
    return fx, fy, cx, cy, tuple(rest)


def intrinsics_to_colmap(cam: Camera) -> tuple[str, list[float]]:
    """``Camera`` -> COLMAP ``(model, params)``; a single-focal model with fx != fy is promoted losslessly."""
    model, dist = cam.model, list(cam.distortion)
    if model in SINGLE_FOCAL_MODELS and cam.fx != cam.fy:
        new_model, pad = _TWO_FOCAL_EQUIVALENT[model]
        warnings.warn(f"camera {cam.name!r}: {model} has one focal length but fx != fy; writing {new_model}")
        model, dist = new_model, dist + [0.0] * pad
    if model in SINGLE_FOCAL_MODELS:
        return model, [cam.fx, cam.cx, cam.cy, *dist]
    return model, [cam.fx, cam.fy, cam.cx, cam.cy, *dist]


def _plain_from_reconstruction(rec: Any) -> dict[str, Any]:
    cameras = {int(cid): (c.model.name, int(c.width), int(c.height), [float(v) for v in c.params])
               for cid, c in rec.cameras.items()}
    images, unregistered = [], []
    for image in rec.images.values():
        if not image.has_pose:
            unregistered.append(image.name)
            continue
        pose = image.cam_from_world()  # a method in pycolmap 4 (composes rig and frame poses)
        images.append((image.name, int(image.camera_id), np.asarray(pose.matrix(), dtype=np.float64)))
    ids = sorted(rec.points3D.keys())
    pts = [rec.points3D[i] for i in ids]
    return {
        "cameras": cameras, "images": images, "unregistered": sorted(unregistered, key=natural_key),
        "points": np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3),
        "colors": np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3),
        "errors": np.array([p.error for p in pts], dtype=np.float64).reshape(-1),
    }


def _scene_from_plain(data: dict[str, Any], image_dir: Path | None) -> Scene:
    cams: list[Camera] = []
    for name, camera_id, cam_from_world in data["images"]:
        model, width, height, params = data["cameras"][camera_id]
        fx, fy, cx, cy, dist = intrinsics_from_colmap(model, params)
        w2c = np.eye(4)
        w2c[:3, :4] = cam_from_world
        cams.append(Camera(name=name, width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
                           world_to_camera=w2c, model=model, distortion=dist, camera_id=camera_id))
    cams.sort(key=lambda c: natural_key(c.name))
    errors = np.asarray(data["errors"], dtype=np.float64)
    errors = np.where(errors < 0, np.nan, errors)  # COLMAP writes -1 for "unknown"
    meta = {"source": "colmap", "registered": len(cams), "unregistered": list(data["unregistered"])}
    return Scene(cameras=cams, image_dir=image_dir, points=data["points"], point_colors=data["colors"],
                 point_errors=errors, meta=meta)


def _plain_from_scene(scene: Scene) -> dict[str, Any]:
    cameras: dict[int, tuple[str, int, int, list[float]]] = {}
    images = []
    for cam in scene.cameras:
        model, params = intrinsics_to_colmap(cam)
        entry = (model, cam.width, cam.height, params)
        cid = cam.camera_id if cam.camera_id > 0 else 1
        if cameras.get(cid, entry) != entry:  # same id, different intrinsics: give this one its own id
            cid = next((k for k, v in cameras.items() if v == entry), max(cameras) + 1)
        cameras[cid] = entry
        images.append((cam.name, cid, cam.world_to_camera[:3, :4].copy()))
    errors = np.where(np.isfinite(scene.point_errors), scene.point_errors, -1.0)
    return {"cameras": cameras, "images": images, "unregistered": [], "points": scene.points,
            "colors": scene.point_colors, "errors": errors}


def _reconstruction_from_plain(data: dict[str, Any]) -> Any:
    import pycolmap

    rec = pycolmap.Reconstruction()
    for cid, (model, width, height, params) in sorted(data["cameras"].items()):
        rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=width, height=height,
                                                        params=params, camera_id=cid))
    for image_id, (name, cid, cam_from_world) in enumerate(data["images"], start=1):
        image = pycolmap.Image(name=name, camera_id=cid, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.asarray(cam_from_world, dtype=np.float64)))
    for xyz, color, error in zip(data["points"], data["colors"], data["errors"]):
        pid = rec.add_point3D(np.asarray(xyz, dtype=np.float64), pycolmap.Track(), np.asarray(color, np.uint8))
        rec.point3D(pid).error = float(error)
    return rec


# ---- public API -------------------------------------------------------------------------------------------------

def scene_from_reconstruction(rec: Any, image_dir: str | Path | None = None) -> Scene:
    """A ``pycolmap.Reconstruction`` (in this process) -> ``Scene`` (registered images only, natural order).

    ``Scene.points`` are in ascending ``point3D_id`` order (``sorted(rec.points3D)``), so per-point data from
    the reconstruction (tracks, visibility) lines up with them.
    """
    return _scene_from_plain(_plain_from_reconstruction(rec), Path(image_dir) if image_dir else None)


def reconstruction_from_scene(scene: Scene) -> Any:
    """``Scene`` -> ``pycolmap.Reconstruction`` (trivial rigs/frames; points without tracks)."""
    return _reconstruction_from_plain(_plain_from_scene(scene))


def is_colmap_model(folder: str | Path) -> bool:
    """True when ``folder`` holds ``cameras``, ``images`` and ``points3D`` as ``.bin`` or ``.txt``."""
    folder = Path(folder)
    return any(all((folder / f"{name}{ext}").is_file() for name in MODEL_FILES) for ext in (".bin", ".txt"))


def read_colmap(path: str | Path, image_dir: str | Path | None = None, *, isolate: bool = True) -> Scene:
    """Read a COLMAP sparse model folder (binary or text) into a ``Scene``.

    Args:
        path: folder with ``cameras``/``images``/``points3D`` ``.bin`` or ``.txt`` (e.g. ``work/sparse/0``).
        image_dir: folder the image names are relative to (stored as ``Scene.image_dir``; not checked here).
        isolate: run pycolmap in a worker process so a native crash on a damaged file cannot kill the caller.
    """
    path = Path(path)
    if not is_colmap_model(path):
        raise InputError(f"{path} is not a COLMAP sparse model: expected cameras, images and points3D as .bin "
                         "or .txt files in it (e.g. the sparse/0 folder that COLMAP writes).")
    data = _run(_read_plain, str(path), isolate=isolate, what=f"reading the COLMAP model {path}")
    scene = _scene_from_plain(data, Path(image_dir) if image_dir else None)
    scene.meta["colmap_path"] = str(path)
    if not scene.cameras:
        raise InputError(f"the COLMAP model {path} has no registered images; run SfM again with more overlap.")
    return scene


def write_colmap(scene: Scene, folder: str | Path, *, binary: bool = True, isolate: bool = True) -> Path:
    """Write ``scene`` as a COLMAP model into ``folder`` (``.bin`` or ``.txt``); files are replaced atomically.

    Image ids are 1..N in scene order; camera ids are ``Camera.camera_id`` (split when two cameras share an id
    but not intrinsics). Points are written without tracks; unknown errors (NaN) are written as COLMAP's -1.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = _plain_from_scene(scene)
    _run(_write_plain, data, str(folder), binary, isolate=isolate, what=f"writing the COLMAP model {folder}")
    return folder


def _read_plain(path: str) -> dict[str, Any]:
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(path)
    except (ValueError, IndexError, RuntimeError, OSError) as e:
        raise InputError(f"cannot read the COLMAP model in {path}: {e}; the files are damaged or incomplete "
                         "(re-export them from COLMAP).") from None
    return _plain_from_reconstruction(rec)


def _write_plain(data: dict[str, Any], folder: str, binary: bool) -> None:
    rec = _reconstruction_from_plain(data)
    # Write next to the target, then move file by file: a failure never leaves a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=".colmap-", dir=folder))
    try:
        rec.write_binary(str(tmp)) if binary else rec.write_text(str(tmp))
        for f in sorted(tmp.iterdir()):
            os.replace(f, Path(folder) / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _worker_pool() -> ProcessPoolExecutor:
    """One reusable worker process (started on first use, ~1 s; later calls pay only the data transfer)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads (torch, uvicorn)
            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        return _POOL


def _can_spawn() -> bool:
    """Spawned workers re-import ``__main__`` from its file; a script read from stdin has no such file."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


def _run(fn: Callable[..., Any], *args: Any, isolate: bool, what: str) -> Any:
    global _POOL
    if not isolate or not _can_spawn():
        return fn(*args)
    try:
        return _worker_pool().submit(fn, *args).result()
    except BrokenProcessPool:
        with _POOL_LOCK:
            _POOL = None  # the crashed worker is gone; the next call starts a fresh one
        raise InputError(f"pycolmap crashed while {what}; the files are probably damaged.") from None


__all__ = ["SINGLE_FOCAL_MODELS", "intrinsics_from_colmap", "intrinsics_to_colmap", "is_colmap_model",
           "read_colmap", "reconstruction_from_scene", "scene_from_reconstruction", "write_colmap"]
