"""Respawn: recycle faded dynamic Gaussians into frame t's uncovered moving pixels (``SequentialConfig.respawn``).

Frames t > 0 move splats by gradient descent. An object that jumps farther than its own size in one frame (a ball
at ~20 px per frame, a player close to a camera) gives its splats no gradient toward where it went, so they fade
out and the object is missing at its new position. After frame t's optimisation this step:

1. takes the non-frozen rows whose opacity ``sigmoid(o) < respawn_max_opacity`` ("dead");
2. finds, per training view, the "uncovered" pixels: dynamic (black mask) pixels where the render differs from the
   frame's image by more than ``respawn_residual`` (mean over RGB, colours in [0, 1]);
3. builds 3D points there by plane-sweep MVS at the known poses on frame t's training images, restricted to the
   (dilated) dynamic pixels (``splatworks.sfm.mvs``), keeping points that land on an uncovered pixel in at least
   one view (no points: nothing is guessed, the step logs it and stops);
4. moves up to len(dead) dead rows onto sampled points (centre = point, base colour = its colour, higher SH bands
   zero, isotropic scale = local point spacing, identity rotation, opacity 0.5);
5. fits those rows only, with all their parameters, for ``respawn_iterations`` on frame t's views.

The Gaussian COUNT is unchanged (the 4D export cannot add rows after frame 0); a recycled row is simply a full
record in that frame's delta, and later frames move or fade it like any other dynamic row.
Coordinates: the dataset's world frame, OpenCV cameras (``world_to_camera``). Shapes: N Gaussians, C views.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from splatworks.dynamic.sequence_io import FrameViews
from splatworks.dynamic.sequential import (SequentialConfig, near_plane_units, optimize_frame, project_centres,
                                           render_view)
from splatworks.scene.camera import Camera

log = logging.getLogger(__name__)


@dataclass
class RespawnStats:
    """Counts of one frame's respawn step (written to the frame's metrics line with a ``respawn_`` prefix)."""

    n_dead: int = 0
    n_uncovered_px: int = 0
    n_points: int = 0
    n_respawned: int = 0

    def as_metrics(self) -> dict[str, int]:
        return {f"respawn_{k}": v for k, v in self.__dict__.items()}


def dead_rows(params: dict[str, torch.Tensor], frozen: torch.Tensor, max_opacity: float) -> torch.Tensor:
    """(K,) int64 indices of non-frozen rows whose opacity sigmoid(logit) is below ``max_opacity``."""
    alive = torch.sigmoid(params["opacities"].detach()) >= max_opacity
    return torch.nonzero(~frozen & ~alive).flatten()


@torch.no_grad()
def uncovered_pixels(params: dict[str, torch.Tensor], views: FrameViews, sh_degree: int, background: torch.Tensor,
                     backend: str, threshold: float, *, near_plane: float) -> list[torch.Tensor]:
    """Per view (H, W) bool: dynamic pixels whose rendered colour is off by more than ``threshold`` (RGB mean),
    rendered with the training's near plane ``near_plane`` (scene units)."""
    out = []
    for c in range(len(views.names)):
        rgb, _ = render_view(params, views.viewmats[c], views.Ks[c], views.sizes[c], sh_degree, background, backend,
                             near_plane=near_plane)
        residual = (rgb.clamp(0, 1) - views.images[c]).abs().mean(dim=-1)
        out.append(~views.static[c] & (residual > threshold))
    return out


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    return torch.nn.functional.max_pool2d(mask[None, None].float(), k, stride=1, padding=pixels)[0, 0] > 0


def mvs_points(views: FrameViews, cameras: list[Camera], uncovered: list[torch.Tensor], cfg: SequentialConfig,
               points_hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) float64 world points and (P, 3) uint8 colours on the uncovered moving pixels, by plane-sweep MVS.

    The sweep runs only on the (dilated) dynamic pixels of frame t's training views; a fused point is kept when it
    projects onto an uncovered pixel of at least one view.
    """
    from splatworks.sfm.mvs import consistent_points, depth_maps

    dense = cfg.respawn_mvs
    images = [im.detach().cpu().numpy() for im in views.images]
    use = [_dilate(~st, cfg.respawn_dilation).cpu().numpy() for st in views.static]
    depth, _ = depth_maps(images, cameras, dense, views.images[0].device, masks=use, points=points_hint)
    pts, cols = consistent_points(depth, images, cameras, dense)
    if len(pts) == 0:
        return pts, cols
    X = torch.from_numpy(pts).to(views.viewmats.device, torch.float32)
    hit = torch.zeros(len(pts), dtype=torch.bool, device=X.device)
    for c, unc in enumerate(uncovered):
        h, w = unc.shape
        col, row, inside = project_centres(X, views.viewmats[c], views.Ks[c], w, h)
        hit |= inside & unc[row.clamp(0, h - 1), col.clamp(0, w - 1)]
    keep = hit.cpu().numpy()
    return pts[keep], cols[keep]


@torch.no_grad()
def place_rows(params: torch.nn.ParameterDict, rows: torch.Tensor, points: np.ndarray, colors: np.ndarray) -> None:
    """Overwrite ``rows`` (K,) with fresh Gaussians on ``points`` (K, 3) coloured ``colors`` (K, 3) uint8."""
    from splatworks.splat.gaussians import knn_scale, rgb_to_sh0

    dev, dt = params["means"].device, params["means"].dtype
    scale = np.log(knn_scale(points.astype(np.float64), k=3))
    params["means"][rows] = torch.as_tensor(points, dtype=dt, device=dev)
    params["scales"][rows] = torch.as_tensor(scale, dtype=dt, device=dev)[:, None].expand(-1, 3)
    quats = torch.zeros(len(rows), 4, dtype=dt, device=dev)
    quats[:, 0] = 1.0                                          # identity rotation, (w, x, y, z)
    params["quats"][rows] = quats
    params["opacities"][rows] = 0.0                            # logit of 0.5
    rgb = torch.as_tensor(colors, dtype=dt, device=dev) / 255.0
    params["sh0"][rows] = rgb_to_sh0(rgb)[:, None, :]
    params["shN"][rows] = 0.0


def respawn_dead(params: torch.nn.ParameterDict, frozen: torch.Tensor, views: FrameViews, cameras: list[Camera],
                 cfg: SequentialConfig, *, radius: float, background: torch.Tensor, rng: np.random.Generator,
                 points_hint: np.ndarray | None = None) -> RespawnStats:
    """Recycle dead non-frozen rows of ``params`` (in place) onto frame t's uncovered moving pixels.

    Args:
        frozen: (N,) bool rows that must not change (the static layer); only other rows may be recycled.
        views: frame t's training views; ``cameras`` the same C rig cameras (for MVS), in the same order.
        points_hint: optional (P, 3) sparse points that set the MVS depth range.
    Returns:
        the step's counts; ``params`` keeps its row count and every row that is not recycled, bit for bit.
    """
    stats = RespawnStats()
    dead = dead_rows(params, frozen, cfg.respawn_max_opacity)
    stats.n_dead = len(dead)
    if stats.n_dead == 0:
        return stats
    uncovered = uncovered_pixels(params, views, cfg.sh_degree, background, cfg.backend, cfg.respawn_residual,
                                 near_plane=near_plane_units(cfg.near_plane, radius))
    stats.n_uncovered_px = int(sum(int(u.sum()) for u in uncovered))
    if stats.n_uncovered_px < cfg.respawn_min_pixels:
        return stats
    pts, cols = mvs_points(views, cameras, uncovered, cfg, points_hint)
    stats.n_points = len(pts)
    if len(pts) == 0:
        log.info("respawn: %d dead rows, %d uncovered px, but MVS found no points there; nothing respawned",
                 stats.n_dead, stats.n_uncovered_px)
        return stats
    k = min(len(dead), len(pts))
    pick = np.sort(rng.choice(len(pts), k, replace=False))
    rows = dead[torch.as_tensor(rng.choice(len(dead), k, replace=False), device=dead.device)].sort().values
    place_rows(params, rows, pts[pick], cols[pick])
    stats.n_respawned = k
    if cfg.respawn_iterations > 0:
        hold = torch.ones_like(frozen)
        hold[rows] = False
        optimize_frame(params, views, cfg, iterations=cfg.respawn_iterations, radius=radius, lr_means=cfg.lr_means,
                       background=background, rng=rng, frozen=hold, param_keys=None, stage="dynamic.respawn")
    log.info("respawn: %d dead rows, %d uncovered px, %d MVS points, %d respawned", stats.n_dead,
             stats.n_uncovered_px, stats.n_points, stats.n_respawned)
    return stats
