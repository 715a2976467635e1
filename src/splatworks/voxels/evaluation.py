"""Rendering videos from a trained MixVoxels model, and the held-out-camera metrics.

The metrics are the Gaussian backend's own functions (``splat.metrics.psnr/ssim``,
``dynamic.metrics4d.background_flicker/psnr_drift``), so the two backends are scored identically, and the result
dict uses the same keys as ``dynamic.metrics4d.evaluate_sequence``:
- PSNR and SSIM per frame of the held-out camera (SSIM: 11x11 Gaussian window, sigma 1.5, RGB in [0, 1]);
  PSNR over static pixels only.
- background flicker: mean over static pixels of the temporal std of the rendered video, minus the same for the
  ground-truth video (RGB in [0, 1]; ``flicker_levels`` = x 255). Static pixels: white in every frame's mask
  (all pixels when the camera has no masks): ``metrics4d.static_pixels``, also the pixels of the static PSNR.
- drift: slope of per-frame PSNR against frame index (dB/frame, least squares).
The ground truth is compared at the model's training resolution (frames resized with area filtering).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.metrics4d import background_flicker, psnr_drift, static_pixels
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Camera
from splatworks.splat.metrics import mse_to_psnr, psnr, ssim
from splatworks.voxels.data import load_mask, load_rgb
from splatworks.voxels.train import MixVoxelsModel, load_model

log = logging.getLogger(__name__)


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
    """Encode (T, H, W, 3) float frames in [0, 1] as mp4: H.264 with the Gaussian backend's writer (PyAV), or
    MPEG-4 part 2 with OpenCV where PyAV is not installed (bare GPU hosts)."""
    import importlib.util

    from splatworks.dynamic.render import to_uint8

    if importlib.util.find_spec("av") is not None:
        from splatworks.dynamic.render import write_mp4 as write_uint8_mp4

        write_uint8_mp4((to_uint8(f) for f in frames), path, fps)
        return Path(path)
    return write_mp4_opencv((to_uint8(f) for f in frames), path, fps)


def write_mp4_opencv(frames, path: str | Path, fps: float) -> Path:
    """(H, W, 3) uint8 RGB frames -> mp4 ('mp4v') with OpenCV, written to a temporary name and then renamed."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    writer = None
    n = 0
    try:
        for img in frames:
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise UserError(f"OpenCV cannot write mp4 video to {tmp}; install PyAV (pip install av)")
            writer.write(np.ascontiguousarray(img[..., ::-1]))  # OpenCV wants BGR
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise UserError("no frames to write")
    tmp.replace(path)
    log.info("wrote %s with OpenCV (mp4v; PyAV is not installed)", path)
    return path


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
    "static_pixel_fraction"}`` (as ``evaluate_sequence``) plus ``"cameras": {name: the same}`` for all, and
    ``"seconds": {"render", "metrics", "video"}`` wall time of each phase (all cameras) and ``"video"`` (the first
    camera's video path, or None)."""
    model, rig, ckpt = load_model(out_dir, device)
    frames: list[int] = list(ckpt["frames"])
    names = cameras or list(dataset.test_cameras)
    if not names:
        raise UserError(f"{dataset.root} has no held-out camera; pass the camera names to evaluate")
    per_cam: dict[str, Any] = {}
    seconds = {"render": 0.0, "metrics": 0.0, "video": 0.0}
    videos: dict[str, str] = {}
    for name in names:
        cam = resolve_camera(rig, name)
        size = (cam.width, cam.height)
        t0 = time.perf_counter()
        rendered = render_frames(model, cam, len(frames), progress)
        t1 = time.perf_counter()
        seconds["render"] += t1 - t0
        truth = np.stack([load_rgb(dataset.image_path(name, f), size) for f in frames]).astype(np.float32) / 255.0
        static = _static_pixels(dataset, name, frames, size)
        ps, ss, pst = [], [], []
        for r, g in zip(rendered, truth):
            rt, gt = torch.from_numpy(r), torch.from_numpy(g)
            ps.append(float(psnr(rt, gt)))
            ss.append(float(ssim(rt, gt)))
            # static & this frame's mask = static (static is white in every frame), as evaluate_sequence does
            pst.append(mse_to_psnr(float(((r - g) ** 2)[static].mean())) if static.any() else float("nan"))
        fl = background_flicker(rendered, truth, static)
        seconds["metrics"] += time.perf_counter() - t1
        per_cam[name] = {"camera": name, "frames": frames, "psnr": ps, "ssim": ss, "psnr_static": pst,
                         "psnr_mean": float(np.mean(ps)), "ssim_mean": float(np.mean(ss)),
                         "psnr_static_mean": float(np.nanmean(pst)) if np.isfinite(pst).any() else float("nan"),
                         "flicker": fl, "flicker_levels": fl * 255.0, "drift_db_per_frame": psnr_drift(ps),
                         "static_pixel_fraction": float(static.mean())}
        if save_video:
            t2 = time.perf_counter()
            videos[name] = str(write_mp4(rendered, Path(out_dir) / f"render_{name}.mp4",
                                         float(rig.meta.get("fps", dataset.fps))))
            seconds["video"] += time.perf_counter() - t2
        del rendered, truth
    first = per_cam[names[0]]
    result = {**first, "cameras": per_cam, "seconds": seconds, "video": videos.get(names[0])}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def _static_pixels(dataset: DynamicDataset, camera: str, frames: list[int], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool static in every frame's mask: ``metrics4d.static_pixels`` (the Gaussian backend's pixels)
    when the model renders at the dataset's size, else the masks resized (nearest) to ``size`` = (W, H)."""
    cam = dataset.rig.camera(camera)
    if (cam.width, cam.height) == size:
        return static_pixels(dataset, camera, frames)
    out = np.ones((size[1], size[0]), dtype=bool)
    for f in frames:
        m = load_mask(dataset.mask_path(camera, f), size)
        if m is not None:
            out &= m
    return out
