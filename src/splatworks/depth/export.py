"""Workflow B, step 1: render a static model's depth for every training camera of a dataset (``all_depth.npy``).

The static model is trained on a static capture of the scene (e.g. one frame per rig camera without the moving
subject, or a walk-around registered into the rig's frame). Its depth is then distilled into dynamic training
on static (white) mask pixels. The held-out cameras are never exported. File layout: ``depth/files.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit


def load_model(model: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Raw Gaussian parameters from a .ply / .splat, or a training folder's newest checkpoint; and its path."""
    from splatworks.splat import io as sio

    path = Path(model)
    if path.is_dir():
        latest = sio.latest_checkpoint(path)
        if latest is None:
            raise InputError(f"{path} holds no checkpoint (point_cloud/iteration_N/point_cloud.ply); train it with "
                             "`splatworks train` or pass a .ply")
        path = latest[1] / "point_cloud.ply"
    if not path.exists():
        raise InputError(f"{path}: no such model file")
    return sio.read_gaussians(path), str(path)


def training_cameras(dataset: str | Path) -> list[Any]:
    """The training cameras of a dynamic dataset (dataset.json) or of a static scene (scene.json)."""
    from splatworks.dynamic.dataset import DATASET_FILE, DynamicDataset
    from splatworks.scene.camera import SCENE_FILE, Scene

    root = Path(dataset)
    if (root / DATASET_FILE).exists():
        ds = DynamicDataset.load(root)
        held = set(ds.test_cameras)
        return [c for c in ds.rig.cameras if c.name not in held]
    if (root / SCENE_FILE).exists():
        return Scene.load(root).train_cameras
    raise UserError(f"{root} is neither a prepared dataset (dataset.json) nor a scene folder (scene.json)")


@torch.no_grad()
def render_depths(params: dict[str, torch.Tensor], cameras: list[Any], min_alpha: float = 0.5,
                  device: str | torch.device = "cpu", backend: str = "auto",
                  progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """camera name -> (H, W) float32 expected camera-z depth; 0 where accumulated opacity < ``min_alpha``."""
    from splatworks.splat.render import render

    params = {k: v.to(device) for k, v in params.items()}
    sh_degree = int(round(math.sqrt(params["shN"].shape[1] + 1))) - 1
    out: dict[str, np.ndarray] = {}
    for i, cam in enumerate(cameras):
        vm = torch.tensor(cam.world_to_camera, dtype=torch.float32, device=device)[None]
        K = torch.tensor(cam.K, dtype=torch.float32, device=device)[None]
        r = render(params, vm, K, cam.width, cam.height, sh_degree, mode="RGB+D", backend=backend)
        d = r.depths[0, ..., 0]
        d = torch.where((r.alphas[0, ..., 0] >= min_alpha) & torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))
        out[cam.name] = d.cpu().numpy().astype(np.float32)
        emit(progress, "depth.export", i + 1, len(cameras), f"{cam.name}")
    return out


def export_depth(model: str | Path, dataset: str | Path, out_path: str | Path, min_alpha: float = 0.5,
                 device: str = "auto", backend: str = "auto", progress: ProgressFn | None = None) -> Path:
    """Write ``all_depth.npy`` (+ ``.json``) with the model's depth for the dataset's training cameras."""
    from splatworks.depth.files import write_all_depth

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    params, model_path = load_model(model)
    cams = training_cameras(dataset)
    maps = render_depths(params, cams, min_alpha, dev, backend, progress)
    coverage = float(np.mean([(m > 0).mean() for m in maps.values()]))
    return write_all_depth(out_path, maps, {"model": model_path, "dataset": str(Path(dataset).resolve()),
                                            "min_alpha": min_alpha, "coverage": coverage})
