"""Depth losses for every trainer, on the rendered expected depth ``D = sum(w z) / sum(w)`` (camera z).

Notation: d_i the target depth of sample i, D(u_i) the rendered depth at its pixel, w_i its weight; at a pixel the
Gaussians k along the ray have compositing weights ``a_k = alpha_k T_k`` (the ray-termination distribution) and
camera-space depths z_k.

- Sparse SfM depth (workflow A, DS-NeRF style, Deng et al. CVPR 2022):
  ``L = lambda(t) * sum_i w_i l_i / sum_i w_i`` with DS-NeRF's weights ``w_i = 2 exp(-(err_i / mean err)^2)``;
  ``lambda(t)`` decays exponentially from ``depth_weight`` to ``depth_weight_final`` over the run. Per sample
  (``--depth-loss``), both relative, so the weight means the same in any SfM scale:
  - ``expected``: ``l = |D - d| / d``, on the expected depth only: a floater in front plus surface behind can
    keep D right and pay nothing.
  - ``termination``: DS-NeRF's idea (rays should terminate at the SfM depth) for Gaussians: the expected squared
    relative distance of the termination distribution to d,
    ``l = sum_k a_k (z_k - d)^2 / d^2 / sum_k a_k = (E[z^2] - 2 d E[z] + d^2) / d^2``, closed form from the
    rendered E[z] and E[z^2] (``render(mode="RGB+D2")``): every Gaussian far from d pays by its weight, a floater
    included, whatever the mean.
  - ``both``: termination + expected.
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
from splatworks.scene.pixels import project_to_pixels


@dataclass
class DepthConfig:
    """Depth supervision of static training (``splatworks train --depth sparse``)."""

    depth: str = option("none", "Depth supervision: 'sparse' = SfM points' depth (sparse_depth.npz or "
                        "colmap_depth.npy next to the scene).", choices=("none", "sparse"))
    depth_file: str = option("", "Sparse depth file (default: sparse_depth.npz / colmap_depth.npy in the scene "
                             "folder).")
    depth_weight: float = option(0.2, "Weight of the depth loss at the start of training.")
    depth_weight_final: float = option(0.02, "Weight at the end (exponential decay in between).")
    depth_loss: str = option("expected", "Sparse depth loss per sample: 'expected' = L1 of the rendered expected "
                             "depth's relative error; 'termination' = expected squared relative distance of the "
                             "ray-termination distribution to the target (DS-NeRF style: floaters in front pay); "
                             "'both' = their sum.", choices=("expected", "termination", "both"))
    depth_radius: int = option(0, "Also apply each sample to the pixels within this many pixels of it (at the "
                               "image's stored size; weight exp(-r^2 / 2 R^2)), where the render is opaque (alpha > "
                               "0.5): a surface's depth is locally smooth, and one pixel per point is sparse. 0 = "
                               "the sample pixels only (DS-NeRF).")
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


def termination_loss(mean: torch.Tensor, mean_sq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sum_k a_k (z_k - d)^2 / d^2 / sum_k a_k`` from the termination distribution's moments.

    Args:
        mean: (M,) E[z]; mean_sq: (M,) E[z^2] (rendered, normalised by the accumulated alpha); target: (M,) d > 0.
    Returns:
        (M,) expected squared relative depth error, >= 0 (clamped: float round-off can take it below).
    """
    return ((mean_sq - 2 * target * mean) / (target * target) + 1).clamp_min(0)


class SparseDepthLoss:
    """Workflow A as a trainer extra loss over the training views of ``cameras`` (held-out views never appear).

    Args:
        cameras: the trainer's training cameras, in its order (``scene.train_cameras``).
        samples: image name -> {"coords" (M, 2), "depths" (M,), "weights" (M,)} (see depth.files).
        iterations: run length, for the weight schedule.
        kind: "expected", "termination" or "both" (see the module docstring).
        radius: also apply each sample to its neighbours within ``radius`` pixels (where the render is opaque).
    """

    needs_depth = True

    def __init__(self, cameras: list[Any], samples: dict[str, dict[str, np.ndarray]], weight: float,
                 weight_final: float, iterations: int, device: torch.device | str = "cpu", outlier: float = 0.0,
                 kind: str = "expected", radius: int = 0) -> None:
        if kind not in ("expected", "termination", "both"):
            raise UserError(f"unknown --depth-loss {kind!r}; use expected, termination or both")
        self.kind = kind
        # The trainer renders what the loss reads: E[z] only, or E[z] and E[z^2].
        self.render_mode = "RGB+D" if kind == "expected" else "RGB+D2"
        self.sizes = [(c.width, c.height) for c in cameras]
        self.outlier = outlier
        self.radius = max(0, int(radius))
        r = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32, device=device)
        offsets = torch.cartesian_prod(r, r) if self.radius else torch.zeros(1, 2, device=device)   # (P, 2) px
        self.offsets = offsets
        self.kernel = torch.exp(-(offsets ** 2).sum(-1) / (2 * max(self.radius, 1) ** 2))            # (P,)
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
        if self.radius:
            p = len(self.kernel)
            coords = (coords[:, None, :] + self.offsets[None]).reshape(-1, 2)
            target = target[:, None].expand(-1, p).reshape(-1)
            w = (w[:, None] * self.kernel[None]).reshape(-1)
        xy = coords * torch.tensor([wd / cw, h / ch], device=coords.device)  # training may downscale images
        if self.radius:  # neighbours only count on the object (an edge's neighbour may see the background)
            w = w * (sample_depth(out.alphas[0, ..., 0].detach(), xy) > 0.5)
        pred = sample_depth(depth, xy)
        rel = (pred - target).abs() / target
        if self.outlier > 0:
            w = w * (rel.detach() < self.outlier)
        if self.kind == "expected":
            per_sample = rel
        else:
            if getattr(out, "depths2", None) is None:
                raise ValueError("--depth-loss termination needs the render's E[z^2] (render mode 'RGB+D2')")
            per_sample = termination_loss(pred, sample_depth(out.depths2[0, ..., 0], xy), target)
            if self.kind == "both":
                per_sample = per_sample + rel
        return self.weight_at(iteration) * (per_sample * w).sum() / w.sum().clamp_min(1e-12)


class DepthDistillation:
    """Workflow B: distilled static-model depth maps, one (H, W) tensor per training camera (0 = unknown)."""

    needs_depth = True

    def __init__(self, maps: list[torch.Tensor], weight: float, everywhere: bool = False) -> None:
        self.maps, self.weight, self.everywhere = maps, weight, everywhere

    def loss(self, depth: torch.Tensor, cam: int, static: torch.Tensor | None,
             window: tuple[slice, slice] | None = None) -> torch.Tensor:
        """Loss for the rendered (H, W) ``depth`` of training camera ``cam``; ``static`` (H, W) bool mask.

        ``window`` (rows, columns): ``depth`` and ``static`` cover only that part of the view (a cropped render).
        """
        target = self.maps[cam] if window is None else self.maps[cam][window]
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
                           device, outlier=cfg.depth_outlier, kind=cfg.depth_loss,
                           radius=cfg.depth_radius)
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


class FreeSpaceLoss:
    """Free-space carving from dense depth maps: an opacity penalty on Gaussians whose centre lies in front of a
    view's known surface (in the space that view sees through), as a trainer extra loss.

    A centre at camera depth ``z`` over a pixel with known depth ``d`` is in free space when
    ``z < (1 - margin) d``; ``d`` is the smallest depth in the pixel's 3x3 neighbourhood, 0 when any of it is
    unknown (so depth edges and holes never vote). A Gaussian voted free by at least ``min_views`` views pays
    ``weight * mean(sigmoid(opacity))`` over those Gaussians; 3DGS-MCMC then relocates the ones that fade.
    Typical use: frame 0 of a rig with plane-sweep depth (``sfm.mvs``), whose few views leave floaters in front of
    the surfaces that only a held-out camera sees.

    Args:
        depths: (V, H, W) camera-z depth maps (0 = unknown), any resolution.
        viewmats: (V, 4, 4) world-to-camera, OpenCV axes. Ks: (V, 3, 3) intrinsics at the maps' resolution.
        every: recompute the free-space set every this many iterations (and when the Gaussian count changes).
    """

    needs_depth = False
    render_mode = "RGB"

    def __init__(self, depths: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, weight: float,
                 margin: float = 0.05, min_views: int = 2, every: int = 50) -> None:
        near = -torch.nn.functional.max_pool2d(-torch.where(depths > 0, depths, torch.full_like(depths, -1.0))[:, None],
                                               3, stride=1, padding=1)[:, 0]
        self.depths = torch.where(near > 0, near, torch.zeros_like(near))   # any unknown neighbour -> unknown
        self.viewmats, self.Ks = viewmats, Ks
        self.weight, self.margin, self.min_views, self.every = weight, margin, min_views, max(1, every)
        self._free: torch.Tensor | None = None
        self._at = -1

    @torch.no_grad()
    def free_space(self, means: torch.Tensor) -> torch.Tensor:
        """(N,) bool: centres voted into free space by at least ``min_views`` views."""
        votes = torch.zeros(len(means), dtype=torch.int32, device=means.device)
        _, h, w = self.depths.shape
        for v in range(len(self.depths)):
            col, row, z, inside = project_to_pixels(means, self.viewmats[v], self.Ks[v], w, h)
            d = self.depths[v][row, col]
            votes += (inside & (d > 0) & (z < (1 - self.margin) * d)).int()
        return votes >= self.min_views

    def __call__(self, iteration: int, idx: int, out: Any, params: Any) -> torch.Tensor:
        opacities = params["opacities"]
        if self._free is None or len(self._free) != len(opacities) or iteration - self._at >= self.every:
            self._free, self._at = self.free_space(params["means"].detach()), iteration
        free = self._free.to(opacities.dtype)
        return self.weight * (torch.sigmoid(opacities) * free).sum() / free.sum().clamp_min(1.0)


def free_space_loss_from_file(path: str | Path, camera_names: list[str], weight: float, margin: float = 0.05,
                              min_views: int = 2, device: torch.device | str = "cpu") -> FreeSpaceLoss | None:
    """A FreeSpaceLoss from ``sfm.mvs.write_depth_maps``' ``.npy`` + ``.json`` (cameras at the maps' resolution),
    restricted to ``camera_names`` (a map's camera name may carry an image suffix: ``cam02/000000.png``); None when
    the file has none of them."""
    import json

    path = Path(path)
    depth = np.load(path)
    cams = json.loads(path.with_suffix(".json").read_text())["cameras"]
    wanted = set(camera_names)
    rows = [i for i, c in enumerate(cams) if c["name"].split("/")[0] in wanted]
    if not rows:
        return None
    from splatworks.scene.camera import Camera

    sel = [Camera.from_dict(cams[i]) for i in rows]
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return FreeSpaceLoss(t(depth[rows]), t(np.stack([c.world_to_camera for c in sel])), t(np.stack([c.K for c in sel])),
                         weight, margin, min_views)
