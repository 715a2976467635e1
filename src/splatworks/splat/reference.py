"""Pure-PyTorch reference rasterizer for 3D Gaussians (differentiable by autograd, CPU or GPU, tile-free).

Written from the 3D Gaussian Splatting equations (Kerbl et al. 2023) and matched to gsplat's conventions so that
the two backends agree (``tests/test_splat_parity.py``):

- Projection (EWA splatting, Zwicker et al. 2001): ``Sigma' = J W Sigma W^T J^T + 0.3 I`` where W is the
  world-to-camera rotation, J the Jacobian of the pinhole projection at the camera-space mean (whose x/y are
  clamped to 1.3x the field of view, as in 3DGS), and 0.3 px^2 the low-pass filter.
- Culling: depth > ``near_plane``; radius = ceil(3.33 sigma) per image axis; footprint must touch the image.
- Colour: real SH up to ``sh_degree`` evaluated along (mean - camera centre), ``rgb = max(0, SH + 0.5)``.
- Compositing, front to back in depth order: ``alpha_i = min(0.999, o_i exp(-q_i/2))`` where q is the Mahalanobis
  distance with the conic; contributions with ``alpha < 1/255`` are skipped and a pixel stops before the
  Gaussian that would bring its transmittance to <= 1e-4 (gsplat's cut-offs).
  ``C = sum_i c_i alpha_i T_i + T_final * background`` with ``T_i = prod_{j<i} (1 - alpha_j)``.

Pixel centres are at +0.5 (the top-left pixel's centre is (0.5, 0.5)). Shapes: N Gaussians, C cameras, K SH bases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EPS2D = 0.3


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz (any norm) -> (N, 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T, (N, 3, 3), from (N, 4) wxyz quaternions and (N, 3) linear scales."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics (3DGS's basis and signs).

    Args:
        sh: (..., K, 3) coefficients, K >= (degree + 1)^2.
        dirs: (..., 3) view directions (normalised here).
    Returns:
        (..., 3) ``SH(dir)`` (before the +0.5 offset).
    """
    out = SH_C0 * sh[..., 0, :]
    if degree < 1:
        return out
    d = torch.nn.functional.normalize(dirs, dim=-1)
    x, y, z = (d[..., i:i + 1] for i in range(3))
    out = out - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    if degree < 2:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * sh[..., 4, :] + SH_C2[1] * yz * sh[..., 5, :]
           + SH_C2[2] * (2 * zz - xx - yy) * sh[..., 6, :] + SH_C2[3] * xz * sh[..., 7, :]
           + SH_C2[4] * (xx - yy) * sh[..., 8, :])
    if degree < 3:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * sh[..., 9, :] + SH_C3[1] * xy * z * sh[..., 10, :]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :] + SH_C3[5] * z * (xx - yy) * sh[..., 14, :]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15, :])


@dataclass
class Projected:
    """Per-camera screen-space Gaussians. Shapes (C, N, ...)."""

    means2d: torch.Tensor   # (C, N, 2) pixels
    conics: torch.Tensor    # (C, N, 3) upper triangle (a, b, c) of the inverse 2D covariance
    depths: torch.Tensor    # (C, N) camera-space z
    radii: torch.Tensor     # (C, N, 2) int32 pixels per axis, 0 = culled


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, viewmats: torch.Tensor,
            Ks: torch.Tensor, width: int, height: int, near_plane: float = 0.01,
            far_plane: float = 1e10, opacities: torch.Tensor | None = None) -> Projected:
    """EWA projection of N Gaussians into C pinhole cameras (``viewmats`` world-to-camera, OpenCV axes).

    With ``opacities`` (N,) the footprint is opacity-aware, as in gsplat: the box reaches where ``alpha`` falls
    to 1/255 (at most 3.33 sigma), and Gaussians fainter than 1/255 are culled.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]                     # (C, 3, 3), (C, 3)
    p_cam = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]     # (C, N, 3)
    cov_cam = R[:, None] @ covariance_3d(quats, scales)[None] @ R[:, None].transpose(-1, -2)  # (C, N, 3, 3)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]                      # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tx, ty, tz = p_cam.unbind(-1)
    # Clamp the Jacobian's evaluation point to 1.3x the frustum (3DGS): far off-screen splats stay bounded.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    safe_z = torch.where(tz.abs() < 1e-8, torch.full_like(tz, 1e-8), tz)
    jx = safe_z * torch.minimum(torch.maximum(tx / safe_z, -lim_xn), lim_xp)
    jy = safe_z * torch.minimum(torch.maximum(ty / safe_z, -lim_yn), lim_yp)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / safe_z, zero, -fx * jx / safe_z ** 2,
                     zero, fy / safe_z, -fy * jy / safe_z ** 2], dim=-1).reshape(*tz.shape, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    cov2d = cov2d + EPS2D * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * tx / safe_z + cx, fy * ty / safe_z + cy], dim=-1)
    with torch.no_grad():
        extend = torch.full_like(tz, 3.33)
        valid = (tz > near_plane) & (tz < far_plane) & ((a * c - b * b) > 0)
        if opacities is not None:
            op = opacities.detach()[None, :].expand_as(tz)
            extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)))
            valid = valid & (op >= ALPHA_MIN)
        radius = torch.stack([torch.ceil(extend * a.sqrt()), torch.ceil(extend * c.sqrt())], dim=-1)
        inside = ((means2d[..., 0] + radius[..., 0] > 0) & (means2d[..., 0] - radius[..., 0] < width)
                  & (means2d[..., 1] + radius[..., 1] > 0) & (means2d[..., 1] - radius[..., 1] < height))
        radii = torch.where((valid & inside)[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=tz, radii=radii)


def composite(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, features: torch.Tensor,
              radii: torch.Tensor, width: int, height: int, tile: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of M depth-sorted Gaussians of one camera, tile by tile.

    Args:
        means2d: (M, 2) pixel positions; conics: (M, 3); opacities: (M,); features: (M, D) per-Gaussian values
            (colours, optionally depth); radii: (M, 2) footprint in pixels. Sorted near to far.
        tile: tile side in pixels; each tile composites only the Gaussians whose footprint box touches it.
    Returns:
        accumulated features (H, W, D) (without background) and alpha (H, W, 1).
    """
    dev, dtype = means2d.device, means2d.dtype
    D = features.shape[-1]
    with torch.no_grad():
        x0 = (means2d[:, 0] - radii[:, 0]).detach()
        x1 = (means2d[:, 0] + radii[:, 0]).detach()
        y0 = (means2d[:, 1] - radii[:, 1]).detach()
        y1 = (means2d[:, 1] + radii[:, 1]).detach()
    rows_f, rows_a = [], []
    for ty in range(0, height, tile):
        th = min(tile, height - ty)
        band = (y1 > ty) & (y0 < ty + th)
        cols_f, cols_a = [], []
        for tx in range(0, width, tile):
            tw = min(tile, width - tx)
            sel = (band & (x1 > tx) & (x0 < tx + tw)).nonzero().squeeze(-1)
            if sel.numel() == 0:
                cols_f.append(torch.zeros(th, tw, D, device=dev, dtype=dtype))
                cols_a.append(torch.zeros(th, tw, 1, device=dev, dtype=dtype))
                continue
            ys = torch.arange(ty, ty + th, device=dev, dtype=dtype) + 0.5
            xs = torch.arange(tx, tx + tw, device=dev, dtype=dtype) + 0.5
            py, px = torch.meshgrid(ys, xs, indexing="ij")
            mu, con = means2d[sel], conics[sel]
            dx = px.reshape(-1, 1) - mu[None, :, 0]                           # (P, M)
            dy = py.reshape(-1, 1) - mu[None, :, 1]
            sigma = 0.5 * (con[None, :, 0] * dx * dx + con[None, :, 2] * dy * dy) + con[None, :, 1] * dx * dy
            alpha = torch.clamp_max(opacities[sel][None, :] * torch.exp(-sigma), ALPHA_MAX)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
            trans_incl = torch.cumprod(1 - alpha, dim=1)
            trans_excl = torch.cat([torch.ones_like(trans_incl[:, :1]), trans_incl[:, :-1]], dim=1)
            # gsplat stops *before* the Gaussian that brings transmittance to <= T_MIN; T is monotone: a mask.
            weights = alpha * trans_excl * (trans_incl.detach() > T_MIN).to(dtype)   # (P, M)
            cols_f.append((weights @ features[sel]).reshape(th, tw, D))
            cols_a.append(weights.sum(dim=1).reshape(th, tw, 1))
        rows_f.append(torch.cat(cols_f, dim=1))
        rows_a.append(torch.cat(cols_a, dim=1))
    return torch.cat(rows_f, dim=0), torch.cat(rows_a, dim=0)


def rasterize(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
              sh: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
              sh_degree: int, backgrounds: torch.Tensor | None = None, with_depth: bool = False,
              near_plane: float = 0.01, depth_moments: int = 1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Projected]:
    """Render C images of N Gaussians (activated values: unit-free quats, linear scales, opacities in (0, 1)).

    Args:
        sh: (N, K, 3) SH coefficients; viewmats: (C, 4, 4) world-to-camera (OpenCV); Ks: (C, 3, 3).
        backgrounds: (C, 3) colour behind the Gaussians (None: black).
        with_depth: also return expected depth sum(w z) / sum(w).
        depth_moments: 2 adds a second depth channel, E[z^2] = sum(w z^2) / sum(w) (depth supervision of the
            ray-termination distribution, ``depth.losses``).
    Returns:
        colors (C, H, W, 3), alphas (C, H, W, 1), depths (C, H, W, depth_moments) or None, and the projection
        (means2d (C, N, 2) is the tensor whose gradient densification reads).
    """
    proj = project(means, quats, scales, viewmats, Ks, width, height, near_plane=near_plane, opacities=opacities)
    campos = -torch.einsum("cji,cj->ci", viewmats[:, :3, :3], viewmats[:, :3, 3])   # (C, 3) = -R^T t
    colors_out, alphas_out, depths_out = [], [], []
    for ci in range(viewmats.shape[0]):
        vis = (proj.radii[ci] > 0).all(dim=-1).nonzero().squeeze(-1)
        order = vis[torch.argsort(proj.depths[ci, vis].detach())]
        rgb = eval_sh(sh[order], means[order] - campos[ci], sh_degree)
        feats = torch.clamp_min(rgb + 0.5, 0.0)
        if with_depth:
            z = proj.depths[ci, order, None]
            feats = torch.cat([feats, z, z * z] if depth_moments == 2 else [feats, z], dim=-1)
        acc, alpha = composite(proj.means2d[ci, order], proj.conics[ci, order], opacities[order], feats,
                               proj.radii[ci, order], width, height)
        img = acc[..., :3]
        if backgrounds is not None:
            img = img + (1 - alpha) * backgrounds[ci]
        colors_out.append(img)
        alphas_out.append(alpha)
        if with_depth:
            depths_out.append(acc[..., 3:] / alpha.clamp_min(1e-10))
    depths = torch.stack(depths_out) if with_depth else None
    return torch.stack(colors_out), torch.stack(alphas_out), depths, proj
