"""Volume rendering of the mixed voxels, with occupancy-based empty-space skipping.

Per ray: S samples between its near and far bound (uniform in depth for box scenes, uniform in disparity for
contracted ones); samples outside the grid or in empty occupancy cells are skipped before any field is queried;
the rest are routed by the variance field: ``V(x) > dynamic_threshold`` -> dynamic branch at the ray's time,
otherwise the static branch. Colour is decoded only where the sample's weight is not negligible.

Notation: ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j)``, ``w_i = T_i alpha_i``;
``C = sum w_i c_i + (1 - sum w_i) c_bg``; expected depth ``D = sum w_i t_i + (1 - sum w_i) t_far`` (camera z,
because ray directions have unit z); rendered variance ``sum w_i V(x_i)`` (weights detached) is compared with the
pixel's temporal std. Shapes: R rays, S samples per ray, G occupancy resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from splatworks.voxels.field import MixVoxelField
from splatworks.voxels.space import SceneSpace, box_interval

# Density is per unit of grid length (the cube is 2 long); this scale makes a cell of a ~100^3 grid about as
# opaque per unit of raw density as in TensoRF.
DISTANCE_SCALE = 25.0
WEIGHT_SKIP = 1e-4


@dataclass
class RenderOptions:
    samples_per_ray: int
    dynamic_threshold: float
    split_active: bool
    background: torch.Tensor  # (3,)
    stratified: bool = False


def sample_depths(space: SceneSpace, t_near: torch.Tensor, t_far: torch.Tensor, n: int, stratified: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample depths (R, S) and interval lengths (R, S) in camera-z units."""
    u = (torch.arange(n, device=t_near.device, dtype=torch.float32) + 0.5) / n
    u = u.expand(t_near.shape[0], n)
    if stratified:
        u = u + (torch.rand_like(u) - 0.5) / n
    if space.kind == "box":
        t = t_near[:, None] + (t_far - t_near)[:, None] * u
        dt = ((t_far - t_near) / n)[:, None].expand_as(t)
    else:  # uniform in disparity: dense near the rig, sparse towards infinity
        inv_n, inv_f = 1.0 / t_near[:, None], 1.0 / t_far[:, None]
        t = 1.0 / (inv_n * (1 - u) + inv_f * u)
        edges = 1.0 / (inv_n * (1 - (u + 0.5 / n)) + inv_f * (u + 0.5 / n))
        lower = 1.0 / (inv_n * (1 - (u - 0.5 / n)) + inv_f * (u - 0.5 / n))
        dt = edges - lower
    return t, dt.contiguous()


def occupancy_lookup(occ: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """occ (G, G, G) bool indexed [ix, iy, iz]; x (P, 3) in [-1, 1] -> (P,) bool."""
    g = occ.shape[0]
    idx = ((x + 1.0) * 0.5 * g).long().clamp_(0, g - 1)
    return occ[idx[:, 0], idx[:, 1], idx[:, 2]]


def render_rays(field: MixVoxelField, space: SceneSpace, occ: torch.Tensor | None, rays_o: torch.Tensor,
                rays_d: torch.Tensor, times: torch.Tensor, opts: RenderOptions) -> dict[str, torch.Tensor]:
    """Render R rays at times (R,) in [0, 1].

    Returns rgb (R, 3), depth (R,) camera z, acc (R,) opacity, variance (R,) rendered voxel std,
    dynamic_share (R,) weight share of dynamic samples, n_evaluated (scalar) samples that reached the fields.
    """
    R, S = rays_o.shape[0], opts.samples_per_ray
    t_near, t_far = box_interval(space, rays_o, rays_d)
    t, dt = sample_depths(space, t_near, t_far, S, opts.stratified)
    hit = (t_far > t_near)[:, None].expand(R, S)
    xyz = rays_o[:, None] + t[..., None] * rays_d[:, None]                      # (R, S, 3) world
    x = space.normalize(xyz).reshape(-1, 3)
    keep = hit.reshape(-1) & (x.abs() <= 1.0).all(-1)
    if occ is not None:
        keep_idx = keep.nonzero().squeeze(-1)
        keep[keep_idx] = occupancy_lookup(occ, x[keep_idx])
    idx = keep.nonzero().squeeze(-1)
    xs = x[idx]
    ray_of = idx // S
    ts = times[ray_of]

    variance = field.voxel_variance(xs)
    dyn = (variance.detach() > opts.dynamic_threshold) if opts.split_active else torch.zeros_like(variance,
                                                                                                  dtype=torch.bool)
    sigma = torch.zeros(R * S, device=x.device)
    dyn_idx = dyn.nonzero().squeeze(-1)
    sta_idx = (~dyn).nonzero().squeeze(-1)
    sigma_k = torch.zeros_like(variance)
    if len(sta_idx):
        sigma_k = sigma_k.index_put((sta_idx,), field.static_sigma(xs[sta_idx]))
    if len(dyn_idx):
        sd, _ = field.dynamic_sigma_rgb(xs[dyn_idx], ts[dyn_idx], None)
        sigma_k = sigma_k.index_put((dyn_idx,), sd)
    sigma = sigma.index_put((idx,), sigma_k).view(R, S)

    length = space.grid_length(dt, rays_d, t, rays_o)
    alpha = 1.0 - torch.exp(-sigma * length * DISTANCE_SCALE)
    trans = torch.cumprod(torch.cat([torch.ones(R, 1, device=x.device), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * trans                                                       # (R, S)
    acc = weights.sum(-1)

    # colours only where the weight matters
    w_k = weights.reshape(-1)[idx]
    need = w_k.detach() > WEIGHT_SKIP
    rgb_k = torch.zeros(len(idx), 3, device=x.device)
    dirs = F.normalize(rays_d, dim=-1)
    sel_s = (need & ~dyn).nonzero().squeeze(-1)
    sel_d = (need & dyn).nonzero().squeeze(-1)
    if len(sel_s):
        rgb_k = rgb_k.index_put((sel_s,), field.static_rgb(xs[sel_s], dirs[ray_of[sel_s]]))
    if len(sel_d):
        _, rd = field.dynamic_sigma_rgb(xs[sel_d], ts[sel_d], dirs[ray_of[sel_d]])
        rgb_k = rgb_k.index_put((sel_d,), rd)
    rgb_samples = torch.zeros(R * S, 3, device=x.device).index_put((idx,), rgb_k).view(R, S, 3)

    rgb = (weights[..., None] * rgb_samples).sum(1) + (1.0 - acc)[:, None] * opts.background
    depth = (weights * t).sum(-1) + (1.0 - acc) * t_far
    var_k = torch.zeros(R * S, device=x.device).index_put((idx,), variance).view(R, S)
    rendered_var = (weights.detach() * var_k).sum(-1)
    dyn_w = torch.zeros(R * S, device=x.device).index_put((idx,), dyn.float()).view(R, S)
    return {"rgb": rgb, "depth": depth, "acc": acc, "variance": rendered_var,
            "dynamic_share": (weights.detach() * dyn_w).sum(-1), "variance_samples": variance,
            "n_evaluated": torch.tensor(len(idx))}


@torch.no_grad()
def compute_occupancy(field: MixVoxelField, res: int, n_frames: int, dynamic_threshold: float,
                      split_active: bool, threshold: float, chunk: int = 65536) -> torch.Tensor:
    """(G, G, G) bool occupancy [ix, iy, iz]: a cell is kept when its centre's opacity over one cell length
    (max over a few times for dynamic cells) exceeds ``threshold``; dilated by one cell so thin surfaces between
    centres survive. Dynamic cells are always kept: what is empty now may be filled at another time, and the
    dynamic branch must be able to grow there."""
    device = field.variance.device
    lin = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res * 2.0 - 1.0
    gx, gy, gz = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = torch.stack([gx, gy, gz], -1).reshape(-1, 3)
    sigma = torch.empty(len(pts), device=device)
    keep_dynamic = torch.zeros(len(pts), dtype=torch.bool, device=device)
    n_t = min(n_frames, 8)
    times = torch.linspace(0, 1, n_t, device=device) if n_t > 1 else torch.zeros(1, device=device)
    for s in range(0, len(pts), chunk):
        p = pts[s:s + chunk]
        sig = field.static_sigma(p)
        if split_active:
            dyn = field.voxel_variance(p) > dynamic_threshold
            if dyn.any():
                pd = p[dyn]
                best = torch.zeros(len(pd), device=device)
                for tv in times:
                    sd, _ = field.dynamic_sigma_rgb(pd, tv.expand(len(pd)), None)
                    best = torch.maximum(best, sd)
                sig[dyn] = best
                keep_dynamic[s:s + chunk] = dyn
        sigma[s:s + chunk] = sig
    alpha = 1.0 - torch.exp(-sigma * (2.0 / res) * DISTANCE_SCALE)
    occ = ((alpha > threshold) | keep_dynamic).float().view(1, 1, res, res, res)
    return F.max_pool3d(occ, 3, stride=1, padding=1).view(res, res, res) > 0
