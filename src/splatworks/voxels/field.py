"""The mixed neural voxels: a static VM-factorised grid, a dynamic variation field and a variance field.

All fields take points in **normalised grid coordinates** ``x in [-1, 1]^3`` (see ``space.py`` for the mapping
from world space) and time ``t in [0, 1]`` (frame index / (T - 1)).

Notation (MixVoxels, ICCV 2023, Sec. 3):
- static branch: ``sigma_s(x)``, ``c_s(x, d)`` from a TensoRF vector-matrix (VM) decomposition,
  ``G(x) = sum_k  v_k^X(x) M_k^{YZ}(y, z) + v_k^Y(y) M_k^{XZ}(x, z) + v_k^Z(z) M_k^{XY}(x, y)``.
- dynamic branch (the "variation field"): per-voxel features ``f(x) in R^C`` from their own VM grids, queried by
  time through an inner product with a time query ``q(t) in R^C`` (a small MLP of the encoded time):
  ``sigma_d(x, t) = softplus(G_sigma(x) + <f_sigma(x), q_sigma(t)> + shift)``; colour features
  ``B G_c(x) + f_c(x) * q_c(t)`` go to the colour MLP with the view direction. The variation is a residual on the
  static branch at the same voxel, so a voxel that becomes dynamic starts from its time-averaged look.
- variance field ``V(x) >= 0``: a per-voxel estimate of the temporal std of what the voxel shows; voxels with
  ``V(x) > threshold`` are dynamic and use the dynamic branch, the others the static one.

Shapes: P points, R VM components, C feature channels, S grid resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from splatworks.voxels.config import MixVoxelsConfig

# The three VM pairs (line axis, plane axes): x with (y, z), y with (x, z), z with (x, y); VMGrid.forward
# hard-codes this order in its index lists.


class VMGrid(nn.Module):
    """A TensoRF vector-matrix factorised grid giving ``3 * R`` features per point.

    Planes: (3, R, S, S), lines: (3, R, S, 1). Features of the three pairs are concatenated, shape (P, 3R).
    """

    def __init__(self, components: int, res: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.components = components
        self.planes = nn.Parameter(init_scale * torch.randn(3, components, res, res))
        self.lines = nn.Parameter(init_scale * torch.randn(3, components, res, 1))

    @property
    def res(self) -> int:
        return int(self.planes.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (P, 3) in [-1, 1] -> (P, 3R) features (bilinear on planes times linear on lines)."""
        # One grid_sample over the 3 planes (as a batch of 3) and one over the 3 lines.
        # grid_sample's grid is (x = width index, y = height index): plane i is stored [.., b, a].
        plane_uv = torch.stack([x[:, [1, 0, 0]], x[:, [2, 2, 1]]], dim=-1).permute(1, 0, 2)[:, :, None]
        line_v = x.T[:, :, None, None]
        line_uv = torch.cat([torch.zeros_like(line_v), line_v], dim=-1)
        p = F.grid_sample(self.planes, plane_uv, align_corners=True)[..., 0]     # (3, R, P)
        ln = F.grid_sample(self.lines, line_uv, align_corners=True)[..., 0]      # (3, R, P)
        return (p * ln).permute(2, 0, 1).reshape(x.shape[0], -1)

    @torch.no_grad()
    def upsample(self, res: int) -> None:
        """Resample to ``res`` per axis (coarse-to-fine training); the caller rebuilds its optimiser."""
        self.planes = nn.Parameter(F.interpolate(self.planes.data, size=(res, res), mode="bilinear",
                                                 align_corners=True))
        self.lines = nn.Parameter(F.interpolate(self.lines.data, size=(res, 1), mode="bilinear",
                                                align_corners=True))

    def tv_loss(self) -> torch.Tensor:
        """Total variation of the planes (mean squared neighbour differences)."""
        p = self.planes
        return ((p[..., 1:, :] - p[..., :-1, :]) ** 2).mean() + ((p[..., :, 1:] - p[..., :, :-1]) ** 2).mean()


def positional_encoding(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """(P, D) -> (P, D * (1 + 2F)): x, sin(2^k pi x), cos(2^k pi x) for k < F."""
    out = [x]
    for k in range(frequencies):
        out += [torch.sin((2.0 ** k) * math.pi * x), torch.cos((2.0 ** k) * math.pi * x)]
    return torch.cat(out, dim=-1)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, out))


class ColorDecoder(nn.Module):
    """Features (P, C) + unit view directions (P, 3) -> RGB (P, 3) in [0, 1]."""

    def __init__(self, feature_dim: int, hidden: int, view_frequencies: int = 2) -> None:
        super().__init__()
        self.view_frequencies = view_frequencies
        self.net = _mlp(feature_dim + 3 * (1 + 2 * view_frequencies), hidden, 3)

    def forward(self, feats: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([feats, positional_encoding(dirs, self.view_frequencies)], -1)))


# Density activation: softplus(raw + shift); a negative shift starts the scene nearly empty (TensoRF's choice),
# below the occupancy threshold, so cells that no ray ever fills are skipped after the first occupancy update.
DENSITY_SHIFT = -8.0


class MixVoxelField(nn.Module):
    """Static branch + dynamic variation field + variance field, all on the same normalised cube."""

    def __init__(self, cfg: MixVoxelsConfig, n_frames: int) -> None:
        super().__init__()
        self.n_frames = n_frames
        res = cfg.grid_res_start
        # static branch
        self.static_density = VMGrid(cfg.density_components, res)
        self.static_app = VMGrid(cfg.appearance_components, res)
        self.static_basis = nn.Linear(3 * cfg.appearance_components, cfg.feature_dim, bias=False)
        self.static_color = ColorDecoder(cfg.feature_dim, cfg.hidden_dim)
        # dynamic branch: spatial features f(x) and time queries q(t)
        c = cfg.feature_dim  # the time query lives in the static colour features' space (residual, see below)
        self.dynamic_grid = VMGrid(cfg.dynamic_components, res)
        self.dynamic_basis = nn.Linear(3 * cfg.dynamic_components, 2 * c, bias=False)
        self.time_frequencies = cfg.time_frequencies
        self.time_query = _mlp(1 + 2 * cfg.time_frequencies, cfg.time_dim, 2 * c)
        self.time_dim = c
        # variance field: a small dense grid (one value per voxel), V = softplus(raw)
        vr = cfg.variance_res
        # starts at softplus(-4.5) ~ 0.011, below the default threshold, so every voxel starts static
        self.variance = nn.Parameter(torch.full((1, 1, vr, vr, vr), -4.5))

    # ---- static ---------------------------------------------------------------------------------------
    def static_sigma(self, x: torch.Tensor) -> torch.Tensor:
        """(P, 3) -> (P,) density per unit of normalised length."""
        return F.softplus(self.static_density(x).sum(-1) + DENSITY_SHIFT)

    def static_rgb(self, x: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return self.static_color(self.static_basis(self.static_app(x)), dirs)

    # ---- dynamic --------------------------------------------------------------------------------------
    def time_queries(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t: (P,) in [0, 1] -> (q_sigma, q_color), each (P, C)."""
        q = self.time_query(positional_encoding(t[:, None], self.time_frequencies))
        return q[:, :self.time_dim], q[:, self.time_dim:]

    def dynamic_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 3) -> (f_sigma, f_color), each (P, C): the per-voxel part of the variation field."""
        f = self.dynamic_basis(self.dynamic_grid(x))
        return f[:, :self.time_dim], f[:, self.time_dim:]

    def dynamic_sigma_rgb(self, x: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Density (P,) and, when ``dirs`` is given, colour (P, 3) of the dynamic branch at time t (P,).

        The variation field is a residual on the static branch's value at the same voxel:
        ``sigma_d = softplus(G_sigma(x) + <f_sigma(x), q_sigma(t)> + shift)`` and colour features
        ``B G_c(x) + f_c(x) * q_c(t)`` through the shared colour decoder. A voxel that turns dynamic therefore
        starts from what the static branch learned there (its time average) instead of from empty space."""
        f_s, f_c = self.dynamic_features(x)
        q_s, q_c = self.time_queries(t)
        sigma = F.softplus(self.static_density(x).sum(-1) + (f_s * q_s).sum(-1) + DENSITY_SHIFT)
        rgb = None
        if dirs is not None:
            rgb = self.static_color(self.static_basis(self.static_app(x)) + f_c * q_c, dirs)
        return sigma, rgb

    # ---- variance -------------------------------------------------------------------------------------
    def voxel_variance(self, x: torch.Tensor) -> torch.Tensor:
        """(P, 3) -> (P,) estimated temporal std (RGB units) of what the voxel shows."""
        g = x.view(1, -1, 1, 1, 3)  # grid_sample 3D: last dim is (x, y, z) -> (W, H, D)
        return F.softplus(F.grid_sample(self.variance, g, align_corners=True).view(-1))

    # ---- bookkeeping ----------------------------------------------------------------------------------
    def grids(self) -> list[VMGrid]:
        return [self.static_density, self.static_app, self.dynamic_grid]

    def upsample(self, res: int) -> None:
        for g in self.grids():
            g.upsample(res)

    def param_groups(self, cfg: MixVoxelsConfig) -> list[dict]:
        grid_params = [p for g in self.grids() for p in g.parameters()]
        # the variation field's decoders start near zero (a residual) and must grow fast: the grid rate
        variation = list(self.dynamic_basis.parameters()) + list(self.time_query.parameters())
        grid_params += variation
        grid_ids = {id(p) for p in grid_params} | {id(self.variance)}
        net = [p for p in self.parameters() if id(p) not in grid_ids]
        # the variance grid learns a scalar per voxel from a weak signal: a faster rate lets the split settle early
        return [{"params": grid_params, "lr": cfg.lr_grid, "base_lr": cfg.lr_grid},
                {"params": net, "lr": cfg.lr_network, "base_lr": cfg.lr_network},
                {"params": [self.variance], "lr": 3 * cfg.lr_grid, "base_lr": 3 * cfg.lr_grid}]
