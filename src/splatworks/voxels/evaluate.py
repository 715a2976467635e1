"""Rendering videos from a trained MixVoxels model, and the held-out-camera metrics.

Metrics (the same definitions as the Gaussian backend's, issue 7):
- PSNR and SSIM per frame of the held-out camera (SSIM: 11x11 Gaussian window, sigma 1.5, on RGB in [0, 1]).
- background flicker: mean over static pixels of the temporal std of the rendered video, minus the same for the
  ground-truth video (RGB in [0, 1]; 1/255 = one grey level). Static pixels: white in every frame's mask, or,
  without masks, GT temporal std below 2/255.
- drift: slope of per-frame PSNR against frame index (dB/frame, least squares).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Camera
from splatworks.voxels.data import load_mask, load_rgb
from splatworks.voxels.train import MixVoxelsModel, load_model


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images (H, W, 3) in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return -10.0 * math.log10(max(mse, 1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two images (H, W, 3) in [0, 1] (Gaussian window 11, sigma 1.5, per channel)."""
    x = a.permute(2, 0, 1)[None].double()
    y = b.permute(2, 0, 1)[None].double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum())
    win = (g[:, None] * g[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def flicker(rendered: np.ndarray, truth: np.ndarray, static: np.ndarray) -> float:
    """Mean temporal std over static pixels of ``rendered`` minus that of ``truth``.

    rendered, truth: (T, H, W, 3) float in [0, 1]; static: (H, W) bool."""
    if not static.any():
        return float("nan")
    return float(rendered.std(axis=0).mean(-1)[static].mean() - truth.std(axis=0).mean(-1)[static].mean())


def drift(per_frame_psnr: list[float]) -> float:
    """Least-squares slope of PSNR over frame index (dB/frame); 0 for a single frame."""
    if len(per_frame_psnr) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(per_frame_psnr)), np.asarray(per_frame_psnr), 1)[0])


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
    """Encode (T, H, W, 3) float frames in [0, 1] as H.264 mp4 (PyAV); odd sizes are padded by one pixel."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = u8.shape[1:3]
    ph, pw = h + (h % 2), w + (w % 2)  # yuv420p needs even sizes
    if (ph, pw) != (h, w):
        u8 = np.pad(u8, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": "16"}
        for f in u8:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
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

    Returns ``{"cameras": {name: {psnr, ssim (per frame lists), mean_psnr, mean_ssim, flicker, drift}},
    "mean_psnr", "mean_ssim", "flicker", "drift"}`` (the last four averaged over cameras)."""
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
        if all(m is not None for m in masks):
            static = np.logical_and.reduce(masks)
        else:
            static = truth.std(axis=0).mean(-1) < 2.0 / 255.0
        ps = [psnr(torch.from_numpy(r), torch.from_numpy(g)) for r, g in zip(rendered, truth)]
        ss = [ssim(torch.from_numpy(r), torch.from_numpy(g)) for r, g in zip(rendered, truth)]
        per_cam[name] = {"psnr": ps, "ssim": ss, "mean_psnr": float(np.mean(ps)), "mean_ssim": float(np.mean(ss)),
                         "flicker": flicker(rendered, truth, static), "drift": drift(ps),
                         "static_pixel_share": float(static.mean())}
        if save_video:
            write_mp4(rendered, Path(out_dir) / f"render_{name}.mp4", float(rig.meta.get("fps", dataset.fps)))
    result = {"cameras": per_cam, "frames": frames,
              **{k: float(np.mean([v[k] for v in per_cam.values()]))
                 for k in ("mean_psnr", "mean_ssim", "flicker", "drift")}}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
