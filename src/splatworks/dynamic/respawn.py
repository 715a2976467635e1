"""Respawn: recycle faded dynamic Gaussians into frame t's uncovered moving pixels (``SequentialConfig.respawn``).

Frames t > 0 move splats by gradient descent. An object that jumps farther than its own size in one frame (a ball
at ~20 px per frame, a player close to a camera) gives its splats no gradient toward where it went, so they fade
out and the object is missing at its new position. After frame t's optimisation this step:

1. takes the non-frozen rows whose opacity ``sigmoid(o) < respawn_max_opacity`` ("dead");
2. finds, per training view, the "uncovered" pixels: dynamic (black mask) pixels where the render differs from the
   frame's image by more than ``respawn_residual`` (mean over RGB, colours in [0, 1]);
3. builds 3D points there (``respawn_points``), keeping points that land on an uncovered pixel in at least one
   view (no points: nothing is guessed, the step logs it and stops):
   - ``mvs``: plane-sweep MVS at the known poses on frame t's training images, restricted to the (dilated) dynamic
     pixels (``splatworks.sfm.mvs``);
   - ``hull``: voxel centres inside the visual hull of frame t's dynamic masks (a voxel whose projection touches
     dynamic pixels in every training view that sees it), found coarse to fine; depth comes from the silhouettes
     of all views at once, not from matching colours between pairs of views;
4. moves up to len(dead) dead rows onto sampled points (centre = point, base colour = its colour, higher SH bands
   zero, isotropic scale = local point spacing, identity rotation, opacity 0.5);
5. fits those rows only, with all their parameters, for ``respawn_iterations`` on frame t's views.

With ``respawn_carve`` the dead rows also include the ghosts: non-frozen rows whose centre lands on static pixels
(farther than ``respawn_dilation`` px from any dynamic one) in at least ``respawn_carve_views`` training views, i.e.
outside the moving objects' visual hull, where an object WAS. They fade at once, instead of over tens of frames,
and join the dead rows that this step recycles. Non-frozen rows may also hold floor that a person stood on at
frame 0 (or, with ``freeze_frames`` 'all', anywhere along the person's path), so ``respawn_carve_colour`` > 0 counts
a view only where the row's own colour differs from the image at its centre: a left-behind jersey does, the court
it stood on does not.

The Gaussian COUNT is unchanged (the 4D export cannot add rows after frame 0); a recycled row is simply a full
record in that frame's delta, and later frames move or fade it like any other dynamic row.
Coordinates: the dataset's world frame, OpenCV cameras (``world_to_camera``). Shapes: N Gaussians, C views.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from splatworks.dynamic.sequence_io import FrameViews
from splatworks.dynamic.sequential import (SequentialConfig, near_plane_units, optimize_frame, project_centres,
                                           render_view)
from splatworks.scene.camera import Camera
from splatworks.scene.pixels import project_to_pixels

log = logging.getLogger(__name__)


# Opacity logit of a carved ghost: sigmoid(-9) = 1.2e-4, invisible, and below any respawn_max_opacity.
GHOST_OPACITY_LOGIT = -9.0


@dataclass
class RespawnStats:
    """Counts of one frame's respawn step (written to the frame's metrics line with a ``respawn_`` prefix)."""

    n_dead: int = 0
    n_carved: int = 0
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
    keep = on_uncovered(torch.from_numpy(pts).to(views.viewmats.device, torch.float32), views, uncovered)
    return pts[keep.cpu().numpy()], cols[keep.cpu().numpy()]


@torch.no_grad()
def on_uncovered(points: torch.Tensor, views: FrameViews, uncovered: list[torch.Tensor]) -> torch.Tensor:
    """(P,) bool: the (P, 3) world point lands on an uncovered pixel (``uncovered_pixels``) in at least one view."""
    hit = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for c, unc in enumerate(uncovered):
        h, w = unc.shape
        col, row, inside = project_centres(points, views.viewmats[c], views.Ks[c], w, h)
        hit |= inside & unc[row, col]
    return hit


class DynamicPixels:
    """Counts of dynamic (black mask) pixels in square windows of each view of a frame: summed-area tables, so one
    query costs four lookups whatever the window's size. A view without a mask counts as dynamic everywhere."""

    def __init__(self, views: FrameViews):
        self.views = views
        self.tables = []
        for st in views.static:
            table = torch.zeros(st.shape[0] + 1, st.shape[1] + 1, dtype=torch.int64, device=st.device)
            table[1:, 1:] = (~st).to(torch.int64).cumsum(0).cumsum(1)
            self.tables.append(table)

    def count(self, c: int, col: torch.Tensor, row: torch.Tensor, radius: torch.Tensor | int) -> torch.Tensor:
        """(N,) dynamic pixels of view ``c`` in [col - radius, col + radius] x [row - radius, row + radius]
        (clipped to the image); ``col``, ``row`` (N,) int64 pixel indices, ``radius`` pixels, (N,) or one int."""
        t = self.tables[c]
        h, w = t.shape[0] - 1, t.shape[1] - 1
        c0, c1 = (col - radius).clamp(0, w), (col + radius + 1).clamp(0, w)
        r0, r1 = (row - radius).clamp(0, h), (row + radius + 1).clamp(0, h)
        return t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]


# The 8 children of a voxel, as offsets in units of the child's half edge.
_OCTANTS = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


@torch.no_grad()
def in_visual_hull(centres: torch.Tensor, edge: float, dynamic: DynamicPixels, *, dilation: int,
                   min_views: int) -> torch.Tensor:
    """(V,) bool: the cube of edge ``edge`` (scene units) at each (V, 3) world centre may hold a moving object.

    True when at least ``min_views`` views see the centre and, in EVERY view that sees it, the cube's projection
    (a square of the radius of its bounding sphere, grown by ``dilation`` px against mask errors) touches a dynamic
    pixel. A cube that passes can still be empty (the hull over-estimates between views); one that fails is empty
    wherever the masks are right, which is what lets a coarse level discard space for the finer ones.
    """
    views = dynamic.views
    seen = torch.zeros(len(centres), dtype=torch.int64, device=centres.device)
    touches_all = torch.ones(len(centres), dtype=torch.bool, device=centres.device)
    half_diagonal = edge * math.sqrt(3.0) / 2.0
    for c, (w, h) in enumerate(views.sizes):
        col, row, z, inside = project_to_pixels(centres, views.viewmats[c], views.Ks[c], w, h)
        radius_px = torch.ceil(views.Ks[c][0, 0] * half_diagonal / z.clamp_min(1e-6)).clamp(max=w + h).long()
        touches = dynamic.count(c, col, row, radius_px + dilation) > 0
        seen += inside.long()
        touches_all &= ~inside | touches
    return touches_all & (seen >= min_views)


@torch.no_grad()
def visual_hull_points(views: FrameViews, low: np.ndarray, high: np.ndarray, voxel: float, *, dilation: int,
                       min_views: int, levels: int = 3) -> torch.Tensor:
    """(P, 3) float32 centres of the voxels of edge ``voxel`` (scene units) in the box [low, high] (3,) that lie in
    the visual hull of the views' dynamic masks (``in_visual_hull``), on the views' device.

    Coarse to fine: the box is cut into voxels of edge ``voxel * 2**levels``; each level keeps the voxels that may
    hold a moving object and splits them into 8 for the next, so the cost follows the objects' volume, not the box's.
    The finest level tests the voxel's centre only (a zero-size cube): testing the whole cube there keeps a shell of
    voxels that merely touch a silhouette, and in the held-out camera those land on the background (basketball,
    ``benchmarks/hull_vs_mvs_basketball.py``). Coarser levels ask only one view to see a voxel: a child near an
    image's border can be seen by more views than its parent's centre is.
    """
    dev = views.viewmats.device
    dynamic = DynamicPixels(views)
    edge = voxel * 2 ** levels
    axes = [torch.arange(float(low[i]) + edge / 2, float(high[i]) + edge / 2, edge, device=dev) for i in range(3)]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    for level in range(levels + 1):
        finest = level == levels
        centres = centres[in_visual_hull(centres, 0.0 if finest else edge, dynamic, dilation=dilation,
                                         min_views=min_views if finest else 1)]
        if level == levels or len(centres) == 0:
            break
        edge /= 2
        centres = (centres[:, None, :] + edge / 2 * _OCTANTS.to(dev)[None]).reshape(-1, 3)
    return centres


@torch.no_grad()
def dynamic_colours(points: torch.Tensor, views: FrameViews) -> np.ndarray:
    """(P, 3) uint8: per world point, the median colour of the dynamic pixels it lands on over the views (0.5 grey
    where it lands on none)."""
    samples = torch.full((len(views.names), len(points), 3), float("nan"), device=points.device)
    for c, (w, h) in enumerate(views.sizes):
        col, row, inside = project_centres(points, views.viewmats[c], views.Ks[c], w, h)
        on = inside & ~views.static[c][row, col]
        samples[c, on] = views.images[c][row[on], col[on]]
    median = torch.nan_to_num(torch.nanmedian(samples, dim=0).values, nan=0.5)
    return (median.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def hull_points(views: FrameViews, uncovered: list[torch.Tensor], cfg: SequentialConfig, *, radius: float,
                points_hint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) float64 world points and (P, 3) uint8 colours: visual-hull voxel centres on the uncovered moving
    pixels. The box searched is the 0.5-99.5th percentile box of ``points_hint`` (the scene's points) when given,
    else the cube of half edge ``radius`` (scene radius) around the cameras' mean centre."""
    if points_hint is not None and len(points_hint):
        low, high = np.percentile(points_hint, 0.5, axis=0), np.percentile(points_hint, 99.5, axis=0)
    else:
        centre = camera_centres(views.viewmats).mean(dim=0).cpu().numpy()
        low, high = centre - radius, centre + radius
    pts = visual_hull_points(views, low, high, cfg.respawn_hull_voxel * radius, dilation=cfg.respawn_dilation,
                             min_views=cfg.respawn_hull_views)
    pts = pts[on_uncovered(pts, views, uncovered)]
    return pts.double().cpu().numpy(), dynamic_colours(pts, views)


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """(C, 3) world camera centres ``-R^T t`` of (C, 4, 4) world-to-camera matrices."""
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3:]
    return (-rot.transpose(1, 2) @ trans)[..., 0]


@torch.no_grad()
def row_colours(params: dict[str, torch.Tensor], viewmat: torch.Tensor, sh_degree: int) -> torch.Tensor:
    """(N, 3) each row's own colour seen from the camera of (4, 4) world-to-camera ``viewmat`` (OpenCV):
    ``max(0, SH(mean - camera centre) + 0.5)``, in [0, 1] (opacity and overlapping splats ignored)."""
    from splatworks.splat.reference import eval_sh

    centre = camera_centres(viewmat[None])[0]
    sh = torch.cat([params["sh0"].detach(), params["shN"].detach()], dim=1)
    return (eval_sh(sh, params["means"].detach() - centre, sh_degree) + 0.5).clamp(0.0, 1.0)


@torch.no_grad()
def ghost_rows(params: dict[str, torch.Tensor], frozen: torch.Tensor, views: FrameViews, *, margin: int,
               min_views: int, colour_threshold: float = 0.0, sh_degree: int = 0) -> torch.Tensor:
    """(K,) int64 indices of non-frozen rows left behind by a moving object: the centre lands on static pixels, with
    no dynamic pixel within ``margin`` px, in at least ``min_views`` views (outside the frame's visual hull).

    With ``colour_threshold`` > 0 a view counts only where the row's own colour (``row_colours``) differs from the
    image at its centre's pixel by more than that (mean |RGB|, colours in [0, 1]): non-frozen rows also hold the
    floor that a person walked over, which lands on static pixels once the person has gone but matches them.
    """
    means = params["means"].detach()
    dynamic = DynamicPixels(views)
    clear_views = torch.zeros(len(means), dtype=torch.int64, device=means.device)
    for c, (w, h) in enumerate(views.sizes):
        col, row, inside = project_centres(means, views.viewmats[c], views.Ks[c], w, h)
        clear = inside & (dynamic.count(c, col, row, margin) == 0)
        if colour_threshold > 0:
            seen = views.images[c][row, col]                               # (N, 3); garbage where not inside
            differs = (row_colours(params, views.viewmats[c], sh_degree) - seen).abs().mean(dim=1) > colour_threshold
            clear &= differs
        clear_views += clear.long()
    return torch.nonzero(~frozen & (clear_views >= min_views)).flatten()


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
        points_hint: optional (P, 3) sparse points that set the MVS depth range (the hull's search box).
    Returns:
        the step's counts; ``params`` keeps its row count and every row that is not recycled, bit for bit.
    """
    stats = RespawnStats()
    dead = dead_rows(params, frozen, cfg.respawn_max_opacity)
    if cfg.respawn_carve:
        ghosts = ghost_rows(params, frozen, views, margin=cfg.respawn_dilation, min_views=cfg.respawn_carve_views,
                            colour_threshold=cfg.respawn_carve_colour, sh_degree=cfg.sh_degree)
        with torch.no_grad():
            params["opacities"][ghosts] = GHOST_OPACITY_LOGIT
        stats.n_carved = len(ghosts)
        dead = torch.unique(torch.cat([dead, ghosts]))
    stats.n_dead = len(dead)
    if stats.n_dead == 0:
        return stats
    uncovered = uncovered_pixels(params, views, cfg.sh_degree, background, cfg.backend, cfg.respawn_residual,
                                 near_plane=near_plane_units(cfg.near_plane, radius))
    stats.n_uncovered_px = int(sum(int(u.sum()) for u in uncovered))
    if stats.n_uncovered_px < cfg.respawn_min_pixels:
        return stats
    if cfg.respawn_points == "hull":
        pts, cols = hull_points(views, uncovered, cfg, radius=radius, points_hint=points_hint)
    else:
        pts, cols = mvs_points(views, cameras, uncovered, cfg, points_hint)
    stats.n_points = len(pts)
    if len(pts) == 0:
        log.info("respawn: %d dead rows (%d carved), %d uncovered px, but %s found no points there; nothing "
                 "respawned", stats.n_dead, stats.n_carved, stats.n_uncovered_px, cfg.respawn_points)
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
    log.info("respawn: %d dead rows (%d carved), %d uncovered px, %d %s points, %d respawned", stats.n_dead,
             stats.n_carved, stats.n_uncovered_px, stats.n_points, cfg.respawn_points, stats.n_respawned)
    return stats
