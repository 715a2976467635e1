"""Depth losses for every trainer, on the rendered expected depth ``D = sum(w z) / sum(w)`` (camera z).

Notation: d_i the target depth of sample i, D(u_i) the rendered depth at its pixel, w_i its weight.

- Sparse SfM depth (workflow A, DS-NeRF style, Deng et al. CVPR 2022):
  ``L = lambda(t) * sum_i w_i |D(u_i) - d_i| / d_i / sum_i w_i`` with DS-NeRF's weights
  ``w_i = 2 exp(-(err_i / mean err)^2)``; relative error, so the weight means the same in any SfM scale.
  ``lambda(t)`` decays exponentially from ``depth_weight`` to ``depth_weight_final`` over the run.
- Distilled static-model depth (workflow B): ``L = lambda * mean_p |D(p) - d(p)| / d(p)`` over pixels where
  the static model has depth (d > 0) and, unless ``everywhere``, the mask is static (white).

Both are ``splat.trainer`` extra losses (``(iteration, view index, RenderOutput, params) -> scalar``) with
``needs_depth = True`` so the trainer renders "RGB+D".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.config import option
from splatworks.errors import UserError


@dataclass
class DepthConfig:
    """Depth supervision of static training (``splatworks train --depth sparse``)."""

    depth: str = option("none", "Depth supervision: 'sparse' = SfM points' depth (sparse_depth.npz or "
                        "colmap_depth.npy next to the scene).", choices=("none", "sparse"))
    depth_file: str = option("", "Sparse depth file (default: sparse_depth.npz / colmap_depth.npy in the scene "
                             "folder).")
    depth_weight: float = option(0.2, "Weight of the depth loss at the start of training.")
    depth_weight_final: float = option(0.02, "Weight at the end (exponential decay in between).")
    depth_outlier: float = option(0.0, "Leave out samples whose rendered depth is off by more than this fraction of "
                                  "their target (|D - d| / d; wrong matches of few or far-apart views), 0 = use all.")


def sample_depth(depth: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of an (H, W) depth map at (M, 2) pixel coordinates x, y (pixel centres at +0.5)."""
    h, w = depth.shape
    gx = coords[:, 0] / w * 2 - 1   # align_corners=False: -1 and 1 are the outer pixel edges
    gy = coords[:, 1] / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
    return torch.nn.functional.grid_sample(depth[None, None], grid, mode="bilinear", padding_mode="border",
                                           align_corners=False).view(-1)


class SparseDepthLoss:
    """Workflow A as a trainer extra loss over the training views of ``cameras`` (held-out views never appear).

    Args:
        cameras: the trainer's training cameras, in its order (``scene.train_cameras``).
        samples: image name -> {"coords" (M, 2), "depths" (M,), "weights" (M,)} (see depth.files).
        iterations: run length, for the weight schedule.
    """

    needs_depth = True

    def __init__(self, cameras: list[Any], samples: dict[str, dict[str, np.ndarray]], weight: float,
                 weight_final: float, iterations: int, device: torch.device | str = "cpu", outlier: float = 0.0) -> None:
        self.sizes = [(c.width, c.height) for c in cameras]
        self.outlier = outlier
        self.weight, self.weight_final, self.iterations = weight, weight_final, max(1, iterations)
        self.views: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = []
        for cam in cameras:
            s = samples.get(cam.name)
            if s is None or len(s["depths"]) == 0:
                self.views.append(None)
                continue
            ok = np.isfinite(s["depths"]) & (s["depths"] > 0) & (s["weights"] > 0)
            t = lambda a: torch.as_tensor(np.asarray(a)[ok], dtype=torch.float32, device=device)  # noqa: E731
            self.views.append((t(s["coords"]), t(s["depths"]), t(s["weights"])))
        self.num_samples = sum(len(v[1]) for v in self.views if v is not None)

    def weight_at(self, iteration: int) -> float:
        if self.weight_final <= 0 or self.weight <= 0:
            return self.weight
        f = min(max(iteration / self.iterations, 0.0), 1.0)
        return self.weight * math.exp(f * math.log(self.weight_final / self.weight))

    def __call__(self, iteration: int, idx: int, out: Any, params: Any) -> torch.Tensor:
        v = self.views[idx]
        if v is None or out.depths is None:
            return out.colors.sum() * 0.0
        coords, target, w = v
        depth = out.depths[0, ..., 0]
        h, wd = depth.shape
        cw, ch = self.sizes[idx]
        xy = coords * torch.tensor([wd / cw, h / ch], device=coords.device)  # training may downscale images
        pred = sample_depth(depth, xy)
        rel = (pred - target).abs() / target
        if self.outlier > 0:
            w = w * (rel.detach() < self.outlier)
        return self.weight_at(iteration) * (rel * w).sum() / w.sum().clamp_min(1e-12)


class DepthDistillation:
    """Workflow B: distilled static-model depth maps, one (H, W) tensor per training camera (0 = unknown)."""

    needs_depth = True

    def __init__(self, maps: list[torch.Tensor], weight: float, everywhere: bool = False) -> None:
        self.maps, self.weight, self.everywhere = maps, weight, everywhere

    def loss(self, depth: torch.Tensor, cam: int, static: torch.Tensor | None) -> torch.Tensor:
        """Loss for the rendered (H, W) ``depth`` of training camera ``cam``; ``static`` (H, W) bool mask."""
        target = self.maps[cam]
        valid = target > 0
        if not self.everywhere and static is not None:
            valid = valid & static
        if not bool(valid.any()):
            return depth.sum() * 0.0
        return self.weight * ((depth[valid] - target[valid]).abs() / target[valid]).mean()


def sparse_depth_loss_for(scene: Any, scene_dir: str | Path, cfg: DepthConfig, iterations: int,
                          device: torch.device | str = "cpu") -> SparseDepthLoss | None:
    """The extra loss for ``splatworks train --depth sparse`` (None for ``--depth none``)."""
    from splatworks.depth.files import load_sparse_depth

    if cfg.depth == "none":
        return None
    if cfg.depth != "sparse":
        raise UserError(f"unknown --depth {cfg.depth!r}; use none or sparse")
    samples = load_sparse_depth(cfg.depth_file or scene_dir, [c.name for c in scene.cameras])
    loss = SparseDepthLoss(scene.train_cameras, samples, cfg.depth_weight, cfg.depth_weight_final, iterations,
                           device, outlier=cfg.depth_outlier)
    if loss.num_samples == 0:
        raise UserError("--depth sparse: no depth samples for any training image; check that the depth file belongs "
                        "to this scene (names must match)")
    return loss


def median_abs_rel_error(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """median(|pred - truth| / truth) over pixels with truth > 0 (and ``valid``)."""
    ok = (truth > 0) & np.isfinite(truth) & np.isfinite(pred)
    if valid is not None:
        ok &= valid
    if not ok.any():
        return float("nan")
    return float(np.median(np.abs(pred[ok] - truth[ok]) / truth[ok]))
