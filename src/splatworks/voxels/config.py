"""Settings of the MixVoxels-style backend, with presets in the spirit of the paper's T / M / L budgets.

The paper trains its "T" (tiny) model for about 5k iterations in minutes, "M" for 12.5k and "L" for 25k; our
presets keep that ladder. ``tiny`` is a CPU smoke-test budget (tests, quick looks), not a quality setting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from splatworks.config import option
from splatworks.errors import UserError


@dataclass
class MixVoxelsConfig:
    """Everything that decides how a MixVoxels model is trained (saved as ``config.json`` beside the model)."""

    preset: str = option("T", "Named budget this config started from (T, M, L, tiny); other options override it.",
                         choices=("tiny", "T", "M", "L"))
    iterations: int = option(5000, "Training iterations (one ray batch each).")
    batch_rays: int = option(4096, "Rays per iteration (each ray is one pixel of one camera at one frame).")
    # ---- scene parameterisation -------------------------------------------------------------------------
    scene_type: str = option("auto", "Space parameterisation: 'box' (inward-facing domes: one bounded box), "
                             "'contract' (forward-facing rigs: unbounded space squashed into a ball), "
                             "'auto' (chosen from where the cameras look).", choices=("auto", "box", "contract"))
    bound_scale: float = option(1.0, "Half-size of the scene box relative to the mean camera distance from "
                                "the point the cameras look at (box scenes); 0 = fit the sparse points.")
    samples_per_ray: int = option(96, "Ray samples between the near and far bounds (before empty-space skipping).")
    near: float = option(0.05, "Nearest sample in camera z, as a fraction of the mean camera distance.")
    background: str = option("learned", "Colour behind the scene: 'black', 'white' or 'learned' (one RGB).",
                             choices=("black", "white", "learned"))
    # ---- static branch (TensoRF-style vector-matrix grid) -----------------------------------------------
    grid_res: int = option(160, "Final voxel resolution per axis of the factorised grids.")
    grid_res_start: int = option(64, "Starting resolution; doubled in steps up to grid_res (coarse to fine).")
    upsample_at: tuple[int, ...] = option((), "Iterations at which the grids are upsampled (empty: spread over "
                                          "the first half of training).", factory=tuple)
    density_components: int = option(16, "VM components per plane/line pair for density.")
    appearance_components: int = option(48, "VM components per plane/line pair for appearance.")
    feature_dim: int = option(27, "Appearance feature size fed to the colour decoder.")
    hidden_dim: int = option(64, "Width of the small MLP decoders.")
    # ---- dynamic branch (variation field) -------------------------------------------------------------
    dynamic_components: int = option(16, "VM components of the dynamic branch's spatial features.")
    time_dim: int = option(32, "Hidden width of the time-query MLP (its outputs match the feature sizes).")
    time_frequencies: int = option(6, "Positional-encoding frequencies of the normalised time.")
    # ---- static / dynamic split --------------------------------------------------------------------------
    pixel_std_threshold: float = option(0.04, "Temporal std of a pixel (RGB in [0, 1]) above which it counts as "
                                        "dynamic for ray sampling.")
    dynamic_threshold: float = option(0.02, "Per-voxel variance estimate (a temporal std) above which a voxel "
                                      "is dynamic.")
    variance_res: int = option(64, "Resolution of the learned per-voxel variance grid.")
    variance_weight: float = option(1.0, "Weight of the loss that makes rendered voxel variance match pixel std.")
    variance_sparsity: float = option(1e-3, "L1 pull of unobserved voxels' variance towards 0 (static).")
    split_after: int = option(500, "Iteration after which voxels above dynamic_threshold use the dynamic branch.")
    use_masks: bool = option(False, "Also count pixels the dataset masks call dynamic (black) as dynamic pixels.")
    dynamic_ray_fraction: float = option(0.5, "Share of each batch drawn from dynamic pixels (biased sampling).")
    # ---- empty-space skipping -----------------------------------------------------------------------------
    occupancy_res: int = option(128, "Resolution of the occupancy grid used to skip empty space.")
    occupancy_every: int = option(500, "Iterations between occupancy grid updates.")
    occupancy_threshold: float = option(1e-3, "Opacity of one grid cell below which it is skipped as empty.")
    # ---- optimisation -------------------------------------------------------------------------------------
    lr_grid: float = option(0.02, "Adam learning rate of the grids.")
    lr_network: float = option(1e-3, "Adam learning rate of the MLP decoders and basis matrices.")
    lr_decay: float = option(0.1, "Learning-rate factor reached at the end of training (exponential decay).")
    tv_weight: float = option(1e-4, "Total-variation weight on the density planes (smooths floaters).")
    l1_weight: float = option(1e-5, "L1 weight on density features (sparsity, fewer floaters).")
    depth_weight: float = option(0.0, "Weight of the depth loss on expected ray depth (camera z) when the batch "
                                 "carries depth targets (issue 8 sources).")
    # ---- bookkeeping --------------------------------------------------------------------------------------
    checkpoint_every: int = option(1000, "Iterations between checkpoints (and at the end).")
    time_budget_min: float = option(0.0, "Wall-clock cap on the training loop in minutes (0: off). When it is "
                                    "reached, training stops with a checkpoint; the learning-rate decay and the "
                                    "grid upsampling follow the elapsed share of the budget when it runs ahead of "
                                    "the iteration count, so a cut run still ends coarse-to-fine and decayed.")
    eval_chunk: int = option(8192, "Rays per chunk when rendering full images.")
    seed: int = option(0, "Random seed.")
    device: str = option("auto", "Torch device: auto (CUDA when available), cpu, cuda.")
    scale: float = option(1.0, "Resize factor applied to the dataset's images before training (0.5 halves).")
    max_frames: int = option(0, "Train on at most this many frames from the start (0: all).")


PRESETS: dict[str, dict[str, Any]] = {
    # Paper's T budget: minutes on one GPU.
    "T": dict(iterations=5000, batch_rays=4096, grid_res=160, grid_res_start=64, samples_per_ray=96),
    "M": dict(iterations=12500, batch_rays=4096, grid_res=224, grid_res_start=80, samples_per_ray=128,
              appearance_components=64, dynamic_components=24),
    "L": dict(iterations=25000, batch_rays=8192, grid_res=288, grid_res_start=96, samples_per_ray=160,
              appearance_components=64, dynamic_components=32, time_dim=48),
    # CPU smoke tests: a few hundred iterations on tiny images.
    "tiny": dict(iterations=200, batch_rays=512, grid_res=48, grid_res_start=24, samples_per_ray=32,
                 density_components=8, appearance_components=12, feature_dim=12, hidden_dim=32,
                 dynamic_components=8, time_dim=16, time_frequencies=4, variance_res=32, occupancy_res=48,
                 occupancy_every=50, split_after=80, checkpoint_every=100, lr_grid=0.06, lr_network=3e-3,
                 eval_chunk=4096, tv_weight=0.0, l1_weight=0.0),
}


def preset(name: str = "T", **overrides: Any) -> MixVoxelsConfig:
    """A config from a named budget (``T``, ``M``, ``L``, ``tiny``) with field overrides."""
    if name not in PRESETS:
        raise UserError(f"unknown MixVoxels preset {name!r}; use one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(MixVoxelsConfig.__dataclass_fields__)
    if unknown:
        raise UserError(f"MixVoxelsConfig has no setting(s) {sorted(unknown)}")
    return replace(MixVoxelsConfig(), preset=name, **{**PRESETS[name], **overrides})


def validate(cfg: MixVoxelsConfig) -> None:
    """Refuse settings that cannot work, saying which one to change."""
    if cfg.iterations <= 0 or cfg.batch_rays <= 0:
        raise UserError("iterations and batch_rays must be positive")
    if cfg.grid_res_start > cfg.grid_res or cfg.grid_res_start < 4:
        raise UserError(f"grid_res_start ({cfg.grid_res_start}) must be in [4, grid_res={cfg.grid_res}]")
    if not 0.0 <= cfg.dynamic_ray_fraction <= 1.0:
        raise UserError("dynamic_ray_fraction must be between 0 and 1")
    if cfg.samples_per_ray < 8:
        raise UserError("samples_per_ray must be at least 8")
    if cfg.time_budget_min < 0:
        raise UserError("time_budget_min must be >= 0 (0 turns the wall-clock cap off)")
    if not 0.0 < cfg.scale <= 1.0:
        raise UserError("scale must be in (0, 1]")
