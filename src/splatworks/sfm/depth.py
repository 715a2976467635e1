"""Sparse depth per view from SfM points, for depth-supervised training (DS-NeRF style).

For every registered image, each observed 3D point gives one sample: its pixel coordinate in the (undistorted)
image, its camera-space depth z, the point's mean reprojection error, and a weight

    weight = 2 * exp(-(error / mean_error)^2)            (DS-NeRF, Deng et al. 2022, ``load_colmap_depth``)

where ``mean_error`` is the mean error over all points of the model: well-fitting points count up to twice.

Files:

``sparse_depth.npz`` (our format; all views in one file, samples concatenated view after view)::

    names    (V,)   str      image names, in natural name order (the Scene's camera order)
    offsets  (V+1,) int64    samples of view v are [offsets[v], offsets[v+1])
    coords   (M, 2) float32  pixel x, y with pixel centres at +0.5 (COLMAP / gsplat convention)
    depths   (M,)   float32  camera-space z (world units of the SfM model)
    errors   (M,)   float32  mean reprojection error of the point's track (pixels)
    weights  (M,)   float32  DS-NeRF weight (formula above)
    point_ids (M,)  int64    COLMAP point3D id (same point seen in several views shares it)

``colmap_depth.npy`` (DS-NeRF's layout): a pickled object array with one dict per view,
``{"depth": (m,), "coord": (m, 2), "error": (m,), "weight": (m,)}`` (read with ``allow_pickle=True``), views in
``poses_bounds.npy`` order: image names sorted lexicographically (LLFF's ``sorted(os.listdir(images))``), so
``r_10`` comes before ``r_2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.scene.camera import natural_key


@dataclass
class SparseDepthView:
    """Sparse depth samples of one view (M samples)."""

    name: str
    coords: np.ndarray    # (M, 2) float32 pixel x, y (centres at +0.5)
    depths: np.ndarray    # (M,) float32 camera z
    errors: np.ndarray    # (M,) float32 pixels
    weights: np.ndarray   # (M,) float32
    point_ids: np.ndarray  # (M,) int64

    def __len__(self) -> int:
        return len(self.depths)


def ds_nerf_weights(errors: np.ndarray, mean_error: float) -> np.ndarray:
    """DS-NeRF's per-sample weight ``2 * exp(-(err / mean_err)^2)`` for (M,) errors in pixels."""
    mean_error = max(float(mean_error), 1e-6)
    return (2.0 * np.exp(-(np.asarray(errors, dtype=np.float64) / mean_error) ** 2)).astype(np.float32)


def sparse_depth_from_reconstruction(rec: Any) -> list[SparseDepthView]:
    """Sparse depth of every registered image of a ``pycolmap.Reconstruction`` (call inside the SfM worker)."""
    point_ids = list(rec.points3D.keys())
    errors = np.array([rec.points3D[i].error for i in point_ids], dtype=np.float64)
    mean_error = float(errors[errors >= 0].mean()) if (errors >= 0).any() else 1.0
    error_of = dict(zip(point_ids, errors))
    views = []
    for image_id in rec.reg_image_ids():
        image = rec.images[image_id]
        w2c = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
        coords, ids = [], []
        for p2d in image.points2D:
            if p2d.has_point3D():
                coords.append(p2d.xy)
                ids.append(p2d.point3D_id)
        ids_arr = np.array(ids, dtype=np.int64)
        xyz = np.array([rec.points3D[i].xyz for i in ids], dtype=np.float64).reshape(-1, 3)
        z = xyz @ w2c[:3, :3][2] + w2c[2, 3]
        err = np.array([max(error_of[i], 0.0) for i in ids], dtype=np.float64)
        views.append(SparseDepthView(name=image.name, coords=np.array(coords, dtype=np.float32).reshape(-1, 2),
                                     depths=z.astype(np.float32), errors=err.astype(np.float32),
                                     weights=ds_nerf_weights(err, mean_error), point_ids=ids_arr))
    views.sort(key=lambda v: natural_key(v.name))
    return views


def visibility_matrix(views: list[SparseDepthView], camera_names: list[str], point_ids: np.ndarray) -> np.ndarray:
    """(P, N) bool: point ``point_ids[p]`` observed in camera ``camera_names[n]`` (for LLFF near/far bounds)."""
    row = {int(pid): k for k, pid in enumerate(np.asarray(point_ids).tolist())}
    col = {n: k for k, n in enumerate(camera_names)}
    vis = np.zeros((len(point_ids), len(camera_names)), dtype=bool)
    for v in views:
        if v.name in col:
            rows = [row[int(p)] for p in v.point_ids if int(p) in row]
            vis[rows, col[v.name]] = True
    return vis


def sparse_depth_from_scene_points(scene: Any, observations: dict[str, tuple[np.ndarray, np.ndarray]]
                                   ) -> list[SparseDepthView]:
    """Sparse depth from a Scene and per-view observations ``name -> (point indices (m,), coords (m, 2))``.

    For callers that track observations themselves (no pycolmap); errors come from ``scene.point_errors``.
    """
    errs_all = np.nan_to_num(scene.point_errors, nan=0.0)
    mean_error = float(errs_all.mean()) if len(errs_all) else 1.0
    views = []
    for cam in scene.cameras:
        if cam.name not in observations:
            continue
        idx, coords = observations[cam.name]
        _, z = cam.project(scene.points[idx])
        err = errs_all[idx]
        views.append(SparseDepthView(cam.name, np.asarray(coords, np.float32).reshape(-1, 2), z.astype(np.float32),
                                     err.astype(np.float32), ds_nerf_weights(err, mean_error),
                                     np.asarray(idx, np.int64)))
    views.sort(key=lambda v: natural_key(v.name))
    return views


def sparse_depth_from_dense(names: list[str], samples: list[dict[str, np.ndarray]]) -> list[SparseDepthView]:
    """Dense (multi-view stereo) depth in the records of sparse SfM depth, so ``--depth sparse`` can read it.

    Args:
        names: V image names; samples: V dicts from ``sfm.mvs.consistent_samples`` (``coords`` (M, 2), ``depths``
            (M,), ``errors`` (M,) forward-backward reprojection error in pixels); an empty dict (or no samples) for
            a view without depth, e.g. a held-out view.
    Returns:
        views in natural name order; weights by DS-NeRF's formula over the mean error of all samples (a pixel the
        other views reproject onto exactly counts up to twice); ``point_ids`` are -1 (no SfM point behind them).
    """
    errs = [np.asarray(s.get("errors", ()), np.float64) for s in samples]
    all_errs = np.concatenate(errs) if errs else np.zeros(0)
    mean_error = float(all_errs.mean()) if len(all_errs) else 1.0
    views = []
    for name, s, err in zip(names, samples, errs):
        depths = np.asarray(s.get("depths", ()), np.float32)
        views.append(SparseDepthView(name, np.asarray(s.get("coords", np.zeros((0, 2))), np.float32).reshape(-1, 2),
                                     depths, err.astype(np.float32), ds_nerf_weights(err, mean_error),
                                     np.full(len(depths), -1, np.int64)))
    views.sort(key=lambda v: natural_key(v.name))
    return views


def write_sparse_depth(views: list[SparseDepthView], path: str | Path) -> Path:
    """Write ``sparse_depth.npz`` (layout in the module docstring); atomic replace."""
    path = Path(path)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in views])]).astype(np.int64)

    def cat(attr: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        parts = [getattr(v, attr) for v in views]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, names=np.array([v.name for v in views], dtype=str), offsets=offsets,
             coords=cat("coords", (0, 2), np.float32), depths=cat("depths", (0,), np.float32),
             errors=cat("errors", (0,), np.float32), weights=cat("weights", (0,), np.float32),
             point_ids=cat("point_ids", (0,), np.int64))
    tmp.replace(path)
    return path


def read_sparse_depth(path: str | Path) -> list[SparseDepthView]:
    """Read ``sparse_depth.npz`` back into views (same order as written)."""
    with np.load(path) as z:
        off = z["offsets"]
        return [SparseDepthView(name=str(n), coords=z["coords"][a:b], depths=z["depths"][a:b],
                                errors=z["errors"][a:b], weights=z["weights"][a:b], point_ids=z["point_ids"][a:b])
                for n, a, b in zip(z["names"], off[:-1], off[1:])]


def write_colmap_depth(views: list[SparseDepthView], path: str | Path) -> Path:
    """Write DS-NeRF's ``colmap_depth.npy``: an object array of per-view dicts in LLFF order (sorted names)."""
    path = Path(path)
    views = sorted(views, key=lambda v: v.name)
    data = np.empty(len(views), dtype=object)
    for i, v in enumerate(views):
        data[i] = {"depth": v.depths.astype(np.float32), "coord": v.coords.astype(np.float32),
                   "error": v.errors.astype(np.float32), "weight": v.weights.astype(np.float32)}
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, data, allow_pickle=True)
    tmp.replace(path)
    return path


def read_colmap_depth(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Read a DS-NeRF ``colmap_depth.npy`` (list of dicts with ``depth``, ``coord`` and ``weight``/``error``),
    one per image in lexicographic name order."""
    return list(np.load(path, allow_pickle=True))
