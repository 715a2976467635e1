"""Rendering videos from a trained MixVoxels model, and the held-out-camera metrics.

The metrics are the Gaussian backend's own functions (``splat.metrics.psnr/ssim``,
``dynamic.metrics4d.background_flicker/psnr_drift``), so the two backends are scored identically, and the result
dict uses the same keys as ``dynamic.metrics4d.evaluate_sequence``:
- PSNR and SSIM per frame of the held-out camera (SSIM: 11x11 Gaussian window, sigma 1.5, RGB in [0, 1]);
  PSNR over static pixels only.
- background flicker: mean over static pixels of the temporal std of the rendered video, minus the same for the
  ground-truth video (RGB in [0, 1]; ``flicker_levels`` = x 255). Static pixels: white in every frame's mask
  (all pixels when the camera has no masks).
- drift: slope of per-frame PSNR against frame index (dB/frame, least squares).
The ground truth is compared at the model's training resolution (frames resized with area filtering).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.metrics4d import background_flicker, psnr_drift
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Camera
from splatworks.splat.metrics import mse_to_psnr, psnr, ssim
from splatworks.voxels.data import load_mask, load_rgb
from splatworks.voxels.train import MixVoxelsModel, load_model


def resolve_camera(model_rig, camera: str | int | Camera) -> Camera:
    """A rig camera by name (``"cam00"``), by index or number (``3`` / ``"3"`` -> the camera named ``cam03`` if
    there is one, else the 3rd camera), or a given Camera (any pose; intrinsics as given)."""
    if isinstance(camera, Camera):
        return camera
    names = [c.name for c in model_rig.cameras]
    key = str(camera)
    if key in names:
        return model_rig.camera(key)
    if key.isdigit():
        for n in names:
            digits = "".join(ch for ch in n if ch.isdigit())
            if digits and int(digits) == int(key):
                return model_rig.camera(n)
        if int(key) < len(names):
            return model_rig.cameras[int(key)]
    raise UserError(f"no camera {camera!r} in this model's rig; choose one of {names}")


@torch.no_grad()
def render_frames(model: MixVoxelsModel, cam: Camera, n_frames: int, progress: ProgressFn | None = None
                  ) -> np.ndarray:
    """(T, H, W, 3) float32 frames of ``cam`` at every training time step."""
    out = []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        out.append(model.render_image(cam, t)["rgb"].cpu().numpy())
        emit(progress, "mixvoxels.render", i + 1, n_frames, f"rendered frame {i + 1}/{n_frames}")
    return np.stack(out)


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Encode (T, H, W, 3) float frames in [0, 1] as H.264 mp4 with the Gaussian backend's writer."""
    from splatworks.dynamic.render import to_uint8, write_mp4 as write_uint8_mp4

    write_uint8_mp4((to_uint8(f) for f in frames), path, fps)
    return Path(path)


def render_video(out_dir: str | Path, camera: str | int | Camera, path: str | Path, fps: float | None = None,
                 progress: ProgressFn | None = None, device: str = "auto") -> Path:
    """Render the trained model from one camera over all frames into an mp4 at ``path``."""
    model, rig, _ = load_model(out_dir, device)
    cam = resolve_camera(rig, camera)
    fps = fps or float(rig.meta.get("fps", 30.0))
    return write_mp4(render_frames(model, cam, model.n_frames, progress), path, fps)


def evaluate(out_dir: str | Path, dataset: DynamicDataset, cameras: list[str] | None = None,
             progress: ProgressFn | None = None, device: str = "auto", save_video: bool = True) -> dict[str, Any]:
    """Metrics on the held-out camera(s) over the trained frames; written to ``out_dir/metrics.json``.

    Returns the first camera's ``{"camera", "frames", "psnr": [...], "ssim": [...], "psnr_static": [...],
    "psnr_mean", "ssim_mean", "psnr_static_mean", "flicker", "flicker_levels", "drift_db_per_frame",
    "static_pixel_fraction"}`` (as ``evaluate_sequence``) plus ``"cameras": {name: the same}`` for all."""
    model, rig, ckpt = load_model(out_dir, device)
    frames: list[int] = list(ckpt["frames"])
    names = cameras or list(dataset.test_cameras)
    if not names:
        raise UserError(f"{dataset.root} has no held-out camera; pass the camera names to evaluate")
    per_cam: dict[str, Any] = {}
    for name in names:
        cam = resolve_camera(rig, name)
        size = (cam.width, cam.height)
        rendered = render_frames(model, cam, len(frames), progress)
        truth = np.stack([load_rgb(dataset.image_path(name, f), size) for f in frames]).astype(np.float32) / 255.0
        masks = [load_mask(dataset.mask_path(name, f), size) for f in frames]
        masks = [m if m is not None else np.ones((cam.height, cam.width), bool) for m in masks]
        static = np.logical_and.reduce(masks)
        ps, ss, pst = [], [], []
        for r, g, m in zip(rendered, truth, masks):
            rt, gt = torch.from_numpy(r), torch.from_numpy(g)
            ps.append(float(psnr(rt, gt)))
            ss.append(float(ssim(rt, gt)))
            pst.append(mse_to_psnr(float(((r - g) ** 2)[m].mean())) if m.any() else float("nan"))
        fl = background_flicker(rendered, truth, static)
        per_cam[name] = {"camera": name, "frames": frames, "psnr": ps, "ssim": ss, "psnr_static": pst,
                         "psnr_mean": float(np.mean(ps)), "ssim_mean": float(np.mean(ss)),
                         "psnr_static_mean": float(np.nanmean(pst)) if np.isfinite(pst).any() else float("nan"),
                         "flicker": fl, "flicker_levels": fl * 255.0, "drift_db_per_frame": psnr_drift(ps),
                         "static_pixel_fraction": float(static.mean())}
        if save_video:
            write_mp4(rendered, Path(out_dir) / f"render_{name}.mp4", float(rig.meta.get("fps", dataset.fps)))
    first = per_cam[names[0]]
    result = {**first, "cameras": per_cam}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
