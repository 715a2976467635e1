"""Dense points at known poses: plane-sweep multi-view stereo with a multi-view geometric-consistency filter.

A calibrated rig (a studio's ground-truth poses) triangulates only a few hundred sparse points; frame 0 of the
4D trainer needs dense, correct geometry, or Gaussians land at wrong depths where few views constrain them. This
module computes it in plain PyTorch (CUDA on the GPU machine, CPU in tests):

1. ``depth_maps``: for each reference view, warp its ``num_sources`` nearest views onto ``num_depths``
   fronto-parallel planes (uniform in inverse depth between near and far), score each plane with the NCC of
   ``window`` x ``window`` patches (box filters), aggregate over sources (mean of the best ``best_k``), take the
   best plane (winner-take-all) and refine it with a parabola through its neighbours. Low-NCC, textureless and
   masked-out pixels get depth 0.
2. ``consistent_points``: back-project every valid pixel, keep it when at least ``min_consistent`` other views
   agree (forward-backward reprojection within ``reproj_px`` pixels and ``rel_depth_tol`` relative depth),
   average the agreeing 3D points and subsample to ``max_points``.

Conventions (docs/conventions.md): OpenCV axes, ``world_to_camera`` (4, 4), intrinsics in pixels of the stored
image with pixel centres at +0.5 (the centre of pixel (row i, column j) is (u, v) = (j + 0.5, i + 0.5)), depth =
camera-space z in world units, 0 = invalid. Depth maps are at the working resolution ``cfg.scale`` x the image
size, for the cameras ``[c.scaled(cfg.scale) for c in cameras]``, in the order of ``cameras``.

Notation: C views, S source views per reference, D depth planes, B planes per batch, H x W working image size,
P points. Plane sweep: a ref pixel x (homogeneous) at depth d is X_ref = d K_r^-1 x; in source s it lands at
K_s (R_rs X_ref + t_rs), with (R_rs, t_rs) = T_s T_r^-1 (``world_to_camera`` matrices T).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from splatworks.config import option
from splatworks.errors import InputError
from splatworks.scene.camera import Camera, Scene

if TYPE_CHECKING:  # torch is imported where it is used: the config and view selection stay light (sfm/, CLI help)
    import torch

log = logging.getLogger(__name__)


@dataclass
class DenseConfig:
    num_depths: int = option(128, "Depth planes per reference view, uniform in inverse depth between near and far.")
    num_sources: int = option(4, "Source views per reference view (the nearest by viewing direction).")
    best_k: int = option(2, "Aggregate the plane cost as the mean NCC of the best k sources (robust to occlusion).")
    window: int = option(7, "NCC window side in pixels (odd).")
    min_ncc: float = option(0.5, "Reject pixels whose aggregated NCC at the best plane is below this.")
    min_std: float = option(0.005, "Reject textureless pixels: local grey standard deviation (image in [0, 1]) "
                            "below this.")
    min_consistent: int = option(2, "Keep a pixel when at least this many other views agree on its 3D point.")
    reproj_px: float = option(1.0, "Consistency: forward-backward reprojection error allowed (working pixels).")
    rel_depth_tol: float = option(0.01, "Consistency: relative depth difference allowed.")
    max_points: int = option(400_000, "Random subsample of the fused points to at most this many (0 = all).")
    scale: float = option(0.5, "Work at this fraction of the image size. Half size measured best on the 640x360 "
                          "Panoptic rig: more consistent points than full size (calibration error is ~1 full-size "
                          "pixel, and the NCC window covers more texture), at a quarter of the cost.")
    near: float = option(0.0, "Nearest depth plane in world units (0 = from the sparse points or the rig layout).")
    far: float = option(0.0, "Farthest depth plane in world units (0 = from the sparse points or the rig layout).")
    max_source_angle: float = option(75.0, "Source views whose optical axis differs from the reference's by more "
                                     "than this (degrees) are not used.")
    plane_batch: int = option(0, "Depth planes warped at once (0 = as many as fit ~16M elements per tensor).")
    seed: int = option(0, "Seed of the point subsample.")
    cpu_threads: int = option(1, "Torch CPU threads while MVS runs on the CPU (0 = torch's setting). Its ops are "
                              "small and memory-bound: on a busy 2-core machine 1 thread was 3-10x faster than 2.")


@contextmanager
def _cpu_threads(n: int, device: "torch.device"):
    """Run with ``n`` torch CPU threads (when on the CPU and ``n`` > 0), restoring the previous setting."""
    import torch

    if device.type != "cpu" or n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- small helpers ------------------------------------------------------------------------------------------------
def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_images(images: Sequence[np.ndarray] | torch.Tensor, size: tuple[int, int], device: torch.device
               ) -> torch.Tensor:
    """(C, 3, H, W) float32 RGB in [0, 1] at ``size`` = (H, W) from uint8 or float (H0, W0, 3) arrays."""
    import torch
    import torch.nn.functional as F

    out = []
    for img in images:
        t = torch.as_tensor(np.asarray(img)) if not isinstance(img, torch.Tensor) else img
        if t.ndim != 3 or t.shape[-1] not in (3, 4):
            raise InputError(f"images must be (H, W, 3) RGB arrays, got shape {tuple(t.shape)}")
        t = t[..., :3].to(device)
        t = t.float() / 255.0 if not t.is_floating_point() else t.float()
        t = t.permute(2, 0, 1)[None]
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
        out.append(t[0])
    return torch.stack(out)


def _as_masks(masks: Sequence[np.ndarray] | None, n: int, size: tuple[int, int], device: torch.device
              ) -> torch.Tensor:
    """(C, H, W) bool "use" masks at ``size`` (all True when ``masks`` is None; nearest-neighbour resize)."""
    import torch
    import torch.nn.functional as F

    if masks is None:
        return torch.ones((n, *size), dtype=torch.bool, device=device)
    if len(masks) != n:
        raise InputError(f"{len(masks)} masks for {n} views; pass one (H, W) boolean mask per view or none")
    out = []
    for m in masks:
        t = torch.as_tensor(np.asarray(m)).to(device).float()[None, None]
        out.append(F.interpolate(t, size=size, mode="nearest")[0, 0] > 0.5)
    return torch.stack(out)


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W) luminance."""
    import torch

    w = torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(3, 1, 1)
    return (rgb * w).sum(dim=-3, keepdim=True)


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Window mean of (N, C, H, W), borders averaged over the pixels inside the image.

    Separable running sums (cumsum differences): O(1) per pixel whatever the window, unlike avg_pool2d's
    window^2 on CPU. Equals ``avg_pool2d(x, window, 1, window // 2, count_include_pad=False)``.
    """
    import torch
    import torch.nn.functional as F

    half = window // 2
    H, W = x.shape[-2:]

    def run(t: torch.Tensor, dim: int) -> torch.Tensor:
        pad = [half + 1, half, 0, 0] if dim == 3 else [0, 0, half + 1, half]  # F.pad order: W then H
        c = F.pad(t, pad).cumsum(dim)
        n = c.shape[dim]
        return c.narrow(dim, window, n - window) - c.narrow(dim, 0, n - window)

    ones = torch.ones((1, 1, H, W), device=x.device, dtype=x.dtype)
    count = run(run(ones, 2), 3)
    return run(run(x, 2), 3) / count


def working_cameras(cameras: Sequence[Camera], scale: float) -> list[Camera]:
    """The cameras of the depth maps: ``cameras`` at ``scale`` x their size (same order)."""
    return [c.scaled(scale) if scale != 1.0 else c for c in cameras]


def _pixel_rays(cam: Camera, device: torch.device) -> torch.Tensor:
    """(H*W, 3) float64 K^-1 [u, v, 1] at pixel centres (+0.5), row-major."""
    import torch

    v, u = torch.meshgrid(torch.arange(cam.height, device=device, dtype=torch.float64) + 0.5,
                          torch.arange(cam.width, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    x = (u.reshape(-1) - cam.cx) / cam.fx
    y = (v.reshape(-1) - cam.cy) / cam.fy
    return torch.stack([x, y, torch.ones_like(x)], dim=1)


def _relative(src: Camera, ref: Camera) -> np.ndarray:
    """(4, 4) ref-camera -> src-camera transform T_s T_r^-1."""
    return src.world_to_camera @ np.linalg.inv(ref.world_to_camera)


# ---- view selection and depth range -------------------------------------------------------------------------------
def select_sources(cameras: Sequence[Camera], num_sources: int, max_angle_deg: float = 75.0,
                   min_baseline_ratio: float = 0.02) -> list[list[int]]:
    """For each view, the indices of its ``num_sources`` nearest views by angle between optical axes.

    Views nearly at the same centre (baseline below ``min_baseline_ratio`` of the rig's largest baseline: no
    parallax) or looking more than ``max_angle_deg`` away are skipped.
    """
    axes = np.array([c.R[2] for c in cameras])  # optical axis (camera +z) in world coordinates
    centers = np.array([c.center for c in cameras])
    base = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    max_base = max(float(base.max()), 1e-12)
    angle = np.degrees(np.arccos(np.clip(axes @ axes.T, -1.0, 1.0)))
    out: list[list[int]] = []
    for i in range(len(cameras)):
        ok = [j for j in np.argsort(angle[i], kind="stable")
              if j != i and angle[i, j] <= max_angle_deg and base[i, j] >= min_baseline_ratio * max_base]
        out.append([int(j) for j in ok[:num_sources]])
    return out


def depth_range(cameras: Sequence[Camera], points: np.ndarray | None = None) -> list[tuple[float, float]]:
    """(near, far) per camera in world units.

    With >= 20 sparse points seen by a camera: its 2nd..98th depth percentile widened by x0.6 / x1.6 (the
    triangulated points miss the nearest and farthest surfaces). Otherwise from the layout: the point nearest to
    all optical axes (where an inward-facing rig looks) at distance d gives [0.25 d, 3 d], wide enough for the
    far wall of a dome behind that point.
    """
    centers = np.array([c.center for c in cameras])
    axes = np.array([c.R[2] for c in cameras])
    # Least-squares point nearest all optical axes: sum (I - a a^T) (p - c) = 0.
    A = sum(np.eye(3) - np.outer(a, a) for a in axes)
    b = sum((np.eye(3) - np.outer(a, a)) @ c for a, c in zip(axes, centers))
    focus = np.linalg.lstsq(A, b, rcond=None)[0]
    spread = float(np.linalg.norm(centers - centers.mean(0), axis=1).max()) if len(cameras) > 1 else 1.0
    out = []
    for cam, a in zip(cameras, axes):
        d = float((focus - cam.center) @ a)
        if not np.isfinite(d) or d <= 1e-6 * max(spread, 1e-9):  # parallel / forward-facing rig: use the rig size
            d = max(spread, 1e-3)
        near, far = 0.25 * d, 3.0 * d
        if points is not None and len(points) >= 20:
            uv, z = cam.project(points)
            seen = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
            if seen.sum() >= 20:
                lo, hi = np.percentile(z[seen], [2, 98])
                near, far = 0.6 * float(lo), 1.6 * float(hi)
        out.append((near, far))
    return out


# ---- plane sweep ----------------------------------------------------------------------------------------------------
def _sweep_one(ref_i: int, grey: torch.Tensor, cams: list[Camera], sources: list[int], inv_depths: torch.Tensor,
               cfg: DenseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost volume of one reference view: (D, H, W) aggregated NCC (higher = better) and (H, W) ref std."""
    import torch
    import torch.nn.functional as F

    device = grey.device
    ref = cams[ref_i]
    H, W = ref.height, ref.width
    win = cfg.window
    g_ref = grey[ref_i : ref_i + 1]  # (1, 1, H, W)
    mu_r = _box(g_ref, win)
    var_r = (_box(g_ref * g_ref, win) - mu_r * mu_r).clamp_min(0)
    rays = _pixel_rays(ref, device)  # (HW, 3)
    S, D = len(sources), len(inv_depths)
    volume = torch.full((D, H, W), -1.0, device=device)
    if S == 0:
        return volume, var_r[0, 0].sqrt()
    A, b = [], []
    for s in sources:  # source pixel of ref ray x at depth d: d * (K_s R_rs x) + K_s t_rs
        T = torch.as_tensor(_relative(cams[s], ref), device=device)
        Ks = torch.as_tensor(cams[s].K, device=device)
        A.append(rays @ (Ks @ T[:3, :3]).T)
        b.append(Ks @ T[:3, 3])
    if len({(cams[s].height, cams[s].width) for s in sources}) != 1:
        raise InputError("source views of one reference must share an image size; resize the images to one size")
    Ws, Hs = cams[sources[0]].width, cams[sources[0]].height
    # Fold grid_sample's normalisation (align_corners=False: x_n = 2 u / W - 1) into the rays: with inverse depth
    # q = 1 / d, u_n = (A0 + b0 q) / (A2 + b2 q) - 1 and z_s > 0 <=> A2 + b2 q > 0. float32 is ample for pixels.
    norm = torch.tensor([2.0 / Ws, 2.0 / Hs, 1.0], device=device, dtype=torch.float64)
    A_t = (torch.stack(A) * norm).float().permute(0, 2, 1)[:, :, None]  # (S, 3, 1, HW)
    b_t = (torch.stack(b) * norm).float()[:, :, None, None]  # (S, 3, 1, 1)
    src = grey[sources]  # (S, 1, Hs, Ws)
    batch = cfg.plane_batch or max(1, (1 << 24) // max(1, S * H * W))
    k = min(cfg.best_k, S)
    margin = torch.tensor([1.0 - 2.0 * (win // 2) / Ws, 1.0 - 2.0 * (win // 2) / Hs], device=device)
    for d0 in range(0, D, batch):
        q = inv_depths[d0 : d0 + batch].float().view(1, -1, 1)  # (1, B, 1)
        B = q.shape[1]
        den = A_t[:, 2] + b_t[:, 2] * q  # (S, B, HW)
        grid = torch.stack([(A_t[:, 0] + b_t[:, 0] * q) / den, (A_t[:, 1] + b_t[:, 1] * q) / den], dim=-1) - 1.0
        # Centre in front of the source and inside it with a half-window margin (outside samples repeat the border).
        inside = (den > 1e-9) & (grid.abs() <= margin).all(-1)
        g_s = F.grid_sample(src, grid.view(S, B * H, W, 2), mode="bilinear", padding_mode="border",
                            align_corners=False).view(S * B, 1, H, W)
        stats = _box(torch.cat([g_s, g_s * g_s, g_s * g_ref], dim=1), win)  # (S*B, 3, H, W)
        mu_s, var_s = stats[:, :1], (stats[:, 1:2] - stats[:, :1] ** 2).clamp_min(0)
        ncc = (stats[:, 2:] - mu_s * mu_r) / (var_s * var_r + 1e-12).sqrt()
        ok = inside.view(S * B, 1, H, W) & (var_s > 1e-8)
        ncc = torch.where(ok, ncc, torch.full_like(ncc, -1.0)).view(S, B, H, W)
        volume[d0 : d0 + B] = ncc.topk(k, dim=0).values.mean(0) if k < S else ncc.mean(0)
    return volume, var_r[0, 0].sqrt()


def _winner(volume: torch.Tensor, inv_depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best plane per pixel with parabola refinement in inverse depth.

    Returns depth (H, W), NCC at the best plane (H, W) and whether the best plane is interior (H, W) bool.
    """
    import torch

    D = volume.shape[0]
    score, idx = volume.max(dim=0)
    interior = (idx > 0) & (idx < D - 1)
    lo = volume.gather(0, (idx - 1).clamp_min(0)[None])[0]
    hi = volume.gather(0, (idx + 1).clamp_max(D - 1)[None])[0]
    curv = lo - 2 * score + hi  # <= 0 at a maximum
    offset = torch.where(interior & (curv < -1e-9), 0.5 * (lo - hi) / curv.clamp_max(-1e-9), torch.zeros_like(score))
    offset = offset.clamp(-0.5, 0.5)
    step = (inv_depths[1] - inv_depths[0]) if D > 1 else torch.zeros((), device=volume.device)
    inv = inv_depths[idx] + offset * step
    return 1.0 / inv.clamp_min(1e-12), score, interior


def depth_maps(images: Sequence[np.ndarray] | torch.Tensor, cameras: Sequence[Camera], cfg: DenseConfig | None = None,
               device: str | torch.device | None = None, masks: Sequence[np.ndarray] | None = None,
               points: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane-sweep depth for every view.

    Args:
        images: C RGB images (H, W, 3), uint8 or float in [0, 1], at each camera's size.
        cameras: C pinhole cameras (distortion is ignored: pass undistorted images). Only these views are used.
        masks: optional C (H, W) bool "use" masks (False: no depth there, e.g. dynamic pixels).
        points: optional (P, 3) sparse world points that set each view's depth range (see ``depth_range``).
        progress: called with (views done, C).
    Returns:
        depth (C, H', W') float32 camera z (world units, 0 = invalid) and confidence (C, H', W') float32 aggregated
        NCC at the chosen plane (0 where invalid), for ``working_cameras(cameras, cfg.scale)`` (H' x W').
    """
    import torch

    cfg = cfg or DenseConfig()
    if cfg.window % 2 == 0 or cfg.window < 3:
        raise InputError(f"window must be an odd number >= 3, got {cfg.window}")
    if len(images) != len(cameras) or len(cameras) < 2:
        raise InputError(f"need >= 2 views with one image each; got {len(images)} images for {len(cameras)} cameras")
    dev = pick_device(device)
    cams = working_cameras(cameras, cfg.scale)
    sizes = {(c.height, c.width) for c in cams}
    if len(sizes) != 1:
        raise InputError(f"all views must share one image size, got {sorted(sizes)}; resize them first")
    size = sizes.pop()
    rgb = _as_images(images, size, dev)
    use = _as_masks(masks, len(cams), size, dev)
    grey = _grey(rgb)  # (C, 1, H, W)
    sources = select_sources(cams, cfg.num_sources, cfg.max_source_angle)
    ranges = depth_range(cams, points) if cfg.near <= 0 or cfg.far <= 0 else [(cfg.near, cfg.far)] * len(cams)
    depth = torch.zeros((len(cams), *size), device=dev)
    conf = torch.zeros_like(depth)
    with torch.no_grad(), _cpu_threads(cfg.cpu_threads, dev):
        for i in range(len(cams)):
            near, far = ranges[i]
            inv_depths = torch.linspace(1.0 / near, 1.0 / far, cfg.num_depths, device=dev)
            volume, std = _sweep_one(i, grey, cams, sources[i], inv_depths, cfg)
            d, score, interior = _winner(volume, inv_depths)
            ok = interior & (score >= cfg.min_ncc) & (std >= cfg.min_std) & use[i]
            depth[i] = torch.where(ok, d, torch.zeros_like(d)).float()
            conf[i] = torch.where(ok, score, torch.zeros_like(score)).float()
            del volume
            if progress is not None:
                progress(i + 1, len(cams))
    return depth, conf


# ---- geometric consistency and fusion -----------------------------------------------------------------------------
def _to_torch_cam(cam: Camera, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return (torch.as_tensor(cam.K, device=device, dtype=torch.float64),
            torch.as_tensor(cam.world_to_camera, device=device, dtype=torch.float64))


def _affine(X: torch.Tensor, M: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """(P, 3) -> (P, 3) ``X @ M.T + t`` as three broadcasts: a (P, 3) x (3, 3) matmul is ~100x slower on CPU."""
    out = X[:, 0:1] * M[:, 0] + X[:, 1:2] * M[:, 1] + X[:, 2:3] * M[:, 2]
    return out if t is None else out + t


def _project(X: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 3) world -> (P, 2) pixels (centres at +0.5), (P,) camera z."""
    import torch

    c = _affine(X, w2c[:3, :3], w2c[:3, 3])
    z = c[:, 2]
    zs = z.clamp_min(1e-12)
    uv = torch.stack([K[0, 0] * c[:, 0] / zs + K[0, 2], K[1, 1] * c[:, 1] / zs + K[1, 2]], dim=1)
    return uv, z


def _unproject(uv: torch.Tensor, z: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """(P, 2) pixels + (P,) camera z -> (P, 3) world."""
    import torch

    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    R, t = w2c[:3, :3], w2c[:3, 3]
    return _affine(torch.stack([x, y, z], dim=1) - t, R.T)  # R^T (c - t)


@dataclass
class FusionStats:
    """What ``consistent_points`` kept: valid depth pixels, those with enough agreeing views, points returned."""

    valid_pixels: int
    consistent_pixels: int
    points: int

    @property
    def consistent_fraction(self) -> float:
        return self.consistent_pixels / max(1, self.valid_pixels)


@dataclass
class ViewAgreement:
    """One reference view's valid depth pixels and how many other views agree on each (``_agreements``).

    Shapes: N valid pixels of the (H', W') working depth map, in row-major order.
    """

    view: int
    valid: "torch.Tensor"       # (H', W') bool, depth > 0
    uv: "torch.Tensor"          # (N, 2) float64 working pixels (centres at +0.5)
    z: "torch.Tensor"           # (N,) float64 camera z, world units
    points_sum: "torch.Tensor"  # (N, 3) float64 own back-projection + the agreeing views' back-projections
    count: "torch.Tensor"       # (N,) int64 agreeing views
    error_sum: "torch.Tensor"   # (N,) float64 sum of the agreeing views' forward-backward errors (working px)


def _agreements(depths: torch.Tensor, cameras: Sequence[Camera], cfg: DenseConfig):
    """Yield a ``ViewAgreement`` per view that has valid depth (the geometric-consistency test).

    A pixel p of view r with depth d back-projects to X; X projects into view v at q with depth z_v. The view
    agrees when v has a depth d_v at the nearest pixel to q and that pixel, back-projected with d_v and projected
    into r, lands within ``reproj_px`` of p at a depth within ``rel_depth_tol`` x d of d.
    """
    import torch

    dev = depths.device
    C, H, W = depths.shape
    cams = working_cameras(cameras, cfg.scale)
    if any((c.height, c.width) != (H, W) for c in cams):
        raise InputError(f"depth maps of size {W}x{H} do not match the cameras at scale {cfg.scale}")
    Kw = [_to_torch_cam(c, dev) for c in cams]
    v_idx, u_idx = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    for r in range(C):
        d = depths[r].to(torch.float64)
        sel = d > 0
        n = int(sel.sum())
        if n == 0:
            continue
        uv = torch.stack([u_idx[sel], v_idx[sel]], dim=1).to(torch.float64) + 0.5
        z = d[sel]
        K_r, T_r = Kw[r]
        X = _unproject(uv, z, K_r, T_r)
        acc = X.clone()
        count = torch.zeros(n, device=dev, dtype=torch.int64)
        err = torch.zeros(n, device=dev, dtype=torch.float64)
        for v in range(C):
            if v == r:
                continue
            K_v, T_v = Kw[v]
            q, zq = _project(X, K_v, T_v)
            qi = q.floor().long()  # nearest pixel: centre (j + 0.5) -> index j
            inside = (zq > 0) & (qi[:, 0] >= 0) & (qi[:, 0] < W) & (qi[:, 1] >= 0) & (qi[:, 1] < H)
            qx, qy = qi[:, 0].clamp(0, W - 1), qi[:, 1].clamp(0, H - 1)
            dv = depths[v][qy, qx].to(torch.float64)
            has = inside & (dv > 0)
            Xv = _unproject(torch.stack([qx, qy], 1).to(torch.float64) + 0.5, dv, K_v, T_v)
            back, zb = _project(Xv, K_r, T_r)
            px = (back - uv).norm(dim=1)
            agree = has & (px <= cfg.reproj_px) & ((zb - z).abs() <= cfg.rel_depth_tol * z)
            acc += torch.where(agree[:, None], Xv, torch.zeros_like(Xv))
            count += agree.long()
            err += torch.where(agree, px, torch.zeros_like(px))
        yield ViewAgreement(r, sel, uv, z, acc, count, err)


def consistent_points(depths: torch.Tensor, images: Sequence[np.ndarray] | torch.Tensor, cameras: Sequence[Camera],
                      cfg: DenseConfig | None = None, return_stats: bool = False
                      ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, FusionStats]:
    """Fuse depth maps into points that at least ``cfg.min_consistent`` other views agree on (``_agreements``).

    Args:
        depths: (C, H', W') from ``depth_maps`` (0 = invalid), for ``working_cameras(cameras, cfg.scale)``.
        images: the same C RGB images ``depth_maps`` got (colours of the points).
        cameras: the same C cameras.
    Returns:
        points (P, 3) float64 world (each the mean of its agreeing back-projections), colours (P, 3) uint8 of the
        reference pixel; with ``return_stats`` also ``FusionStats``.
    """
    import torch

    cfg = cfg or DenseConfig()
    dev = depths.device
    _, H, W = depths.shape
    rgb = _as_images(images, (H, W), dev)
    pts_out, col_out = [], []
    valid_total = int((depths > 0).sum())
    consistent_total = 0
    with torch.no_grad(), _cpu_threads(cfg.cpu_threads, dev):
        for a in _agreements(depths, cameras, cfg):
            keep = a.count >= cfg.min_consistent
            consistent_total += int(keep.sum())
            pts_out.append((a.points_sum[keep] / (a.count[keep] + 1)[:, None]).cpu())
            col = rgb[a.view].permute(1, 2, 0)[a.valid][keep]
            col_out.append((col * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu())
    pts = torch.cat(pts_out).numpy() if pts_out else np.zeros((0, 3))
    cols = torch.cat(col_out).numpy() if col_out else np.zeros((0, 3), dtype=np.uint8)
    if cfg.max_points and len(pts) > cfg.max_points:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(pts), cfg.max_points, replace=False))
        pts, cols = pts[pick], cols[pick]
    stats = FusionStats(valid_pixels=valid_total, consistent_pixels=consistent_total, points=len(pts))
    if return_stats:
        return pts.astype(np.float64), cols.astype(np.uint8), stats
    return pts.astype(np.float64), cols.astype(np.uint8)


def consistent_samples(depths: torch.Tensor, cameras: Sequence[Camera], cfg: DenseConfig | None = None
                       ) -> list[dict[str, np.ndarray]]:
    """Per-view depth samples at the pixels that at least ``cfg.min_consistent`` other views agree on: dense
    depth in the records of sparse SfM depth (``sfm.depth.sparse_depth_from_dense`` turns them into views).

    Args:
        depths: (C, H', W') from ``depth_maps`` for ``working_cameras(cameras, cfg.scale)``.
        cameras: the same C cameras (at their stored size).
    Returns:
        one dict per camera, in order: ``coords`` (M, 2) float32 pixel x, y of the STORED image (centres at +0.5),
        ``depths`` (M,) float32 camera z (world units), ``errors`` (M,) float32 mean forward-backward reprojection
        error of the agreeing views in stored-image pixels, ``agreeing`` (M,) int32 number of agreeing views.
    """
    import torch

    cfg = cfg or DenseConfig()
    empty = {"coords": np.zeros((0, 2), np.float32), "depths": np.zeros(0, np.float32),
             "errors": np.zeros(0, np.float32), "agreeing": np.zeros(0, np.int32)}
    out = [dict(empty) for _ in cameras]
    _, H, W = depths.shape
    with torch.no_grad(), _cpu_threads(cfg.cpu_threads, depths.device):
        for a in _agreements(depths, cameras, cfg):
            keep = a.count >= cfg.min_consistent
            cam = cameras[a.view]
            to_stored = torch.tensor([cam.width / W, cam.height / H], dtype=torch.float64, device=depths.device)
            out[a.view] = {
                "coords": (a.uv[keep] * to_stored).float().cpu().numpy(),
                "depths": a.z[keep].float().cpu().numpy(),
                "errors": (a.error_sum[keep] / a.count[keep] * float(to_stored.mean())).float().cpu().numpy(),
                "agreeing": a.count[keep].int().cpu().numpy()}
    return out


# ---- scenes -------------------------------------------------------------------------------------------------------
def dense_scene_points(scene: Scene, load_image: Callable[[Camera], np.ndarray], cfg: DenseConfig | None = None,
                       device: str | torch.device | None = None,
                       load_mask: Callable[[Camera], np.ndarray | None] | None = None,
                       depth_out: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
                       samples_out: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Dense points of a scene's TRAINING views (``scene.train_cameras``; held-out views are never loaded).

    Args:
        load_image: camera -> (H, W, 3) RGB image (called only for training cameras).
        load_mask: optional camera -> (H, W) bool "use" mask (or None for all pixels).
        depth_out: optional ``.npy`` path for the (C, H', W') float32 depth maps (camera z, 0 = invalid), in the
            order of ``scene.train_cameras``; their names go to ``<depth_out>.json``.
        progress: called with (views done, C) during the plane sweep.
        samples_out: optional folder for the consistent pixels as depth samples in sparse SfM depth's files
            (``sparse_depth.npz`` and ``colmap_depth.npy``, every camera of the scene, none for held-out views):
            ``splatworks train --depth sparse --depth-file FOLDER/sparse_depth.npz`` reads them.
    Returns:
        points (P, 3) float64 world, colours (P, 3) uint8, and a report (counts, seconds, depth range).
    """
    import torch

    cfg = cfg or DenseConfig()
    cams = scene.train_cameras
    t0 = time.perf_counter()
    images = [load_image(c) for c in cams]
    masks = None
    if load_mask is not None:
        got = [load_mask(c) for c in cams]
        if any(m is not None for m in got):
            masks = [m if m is not None else np.ones((c.height, c.width), bool) for m, c in zip(got, cams)]
    t_load = time.perf_counter() - t0
    dev = pick_device(device)
    t0 = time.perf_counter()
    sparse = scene.points if len(scene.points) else None
    depth, conf = depth_maps(images, cams, cfg, dev, masks=masks, points=sparse, progress=progress)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_depth = time.perf_counter() - t0
    t0 = time.perf_counter()
    pts, cols, stats = consistent_points(depth, images, cams, cfg, return_stats=True)
    t_fuse = time.perf_counter() - t0
    if depth_out is not None:
        write_depth_maps(depth_out, depth, working_cameras(cams, cfg.scale))
    if samples_out is not None:
        n_samples = write_depth_samples(samples_out, scene, consistent_samples(depth, cams, cfg))
        log.info("dense depth samples: %d in %d views written to %s", n_samples, len(cams), samples_out)
    report = {"views": [c.name for c in cams], "device": str(dev), "valid_pixels": stats.valid_pixels,
              "valid_fraction": round(stats.valid_pixels / max(1, depth.numel()), 4),
              "consistent_pixels": stats.consistent_pixels,
              "consistent_fraction": round(stats.consistent_fraction, 4), "count": stats.points,
              "seconds": {"load": round(t_load, 2), "depth": round(t_depth, 2), "fuse": round(t_fuse, 2)}}
    log.info("dense points: %d valid depth pixels in %d views, %d consistent, %d points (%.1f s depth, %.1f s fuse)",
             stats.valid_pixels, len(cams), stats.consistent_pixels, stats.points, t_depth, t_fuse)
    return pts, cols, report


def write_depth_maps(path: str | Path, depth: torch.Tensor, cameras: Sequence[Camera]) -> Path:
    """Write (C, H, W) float32 depth (camera z, world units, 0 = invalid) as ``.npy``; ``<path>.json`` lists the
    cameras in the same order (name, size and intrinsics at the depth maps' resolution, world_to_camera)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, depth.detach().float().cpu().numpy())
    doc = {"format": "splatworks.dense_depth/1", "conventions": "camera z in world units, 0 = invalid; OpenCV "
           "axes, world_to_camera, pixel centres at +0.5", "cameras": [c.to_dict() for c in cameras]}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path


def write_depth_samples(folder: str | Path, scene: Scene, samples: list[dict[str, np.ndarray]]) -> int:
    """Write ``consistent_samples`` of ``scene.train_cameras`` as ``sparse_depth.npz`` + ``colmap_depth.npy`` in
    ``folder`` (every camera of the scene listed; held-out ones without samples). Returns the number of samples."""
    from splatworks.sfm.depth import sparse_depth_from_dense, write_colmap_depth, write_sparse_depth

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_name = {c.name: s for c, s in zip(scene.train_cameras, samples)}
    names = [c.name for c in scene.cameras]
    views = sparse_depth_from_dense(names, [by_name.get(n, {}) for n in names])
    write_sparse_depth(views, folder / "sparse_depth.npz")
    write_colmap_depth(views, folder / "colmap_depth.npy")
    return sum(len(v) for v in views)


def write_points_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write (P, 3) world points and (P, 3) uint8 colours as a binary ``.ply`` (x, y, z, red, green, blue), the
    format ``dynamic prepare --points`` and point viewers read."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                     ("blue", "u1")])
    for k, name in enumerate("xyz"):
        v[name] = points[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        v[name] = colors[:, k]
    tmp = path.with_name(path.name + ".tmp")
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp))
    tmp.replace(path)
    return path


# ---- CLI: splatworks dense SCENE -o points.ply -----------------------------------------------------------------
def register_dense(subparsers) -> None:  # noqa: ANN001 - argparse's private type
    """Add ``splatworks dense`` (registered by ``splatworks.sfm.cli``)."""
    import argparse

    from splatworks.config import add_arguments

    parser = subparsers.add_parser(
        "dense", help="dense points at known poses (plane-sweep multi-view stereo)",
        description="Compute a depth map per training view by plane sweeping its nearest views (NCC), keep the "
                    "pixels that other views agree on and write them as a point cloud (.ply: x, y, z, red, "
                    "green, blue). Held-out views are never used. Runs on CUDA when available.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("scene", type=Path, metavar="SCENE", help="a scene with poses: scene.json, COLMAP model, "
                        "transforms.json or LLFF (undistorted pinhole images, one size)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="POINTS.ply", help="output point cloud")
    parser.add_argument("--images", type=Path, help="image folder instead of the scene's own")
    parser.add_argument("--device", default="auto", help="torch device: auto, cuda or cpu")
    parser.add_argument("--depth-out", type=Path, help="also write the depth maps (C, H, W) float32 .npy (+ .json)")
    parser.add_argument("--depth-samples", type=Path, metavar="FOLDER", help="also write the consistent pixels as "
                        "depth samples in sparse SfM depth's files (FOLDER/sparse_depth.npz, FOLDER/colmap_depth.npy; "
                        "weights from their reprojection error): dense depth for `splatworks train --depth sparse "
                        "--depth-file FOLDER/sparse_depth.npz`")
    add_arguments(parser, DenseConfig)
    parser.set_defaults(func=_run_dense)


def _run_dense(args) -> int:  # noqa: ANN001
    import json

    from tqdm import tqdm

    from splatworks.config import from_args, to_json
    from splatworks.scene.images import load_image
    from splatworks.scene.io import load_any

    cfg = from_args(DenseConfig, args)
    scene = load_any(args.scene, images=args.images)
    if not all(c.is_pinhole for c in scene.train_cameras):
        log.warning("the cameras have lens distortion, which plane sweeping ignores: undistort the images first")
    bar = tqdm(total=len(scene.train_cameras), desc="depth maps", unit="view")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        pts, cols, report = dense_scene_points(
            scene, lambda cam: load_image(scene.image_path(cam), scene.background), cfg, args.device,
            depth_out=args.depth_out, progress=progress, samples_out=args.depth_samples)
    finally:
        bar.close()
    write_points_ply(args.output, pts, cols)
    to_json(cfg, args.output.with_suffix(".config.json"))
    print(json.dumps({k: v for k, v in report.items() if k != "views"}))
    print(f"wrote {len(pts)} points to {args.output}")
    return 0


__all__ = ["DenseConfig", "FusionStats", "ViewAgreement", "consistent_points", "consistent_samples",
           "dense_scene_points", "depth_maps", "depth_range", "pick_device", "register_dense", "select_sources",
           "working_cameras", "write_depth_maps", "write_depth_samples", "write_points_ply"]
