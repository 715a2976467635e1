"""The prepared rig in the usual exchange formats, through the shared writers of ``scene/`` and ``sfm/``.

- ``transforms.json`` (nerfstudio variant, ``scene.transforms``): one entry per camera and frame, plus ``camera``,
  ``frame``, ``time`` (the frame's position in [0, 1] over the clip, D-NeRF/K-Planes convention) and ``split``
  (``test`` for held-out cameras). Poses are OpenGL camera-to-world there (``c2w_cv @ diag(1, -1, -1, 1)``).
- ``poses_bounds.npy`` (``scene.llff``): one row per rig camera in name order, as DyNeRF/N3DV do for their
  videos; near/far from the sparse points each camera observed.
- ``colmap_depth.npy`` (``sfm.depth``, DS-NeRF layout): one dict per rig camera, in name order.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from splatworks.scene.camera import Scene
from splatworks.scene.llff import write_llff
from splatworks.scene.transforms import write_transforms as write_scene_transforms
from splatworks.sfm.depth import sparse_depth_from_scene_points, write_colmap_depth

Observations = dict[str, dict[int, tuple[float, float]]]  # camera -> {point index: (u, v) pixels}


def write_transforms(root: Path, rig: Scene, frames: list[int], test_cameras: list[str], fps: float,
                     with_masks: bool) -> Path:
    """``root/transforms.json`` for every camera x frame (file paths relative to ``root``)."""
    cams = [replace(c, name=f"{c.name}/{f:06d}.png", mask_name=f"{c.name}/{f:06d}.png" if with_masks else None,
                    frame=f, world_to_camera=c.world_to_camera.copy()) for c in rig.cameras for f in frames]
    scene = Scene(cameras=cams, image_dir=root / "images", mask_dir=root / "masks" if with_masks else None)
    (path,) = write_scene_transforms(scene, root, variant="nerfstudio", split=False)
    doc = json.loads(path.read_text())
    span = max(frames[-1] - frames[0], 1) if frames else 1
    for entry, cam in zip(doc["frames"], cams):
        rig_name = cam.name.split("/")[0]
        entry.update(camera=rig_name, frame=cam.frame, time=(cam.frame - frames[0]) / span,
                     split="test" if rig_name in test_cameras else "train")
    doc["fps"] = fps
    doc["conventions"] = ("transform_matrix: camera-to-world, OpenGL axes (x right, y up, -z forward); "
                          "masks: 255 = static, 0 = dynamic")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def _visibility(rig: Scene, observations: Observations | None) -> np.ndarray | None:
    if not observations or not len(rig.points):
        return None
    vis = np.zeros((len(rig.points), len(rig.cameras)), dtype=bool)
    for i, cam in enumerate(rig.cameras):
        idx = list((observations.get(cam.name) or {}).keys())
        vis[idx, i] = True
    return vis


def write_poses_bounds(root: Path, rig: Scene, observations: Observations | None) -> Path:
    """``root/poses_bounds.npy``: (C, 17), rows in camera-name order."""
    with warnings.catch_warnings():
        # An imported calibration has no sparse points: guessed bounds are expected there, not news.
        if not len(rig.points):
            warnings.simplefilter("ignore", UserWarning)
        return write_llff(rig, root, _visibility(rig, observations))


def write_sparse_depth(root: Path, rig: Scene, observations: Observations | None) -> Path:
    """``root/colmap_depth.npy``: one entry per rig camera (empty arrays for a camera with no observation)."""
    obs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for cam in rig.cameras:
        o = (observations or {}).get(cam.name) or {}
        idx = np.array(sorted(o), dtype=np.int64)
        obs[cam.name] = (idx, np.array([o[i] for i in idx], dtype=np.float64).reshape(-1, 2))
    views = sparse_depth_from_scene_points(rig, obs)
    return write_colmap_depth(views, root / "colmap_depth.npy")
