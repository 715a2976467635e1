"""Depth files shared by every trainer.

Sparse SfM depth (workflow A) is written by the SfM stage (``splatworks.sfm.depth``): ``sparse_depth.npz``
(names explicit) and DS-NeRF's ``colmap_depth.npy`` (one dict per image in ``poses_bounds.npy`` order, i.e.
image names sorted lexicographically). :func:`load_sparse_depth` reads either and keys the views by image name.

Dense static-model depth (workflow B) is ``all_depth.npy`` + ``all_depth.json`` (written by
``splatworks depth export``)::

    all_depth.npy   float32 array (C, H, W): one map per training camera, camera-space z in world units
                    (the dataset's units), 0 = unknown (the static model does not cover the pixel). Cameras of
                    different sizes are zero-padded to the largest H and W (their own size is in the JSON).
    all_depth.json  {"format": "splatworks.all_depth/1", "cameras": [names in array order],
                     "sizes": [[W, H], ...], "units": "world", "depth": "camera z", "model": "...", ...}

The held-out cameras are never in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.errors import InputError

ALL_DEPTH_FORMAT = "splatworks.all_depth/1"


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix(".json")


def write_all_depth(path: str | Path, maps: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Path:
    """Write per-camera (H, W) depth maps as ``all_depth.npy`` + ``.json`` (layout above); atomic."""
    path = Path(path)
    if path.suffix != ".npy":
        raise InputError(f"{path}: the depth file must end in .npy")
    if not maps:
        raise InputError("no depth maps to write")
    names = list(maps)
    h = max(m.shape[0] for m in maps.values())
    w = max(m.shape[1] for m in maps.values())
    arr = np.zeros((len(names), h, w), dtype=np.float32)
    for i, n in enumerate(names):
        d = np.nan_to_num(np.asarray(maps[n], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        arr[i, : d.shape[0], : d.shape[1]] = np.maximum(d, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, arr)
    doc = {"format": ALL_DEPTH_FORMAT, "cameras": names, "sizes": [[int(maps[n].shape[1]), int(maps[n].shape[0])]
                                                                   for n in names],
           "units": "world", "depth": "camera-space z (not ray length); 0 = unknown", **(meta or {})}
    tmp_json = sidecar(path).with_name(sidecar(path).stem + ".tmp.json")
    tmp_json.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    tmp_json.replace(sidecar(path))
    return path


def load_all_depth(path: str | Path) -> dict[str, np.ndarray]:
    """camera name -> (H, W) float32 depth (0 = unknown), cropped to each camera's own size."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such depth file; write it with `splatworks depth export MODEL DATASET -o {path}`")
    meta_path = sidecar(path)
    if not meta_path.exists():
        raise InputError(f"{path}: its camera list {meta_path.name} is missing; re-export it with `splatworks depth "
                         "export`")
    meta = json.loads(meta_path.read_text())
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 3 or len(arr) != len(meta["cameras"]):
        raise InputError(f"{path}: expected ({len(meta['cameras'])}, H, W) depth maps, found shape {arr.shape}")
    return {n: arr[i, :h, :w] for i, (n, (w, h)) in enumerate(zip(meta["cameras"], meta["sizes"]))}


def load_sparse_depth(path: str | Path, camera_names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Sparse depth per image name: {"coords" (M, 2) px (centres +0.5), "depths" (M,), "weights" (M,)}.

    ``path``: ``sparse_depth.npz``, ``colmap_depth.npy`` (matched to ``camera_names`` sorted lexicographically,
    LLFF's order), or a folder holding either (the npz is preferred).
    """
    path = Path(path)
    if path.is_dir():
        for name in ("sparse_depth.npz", "colmap_depth.npy"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise InputError(f"{path} has no sparse_depth.npz or colmap_depth.npy; run `splatworks sfm` (it writes "
                             "them) or pass --depth-file")
    if path.suffix == ".npz":
        from splatworks.sfm.depth import read_sparse_depth

        return {v.name: {"coords": v.coords, "depths": v.depths, "weights": v.weights}
                for v in read_sparse_depth(path)}
    from splatworks.sfm.depth import read_colmap_depth

    views = read_colmap_depth(path)
    names = sorted(camera_names)
    if len(views) != len(names):
        raise InputError(f"{path} has depth for {len(views)} images but the scene has {len(names)}; colmap_depth.npy "
                         "must list every image of poses_bounds.npy in sorted-name order")
    out = {}
    for n, v in zip(names, views):
        w = v.get("weight")
        if w is None:
            from splatworks.sfm.depth import ds_nerf_weights

            err = np.asarray(v.get("error", np.zeros(len(v["depth"]))))
            w = ds_nerf_weights(err, float(err.mean()) if len(err) else 1.0)
        out[n] = {"coords": np.asarray(v["coord"], np.float32).reshape(-1, 2),
                  "depths": np.asarray(v["depth"], np.float32), "weights": np.asarray(w, np.float32)}
    return out
