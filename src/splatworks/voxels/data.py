"""Training rays from a prepared multi-view video dataset, with per-pixel temporal variance.

Frames are read one at a time (never a whole video at once) into a uint8 tensor (C, T, H, W, 3) on the training
device; the per-pixel temporal std (the paper's signal for what moves) is accumulated on the way. Batches mix
uniformly drawn pixels with pixels drawn from the dynamic ones (std above a threshold), as the paper biases its
ray sampling towards dynamic pixels. Shapes: C training cameras, T frames, H x W image size, B batch rays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.errors import InputError, UserError
from splatworks.scene.camera import Camera


def load_rgb(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, resized to ``size`` = (W, H) with area filtering when given."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.BOX)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read frame {path}: {exc}") from exc


def load_mask(path, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """(H, W) bool, True = static (white), or None when the file is absent."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and im.size != size:
                im = im.resize(size, Image.NEAREST)
            return np.asarray(im) >= 128
    except FileNotFoundError:
        return None


@dataclass
class DepthTargets:
    """Per-pixel depth targets for depth supervision (issue 8 sources plug in here).

    Attributes:
        cameras: camera names, one per row of ``depth``.
        depth: (C, F, H, W) float32 camera-space z in world units; 0 or NaN = unknown. F = 1 (one map per camera,
            e.g. a static model's depth, used for every frame) or F = number of dataset frames.
        weight: same shape as ``depth`` (or None = 1 where depth is known): per-pixel confidence.
    """

    cameras: list[str]
    depth: np.ndarray
    weight: np.ndarray | None = None


@dataclass
class RayData:
    """Everything the trainer samples from (all tensors on one device)."""

    cameras: list[Camera]                  # C training cameras at the training resolution
    frames: list[int]                      # T dataset frame numbers
    images: torch.Tensor                   # (C, T, H, W, 3) uint8
    pixel_std: torch.Tensor                # (C, H, W) float32 temporal std, mean over RGB, in [0, 1] units
    dynamic_pixels: torch.Tensor           # (D,) flat indices into C * H * W of dynamic pixels
    c2w: torch.Tensor                      # (C, 4, 4) camera-to-world, OpenCV axes
    intrinsics: torch.Tensor               # (C, 4) fx, fy, cx, cy
    depth: torch.Tensor | None = None      # (C, F, H, W) float32 (0 = unknown)
    depth_weight: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        c, t, h, w, _ = self.images.shape
        return c, t, h, w

    def time_of(self, frame_index: torch.Tensor) -> torch.Tensor:
        """Frame index (0..T-1) -> normalised time in [0, 1]."""
        t = self.shape[1]
        return frame_index.float() / max(t - 1, 1)

    def rays(self, cam_idx: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rays (B, 3), (B, 3) through pixel centres; direction has unit camera z."""
        k = self.intrinsics[cam_idx]
        d_cam = torch.stack([(cols.float() + 0.5 - k[:, 2]) / k[:, 0], (rows.float() + 0.5 - k[:, 3]) / k[:, 1],
                             torch.ones_like(k[:, 0])], -1)
        c2w = self.c2w[cam_idx]
        dirs = torch.einsum("bij,bj->bi", c2w[:, :3, :3], d_cam)
        return c2w[:, :3, 3].contiguous(), dirs

    def sample(self, n: int, dynamic_fraction: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """A batch of n rays: pixel (camera, row, col), frame, target colour, pixel std, optional depth."""
        c, t, h, w = self.shape
        dev = self.images.device
        n_dyn = int(round(n * dynamic_fraction)) if len(self.dynamic_pixels) else 0
        flat = torch.randint(0, c * h * w, (n - n_dyn,), generator=gen, device="cpu").to(dev)
        if n_dyn:
            pick = torch.randint(0, len(self.dynamic_pixels), (n_dyn,), generator=gen, device="cpu").to(dev)
            flat = torch.cat([flat, self.dynamic_pixels[pick]])
        frame = torch.randint(0, t, (n,), generator=gen, device="cpu").to(dev)
        cam, rem = flat // (h * w), flat % (h * w)
        row, col = rem // w, rem % w
        batch = {"cam": cam, "row": row, "col": col, "frame": frame, "time": self.time_of(frame),
                 "rgb": self.images[cam, frame, row, col].float() / 255.0, "std": self.pixel_std[cam, row, col]}
        if self.depth is not None:
            f = frame if self.depth.shape[1] > 1 else torch.zeros_like(frame)
            batch["depth"] = self.depth[cam, f, row, col]
            batch["depth_weight"] = self.depth_weight[cam, f, row, col] if self.depth_weight is not None \
                else (batch["depth"] > 0).float()
        return batch


def training_cameras(dataset: DynamicDataset, scale: float) -> list[Camera]:
    names = dataset.train_camera_names
    if not names:
        raise UserError(f"{dataset.root}: every camera is held out; keep at least one for training")
    cams = [dataset.rig.camera(n) for n in names]
    return [c.scaled(scale) if scale != 1.0 else c for c in cams]


def load_ray_data(dataset: DynamicDataset, frames: list[int], scale: float, pixel_std_threshold: float,
                  use_masks: bool, device: torch.device, depth: DepthTargets | None = None,
                  progress=None) -> RayData:
    """Read every training frame once, accumulating the per-pixel temporal mean and std."""
    cams = training_cameras(dataset, scale)
    c, t = len(cams), len(frames)
    h, w = cams[0].height, cams[0].width
    if any((cam.width, cam.height) != (w, h) for cam in cams):
        raise InputError("all rig cameras must share one image size for MixVoxels training; "
                         "re-run `splatworks dynamic prepare` with --resize")
    images = torch.empty((c, t, h, w, 3), dtype=torch.uint8, device=device)
    std = torch.empty((c, h, w), dtype=torch.float32, device=device)
    mask_dynamic = torch.zeros((c, h, w), dtype=torch.bool)
    staging = torch.empty((t, h, w, 3), dtype=torch.uint8)  # one camera's frames, uploaded at once
    for ci, cam in enumerate(cams):
        for ti, frame in enumerate(frames):
            staging[ti] = torch.from_numpy(load_rgb(dataset.image_path(cam.name, frame), (w, h)).copy())
            if use_masks:
                m = load_mask(dataset.mask_path(cam.name, frame), (w, h))
                if m is not None:
                    mask_dynamic[ci] |= torch.from_numpy(~m)
            if progress is not None:
                progress(ci * t + ti + 1, c * t)
        images[ci] = staging.to(device)
        # temporal std per pixel and channel (population std), averaged over RGB; on the training device,
        # frame rows at a time to bound memory (a float copy of the whole camera would be T x H x W x 3 x 4 bytes)
        for r0 in range(0, h, 64):
            x = images[ci, :, r0:r0 + 64].float().div_(255.0)
            std[ci, r0:r0 + 64] = torch.std_mean(x, dim=0, correction=0)[0].mean(-1)
    std = std.cpu()
    dynamic = (std > pixel_std_threshold) | mask_dynamic
    data = RayData(cameras=cams, frames=list(frames), images=images, pixel_std=std.to(device),
                   dynamic_pixels=dynamic.reshape(-1).nonzero().squeeze(-1).to(device),
                   c2w=torch.as_tensor(np.stack([cam.camera_to_world for cam in cams]), dtype=torch.float32,
                                       device=device),
                   intrinsics=torch.tensor([[cam.fx, cam.fy, cam.cx, cam.cy] for cam in cams], dtype=torch.float32,
                                           device=device))
    data.meta["dynamic_pixel_share"] = float(dynamic.float().mean())
    if depth is not None:
        data.depth, data.depth_weight = _depth_tensors(depth, cams, len(frames), (w, h), device)
    return data


def _depth_tensors(depth: DepthTargets, cams: list[Camera], n_frames: int, size: tuple[int, int],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder depth targets to the training cameras and resize them (nearest) to the training size."""
    import torch.nn.functional as F

    arr = np.asarray(depth.depth, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != len(depth.cameras) or arr.shape[1] not in (1, n_frames):
        raise InputError(f"depth targets must be (cameras, 1 or {n_frames} frames, H, W); got {arr.shape}")
    wts = np.ones_like(arr) if depth.weight is None else np.asarray(depth.weight, dtype=np.float32)
    known = np.isfinite(arr) & (arr > 0)
    arr = np.where(known, arr, 0.0)
    wts = np.where(known, wts, 0.0)
    rows = []
    for cam in cams:
        if cam.name not in depth.cameras:
            rows.append(None)
            continue
        rows.append(depth.cameras.index(cam.name))
    w, h = size
    out_d = torch.zeros((len(cams), arr.shape[1], h, w), device=device)
    out_w = torch.zeros_like(out_d)
    for ci, r in enumerate(rows):
        if r is None:
            continue
        d = torch.from_numpy(arr[r])[None]
        ww = torch.from_numpy(wts[r])[None]
        out_d[ci] = F.interpolate(d, size=(h, w), mode="nearest")[0].to(device)
        out_w[ci] = F.interpolate(ww, size=(h, w), mode="nearest")[0].to(device)
    return out_d, out_w
