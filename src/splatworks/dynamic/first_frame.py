"""Frame 0 of the sequential trainer: its Scene (points, held-out views) and the static trainer's recipe.

Frame 0 is "trained like a static scene from the SfM points": the dataset's points (SfM's, imported, or
triangulated at the known poses by ``dynamic prepare``; see ``dynamic.points``), thickened when sparse, or random
points in a ball reaching past the cameras when there are none; then the static trainer (``splat.trainer``) with
its 'fast' preset (3DGS-MCMC with a Gaussian budget) scaled to ``iterations_first_frame``, or this package's plain
loop (``first_frame_trainer plain``, no densification). Held-out cameras stay held out (the Scene's test names);
the background is the rig's (black unless it says otherwise). Coordinates: the dataset's world frame, OpenCV.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from splatworks.depth.losses import DepthDistillation
from splatworks.dynamic.dataset import DENSE_DEPTH_FILE, DynamicDataset
from splatworks.progress import ProgressFn
from splatworks.scene.camera import Scene

if TYPE_CHECKING:
    from splatworks.dynamic.sequential import SequentialConfig

log = logging.getLogger("splatworks.dynamic.sequential")


def first_frame_scene(dataset: DynamicDataset, frame: int, cfg: SequentialConfig) -> Scene:
    """The rig at ``frame`` as frame 0 trains it: no masks (the people belong to frame 0 too), held-out cameras
    kept held out, and its initial points: the dataset's (thickened to ``first_frame_min_points``), or
    ``num_random_points`` random ones in a ball reaching past the cameras when it has none."""
    from splatworks.dynamic.points import expand_points, sphere_points

    scene = dataset.scene_at(frame)
    scene.cameras = [replace(c, mask_name=None, world_to_camera=c.world_to_camera.copy()) for c in scene.cameras]
    if len(scene.points) == 0:
        pts = sphere_points(scene, cfg.num_random_points, seed=cfg.seed)
        rgb = np.random.default_rng(cfg.seed).integers(0, 256, size=(len(pts), 3), dtype=np.uint8)
        log.warning("the dataset has no 3D points: frame 0 starts from %d random points (re-run `splatworks "
                    "dynamic prepare` with triangulation or --points FILE for a better start)", len(pts))
    else:
        pts, rgb = expand_points(scene.points, scene.point_colors, cfg.first_frame_min_points, seed=cfg.seed)
        if cfg.first_frame_random_points > 0:
            extra = sphere_points(scene, cfg.first_frame_random_points, seed=cfg.seed + 1)
            pts = np.concatenate([pts, extra])
            rgb = np.concatenate([rgb, np.full((len(extra), 3), 128, dtype=np.uint8)])
    scene.points, scene.point_colors, scene.point_errors = pts, rgb, np.full(len(pts), np.nan)
    return scene


def _init_first_frame(dataset: DynamicDataset, frame: int, cfg: SequentialConfig, device: torch.device
                      ) -> torch.nn.ParameterDict:
    from splatworks.splat.gaussians import init_from_scene

    return init_from_scene(first_frame_scene(dataset, frame, cfg), sh_degree=cfg.sh_degree,
                           num_random=cfg.num_random_points, seed=cfg.seed, device=device)


def first_frame_train_config(cfg: SequentialConfig, device: torch.device, background: tuple[float, ...] | None,
                             *, radius: float) -> Any:
    """The static trainer's config for frame 0: its 'fast' preset (3DGS-MCMC, budget ``first_frame_cap_max``)
    scaled to ``iterations_first_frame`` as that preset is to 7k iterations (refine_stop 0.79 n, SH raised every
    n / 14), or 3DGS adaptive density control (recipe 'adc'). Every view trains: held-out ones stay held out by
    the scene's test names, so ``hold_out_every`` is 0. ``radius``: the scene radius (scene units) that turns
    ``cfg.near_plane`` (scene radii) into the trainer's ``near_plane`` (scene units), as for the later frames."""
    from splatworks.dynamic.sequential import near_plane_units
    from splatworks.splat.trainer import PRESETS as TRAIN_PRESETS, TrainConfig, preset as train_preset

    n = cfg.iterations_first_frame
    common = dict(iterations=n, checkpoint_steps=(n,), sh_degree=cfg.sh_degree, hold_out_every=0,
                  init_num_random=cfg.num_random_points, device=str(device), backend=cfg.backend, seed=cfg.seed,
                  eval_lpips=False, save_splat=False, background=background,
                  near_plane=near_plane_units(cfg.near_plane, radius))
    if cfg.first_frame_recipe == "adc":
        return TrainConfig(**common, sh_degree_interval=max(1, min(1000, n // 8)), refine_start=min(500, n // 10),
                           refine_stop=max(1, n // 2), reset_every=3000 if n > 6000 else 0)
    fast = TRAIN_PRESETS["fast"]
    scale = n / fast["iterations"]
    return train_preset("fast", **common, cap_max=cfg.first_frame_cap_max,
                        refine_start=min(500, max(1, n // 10)),
                        refine_stop=max(1, int(round(fast["refine_stop"] * scale))),
                        sh_degree_interval=max(1, int(round(fast["sh_degree_interval"] * scale))))


def free_space_loss(dataset: DynamicDataset, cfg: SequentialConfig, train_names: list[str], device: torch.device
                    ) -> Any:
    """Frame 0's free-space carving (``depth.losses.FreeSpaceLoss``) from the dense depth maps ``dynamic prepare``
    wrote (``calibration/dense_depth.npy``: plane-sweep MVS of frame 0's training views); None when there are
    none or ``free_space_weight`` is 0."""
    from splatworks.depth.losses import free_space_loss_from_file

    path = Path(dataset.root) / DENSE_DEPTH_FILE
    if cfg.free_space_weight <= 0 or not path.exists():
        return None
    loss = free_space_loss_from_file(path, train_names, cfg.free_space_weight, cfg.free_space_margin,
                                     cfg.free_space_min_views, device)
    if loss is not None:
        log.info("frame 0: free-space carving from %s (%d views, weight %g)", path.name, len(loss.depths),
                 cfg.free_space_weight)
    return loss


class _DistillForTrainer:
    """The distilled-depth loss in the static trainer's extra-loss form (frame 0 with densification)."""

    needs_depth = True

    def __init__(self, distill: DepthDistillation, static: list[torch.Tensor]) -> None:
        self.distill, self.static = distill, static

    def __call__(self, iteration: int, idx: int, out: Any, params: Any) -> torch.Tensor:
        depth = out.depths[0, ..., 0] if out.depths is not None else None
        if depth is None or depth.shape != self.static[idx].shape:  # a downscaled trainer view: skip
            return out.colors.sum() * 0.0
        return self.distill.loss(depth, idx, self.static[idx])


def _train_first_frame_splat(dataset: DynamicDataset, frame: int, out_dir: Path, cfg: SequentialConfig,
                             device: torch.device, progress: ProgressFn | None,
                             extra: list[Any] | None = None, resume: bool = True, *,
                             radius: float) -> torch.nn.ParameterDict | None:
    """Frame 0 with the static trainer (3DGS densification); None when splat.trainer is not installed.

    The whole frame is trained (masks are not passed: the moving people belong to frame 0 too); held-out cameras
    stay held out. The trainer's own output (checkpoint, metrics.json) lands in ``OUT/frame0_static``.
    ``radius``: the scene radius the sequential trainer uses (for ``cfg.near_plane``).
    """
    try:
        from splatworks.splat import io as sio
        from splatworks.splat.gaussians import params_from_tensors
        from splatworks.splat.trainer import train
    except ImportError:
        return None
    scene = first_frame_scene(dataset, frame, cfg)
    tc = first_frame_train_config(cfg, device, tuple(dataset.rig.background) if dataset.rig.background else None,
                                  radius=radius)
    carve = free_space_loss(dataset, cfg, [c.name for c in scene.train_cameras], device)
    if carve is not None:
        extra = [*(extra or []), carve]
    res = train(scene, out_dir / "frame0_static", tc, progress=progress, resume=resume, extra_losses=extra)
    folder = res.checkpoint or sio.latest_checkpoint(out_dir / "frame0_static")[1]  # type: ignore[index]
    return params_from_tensors(sio.read_ply(Path(folder) / "point_cloud.ply"), device)
