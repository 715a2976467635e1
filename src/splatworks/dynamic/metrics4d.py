"""Per-frame quality and temporal stability of a trained 4D sequence on a fixed (held-out) camera.

- PSNR / SSIM per frame (splat.metrics), and PSNR over static pixels only.
- **Background flicker**: mean over static pixels of the temporal std of the rendered video, minus the same for
  the ground-truth video (colour in [0, 1]; 1/255 = one 8-bit level). Static pixels = static (white) in the
  camera's mask at every frame; without masks, every pixel.
  Slow change counts as much as shimmer here (splats that fade over 50 frames raise the std), so
  ``frame_to_frame`` is reported beside it: the mean absolute change between consecutive frames over the same
  pixels, rendered minus ground truth. High flicker with low frame-to-frame change is slow change, not jitter.
- **Drift**: least-squares slope of per-frame PSNR over frame index, dB/frame.

Shapes: T frames, H x W pixels; videos (T, H, W, 3) float in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.dynamic.dataset import DynamicDataset


def background_flicker(rendered: np.ndarray, truth: np.ndarray, static: np.ndarray) -> float:
    """Mean temporal std of ``rendered`` (T, H, W, 3) over ``static`` (H, W) pixels minus that of ``truth``."""
    if rendered.shape != truth.shape:
        raise ValueError(f"rendered {rendered.shape} and ground truth {truth.shape} differ in shape")
    if not static.any() or len(rendered) < 2:
        return float("nan")
    std_r = rendered.astype(np.float64).std(axis=0).mean(axis=-1)[static].mean()
    std_t = truth.astype(np.float64).std(axis=0).mean(axis=-1)[static].mean()
    return float(std_r - std_t)


def frame_to_frame_change(rendered: np.ndarray, truth: np.ndarray, static: np.ndarray) -> float:
    """Mean absolute change between consecutive frames of ``rendered`` (T, H, W, 3) over ``static`` (H, W) pixels
    (mean over RGB) minus that of ``truth``: jitter, without the slow changes that ``background_flicker`` counts."""
    if rendered.shape != truth.shape:
        raise ValueError(f"rendered {rendered.shape} and ground truth {truth.shape} differ in shape")
    if not static.any() or len(rendered) < 2:
        return float("nan")

    def change(video: np.ndarray) -> float:
        # frame by frame: a float64 copy of the whole clip would take 2 GB at 150 x 640 x 360
        steps = [np.abs(b.astype(np.float64) - a).mean(axis=-1)[static].mean() for a, b in zip(video, video[1:])]
        return float(np.mean(steps))

    return change(rendered) - change(truth)


def psnr_drift(per_frame_psnr: list[float] | np.ndarray) -> float:
    """Slope of PSNR over frame index (dB/frame, least squares); 0 for fewer than two frames."""
    y = np.asarray(per_frame_psnr, dtype=np.float64)
    if len(y) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(y)), y, 1)[0])


def static_pixels(dataset: DynamicDataset, camera: str, frames: list[int]) -> np.ndarray:
    """(H, W) bool: static in the camera's mask at every frame (all True when the camera has no masks)."""
    from splatworks.dynamic.sequential import load_static_mask

    cam = dataset.rig.camera(camera)
    out = np.ones((cam.height, cam.width), dtype=bool)
    for f in frames:
        path = dataset.mask_path(camera, f)
        if path.exists():
            out &= load_static_mask(path, (cam.height, cam.width))
    return out


def evaluate_sequence(train_dir: str | Path, dataset: DynamicDataset, camera: str | None = None,
                      frames: list[int] | None = None, device: str = "auto",
                      near_plane: float | None = None) -> dict[str, Any]:
    """Render ``camera`` (default: the first held-out camera) over the trained frames and score it; ``near_plane``
    (scene units) overrides where its renders clip (default ``SequenceReader.near_plane_for``).

    Returns {"camera", "frames", "psnr": [...], "ssim": [...], "psnr_static": [...], "psnr_dynamic": [...],
    "psnr_mean", "ssim_mean", "psnr_static_mean", "psnr_dynamic_mean", "flicker", "flicker_levels" (flicker x 255),
    "frame_to_frame_levels" (``frame_to_frame_change`` x 255), "drift_db_per_frame", "near_plane" (scene units:
    where the camera's renders clipped)}.
    ``psnr_dynamic`` is over the frame's dynamic (black) mask pixels: how well moving
    objects are followed, which the whole-image PSNR hides when they cover a few percent of the view (NaN for a
    frame with none).
    """
    from splatworks.dynamic.render import render_frames
    from splatworks.dynamic.sequential import load_image, trained_frames
    from splatworks.errors import UserError
    from splatworks.splat.metrics import mse_to_psnr, psnr, ssim

    camera = camera or (dataset.test_cameras[0] if dataset.test_cameras else None)
    if camera is None:
        raise UserError("the dataset has no held-out camera; name one with --camera")
    frames = frames if frames is not None else trained_frames(train_dir)
    if not frames:
        raise UserError(f"no trained frames in {train_dir}")
    cam = dataset.rig.camera(camera)
    from splatworks.dynamic.render import SequenceReader

    if near_plane is None:
        near_plane = SequenceReader(train_dir, "cpu").near_plane_for(cam)  # reads json and points only
    rendered = np.stack(list(render_frames(train_dir, cam, frames, device=device, near_plane=near_plane)))  # (T,H,W,3)
    truth = np.stack([load_image(dataset.image_path(camera, f)) for f in frames])
    static = static_pixels(dataset, camera, frames)
    ps, ss, pst, pdy = [], [], [], []
    for r, t, f in zip(rendered, truth, frames):
        rt, tt = torch.from_numpy(r), torch.from_numpy(t)
        ps.append(float(psnr(rt, tt)))
        ss.append(float(ssim(rt, tt)))
        now_static = _frame_static(dataset, camera, f, static.shape)
        st, dy = static & now_static, ~now_static
        sq = (r - t) ** 2
        pst.append(mse_to_psnr(float(sq[st].mean())) if st.any() else float("nan"))
        pdy.append(mse_to_psnr(float(sq[dy].mean())) if dy.any() else float("nan"))
    flicker = background_flicker(rendered, truth, static)
    return {"camera": camera, "frames": frames, "psnr": ps, "ssim": ss, "psnr_static": pst, "psnr_dynamic": pdy,
            "psnr_mean": float(np.mean(ps)), "ssim_mean": float(np.mean(ss)),
            "psnr_static_mean": float(np.nanmean(pst)) if np.isfinite(pst).any() else float("nan"),
            "psnr_dynamic_mean": float(np.nanmean(pdy)) if np.isfinite(pdy).any() else float("nan"),
            "flicker": flicker, "flicker_levels": flicker * 255.0,
            "frame_to_frame_levels": frame_to_frame_change(rendered, truth, static) * 255.0,
            "drift_db_per_frame": psnr_drift(ps), "static_pixel_fraction": float(static.mean()),
            "near_plane": near_plane}


def _frame_static(dataset: DynamicDataset, camera: str, frame: int, shape: tuple[int, int]) -> np.ndarray:
    from splatworks.dynamic.sequential import load_static_mask

    path = dataset.mask_path(camera, frame)
    return load_static_mask(path, shape) if path.exists() else np.ones(shape, dtype=bool)
