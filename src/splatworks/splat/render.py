"""One rendering function over two backends: gsplat (CUDA) and the pure-PyTorch reference (any device).

Conventions at this boundary: ``viewmats`` are world-to-camera with OpenCV axes (x right, y down, z forward),
``Ks`` pinhole intrinsics in pixels with pixel centres at +0.5, quaternions wxyz. Shapes: N Gaussians,
C cameras, H x W pixels, K SH bases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from splatworks.splat import reference

Mode = Literal["RGB", "RGB+D", "RGB+D2"]
Backend = Literal["auto", "gsplat", "torch"]

# Camera-space z (scene units) below which a Gaussian's centre is culled: gsplat's own default for
# ``rasterization(near_plane=...)``, and the reference rasterizer's.
DEFAULT_NEAR_PLANE = 0.01


@dataclass
class RenderInfo:
    """What densification and later losses need from a render (typed, instead of gsplat's string-keyed dict).

    Attributes:
        means2d: projected centres whose ``.grad`` densification reads: (nnz, 2) when ``packed`` else (C, N, 2).
        radii: int32 footprint in pixels per axis, (nnz, 2) or (C, N, 2); 0 = not drawn.
        gaussian_ids: (nnz,) Gaussian of each packed row (None when not packed).
        camera_ids: (nnz,) camera of each packed row (None when not packed).
        depths: camera-space z of each projected Gaussian, (nnz,) or (C, N).
        packed: layout of the per-(camera, Gaussian) tensors above.
        width, height, n_cameras: image size in pixels and number of cameras rendered.
        backend: "gsplat" or "torch".
        raw: the backend's own dict (gsplat's ``meta``), for gsplat's strategies.
    """

    means2d: torch.Tensor
    radii: torch.Tensor
    gaussian_ids: torch.Tensor | None
    camera_ids: torch.Tensor | None
    depths: torch.Tensor
    packed: bool
    width: int
    height: int
    n_cameras: int
    backend: str
    raw: dict[str, Any]

    def visible(self, n: int) -> torch.Tensor:
        """(N,) bool: Gaussians drawn in at least one of the cameras."""
        if self.packed and self.gaussian_ids is not None:
            mask = torch.zeros(n, dtype=torch.bool, device=self.radii.device)
            mask[self.gaussian_ids] = True
            return mask
        return (self.radii > 0).all(dim=-1).any(dim=0)


@dataclass
class RenderOutput:
    """colors (C, H, W, 3) in [0, 1]-ish (not clamped), alphas (C, H, W, 1), depths (C, H, W, 1) expected
    camera-space z (``mode="RGB+D"`` or ``"RGB+D2"``) or None, :class:`RenderInfo`, and depths2 (C, H, W, 1) the
    expected squared depth E[z^2] = sum(w z^2) / sum(w) (``mode="RGB+D2"``, else None)."""

    colors: torch.Tensor
    alphas: torch.Tensor
    depths: torch.Tensor | None
    info: RenderInfo
    depths2: torch.Tensor | None = None


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("the gsplat backend needs the Gaussians on a CUDA device; use backend='torch' on CPU")
    return backend


def _background(background: torch.Tensor | None, C: int, device: torch.device) -> torch.Tensor | None:
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    return bg.expand(C, 3) if bg.dim() == 1 else bg


def render(params: dict[str, torch.Tensor], viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
           sh_degree: int, background: torch.Tensor | None = None, mode: Mode = "RGB",
           backend: Backend = "auto", packed: bool = True, absgrad: bool = False,
           antialiased: bool = False, near_plane: float = DEFAULT_NEAR_PLANE) -> RenderOutput:
    """Render C views of the Gaussians in ``params`` (raw parameters, see ``splat.gaussians``).

    Args:
        params: dict with means (N, 3), quats (N, 4) wxyz, scales (N, 3) log, opacities (N,) logits,
            sh0 (N, 1, 3), shN (N, K-1, 3).
        viewmats: (C, 4, 4) world-to-camera, OpenCV axes. Ks: (C, 3, 3) intrinsics in pixels.
        sh_degree: SH bands used (<= the model's degree).
        background: (3,) or (C, 3) RGB behind the Gaussians (None: black).
        mode: "RGB", or "RGB+D" to also render the expected depth ``sum(w z) / sum(w)``, or "RGB+D2" for the
            expected depth and the expected squared depth ``sum(w z^2) / sum(w)`` (depth.losses' termination loss).
        backend: "auto" (gsplat on CUDA when installed, else the torch reference), "gsplat" or "torch".
        packed, absgrad, antialiased: gsplat options (packed sparse layout, absolute 2D gradients for
            densification, Mip-Splatting's compensation); the torch backend ignores them (never packed).
        near_plane: near clipping plane, a camera-space z in scene units (OpenCV axes: z forward): a Gaussian
            whose centre is nearer than this to a camera's image plane is not drawn in that camera. Both backends
            cull by the centre only, so a splat straddling the plane is drawn whole or not at all. Default 0.01,
            gsplat's own.
    """
    means = params["means"]
    C = viewmats.shape[0]
    which = resolve_backend(backend, means.device)
    bg = _background(background, C, means.device)
    sh = torch.cat([params["sh0"], params["shN"]], dim=1)
    quats, scales = params["quats"], torch.exp(params["scales"])
    opacities = torch.sigmoid(params["opacities"])
    if which == "gsplat" and mode == "RGB+D2":
        return _render_gsplat_moments(means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree,
                                      bg, packed, absgrad, antialiased, near_plane)
    if which == "gsplat":
        from gsplat import rasterization

        render_mode = "RGB+ED" if mode == "RGB+D" else "RGB"
        # The background is composited here (C = sum w c + (1 - alpha) bg, as gsplat does): gsplat 1.5.3's
        # packed path rejects per-camera backgrounds (it checks them against the packed tensors' shape).
        colors, alphas, meta = rasterization(
            means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree=sh_degree,
            render_mode=render_mode, packed=packed, absgrad=absgrad, near_plane=near_plane,
            rasterize_mode="antialiased" if antialiased else "classic")
        depths = colors[..., 3:4] if mode == "RGB+D" else None
        colors = colors[..., :3]
        if bg is not None:
            colors = colors + (1 - alphas) * bg[:, None, None, :]
        return RenderOutput(colors=colors, alphas=alphas, depths=depths, info=_gsplat_info(meta, packed, width,
                                                                                            height, C))

    colors, alphas, depths, proj = reference.rasterize(
        means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree, backgrounds=bg,
        with_depth=(mode != "RGB"), near_plane=near_plane, depth_moments=2 if mode == "RGB+D2" else 1)
    raw = {"means2d": proj.means2d, "radii": proj.radii, "gaussian_ids": None, "width": width, "height": height,
           "n_cameras": C, "depths": proj.depths}
    info = RenderInfo(means2d=proj.means2d, radii=proj.radii, gaussian_ids=None, camera_ids=None,
                      depths=proj.depths, packed=False, width=width, height=height, n_cameras=C,
                      backend="torch", raw=raw)
    return RenderOutput(colors=colors, alphas=alphas, depths=depths[..., :1] if depths is not None else None,
                        info=info, depths2=depths[..., 1:2] if mode == "RGB+D2" and depths is not None else None)


def _render_gsplat_moments(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                           sh: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                           sh_degree: int, bg: torch.Tensor | None, packed: bool, absgrad: bool,
                           antialiased: bool, near_plane: float) -> RenderOutput:
    """gsplat with 5 feature channels (RGB, z, z^2) per (camera, Gaussian): the colours are evaluated here as gsplat
    does (SH along mean - camera centre, ``max(0, SH + 0.5)``) and passed with ``sh_degree=None``; z is the
    camera-space depth ``(R mean + t).z``, the value gsplat's own depth modes composite."""
    from gsplat import rasterization, spherical_harmonics

    campos = torch.inverse(viewmats)[:, :3, 3]                                     # (C, 3)
    dirs = means[None, :, :] - campos[:, None, :]                                  # (C, N, 3)
    C = viewmats.shape[0]
    rgb = spherical_harmonics(sh_degree, dirs, sh[None].expand(C, *sh.shape))       # (C, N, 3)
    rgb = torch.clamp_min(rgb + 0.5, 0.0)
    z = (torch.einsum("cj,nj->cn", viewmats[:, 2, :3], means) + viewmats[:, 2, 3:4])[..., None]  # (C, N, 1)
    feats = torch.cat([rgb, z, z * z], dim=-1)                                    # (C, N, 5)
    out, alphas, meta = rasterization(
        means, quats, scales, opacities, feats, viewmats, Ks, width, height, sh_degree=None, render_mode="RGB",
        packed=packed, absgrad=absgrad, near_plane=near_plane,
        rasterize_mode="antialiased" if antialiased else "classic")
    moments = out[..., 3:5] / alphas.clamp_min(1e-10)
    colors = out[..., :3]
    if bg is not None:
        colors = colors + (1 - alphas) * bg[:, None, None, :]
    return RenderOutput(colors=colors, alphas=alphas, depths=moments[..., :1],
                        info=_gsplat_info(meta, packed, width, height, C), depths2=moments[..., 1:2])


def _gsplat_info(meta: dict[str, Any], packed: bool, width: int, height: int, n_cameras: int) -> RenderInfo:
    """RenderInfo from gsplat's ``meta`` dict (the densifiers read its projected means, radii and ids)."""
    return RenderInfo(means2d=meta["means2d"], radii=meta["radii"], gaussian_ids=meta.get("gaussian_ids"),
                      camera_ids=meta.get("camera_ids"), depths=meta["depths"], packed=packed, width=width,
                      height=height, n_cameras=n_cameras, backend="gsplat", raw=meta)
