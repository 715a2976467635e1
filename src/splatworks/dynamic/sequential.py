"""Sequential ("daisy-chain") 4D Gaussians: frame 0 trained like a static scene, frame t starts from frame t-1.

The method (Luiten et al., "Dynamic 3D Gaussians", 3DV 2024, simplified to what our users run):

- Frame 0 is trained from the SfM points (``iterations_first_frame``), then every later frame continues from
  the Gaussians of the previous one for ``iterations_per_frame`` iterations, with no densification.
- **Static constraint**: at every iteration the Gaussians' centres are projected into the current training
  view; those landing on a white (static) mask pixel are static there and pay
  ``static_loss_weight * sum ||P_t - P_anchor||^2 / R^2`` (anchor: the previous frame, or frame 0; displacements in
  scene radii R so the weight means the same in any SfM scale); the others are free.
- **Adaptive pruning** after each frame: Gaussians with a scale above ``prune_max_scale * R`` or a centre farther
  than ``prune_max_distance * R`` from the scene centre are removed (R: the scene radius, 3DGS's camera extent).
- **Gradient clipping** to ``grad_clip_norm`` (global norm over all parameters).
- **Near plane** (``near_plane``, in scene radii; 0 = the rasterizer's 0.01 scene units): Gaussians whose centre is
  nearer to a camera are culled in every render of the model (frame 0's trainer, later frames, evaluation,
  ``dynamic render`` / ``eval``: one conversion, ``near_plane_units``, with the radius recorded in source.json).
  A camera training did not use (held-out, a given pose) clips further, at ``novel_view_near`` x its near bound
  from the frame-0 points (``novel_view_near_plane``; the points travel in ``near_points.npy``).
- **Motion** (frames t > 0, ``frame_params``): centres, rotations and opacities change (colour and size are
  frame 0's: a splat cannot grow into a streak or be repainted, but one that lost its object can fade out), from a
  constant-velocity start; the local-rigidity and rotation-similarity priors of Dynamic 3D Gaussians are options
  (``dynamic/motion.py``; off by default: no measured gain).
- **Speed and stability**: a frozen static layer (Gaussians that frame 0's masks do not call dynamic, by a vote of
  the training views that see their centre, are optimised in frame 0 only and stored once; ``freeze_frames`` 'all'
  asks every frame's masks); per frame, only the Gaussians the masks call dynamic at t-1 or t are optimised
  (``active_set``; the others keep their values bit for bit, so the background cannot flicker or drift and a
  frame's 4D-export delta is small); views rendered only in windows around the moving pixels and the optimised
  splats' footprints; early stop on a loss plateau, and fewer iterations for frames that start already converged.
- **Respawn** (``respawn``, off by default): faded dynamic Gaussians are recycled onto moving pixels that no splat
  covers, at a constant Gaussian count (``dynamic/respawn.py``).

Output folder (``OUT``)::

    config.json           the resolved SequentialConfig
    source.json           the dataset trained on, background, scene centre and radius, fps, training cameras
    near_points.npy       (P, 3) float32 frame-0 points (at most 50,000), for novel views' near bounds
    frame0_static/        the static trainer's run for frame 0 (checkpoint, metrics.json), when it was used
    static.pt             frozen static layer: {"ids": (S,), "means": (S, 3), ...} raw parameters (see gaussians.py)
    frames/000042.pt      per frame: the non-frozen Gaussians {"ids": (D,), raw parameters ...}
    metrics.jsonl         one JSON line per frame (held-out PSNR/SSIM, time, iterations, prune counts, ...)
    state.json            frames done, for resume (files and frame data: dynamic/sequence_io.py)

A frame's Gaussians = ``static.pt`` rows + that frame's rows (ids are unique; order by id). Coordinates are the
dataset's world frame, OpenCV cameras, world_to_camera (docs/conventions.md).

Glossary of shapes: N Gaussians, C cameras, H x W image size, T frames.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from splatworks.config import from_dict, option, to_json
from splatworks.depth.losses import DepthDistillation
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.motion import RigidityPrior, constant_velocity_start
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.pixels import project_to_pixels
from splatworks.sfm.mvs import DenseConfig
from splatworks.splat.render import DEFAULT_NEAR_PLANE, RenderOutput

log = logging.getLogger(__name__)

from splatworks.dynamic.first_frame import (  # noqa: F401  - re-exported: frame 0's start and recipe
    _DistillForTrainer, _init_first_frame, _train_first_frame_splat, first_frame_scene, first_frame_train_config)
from splatworks.dynamic.sequence_io import (  # noqa: F401  - re-exported: the trainer's files and frame data
    FRAMES_DIR, METRICS_FILE, PARAM_KEYS, STATE_FILE, STATIC_FILE, FrameViews, _atomic_torch_save, _rows,
    frame_file, load_frame, load_frame_gaussians, load_image, load_static_mask, read_metrics, trained_frames)


@dataclass
class SequentialConfig:
    """Settings of the sequential 4D Gaussian trainer (``splatworks dynamic train --model gaussians``)."""

    iterations_first_frame: int = option(7000, "Iterations for frame 0, trained like a static scene from the SfM "
                                         "points (with densification when the static trainer is available).")
    iterations_per_frame: int = option(3000, "Iterations for each later frame (starts from the previous frame).")
    static_loss_weight: float = option(1.0, "Weight of the static constraint: sum over Gaussians whose centre "
                                       "lands on a static (white) mask pixel of ||P_t - P_anchor||^2.")
    anchor: str = option("previous", "What static Gaussians are pulled to: 'previous' = their position at frame "
                         "t-1 (holds a splat still where it lands on a static pixel), 'first' = their frame-0 "
                         "position (also undoes any earlier motion: a splat that followed a person and lags onto "
                         "a static pixel is pulled back to where the person was at frame 0; on 100 basketball "
                         "frames 'previous' kept the held-out moving-pixel PSNR at ~19 dB where 'first' fell to "
                         "~16, BENCHMARKS.md session 10; the frozen static layer keeps the background from "
                         "drifting).", choices=("first", "previous"))
    prune_max_scale: float = option(2.0, "After each frame, drop Gaussians whose largest scale exceeds this many "
                                    "scene radii.")
    prune_max_distance: float = option(20.0, "After each frame, drop Gaussians farther than this many scene radii "
                                       "from the scene centre.")
    near_plane: float = option(0.0, "Near clipping plane in scene radii (0 = the rasterizer's default, 0.01 scene "
                               "units): a Gaussian whose centre is nearer to a camera (camera-space z) is not "
                               "drawn in it, in frame 0's and later frames' training, their evaluation, `dynamic "
                               "render` and `dynamic eval` alike. Why: nothing real is nearer to a mounted camera "
                               "than the nearest scene point it sees, and splats just in front of the held-out "
                               "camera (e.g. the dome wall it hangs on, reconstructed slightly inside) are grey fog "
                               "that no training view can tell from the wall behind (hypothesis for the basketball "
                               "held-out fog; measured on the GPU: training with 0.1 or 0.2 R did not clear it).")
    novel_view_near: float = option(0.8, "Renders from a camera training did not use (the held-out camera, a "
                                    "given pose) clip at this fraction of that camera's near bound (LLFF's: the "
                                    "0.1th percentile camera z of the frame-0 points in its view; 0 = off, the "
                                    "training's near plane). Why: few views leave splats in mid-air that every "
                                    "training view sees against the wall behind them, and a novel camera can sit "
                                    "right behind them (basketball's held-out camera: grey fog over its view).")
    grad_clip_norm: float = option(1.0, "Clip gradients to this L2 norm (0 = off); see grad_clip_mode.")
    grad_clip_mode: str = option("global", "'global': all gradients together by one factor; 'gaussian': each "
                                 "Gaussian's gradient on its own (one exploding splat cannot shrink the others' "
                                 "step; measured on 40 basketball frames, BENCHMARKS.md, not better yet).",
                                 choices=("global", "gaussian"))
    freeze_static: bool = option(True, "Speed: after frame 0, freeze the Gaussians that the masks do not call "
                                 "dynamic (of frame 0, or of every frame: freeze_frames; vote: freeze_quorum); they "
                                 "are stored once.")
    freeze_frames: str = option("first", "Which frames' masks decide the frozen static layer (same vote as "
                                "freeze_quorum): 'first' = frame 0's only: what is background at frame 0 stays "
                                "frozen, and people are shown by their own Gaussians (and respawn's) only; 'all' = a "
                                "Gaussian called dynamic at ANY frame stays trainable, the background along a "
                                "person's later path included (on 150 basketball frames the held-out dome wall "
                                "then changed while people walked: +1.0 of +1.4/255 flicker; BENCHMARKS.md, "
                                "sessions 9-10).", choices=("first", "all"))
    freeze_dilation: int = option(6, "Pixels by which dynamic mask regions grow before deciding what to freeze.")
    freeze_quorum: float = option(0.5, "A Gaussian is dynamic at a frame when its centre lands on a (grown) dynamic "
                                  "pixel in at least this fraction of the training views that see it (a background "
                                  "Gaussian hidden behind a person in one view stays frozen); 0 = in any view.")
    active_set: str = option("frame", "Which non-frozen Gaussians frame t optimises: 'frame' = those the masks "
                             "call dynamic at frame t-1 or t (same vote as freeze_quorum; the rest keep their "
                             "previous values bit for bit: no background flicker, small per-frame deltas), "
                             "'all' = every non-frozen Gaussian at every frame.", choices=("frame", "all"))
    frame_params: str = option("motion+opacity", "What frames t > 0 optimise: 'motion' = centres and rotations only "
                               "(colour, opacity and size stay as frame 0 learnt them, as in Dynamic 3D "
                               "Gaussians: a splat cannot grow into a streak or fade to fake a change), "
                               "'motion+opacity' = those and the opacity (a splat that lost its object can fade "
                               "out instead of staying behind as a ghost; on 40 basketball frames +1.7 dB on the "
                               "held-out camera's moving pixels, BENCHMARKS.md), 'motion+opacity+colour' = "
                               "all but the size (splats can be repainted where people move to, not grow), 'all' "
                               "= every parameter.", choices=("motion", "motion+opacity", "motion+opacity+colour", "all"))
    rigidity_weight: float = option(0.0, "Local rigidity of moving Gaussians (frames t > 0): weighted mean over "
                                    "k nearest neighbours of how far their offset left a rigid motion, in scene "
                                    "radii (15 ~ Dynamic 3D Gaussians' weight 4 in metres for a scene of radius "
                                    "3.8; 0 = off: on 150 basketball frames 15 changed no held-out metric and cost "
                                    "12 % more time, BENCHMARKS.md). See dynamic/motion.py.")
    rotation_weight: float = option(0.0, "Neighbours turn alike: weighted mean difference of their rotations "
                                    "since frame t-1 (unit quaternions; 4 in Dynamic 3D Gaussians; 0 = off).")
    rigidity_neighbours: int = option(20, "k nearest moving Gaussians for the rigidity and rotation priors.")
    constant_velocity: bool = option(True, "Start frame t's moving Gaussians at mu_t-1 + (mu_t-1 - mu_t-2) (and "
                                     "the same for rotations) instead of where frame t-1 left them (part of the "
                                     "best measured basketball setting; alone it changed little, BENCHMARKS.md).")
    crop_to_dynamic: bool = option(True, "Speed: with the static layer frozen, render each training view only "
                                   "around its dynamic pixels and the footprints of the Gaussians being "
                                   "optimised (bounding box grown by crop_margin), so no optimised splat reaches "
                                   "pixels the loss does not see.")
    crop_margin: int = option(32, "Pixels by which the dynamic bounding box grows for crop_to_dynamic.")
    views_per_step: int = option(4, "Speed: training views rendered together (one rasterizer call) per optimizer "
                                 "step of frames t > 0; iterations still count views, so a frame takes "
                                 "iterations_per_frame / views_per_step steps.")
    early_stop: bool = option(True, "Speed: stop a frame when its windowed loss stops improving.")
    early_stop_window: int = option(200, "Iterations per window for the early-stop test.")
    early_stop_tol: float = option(0.002, "Stop when a window's mean loss improves by less than this fraction.")
    min_iterations_per_frame: int = option(400, "Never stop a frame (t > 0) before this many iterations.")
    converged_loss_ratio: float = option(1.1, "Speed: a frame whose starting loss is within this factor of the "
                                         "previous frame's final loss trains only iterations_converged.")
    iterations_converged: int = option(600, "Iterations for a frame that starts already converged.")
    ssim_lambda: float = option(0.2, "Weight of (1 - SSIM) in the photometric loss (the rest is L1).")
    sh_degree: int = option(3, "Spherical-harmonics degree of the Gaussians' colour.")
    lr_means: float = option(6.4e-4, "Learning rate of the centres for t > 0, in scene radii per step (4x "
                             "Dynamic 3D Gaussians' 1.6e-4: a frame takes a few hundred steps, not 2,000).")
    lr_quats: float = option(4e-3, "Learning rate of the rotations.")
    lr_scales: float = option(5e-3, "Learning rate of the log-scales.")
    lr_opacities: float = option(5e-2, "Learning rate of the opacity logits.")
    lr_sh0: float = option(2.5e-3, "Learning rate of the base colour.")
    lr_shN: float = option(1.25e-4, "Learning rate of the higher SH bands.")
    first_frame_lr_means: float = option(1.6e-3, "Learning rate of the centres in frame 0 without the static "
                                         "trainer (scene radii per step).")
    first_frame_trainer: str = option("auto", "Frame 0 with 'splat' (the static trainer: densification), 'plain' "
                                      "(this module's loop, no densification) or 'auto' (splat when present).",
                                      choices=("auto", "splat", "plain"))
    num_random_points: int = option(20000, "Initial Gaussians when the dataset has no SfM points (random in a ball "
                                    "reaching past the cameras; `dynamic prepare` triangulates points instead).")
    first_frame_min_points: int = option(30000, "A sparser point cloud is thickened to this many initial Gaussians "
                                         "around its points (0 = as given): a budget-capped densifier grows a few "
                                         "hundred triangulated points too slowly.")
    first_frame_random_points: int = option(0, "Also add this many random points (in a ball reaching past the "
                                            "cameras) to a dataset's points: cover surfaces with no triangulated "
                                            "point, e.g. plain walls (3DGS-MCMC relocates the ones no view needs).")
    first_frame_recipe: str = option("mcmc", "Frame 0 with the static trainer: 'mcmc' (its fast preset, "
                                     "3DGS-MCMC with a Gaussian budget, scaled to iterations_first_frame) or 'adc' "
                                     "(3DGS adaptive density control).", choices=("mcmc", "adc"))
    first_frame_cap_max: int = option(200000, "Gaussian budget of frame 0 with the 'mcmc' recipe (later frames "
                                      "train and store these Gaussians: more costs time and export size).")
    free_space_weight: float = option(1.0, "Frame 0: weight of free-space carving, an opacity penalty on "
                                      "Gaussians in front of the dense depth maps `dynamic prepare` wrote (plane-sweep "
                                      "MVS; 0 = off, and off when the dataset has none).")
    free_space_margin: float = option(0.05, "A centre is in a view's free space when nearer than (1 - margin) x the "
                                      "depth there.")
    free_space_min_views: int = option(2, "Views that must agree that a centre is in free space.")
    depth: str = option("none", "Depth supervision: 'distill' = depth of a static model (all_depth.npy) on static "
                        "mask pixels.", choices=("none", "distill"))
    depth_file: str = option("", "all_depth.npy written by `splatworks depth export` (with --depth distill).")
    depth_weight: float = option(0.1, "Weight of the distilled depth loss (L1 of relative depth error).")
    depth_everywhere: bool = option(False, "Apply the distilled depth loss on every pixel, not only static ones.")
    max_frames: int = option(0, "Train only the first N frames (0 = all); with freeze_frames 'all' the whole "
                             "clip's masks still decide the static layer, so a run can be continued later.")
    respawn: bool = option(False, "Frames t > 0: recycle faded dynamic Gaussians onto moving pixels that no splat "
                           "covers (objects that jump farther than their size), at a constant Gaussian count "
                           "(dynamic/respawn.py). Off by default: on 150 basketball frames it left moving-pixel PSNR "
                           "unchanged and cost 1.1 dB on static pixels and +4/255 flicker in the held-out camera "
                           "(splats at depths only the training views agree with; BENCHMARKS.md, session 6).")
    respawn_max_opacity: float = option(0.05, "Respawn: a non-frozen Gaussian with sigmoid(opacity) below this is "
                                        "dead (may be recycled).")
    respawn_residual: float = option(0.15, "Respawn: a dynamic pixel is uncovered when the render differs from the "
                                     "image by more than this (mean over RGB, colours in [0, 1]).")
    respawn_iterations: int = option(200, "Respawn: iterations fitting the recycled Gaussians (all their "
                                     "parameters, everything else held) on the frame's views.")
    respawn_min_pixels: int = option(16, "Respawn: skip the step when fewer uncovered pixels than this (all views).")
    respawn_mvs: DenseConfig = option(factory=lambda: DenseConfig(num_depths=48, min_consistent=1, max_points=0),
                                      help="Respawn: plane-sweep MVS on the moving pixels (fewer depth planes and "
                                      "one agreeing view: a few hundred points are enough, and fast)")
    respawn_dilation: int = option(4, "Respawn: pixels by which dynamic mask regions grow (for MVS, the hull, and "
                                   "the margin around them that carving leaves alone).")
    respawn_points: str = option("mvs", "Respawn: where new splats go. 'mvs' = plane-sweep depth of the moving "
                                 "pixels (respawn_mvs); 'hull' = voxels in the visual hull of the frame's dynamic "
                                 "masks (depth from every view's silhouette at once).", choices=("mvs", "hull"))
    respawn_hull_voxel: float = option(0.01, "Respawn (hull): voxel edge, in scene radii.")
    respawn_hull_views: int = option(8, "Respawn (hull): training views that must see a voxel for it to count "
                                     "(8 of basketball's 11: with respawn_dilation 2, 89-99 % of the hull's points "
                                     "land on the players in the held-out camera, 85-96 % of MVS's; BENCHMARKS.md, "
                                     "session 8).")
    respawn_carve: bool = option(False, "Respawn: rows left behind by a moving object (outside the frame's visual "
                                 "hull in respawn_carve_views views) fade at once and may be recycled.")
    respawn_carve_views: int = option(2, "Respawn (carving): training views in which a row's centre must land on "
                                      "static pixels, respawn_dilation px clear of any moving one, to be left behind.")
    respawn_carve_colour: float = option(0.0, "Respawn (carving): a view counts only where the row's own colour "
                                         "differs from the image at its centre by more than this (mean |RGB|, colours "
                                         "in [0, 1]), so the floor a person walked over, which matches the static "
                                         "pixels, is kept; 0 = any colour.")
    backend: str = option("auto", "Rasterizer: gsplat (CUDA), torch (CPU reference) or auto.",
                          choices=("auto", "gsplat", "torch"))
    device: str = option("auto", "torch device: cuda, cpu or auto.")
    seed: int = option(0, "Random seed (camera order).")


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Short runs for a quick look (and the device benchmark when time is short).
    "fast": {"iterations_first_frame": 3000, "iterations_per_frame": 1000, "min_iterations_per_frame": 200,
             "iterations_converged": 300},
    # CPU smoke tests: tiny images, a few hundred Gaussians.
    # Few steps need larger learning rates to get anywhere.
    "tiny": {"iterations_first_frame": 150, "iterations_per_frame": 60, "min_iterations_per_frame": 30,
             "iterations_converged": 30, "early_stop_window": 20, "sh_degree": 0, "num_random_points": 400,
             "first_frame_min_points": 0,
             "first_frame_trainer": "plain", "freeze_dilation": 2, "first_frame_lr_means": 3e-3, "lr_means": 1e-3,
             "lr_sh0": 0.02, "lr_scales": 0.01, "lr_opacities": 0.05, "views_per_step": 1},
}


def near_plane_units(near_plane: float, radius: float | None) -> float:
    """``SequentialConfig.near_plane`` (scene radii; 0 = the rasterizer's default) as the camera-space z, in scene
    units, that every render of the sequential model uses; ``radius``: the scene radius R (3DGS's camera extent of
    the rig, ``source.json``'s ``scene_radius``), only needed when ``near_plane`` > 0."""
    if near_plane <= 0:
        return DEFAULT_NEAR_PLANE
    if radius is None:
        raise UserError(f"near_plane {near_plane} is in scene radii but the scene radius is unknown (no "
                        "scene_radius in the training folder's source.json); retrain or set near_plane 0")
    return near_plane * radius


NEAR_POINTS_FILE = "near_points.npy"
NEAR_POINTS_MAX = 50_000


def novel_view_near_plane(points: np.ndarray, cam: Any, fraction: float, floor: float) -> float:
    """The near plane for a camera training did not use: ``fraction`` x its LLFF near bound (``scene.llff``'s
    ``view_near_bound``: the 0.1th percentile camera z of the ``points`` in its view), at least ``floor`` (the
    training's near plane, scene units). ``floor`` when ``fraction`` <= 0 or no point is in view.

    Args:
        points: (P, 3) world points (the frame-0 points). cam: a ``Camera`` (world_to_camera, OpenCV, K in pixels).
    """
    from splatworks.scene.llff import view_near_bound

    bound = view_near_bound(cam, points) if fraction > 0 else None
    return floor if bound is None else max(floor, fraction * bound)


def write_near_points(out: Path, points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Keep (at most ``NEAR_POINTS_MAX`` of) the frame-0 points with the model, for novel views' near bounds;
    returns the (P', 3) float32 points written (what ``SequenceReader.near_plane_for`` will read back)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if len(pts) > NEAR_POINTS_MAX:  # a random subset keeps the 0.1th percentile close (it is a quantile)
        pts = pts[np.sort(np.random.default_rng(seed).choice(len(pts), NEAR_POINTS_MAX, replace=False))]
    np.save(out / NEAR_POINTS_FILE, pts)
    return pts


def preset(name: str, **overrides: Any) -> SequentialConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(SequentialConfig(), **{**PRESETS[name], **overrides})


# ---- the pieces of the method (small, pure, tested one by one) -------------------------------------------------
def project_centres(means: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel indices of Gaussian centres in one view.

    Args:
        means: (N, 3) world points. viewmat: (4, 4) world-to-camera, OpenCV. K: (3, 3) pixels.
    Returns:
        col, row: (N,) int64 pixel indices (pixel i covers [i, i+1): centres at +0.5).
        inside: (N,) bool, in front of the camera and inside the image.
    """
    col, row, _, inside = project_to_pixels(means, viewmat, K, width, height)
    return col, row, inside


def static_in_view(means: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, static_mask: torch.Tensor
                   ) -> torch.Tensor:
    """(N,) bool: the Gaussian's centre lands on a white (static) pixel of ``static_mask`` (H, W) in this view."""
    h, w = static_mask.shape
    col, row, inside = project_centres(means.detach(), viewmat, K, w, h)
    return inside & static_mask[row, col]


def static_constraint_loss(means: torch.Tensor, anchor: torch.Tensor, is_static: torch.Tensor) -> torch.Tensor:
    """sum_{i static} ||P_i - A_i||^2 over (N, 3) centres ``means`` and anchors ``anchor``; (N,) bool ``is_static``."""
    # A product instead of boolean indexing: no host sync on the GPU.
    return (((means - anchor) ** 2).sum(dim=-1) * is_static.to(means.dtype)).sum()


def clip_gradients(params: dict[str, torch.Tensor], max_norm: float, per_gaussian: bool = False) -> torch.Tensor:
    """Clip gradients to L2 norm ``max_norm`` (0 = off); returns the largest norm before (a 0-d tensor: no host
    sync, so the GPU keeps running).

    Global (``per_gaussian`` False): all gradients together, scaled by one factor. Per Gaussian: each Gaussian's
    gradient (its rows of every tensor together) is clipped on its own, so one exploding Gaussian (a splat
    passing close to a camera) cannot shrink everyone else's step, as one global factor does.
    """
    with_grad = [p for p in params.values() if p.grad is not None]
    grads = [p.grad for p in with_grad]
    if not grads:
        return torch.zeros(())
    if not per_gaussian:
        if max_norm <= 0:
            return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
    sq = sum(g.reshape(len(g), -1).pow(2).sum(dim=1) for g in grads)      # (N,) squared norm per Gaussian
    norms = sq.sqrt()
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-12)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms.max() if len(norms) else torch.zeros((), device=norms.device)


@dataclass
class PruneResult:
    keep: torch.Tensor          # (N,) bool
    too_large: int              # removed by the scale rule
    too_far: int                # removed by the distance rule (and not by the scale rule)


def prune_mask(params: dict[str, torch.Tensor], centre: torch.Tensor, radius: float, max_scale: float,
               max_distance: float) -> PruneResult:
    """Which Gaussians survive the pruning rules (scales and distances in scene radii ``radius``)."""
    with torch.no_grad():
        scale = torch.exp(params["scales"]).amax(dim=-1)
        large = scale > max_scale * radius
        far = torch.linalg.vector_norm(params["means"] - centre, dim=-1) > max_distance * radius
        bad = large | (~torch.isfinite(params["means"]).all(dim=-1))
    return PruneResult(keep=~(bad | far), too_large=int(bad.sum()), too_far=int((far & ~bad).sum()))


def select_rows(params: torch.nn.ParameterDict, keep: torch.Tensor) -> torch.nn.ParameterDict:
    return torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach()[keep].contiguous()) for k, v in params.items()})


def render_view_output(params: dict[str, torch.Tensor], viewmat: torch.Tensor, K: torch.Tensor,
                       size: tuple[int, int], sh_degree: int, background: torch.Tensor, backend: str,
                       mode: str = "RGB", near_plane: float = DEFAULT_NEAR_PLANE) -> RenderOutput:
    """Render one view and return the rasterizer's whole ``RenderOutput`` (C = 1: colours (1, H, W, 3), alphas
    (1, H, W, 1), ...). viewmat: (4, 4) world-to-camera, OpenCV axes; K: (3, 3) pixels; size: (width, height);
    near_plane: camera-space z in scene units (``near_plane_units``)."""
    from splatworks.splat.render import render

    return render(params, viewmat[None], K[None], size[0], size[1], sh_degree=sh_degree, background=background,
                  mode=mode, backend=backend, near_plane=near_plane)  # type: ignore[arg-type]


def render_view(params: dict[str, torch.Tensor], viewmat: torch.Tensor, K: torch.Tensor, size: tuple[int, int],
                sh_degree: int, background: torch.Tensor, backend: str, with_depth: bool = False,
                near_plane: float = DEFAULT_NEAR_PLANE) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render one view: (H, W, 3) colours and, with ``with_depth``, (H, W) expected camera-z depth
    (``near_plane``: camera-space z in scene units, see ``near_plane_units``)."""
    out = render_view_output(params, viewmat, K, size, sh_degree, background, backend,
                             "RGB+D" if with_depth else "RGB", near_plane)
    depth = out.depths[0, ..., 0] if with_depth and out.depths is not None else None
    return out.colors[0], depth


# ---- one frame's optimisation ----------------------------------------------------------------------------------
@dataclass
class FrameStats:
    """What one frame's optimisation did (one line of ``metrics.jsonl`` with the evaluation added)."""

    iterations: int = 0
    seconds: float = 0.0
    loss_start: float = float("nan")
    loss_end: float = float("nan")
    static_loss_end: float = 0.0
    grad_norm_max: float = 0.0          # global gradient norm before clipping, largest over the frame
    clipped_steps: int = 0
    stopped_early: bool = False


LR_KEYS = {"means": "lr_means", "quats": "lr_quats", "scales": "lr_scales", "opacities": "lr_opacities",
           "sh0": "lr_sh0", "shN": "lr_shN"}


MOTION_KEYS = ("means", "quats")
FRAME_PARAM_KEYS: dict[str, tuple[str, ...] | None] = {"motion": MOTION_KEYS,
                                                       "motion+opacity": MOTION_KEYS + ("opacities",),
                                                       "motion+opacity+colour": MOTION_KEYS + ("opacities", "sh0", "shN"),
                                                       "all": None}


def make_optimizer(params: torch.nn.ParameterDict, cfg: SequentialConfig, radius: float,
                   lr_means: float, keys: tuple[str, ...] | None = None) -> torch.optim.Adam:
    """Adam with one group per parameter tensor (only ``keys`` when given; the others get no gradient);
    the centres' rate is in scene radii per step."""
    groups = []
    for key, p in params.items():
        p.requires_grad_(keys is None or key in keys)
        if not p.requires_grad:
            continue
        lr = lr_means * radius if key == "means" else getattr(cfg, LR_KEYS[key])
        groups.append({"params": [p], "lr": lr, "name": key})
    return torch.optim.Adam(groups, eps=1e-15, fused=params["means"].is_cuda)


@dataclass
class ViewCrop:
    """A pixel window of one training view: columns [x0, x1), rows [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0


def dynamic_crops(static: list[torch.Tensor], margin: int) -> list[ViewCrop | None]:
    """Per view, the bounding box of its dynamic (black) pixels grown by ``margin`` px; None where none.

    With the static layer frozen only the dynamic Gaussians move, so their photometric gradient comes from
    around the moving subjects: rendering just this window costs a fraction of the frame.
    """
    crops: list[ViewCrop | None] = []
    for mask in static:
        dyn = ~mask
        if not bool(dyn.any()):
            crops.append(None)
            continue
        h, w = mask.shape
        rows = torch.nonzero(dyn.any(dim=1)).flatten()
        cols = torch.nonzero(dyn.any(dim=0)).flatten()
        crops.append(ViewCrop(max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
                              min(w, int(cols[-1]) + 1 + margin), min(h, int(rows[-1]) + 1 + margin)))
    return crops


def crop_view(views: FrameViews, c: int, crop: ViewCrop | None
              ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor, torch.Tensor]:
    """K (3, 3), (width, height), target image (h, w, 3) and static mask (h, w) of view ``c`` inside ``crop``.

    Cropping shifts the principal point: a pixel (u, v) of the view is (u - x0, v - y0) in the window. The
    window renders the view's pixels exactly for splats centred within 1.3x its frustum (EWA clamps the Jacobian
    there); splats centred farther out are the frozen background's, shaped slightly differently at the edges.
    """
    if crop is None:
        return views.Ks[c], views.sizes[c], views.images[c], views.static[c]
    K = views.Ks[c].clone()
    K[0, 2] -= crop.x0
    K[1, 2] -= crop.y0
    window = (slice(crop.y0, crop.y1), slice(crop.x0, crop.x1))
    return K, crop.size, views.images[c][window], views.static[c][window]


def footprint_boxes(means: torch.Tensor, log_scales: torch.Tensor, views: FrameViews, sigmas: float = 3.0
                    ) -> list[ViewCrop | None]:
    """Per view, the pixel bounding box of the splats' footprints (centre +- ``sigmas`` x largest scale, projected),
    clipped to the view; None where no splat reaches the view.

    Args:
        means: (N, 3) world centres. log_scales: (N, 3) log of the axis scales (world units).
    A splat optimised in a cropped window must not reach pixels outside it: there the loss cannot see it, and it
    grows unchecked (measured on basketball: the full-view loss tripled over 150 frames while the windows' loss
    stayed flat). Splats behind a camera or reaching it are treated as covering the whole view.
    """
    out: list[ViewCrop | None] = []
    if len(means) == 0:
        return [None] * len(views.names)
    radius = torch.exp(log_scales.detach()).amax(dim=-1) * sigmas                     # (N,) world units
    for c in range(len(views.names)):
        w, h = views.sizes[c]
        viewmat, K = views.viewmats[c], views.Ks[c]
        cam = means.detach() @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = cam[:, 2]
        near = z <= radius                                                             # reaches the camera plane
        zs = z.clamp(min=1e-6)
        u, v = K[0, 0] * cam[:, 0] / zs + K[0, 2], K[1, 1] * cam[:, 1] / zs + K[1, 2]
        r = radius * torch.maximum(K[0, 0], K[1, 1]) / zs                              # (N,) px
        hits = ~near & (u + r >= 0) & (u - r < w) & (v + r >= 0) & (v - r < h)
        if bool((near & (z > -radius)).any()):
            out.append(ViewCrop(0, 0, w, h))
            continue
        if not bool(hits.any()):
            out.append(None)
            continue
        x0 = int(torch.floor((u - r)[hits].min()).clamp(0, w - 1))
        y0 = int(torch.floor((v - r)[hits].min()).clamp(0, h - 1))
        x1 = int(torch.ceil((u + r)[hits].max()).clamp(1, w))
        y1 = int(torch.ceil((v + r)[hits].max()).clamp(1, h))
        out.append(ViewCrop(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    return out


def union_boxes(a: list[ViewCrop | None], b: list[ViewCrop | None], sizes: list[tuple[int, int]], margin: int
                ) -> list[ViewCrop | None]:
    """Per view, the smallest box holding both ``a`` and ``b`` grown by ``margin`` px (None where both are None)."""
    out: list[ViewCrop | None] = []
    for x, y, (w, h) in zip(a, b, sizes):
        boxes = [bx for bx in (x, y) if bx is not None]
        if not boxes:
            out.append(None)
            continue
        out.append(ViewCrop(max(0, min(bx.x0 for bx in boxes) - margin), max(0, min(bx.y0 for bx in boxes) - margin),
                            min(w, max(bx.x1 for bx in boxes) + margin), min(h, max(bx.y1 for bx in boxes) + margin)))
    return out


def same_size_windows(crops: list[ViewCrop | None], sizes: list[tuple[int, int]]) -> list[ViewCrop]:
    """Windows of one common size (the largest of ``crops``) centred on each crop and kept inside its view, so
    several views render in one rasterizer call. Views must share one full size ``sizes`` (width, height)."""
    full_w, full_h = sizes[0]
    boxes = [c or ViewCrop(0, 0, full_w, full_h) for c in crops]
    w = max(b.size[0] for b in boxes)
    h = max(b.size[1] for b in boxes)
    out = []
    for b in boxes:
        x0 = min(max(0, b.x0 - (w - b.size[0]) // 2), full_w - w)
        y0 = min(max(0, b.y0 - (h - b.size[1]) // 2), full_h - h)
        out.append(ViewCrop(x0, y0, x0 + w, y0 + h))
    return out


def optimize_frame(params: torch.nn.ParameterDict, views: FrameViews, cfg: SequentialConfig, *, iterations: int,
                   radius: float, lr_means: float, background: torch.Tensor, rng: np.random.Generator,
                   anchor: torch.Tensor | None = None, frozen: torch.Tensor | None = None,
                   distill: DepthDistillation | None = None, min_iterations: int | None = None,
                   early_stop: bool = False, param_keys: tuple[str, ...] | None = None,
                   motion_prior: RigidityPrior | None = None,
                   progress: ProgressFn | None = None, stage: str = "dynamic.frame") -> FrameStats:
    """Optimise ``params`` in place on one frame's training views.

    Args:
        anchor: (N, 3) centres the static constraint pulls static Gaussians to (None: no constraint).
        frozen: (N,) bool rows that must not change. Only the other rows are optimised (the frozen ones are
            rendered as constants), and with ``cfg.crop_to_dynamic`` each view is rendered only around its
            dynamic pixels.
        distill: optional distilled-depth loss (its maps are cropped with the views).
        min_iterations: with ``early_stop``, the fewest iterations before a plateau may stop the frame.
        param_keys: the parameters to optimise (None: all); the others are rendered as they are.
        motion_prior: rigidity and rotation-similarity priors over the optimised rows (in their order).
    """
    t0 = time.perf_counter()
    from splatworks.splat.metrics import photometric_loss
    from splatworks.splat.render import render

    stats = FrameStats()
    near_plane = near_plane_units(cfg.near_plane, radius)
    if frozen is not None and bool(frozen.any()):
        train_rows = torch.nonzero(~frozen).flatten()
        constant = {k: v.detach()[frozen] for k, v in params.items()}
        trainable = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach()[train_rows].clone())
                                            for k, v in params.items()})
        if anchor is not None:
            anchor = anchor[train_rows]
    else:
        train_rows, constant, trainable = None, None, params
    if len(trainable["means"]) == 0:
        stats.seconds = time.perf_counter() - t0
        return stats

    opt = make_optimizer(trainable, cfg, radius, lr_means, param_keys)
    order: list[int] = []
    window: list[float] = []
    prev_window = math.inf
    min_it = cfg.min_iterations_per_frame if min_iterations is None else min_iterations
    static_last = torch.zeros(())
    norm_max = torch.zeros((), device=params["means"].device)
    clipped = torch.zeros((), device=params["means"].device)
    batch = max(1, min(cfg.views_per_step, len(views.names))) if train_rows is not None else 1
    if len(set(views.sizes)) > 1:
        batch = 1  # one rasterizer call needs one image size
    window_steps = max(1, cfg.early_stop_window // batch)
    cropping = train_rows is not None and cfg.crop_to_dynamic
    moving = dynamic_crops(views.static, 0) if cropping else None
    crops: list[ViewCrop | None] = [None] * len(views.names)
    for step in range(math.ceil(iterations / batch)):
        if cropping and step % window_steps == 0:
            # Windows: the moving pixels (where splats must go) and the optimised splats' footprints (where they
            # are), refreshed as the splats move and grow.
            crops = union_boxes(moving, footprint_boxes(trainable["means"], trainable["scales"], views),
                                views.sizes, cfg.crop_margin)
        picked = []
        for _ in range(batch):
            if not order:
                order = [int(i) for i in rng.permutation(len(views.names))]
            picked.append(order.pop())
        scene = trainable if constant is None else {k: torch.cat([constant[k], trainable[k]]) for k in trainable}
        # Same-size windows (the crops, grown to the largest) so the views render in one rasterizer call.
        wins = same_size_windows([crops[c] for c in picked], [views.sizes[c] for c in picked])
        parts = [crop_view(views, c, w) for c, w in zip(picked, wins)]
        out = render(scene, views.viewmats[picked], torch.stack([p[0] for p in parts]), wins[0].size[0],
                     wins[0].size[1], sh_degree=cfg.sh_degree, background=background,
                     mode="RGB+D" if distill is not None else "RGB", backend=cfg.backend, near_plane=near_plane)
        rgb, target = out.colors, torch.stack([p[2] for p in parts])
        depths = out.depths[..., 0] if out.depths is not None else [None] * batch
        per_view = [(c, p[0], p[3], d, w) for c, p, d, w in zip(picked, parts, depths, wins)]
        loss = photometric_loss(rgb, target, cfg.ssim_lambda)
        photo = loss.detach()
        for c, K, static, depth, win in per_view:
            if anchor is not None and cfg.static_loss_weight > 0:
                is_static = static_in_view(trainable["means"], views.viewmats[c], K, static)
                # Displacements in scene radii, so the weight means the same in any SfM scale.
                sl = static_constraint_loss(trainable["means"] / radius, anchor / radius, is_static) / batch
                static_last = sl.detach()
                loss = loss + cfg.static_loss_weight * sl
            if distill is not None and depth is not None:
                loss = loss + distill.loss(depth, c, static, (slice(win.y0, win.y1), slice(win.x0, win.x1))) / batch
        if motion_prior is not None:
            rigid, turn = motion_prior.losses(trainable["means"], trainable["quats"])
            loss = loss + cfg.rigidity_weight * rigid + cfg.rotation_weight * turn
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_gradients(trainable, cfg.grad_clip_norm, cfg.grad_clip_mode == "gaussian").to(norm_max.device)
        norm_max = torch.maximum(norm_max, norm)
        if cfg.grad_clip_norm > 0:
            clipped = clipped + (norm > cfg.grad_clip_norm).float()
        opt.step()
        if step == 0:
            stats.loss_start = float(photo)
        stats.iterations = min(iterations, (step + 1) * batch)
        window.append(photo)  # tensors: the host reads them once per window, not every step
        if len(window) >= window_steps:
            mean = float(torch.stack(window).mean())
            stats.loss_end = mean
            window = []
            if early_stop and stats.iterations >= min_it and prev_window - mean < cfg.early_stop_tol * prev_window:
                stats.stopped_early = True
                break
            prev_window = mean
            emit(progress, stage, stats.iterations, iterations, f"loss {mean:.4f}", metrics={"loss": mean})
    if window:
        stats.loss_end = float(torch.stack(window).mean())
    if train_rows is not None:
        with torch.no_grad():
            for k, p in params.items():
                p[train_rows] = trainable[k].detach()
    stats.grad_norm_max, stats.clipped_steps = float(norm_max), int(clipped)
    if anchor is not None and cfg.static_loss_weight > 0 and stats.iterations:
        stats.static_loss_end = float(static_last)
    stats.seconds = time.perf_counter() - t0
    return stats


@torch.no_grad()
def frame_loss(params: dict[str, torch.Tensor], views: FrameViews, cfg: SequentialConfig,
               background: torch.Tensor, *, near_plane: float) -> float:
    """Mean photometric loss over all training views of a frame (the 'already converged?' test); ``near_plane``
    in scene units (``near_plane_units``)."""
    from splatworks.splat.metrics import photometric_loss

    losses = []
    for c in range(len(views.names)):
        rgb, _ = render_view(params, views.viewmats[c], views.Ks[c], views.sizes[c], cfg.sh_degree, background,
                             cfg.backend, near_plane=near_plane)
        losses.append(float(photometric_loss(rgb, views.images[c], cfg.ssim_lambda)))
    return float(np.mean(losses))


# ---- the frozen static layer -----------------------------------------------------------------------------------
def dynamic_union_masks(dataset: DynamicDataset, cameras: list[str], frames: list[int], dilation: int
                        ) -> list[np.ndarray]:
    """Per camera, (H, W) bool: pixels that are dynamic (black) in any of ``frames``, grown by ``dilation`` px."""
    import cv2

    out = []
    for name in cameras:
        cam = dataset.rig.camera(name)
        union = np.zeros((cam.height, cam.width), dtype=bool)
        for f in frames:
            union |= ~load_static_mask(dataset.mask_path(name, f), (cam.height, cam.width))
        if dilation > 0:
            kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
            union = cv2.dilate(union.astype(np.uint8), kernel) > 0
        out.append(union)
    return out


def frozen_rows(means: torch.Tensor, views: FrameViews, dynamic_union: list[np.ndarray]) -> torch.Tensor:
    """(N,) bool: centres that land on a dynamic-at-some-time pixel in no training view (the static layer)."""
    touched = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    for c, union in enumerate(dynamic_union):
        u = torch.from_numpy(union).to(means.device)
        h, w = union.shape
        col, row, inside = project_centres(means.detach(), views.viewmats[c], views.Ks[c], w, h)
        touched |= inside & u[row, col]
    return ~touched


def frozen_rows_by_vote(means: torch.Tensor, views: FrameViews, dataset: DynamicDataset, frames: list[int],
                        dilation: int, quorum: float) -> torch.Tensor:
    """(N,) bool: the static layer. A centre is dynamic when, at some frame, it lands on a dynamic pixel (grown by
    ``dilation`` px) in at least ``quorum`` of the training views that see it (and in at least one)."""
    import cv2

    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8) if dilation > 0 else None
    proj = []
    for c, name in enumerate(views.names):
        w, h = views.sizes[c]
        proj.append(project_centres(means.detach(), views.viewmats[c], views.Ks[c], w, h))
    seen = torch.stack([p[2] for p in proj]).sum(0)                      # (N,) views that see the centre
    dynamic = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    for f in frames:
        votes = torch.zeros(len(means), dtype=torch.int32, device=means.device)
        for c, name in enumerate(views.names):
            w, h = views.sizes[c]
            dyn = ~load_static_mask(dataset.mask_path(name, f), (h, w))
            if kernel is not None:
                dyn = cv2.dilate(dyn.astype(np.uint8), kernel) > 0
            col, row, inside = proj[c]
            votes += (inside & torch.from_numpy(dyn).to(means.device)[row, col]).int()
        dynamic |= (votes >= 1) & (votes >= quorum * seen)
    return ~dynamic


# ---- evaluation ------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_frame(params: dict[str, torch.Tensor], dataset: DynamicDataset, frame: int, cameras: list[str],
                   cfg: SequentialConfig, background: torch.Tensor, *, near_planes: Sequence[float]
                   ) -> dict[str, float]:
    """PSNR / SSIM (all pixels) and PSNR on static pixels, averaged over ``cameras`` (the held-out ones);
    ``near_planes``: one per camera, in scene units (``novel_view_near_plane``)."""
    from splatworks.splat.metrics import mse_to_psnr, psnr, ssim

    if not cameras:
        return {}
    device = params["means"].device
    views = load_frame(dataset, frame, cameras, device)
    ps, ss, pst = [], [], []
    for c in range(len(cameras)):
        rgb, _ = render_view(params, views.viewmats[c], views.Ks[c], views.sizes[c], cfg.sh_degree, background,
                             cfg.backend, near_plane=near_planes[c])
        rgb = rgb.clamp(0, 1)
        ps.append(float(psnr(rgb, views.images[c])))
        ss.append(float(ssim(rgb, views.images[c])))
        st = views.static[c]
        if bool(st.any()):
            pst.append(mse_to_psnr(float(((rgb - views.images[c]) ** 2)[st].mean())))
    out = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
    if pst:
        out["psnr_static"] = float(np.mean(pst))
    return out


def load_config(out_dir: str | Path) -> SequentialConfig:
    return from_dict(SequentialConfig, json.loads((Path(out_dir) / "config.json").read_text()))


# ---- the daisy chain -------------------------------------------------------------------------------------------
@dataclass
class _Chain:
    """Mutable training state: Gaussians (rows ordered by id), which rows are frozen, their frame-0 centres."""

    params: torch.nn.ParameterDict
    ids: torch.Tensor            # (N,) int64 ascending
    frozen: torch.Tensor         # (N,) bool
    first_means: torch.Tensor    # (N, 3) centres after frame 0 (anchor "first")
    last_loss: float = float("nan")
    before: dict[str, torch.Tensor] | None = None   # centres and rotations at frame t-2 (constant velocity)

    def keep(self, keep: torch.Tensor) -> None:
        self.params = select_rows(self.params, keep)
        self.ids, self.frozen, self.first_means = self.ids[keep], self.frozen[keep], self.first_means[keep]
        if self.before is not None:
            self.before = {k: v[keep] for k, v in self.before.items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def _validate(cfg: SequentialConfig, dataset: DynamicDataset) -> None:
    if not dataset.frames:
        raise UserError(f"dataset {dataset.root} has no frames; re-run `splatworks dynamic prepare`")
    if not dataset.train_camera_names:
        raise UserError("every camera is held out; keep at least one training camera")
    for name in ("iterations_first_frame", "iterations_per_frame"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be at least 1")
    if cfg.views_per_step < 1:
        raise UserError("views_per_step must be at least 1 (training views per optimizer step)")
    if cfg.near_plane < 0:
        raise UserError("near_plane is in scene radii; use 0 (the rasterizer's default) or a value > 0")
    if not 0 <= cfg.novel_view_near <= 1:
        raise UserError("novel_view_near is a fraction of a camera's near bound: use 0 (off) to 1")
    if cfg.prune_max_scale <= 0 or cfg.prune_max_distance <= 0:
        raise UserError("prune_max_scale and prune_max_distance are multiples of the scene radius; use values > 0")
    if cfg.respawn and (cfg.respawn_mvs.window < 3 or cfg.respawn_mvs.window % 2 == 0 or cfg.respawn_iterations < 0
                        or not 0.0 < cfg.respawn_mvs.scale <= 1.0):
        raise UserError("respawn needs an odd respawn_mvs.window >= 3, respawn_iterations >= 0 and "
                        "0 < respawn_mvs.scale <= 1; fix those settings")
    if cfg.respawn and (cfg.respawn_hull_voxel <= 0 or min(cfg.respawn_hull_views, cfg.respawn_carve_views) < 1
                        or cfg.respawn_dilation < 0 or not 0.0 <= cfg.respawn_carve_colour < 1.0):
        raise UserError("respawn needs respawn_hull_voxel > 0 (scene radii), respawn_hull_views >= 1, "
                        "respawn_carve_views >= 1, respawn_dilation >= 0 and 0 <= respawn_carve_colour < 1; "
                        "fix those settings")
    if cfg.depth == "distill" and not cfg.depth_file:
        raise UserError("--depth distill needs --depth-file all_depth.npy (from `splatworks depth export`)")


def _load_distillation(cfg: SequentialConfig, dataset: DynamicDataset, cameras: list[str],
                       device: torch.device) -> DepthDistillation | None:
    if cfg.depth != "distill":
        return None
    from splatworks.depth.files import load_all_depth

    maps = load_all_depth(cfg.depth_file)
    missing = [c for c in cameras if c not in maps]
    if missing:
        raise UserError(f"{cfg.depth_file} has no depth for cameras {missing}; re-export it with `splatworks depth "
                        f"export MODEL {dataset.root} -o {cfg.depth_file}`")
    tensors = []
    for c in cameras:
        cam = dataset.rig.camera(c)
        d = maps[c]
        if d.shape != (cam.height, cam.width):
            raise UserError(f"{cfg.depth_file}: camera {c} depth is {d.shape[1]}x{d.shape[0]}, images are "
                            f"{cam.width}x{cam.height}")
        tensors.append(torch.from_numpy(np.nan_to_num(d).astype(np.float32)).to(device))
    return DepthDistillation(tensors, cfg.depth_weight, cfg.depth_everywhere)


def _resume(out_dir: Path, frames_done: list[int], device: torch.device) -> _Chain:
    params, ids, frozen = load_frame_gaussians(out_dir, frames_done[-1], device)
    first, first_ids, _ = load_frame_gaussians(out_dir, frames_done[0], device)
    pos = torch.searchsorted(first_ids, ids)
    lines = (out_dir / METRICS_FILE).read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return _Chain(params=torch.nn.ParameterDict({k: torch.nn.Parameter(v.contiguous()) for k, v in params.items()}),
                  ids=ids, frozen=frozen, first_means=first["means"][pos].contiguous(),
                  last_loss=float(last.get("loss_final", float("nan"))))


def train_sequence(dataset: DynamicDataset, out_dir: str | Path, config: SequentialConfig | None = None,
                   progress: ProgressFn | None = None, resume: bool = True) -> list[dict[str, Any]]:
    """Train the frames of ``dataset`` one after the other; returns one metrics dict per frame trained now.

    Files are described in the module docstring. With ``resume``, frames already finished in ``out_dir`` are
    kept and training continues after the last one (a changed config applies to the remaining frames).
    """
    cfg = config or SequentialConfig()
    _validate(cfg, dataset)
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to_json(cfg, out / "config.json")
    (out / "source.json").write_text(json.dumps({
        "dataset": str(Path(dataset.root).resolve()), "background": list(dataset.rig.background or (0.0, 0.0, 0.0)),
        "scene_centre": [float(x) for x in dataset.rig.camera_extent()[0]],
        "scene_radius": float(dataset.rig.camera_extent()[1]), "fps": dataset.fps,
        "train_cameras": list(dataset.train_camera_names)}, indent=1))
    near_points = write_near_points(out, dataset.rig.points, cfg.seed)
    frames = dataset.frames[: cfg.max_frames] if cfg.max_frames > 0 else list(dataset.frames)
    cams, test = dataset.train_camera_names, list(dataset.test_cameras)
    centre_np, radius = dataset.rig.camera_extent()
    centre = torch.tensor(centre_np, dtype=torch.float32, device=device)
    near_plane = near_plane_units(cfg.near_plane, radius)  # every render below; `dynamic render` reads it back
    # The held-out cameras' evaluation: from the points as saved, so `dynamic eval` (SequenceReader) clips the same.
    test_near = [novel_view_near_plane(near_points, dataset.rig.camera(name), cfg.novel_view_near, near_plane)
                 for name in test]
    background = torch.tensor(dataset.rig.background or (0.0, 0.0, 0.0), dtype=torch.float32, device=device)
    distill = _load_distillation(cfg, dataset, cams, device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    done = trained_frames(out) if resume else []
    if done and done != frames[: len(done)]:
        log.warning("frames done in %s (%s...) do not match this run's frames; starting over", out, done[:3])
        done = []
    if not done:
        for name in (METRICS_FILE, STATE_FILE):
            (out / name).unlink(missing_ok=True)
        (out / STATIC_FILE).unlink(missing_ok=True)
    chain = _resume(out, done, device) if done else None
    results: list[dict[str, Any]] = []
    todo = frames[len(done):]
    n_done_at_start = len(done)  # `done` grows inside the loop
    for k, frame in enumerate(todo):
        index = n_done_at_start + k
        t_frame = time.perf_counter()
        views = load_frame(dataset, frame, cams, device)
        line: dict[str, Any] = {"frame": frame}
        if chain is None:  # ---- frame 0: a static scene from the SfM points
            t0 = time.perf_counter()
            params = None
            if cfg.first_frame_trainer in ("auto", "splat"):
                extra = [_DistillForTrainer(distill, views.static)] if distill is not None else None
                params = _train_first_frame_splat(dataset, frame, out, cfg, device, progress, extra, resume,
                                                  radius=radius)
                if params is None and cfg.first_frame_trainer == "splat":
                    raise UserError("first_frame_trainer 'splat' needs splatworks.splat.trainer; use 'plain'")
            if params is None:
                params = _init_first_frame(dataset, frame, cfg, device)
                stats = optimize_frame(params, views, cfg, iterations=cfg.iterations_first_frame, radius=radius,
                                       lr_means=cfg.first_frame_lr_means, background=background, rng=rng,
                                       distill=distill, progress=progress, stage="dynamic.frame0")
            else:
                stats = FrameStats(iterations=cfg.iterations_first_frame)
            n = len(params["means"])
            chain = _Chain(params=params, ids=torch.arange(n, device=device),
                           frozen=torch.zeros(n, dtype=torch.bool, device=device),
                           first_means=params["means"].detach().clone())
            pr = prune_mask(chain.params, centre, radius, cfg.prune_max_scale, cfg.prune_max_distance)
            chain.keep(pr.keep)
            chain.first_means = chain.params["means"].detach().clone()
            if cfg.freeze_static:
                # The whole clip votes, not just the frames this call trains (max_frames): the layer is decided
                # once, and a run continued later (or arms continued from one frame 0) must keep a valid one.
                voters = list(dataset.frames) if cfg.freeze_frames == "all" else frames[:1]
                chain.frozen = frozen_rows_by_vote(chain.params["means"], views, dataset, voters, cfg.freeze_dilation,
                                                   cfg.freeze_quorum)
            _atomic_torch_save(_rows(chain.params, chain.ids, chain.frozen), out / STATIC_FILE)
            stats.seconds = time.perf_counter() - t0
        else:  # ---- frame t: continue from frame t-1
            anchor = chain.first_means if cfg.anchor == "first" else chain.params["means"].detach().clone()
            hold = chain.frozen
            if cfg.active_set == "frame":
                # Only what moves now (or just stopped/started moving) is optimised; the rest stays bit-identical.
                prev = frames[index - 1]
                hold = chain.frozen | frozen_rows_by_vote(chain.params["means"], views, dataset, [prev, frame],
                                                          cfg.freeze_dilation, cfg.freeze_quorum)
                line["n_active"] = int((~hold).sum())
            rows = torch.nonzero(~hold).flatten()
            last = {k: chain.params[k].detach().clone() for k in MOTION_KEYS}          # frame t-1
            prior = None
            if cfg.rigidity_weight > 0 or cfg.rotation_weight > 0:
                # Among the Gaussians on moving pixels at t-1 only (people, not the floor they stand on).
                moving = ~frozen_rows_by_vote(last["means"][rows], views, dataset, [frames[index - 1]],
                                              cfg.freeze_dilation, cfg.freeze_quorum)
                prior = RigidityPrior.build(last["means"][rows], last["quats"][rows], radius,
                                            cfg.rigidity_neighbours, torch.nonzero(moving).flatten())
            if cfg.constant_velocity and chain.before is not None:
                with torch.no_grad():
                    for k in MOTION_KEYS:
                        chain.params[k][rows] = constant_velocity_start(last[k][rows], chain.before[k][rows])
            iterations = cfg.iterations_per_frame
            if cfg.converged_loss_ratio > 0 and math.isfinite(chain.last_loss):
                start = frame_loss(chain.params, views, cfg, background, near_plane=near_plane)
                line["loss_initial"] = start
                if start <= cfg.converged_loss_ratio * chain.last_loss:
                    iterations = min(iterations, cfg.iterations_converged)
            stats = optimize_frame(chain.params, views, cfg, iterations=iterations, radius=radius,
                                   lr_means=cfg.lr_means, background=background, rng=rng, anchor=anchor,
                                   frozen=hold, distill=distill, early_stop=cfg.early_stop,
                                   param_keys=FRAME_PARAM_KEYS[cfg.frame_params],
                                   motion_prior=prior, progress=progress, stage="dynamic.frame")
            chain.before = last
            if cfg.respawn:
                from splatworks.dynamic.respawn import respawn_dead

                before_respawn = chain.params["means"].detach().clone()
                rs = respawn_dead(chain.params, chain.frozen, views, [dataset.rig.camera(c) for c in cams], cfg,
                                  radius=radius, background=background, rng=rng,
                                  points_hint=dataset.rig.points if len(dataset.rig.points) else None)
                line.update(rs.as_metrics())
                with torch.no_grad():  # a recycled row starts at rest: its jump is not a velocity to extrapolate
                    moved = (chain.params["means"] != before_respawn).any(dim=1)
                    for k in MOTION_KEYS:
                        chain.before[k][moved] = chain.params[k][moved].detach()
            pr = prune_mask(chain.params, centre, radius, cfg.prune_max_scale, cfg.prune_max_distance)
            pr.keep |= chain.frozen  # the static layer is written once; it never changes after frame 0
            chain.keep(pr.keep)
        if cfg.converged_loss_ratio > 0:
            chain.last_loss = frame_loss(chain.params, views, cfg, background, near_plane=near_plane)
            line["loss_final"] = chain.last_loss
        _atomic_torch_save({"frame": frame, **_rows(chain.params, chain.ids, ~chain.frozen)}, frame_file(out, frame))
        if pr.too_large or pr.too_far:
            log.info("frame %d: pruned %d too large, %d too far", frame, pr.too_large, pr.too_far)
        line.update({"iterations": stats.iterations, "seconds": round(stats.seconds, 4),
                     "loss_start": stats.loss_start, "loss_end": stats.loss_end,
                     "static_loss_end": stats.static_loss_end, "grad_norm_max": stats.grad_norm_max,
                     "clipped_steps": stats.clipped_steps, "stopped_early": stats.stopped_early,
                     "pruned_too_large": pr.too_large, "pruned_too_far": pr.too_far,
                     "n_gaussians": len(chain.ids), "n_dynamic": int((~chain.frozen).sum()),
                     "frame_bytes_pt": frame_file(out, frame).stat().st_size})
        line["frame_wall_s"] = round(time.perf_counter() - t_frame, 4)  # all of this frame but the evaluation
        line.update(evaluate_frame(chain.params, dataset, frame, test, cfg, background, near_planes=test_near))
        with open(out / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        done = done + [frame]
        tmp = out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({"frames_done": done, "frames_total": len(frames)}))
        tmp.replace(out / STATE_FILE)
        results.append(line)
        msg = f"frame {frame}: {stats.iterations} it in {stats.seconds:.1f}s"
        if "psnr" in line:
            msg += f", held-out PSNR {line['psnr']:.2f} dB"
        emit(progress, "dynamic.train", index + 1, len(frames), msg, metrics=line,
             checkpoint=str(frame_file(out, frame)))
    return results
