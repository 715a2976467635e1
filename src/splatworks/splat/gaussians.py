"""The Gaussian model: raw (pre-activation) parameters, their activations, and initialisation.

Parameters live in a ``torch.nn.ParameterDict`` with gsplat's key names, so gsplat's densification strategies
and our optimisers can add and remove rows in place:

========== ============ ================================================================
key         shape        meaning (pre-activation)
========== ============ ================================================================
means       (N, 3)       centres, world units
quats       (N, 4)       rotation quaternion **wxyz**, not normalised (normalised on use)
scales      (N, 3)       log of the standard deviations along the rotated axes (world units)
opacities   (N,)         logit of opacity
sh0         (N, 1, 3)    degree-0 SH coefficient (DC), RGB
shN         (N, K-1, 3)  higher SH bands, K = (max_degree + 1)^2
========== ============ ================================================================

Colour from SH follows 3DGS: ``rgb = max(0, SH(dir) + 0.5)`` with ``SH_C0 = 0.28209479``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from splatworks.scene.camera import Scene

SH_C0 = 0.28209479177387814
PARAM_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")


def num_sh_bases(degree: int) -> int:
    """K = (degree + 1)^2 coefficients per colour channel."""
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] -> DC coefficient (inverse of ``sh0 * SH_C0 + 0.5``)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


def activated(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Activated values: unit quaternions (N, 4), linear scales (N, 3), opacities in (0, 1) (N,), SH (N, K, 3)."""
    return {
        "means": params["means"],
        "quats": torch.nn.functional.normalize(params["quats"], dim=-1),
        "scales": torch.exp(params["scales"]),
        "opacities": torch.sigmoid(params["opacities"]),
        "sh": torch.cat([params["sh0"], params["shN"]], dim=1),
    }


def knn_scale(points: np.ndarray, k: int = 3) -> np.ndarray:
    """(P,) root-mean-square distance to the k nearest neighbours (3DGS's initial scale), floored for duplicates."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return np.full((len(points),), 0.01)
    k_eff = min(k, len(points) - 1)
    dist, _ = cKDTree(points).query(points, k=k_eff + 1)
    d2 = np.mean(np.asarray(dist).reshape(len(points), -1)[:, 1:] ** 2, axis=1)
    return np.sqrt(np.maximum(d2, 1e-7))


def random_points_in_view(scene: Scene, n: int, seed: int = 0, min_fraction: float = 0.5) -> np.ndarray:
    """(n, 3) random points inside the region that most cameras see (for scenes without SfM points).

    Points are drawn in the bounding box of the camera centres and kept when at least ``min_fraction`` of the
    cameras see them in front of the camera and inside the image: for an inward-facing capture (NeRF-synthetic)
    that is the volume around the object, for a forward-facing one the space in front of the rig.
    """
    rng = np.random.default_rng(seed)
    centers = scene.centers()
    lo, hi = centers.min(axis=0), centers.max(axis=0)
    pad = 0.1 * max(float(np.max(hi - lo)), 1e-3)
    lo, hi = lo - pad, hi + pad
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(200):
        cand = rng.uniform(lo, hi, size=(max(4 * n, 4096), 3))
        seen = np.zeros(len(cand), dtype=np.int32)
        for cam in scene.cameras:
            uv, z = cam.project(cand)
            seen += ((z > 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width)
                     & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)).astype(np.int32)
        good = cand[seen >= max(1, int(math.ceil(min_fraction * len(scene.cameras))))]
        kept.append(good)
        total += len(good)
        if total >= n:
            break
    pts = np.concatenate(kept, axis=0)[:n] if total else rng.uniform(lo, hi, size=(n, 3))
    if len(pts) < n:  # a very sparse overlap: fill the rest with the box
        pts = np.concatenate([pts, rng.uniform(lo, hi, size=(n - len(pts), 3))], axis=0)
    return pts


def init_params(points: np.ndarray, colors: np.ndarray | None, sh_degree: int = 3, init_opacity: float = 0.1,
                init_scale: float = 1.0, device: str | torch.device = "cpu") -> torch.nn.ParameterDict:
    """Gaussians at ``points`` (P, 3) world units with RGB ``colors`` (P, 3) in [0, 1] (None: random colours).

    Scales start isotropic at the RMS distance to the 3 nearest neighbours (times ``init_scale``), rotations at
    identity, opacity at ``init_opacity``, higher SH bands at zero.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(points)
    if n == 0:
        raise ValueError("cannot initialise Gaussians from zero points")
    if colors is None:
        colors = np.random.default_rng(0).uniform(0, 1, size=(n, 3))
    scale = knn_scale(points) * init_scale
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    k = num_sh_bases(sh_degree)
    quats = torch.zeros(n, 4, device=device)
    quats[:, 0] = 1.0
    params = {
        "means": t(points),
        "quats": quats,
        "scales": torch.log(t(scale))[:, None].repeat(1, 3),
        "opacities": torch.full((n,), float(inverse_sigmoid(torch.tensor(init_opacity))), device=device),
        "sh0": rgb_to_sh0(t(colors).clamp(0, 1))[:, None, :],
        "shN": torch.zeros(n, k - 1, 3, device=device),
    }
    return torch.nn.ParameterDict({key: torch.nn.Parameter(v.contiguous()) for key, v in params.items()})


def init_from_scene(scene: Scene, sh_degree: int = 3, num_random: int = 100_000, seed: int = 0,
                    init_opacity: float = 0.1, init_scale: float = 1.0,
                    device: str | torch.device = "cpu") -> torch.nn.ParameterDict:
    """Gaussians from the scene's SfM points, or ``num_random`` random points in the seen volume when it has none."""
    if len(scene.points) > 0:
        return init_params(scene.points, scene.point_colors.astype(np.float64) / 255.0, sh_degree,
                           init_opacity, init_scale, device)
    rng = np.random.default_rng(seed)
    pts = random_points_in_view(scene, num_random, seed=seed)
    return init_params(pts, rng.uniform(0, 1, size=(len(pts), 3)), sh_degree, init_opacity, init_scale, device)


def params_from_tensors(tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> torch.nn.ParameterDict:
    """Wrap raw tensors (e.g. read from a .ply) as trainable parameters on ``device``."""
    missing = [k for k in PARAM_KEYS if k not in tensors]
    if missing:
        raise ValueError(f"Gaussian parameters lack {missing}")
    return torch.nn.ParameterDict({k: torch.nn.Parameter(tensors[k].detach().to(device, torch.float32).contiguous())
                                   for k in PARAM_KEYS})
