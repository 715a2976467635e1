"""Initial 3D points for the first frame of a rig: triangulated at the known poses, imported, or (last resort) random.

A rig whose calibration is imported (a studio's ``calibration.json``) has no SfM points, and random points "in
the seen volume" make floaters that only the held-out camera shows. So ``dynamic prepare`` gives the dataset
real points, in this order of preference:

1. an imported point cloud (``--points FILE``: ``.ply`` with x, y, z [, red, green, blue], ``.npz`` with
   ``points`` [, ``colors``], or a calibration JSON with a ``points`` entry ``{"xyz": [[x, y, z], ...],
   "rgb": [[r, g, b], ...]}``), in the calibration's world frame;
2. COLMAP's point triangulator at the known poses (``splatworks.sfm.known_poses``) on the first frame's training
   views (the held-out cameras are not used): at one instant the people are rigid texture like the walls;
   Then (``dynamic prepare --dense``, on by default with an imported calibration) dense points of the same
   views from plane-sweep multi-view stereo at the known poses (``splatworks.sfm.mvs``, ``dense_rig_points``)
   are added: tens of thousands of points on every textured surface where triangulation gives hundreds;
3. none: the trainer then falls back to random points (``sphere_points``: a ball reaching past the cameras, so
   an inward-facing rig's walls and floor are inside it).

The trainer (``dynamic.sequential``) thickens a sparse cloud with ``expand_points`` before frame 0.
Coordinates: world frame of the rig (OpenCV cameras, ``world_to_camera``); colours uint8 RGB.
Shapes: P points, C cameras.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.errors import InputError
from splatworks.progress import ProgressFn
from splatworks.scene.camera import Scene

log = logging.getLogger(__name__)

# Pose-guided matching between views up to 90 degrees apart: on the 12-camera Panoptic dome 811 points (33 pairs)
# against 693 (21 pairs) at the 60-degree default, mean reprojection error 0.37 px in both.
RIG_MAX_PAIR_ANGLE = 90.0


def read_points_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) float64 world points and (P, 3) uint8 colours (grey when the file has none) from a point file.

    Raises:
        InputError: unreadable file, unknown format, or no points in it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"point file {path} not found; pass an existing .ply, .npz or calibration .json")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ply":
            from plyfile import PlyData

            v = PlyData.read(str(path))["vertex"].data
            xyz = np.stack([v["x"], v["y"], v["z"]], axis=-1)
            names = v.dtype.names or ()
            rgb = np.stack([v[c] for c in ("red", "green", "blue")], axis=-1) if "red" in names else None
        elif suffix == ".npz":
            with np.load(path) as z:
                xyz = z["points"]
                rgb = z["colors"] if "colors" in z.files else (z["point_colors"] if "point_colors" in z.files
                                                               else None)
        elif suffix == ".json":
            xyz, rgb = points_from_json(json.loads(path.read_text()))
        else:
            raise InputError(f"{path}: unknown point file type {suffix!r}; use .ply, .npz (points, colors) or .json")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise InputError(f"{path}: cannot read points ({exc}); use a .ply with x, y, z (red, green, blue) or a "
                         ".npz with 'points' (P, 3) and 'colors' (P, 3) uint8") from exc
    return _checked(xyz, rgb, str(path))


def points_from_json(doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Points of a calibration JSON's optional ``points`` entry ``{"xyz": [...], "rgb": [...]}`` (empty if none)."""
    entry = doc.get("points") if isinstance(doc, dict) else None
    if not entry:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    xyz = np.asarray(entry["xyz"], dtype=np.float64)
    rgb = np.asarray(entry["rgb"]) if entry.get("rgb") is not None else None
    return _checked(xyz, rgb, "the calibration's 'points'")


def _checked(xyz: np.ndarray, rgb: np.ndarray | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise InputError(f"{where}: expected (P, 3) points with P > 0, got shape {xyz.shape}")
    if rgb is None:
        rgb = np.full((len(xyz), 3), 128, dtype=np.uint8)
    rgb = np.asarray(rgb)
    if rgb.shape != xyz.shape:
        raise InputError(f"{where}: {len(xyz)} points but colours of shape {rgb.shape}")
    if rgb.dtype.kind == "f" and rgb.max(initial=0) <= 1.0:  # colours in [0, 1]
        rgb = rgb * 255.0
    keep = np.isfinite(xyz).all(axis=1)
    return xyz[keep], np.clip(np.round(rgb[keep]), 0, 255).astype(np.uint8)


def write_points_npz(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Write a point file ``read_points_file`` reads back (``points`` float64, ``colors`` uint8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, points=np.asarray(xyz, np.float64), colors=np.asarray(rgb, np.uint8))
    return path


def triangulate_rig(rig: Scene, image_dir: Path, frame: int, work_dir: Path, num_threads: int = 2,
                    progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Triangulate sparse points of one frame at the rig's known poses (pycolmap in a worker process).

    Args:
        rig: the rig Scene (camera names ``camXX``; ``test_names`` = held-out cameras, not used for points).
        image_dir: the dataset's ``images/`` (``camXX/NNNNNN.png``).
    Returns:
        points (P, 3), colours (P, 3) uint8, reprojection errors (P,) pixels, and the triangulator's report.
    Raises:
        UserError / InputError / RuntimeError from ``run_known_poses`` (nothing matched, crash, ...).
    """
    from dataclasses import replace

    from splatworks.sfm.known_poses import KnownPosesConfig, run_known_poses
    from splatworks.sfm.pipeline import SfmConfig

    held = set(rig.test_names)
    cams = [replace(c, name=f"{c.name}/{frame:06d}.png", mask_name=None, world_to_camera=c.world_to_camera.copy())
            for c in rig.cameras]
    scene = Scene(cameras=cams, image_dir=Path(image_dir),
                  test_names=[c.name for c, r in zip(cams, rig.cameras) if r.name in held])
    res = run_known_poses(scene, work_dir, SfmConfig(num_threads=num_threads),
                          KnownPosesConfig(max_pair_angle=RIG_MAX_PAIR_ANGLE), progress=progress)
    pts = res.scene
    report = {k: v for k, v in res.report.items() if isinstance(v, (int, float, str, bool))}
    keep = not_isolated(pts.points)
    report["dropped_isolated"] = int((~keep).sum())
    return pts.points[keep], pts.point_colors[keep], pts.point_errors[keep], report


def dense_rig_points(rig: Scene, image_dir: Path, frame: int, cfg: Any = None, device: str | None = None,
                     depth_out: Path | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Dense points of one frame at the rig's known poses: plane-sweep MVS (``splatworks.sfm.mvs``) on the
    frame's TRAINING views (held-out cameras are never read), depth range from ``rig.points`` when it has some.

    Args:
        rig: the rig Scene (camera names ``camXX``; ``test_names`` = held-out cameras).
        image_dir: the dataset's ``images/`` (``camXX/NNNNNN.png``).
        cfg: a ``splatworks.sfm.mvs.DenseConfig`` (default settings when None).
        device: torch device ("cuda", "cpu"; None = CUDA when available).
        depth_out: optional ``.npy`` for the (C, H, W) depth maps, cameras in ``rig.train_cameras`` order.
    Returns:
        points (P, 3) float64 world, colours (P, 3) uint8, and the MVS report (counts, fractions, seconds).
    """
    from dataclasses import replace

    from splatworks.dynamic.prepare import _read_rgb
    from splatworks.sfm.mvs import DenseConfig, dense_scene_points

    held = set(rig.test_names)
    cams = [replace(c, name=f"{c.name}/{frame:06d}.png", mask_name=None, world_to_camera=c.world_to_camera.copy())
            for c in rig.cameras]
    scene = Scene(cameras=cams, image_dir=Path(image_dir), points=rig.points,
                  test_names=[c.name for c, r in zip(cams, rig.cameras) if r.name in held])
    return dense_scene_points(scene, lambda cam: _read_rgb(Path(image_dir) / cam.name), cfg or DenseConfig(),
                              device, depth_out=depth_out)


def not_isolated(xyz: np.ndarray, factor: float = 10.0) -> np.ndarray:
    """(P,) bool: points whose distance to their 3 nearest neighbours is within ``factor`` x the median.

    Two-view tracks with a small triangulation angle put a few points far out (on the Panoptic dome 2 % lie
    beyond 2 camera-radii, up to 14); alone there, each would seed floaters and, thickened, a spray of them.
    """
    from splatworks.splat.gaussians import knn_scale

    if len(xyz) < 8:
        return np.ones(len(xyz), dtype=bool)
    d = knn_scale(np.asarray(xyz, dtype=np.float64))
    return d <= factor * float(np.median(d))


def sphere_points(scene: Scene, n: int, seed: int = 0, reach: float = 1.2) -> np.ndarray:
    """(n, 3) random points in a ball around the camera centres, seen by at least one camera.

    The ball is centred on the camera centroid with radius ``reach`` x the farthest camera: for an inward-facing
    rig (a dome) its walls and floor lie at or beyond the cameras, outside the cameras' bounding box (which, for a
    ring of cameras at one height, is a thin slab). For a forward-facing rig it still covers the space ahead.
    """
    rng = np.random.default_rng(seed)
    centers = scene.centers()
    mid = centers.mean(axis=0)
    radius = reach * max(float(np.linalg.norm(centers - mid, axis=1).max()), 1e-3)
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(100):
        d = rng.normal(size=(max(4 * n, 4096), 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        cand = mid + d * radius * rng.uniform(0, 1, size=(len(d), 1)) ** (1 / 3)  # uniform in the ball
        seen = np.zeros(len(cand), dtype=bool)
        for cam in scene.cameras:
            uv, z = cam.project(cand)
            seen |= (z > 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        kept.append(cand[seen])
        total += int(seen.sum())
        if total >= n:
            break
    pts = np.concatenate(kept)[:n] if total else mid + rng.normal(size=(n, 3)) * radius / 3
    if len(pts) < n:
        pts = np.concatenate([pts, mid + rng.normal(size=(n - len(pts), 3)) * radius / 3])
    return pts


def expand_points(xyz: np.ndarray, rgb: np.ndarray, n_total: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Thicken a sparse cloud to ``n_total`` points: each new point copies a random point's colour and lies at a
    Gaussian offset of that point's mean distance to its 3 nearest neighbours (so surfaces fill in between the
    triangulated points). A budget-capped densifier (3DGS-MCMC grows 5 % per refine step) cannot grow a few
    hundred points to a full model within frame 0's iterations. Returns (n_total, 3) points and colours, the
    originals first; the input when it already has ``n_total`` or more points."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(xyz) >= n_total or len(xyz) == 0:
        return xyz, np.asarray(rgb, dtype=np.uint8)
    from splatworks.splat.gaussians import knn_scale

    rng = np.random.default_rng(seed)
    spread = knn_scale(xyz)
    src = rng.integers(0, len(xyz), size=n_total - len(xyz))
    new = xyz[src] + rng.normal(size=(len(src), 3)) * spread[src, None]
    return np.concatenate([xyz, new]), np.concatenate([np.asarray(rgb, np.uint8), np.asarray(rgb, np.uint8)[src]])
