"""Scene parameterisation (world -> normalised grid cube) chosen from the cameras, and camera rays.

Two kinds of rig:
- **inward-facing domes** (the basketball capture): cameras surround the scene and look at a common point; the
  scene lives in one bounded box around that point (``box``).
- **forward-facing rigs** (a row or arc of cameras looking the same way): the scene extends to infinity in front
  of them; space is centred on a point in front of the rig and squashed into a ball with the mip-NeRF 360
  contraction (``contract``): ``c(y) = y`` for ``|y| <= 1``, else ``(2 - 1/|y|) y/|y|``, then halved into [-1, 1].

Rays follow our conventions: OpenCV camera axes, pixel centres at +0.5, and ray directions scaled so that the ray
parameter ``t`` equals the camera-space depth z (``d_cam = ((u - cx)/fx, (v - cy)/fy, 1)``); the expected ``t``
of a ray is therefore directly comparable with depth maps (camera z, world units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from splatworks.scene.camera import Camera


@dataclass
class SceneSpace:
    """World-to-grid mapping.

    Attributes:
        kind: ``"box"`` or ``"contract"``.
        center: (3,) world point at the grid's centre.
        radius: world half-size of the box (box) or radius of the uncontracted inner ball (contract).
        near: nearest sample depth (camera z, world units).
        far: farthest sample depth (camera z, world units); for box scenes rays are also clipped to the box.
    """

    kind: str
    center: np.ndarray
    radius: float
    near: float
    far: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "center": np.asarray(self.center).tolist(), "radius": self.radius,
                "near": self.near, "far": self.far}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SceneSpace":
        return cls(kind=d["kind"], center=np.asarray(d["center"], dtype=np.float64), radius=float(d["radius"]),
                   near=float(d["near"]), far=float(d["far"]))

    def normalize(self, xyz: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) -> grid coordinates (..., 3), inside [-1, 1] for points of the scene."""
        y = (xyz - torch.as_tensor(self.center, dtype=xyz.dtype, device=xyz.device)) / self.radius
        if self.kind == "box":
            return y
        n = y.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return torch.where(n <= 1.0, y, (2.0 - 1.0 / n) * y / n) / 2.0

    def grid_length(self, dt: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, rays_o: torch.Tensor
                    ) -> torch.Tensor:
        """Length in grid units of sample intervals ``dt`` (R, S) along rays (R, 3) at depths t (R, S).

        For contracted space this is the length of the mapped interval (finite differences of ``normalize``), so
        far samples count as short as they look in the grid."""
        if self.kind == "box":
            return dt * rays_d.norm(dim=-1, keepdim=True) / self.radius
        p0 = self.normalize(rays_o[:, None] + t[..., None] * rays_d[:, None])
        p1 = self.normalize(rays_o[:, None] + (t + dt)[..., None] * rays_d[:, None])
        return (p1 - p0).norm(dim=-1)


def look_at_point(cameras: list[Camera]) -> np.ndarray:
    """(3,) the least-squares point closest to all optical axes (where the cameras look together)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in cameras:
        d = cam.R.T @ np.array([0.0, 0.0, 1.0])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.center
    return np.linalg.lstsq(A + 1e-9 * np.eye(3), b, rcond=None)[0]


def classify_rig(cameras: list[Camera]) -> str:
    """``"box"`` when the cameras surround a common point (inward-facing), ``"contract"`` when they look the
    same way (forward-facing). The test: the spread of viewing directions (1 - |mean forward vector|)."""
    fwd = np.array([c.R.T @ np.array([0.0, 0.0, 1.0]) for c in cameras])
    spread = 1.0 - float(np.linalg.norm(fwd.mean(axis=0)))
    # A dome of cameras at 45 deg elevation already gives ~0.3; a forward rig stays below ~0.05.
    if spread < 0.1 or len(cameras) < 3:
        return "contract"
    # Inward-facing also means the look-at point is in front of every camera.
    p = look_at_point(cameras)
    in_front = all((c.R @ p + c.t)[2] > 0 for c in cameras)
    return "box" if in_front else "contract"


def make_space(cameras: list[Camera], kind: str = "auto", bound_scale: float = 1.0, near_fraction: float = 0.05,
               points: np.ndarray | None = None) -> SceneSpace:
    """Choose the scene parameterisation from the cameras (and sparse points, when there are any).

    Box scenes: centred on the look-at point, half-size ``bound_scale x`` the mean camera distance to it
    (``bound_scale <= 0``: the robust extent of the sparse points, when there are any).
    Contracted scenes: centred on the median sparse point (without points: four rig baselines in front of the
    rig), inner radius = half the mean distance from the cameras to that centre."""
    if kind == "auto":
        kind = classify_rig(cameras)
    centers = np.array([c.center for c in cameras])
    if kind == "box":
        center = look_at_point(cameras)
    else:
        if points is not None and len(points) >= 10:
            center = np.median(points, axis=0)
        else:
            # in front of the rig, at the distance between its cameras (a forward rig sees ~that far)
            fwd = np.mean([c.R.T @ np.array([0.0, 0.0, 1.0]) for c in cameras], axis=0)
            fwd /= max(np.linalg.norm(fwd), 1e-9)
            baseline = max(float(np.linalg.norm(centers - centers.mean(0), axis=1).max()), 1e-3)
            center = centers.mean(0) + fwd * 4.0 * baseline
    dist = float(np.linalg.norm(centers - center, axis=1).mean())
    if kind == "box":
        radius = max(dist * (bound_scale if bound_scale > 0 else 1.0), 1e-6)
    else:
        radius = max(dist * 0.5, 1e-6)
    if kind == "box" and bound_scale <= 0 and points is not None and len(points) >= 10:
        lo, hi = np.percentile(points, [2, 98], axis=0)  # auto: the box holds the sparse points
        radius = 1.1 * float(np.abs(np.stack([lo, hi]) - center).max())
    near = max(near_fraction * dist, 1e-4)
    far = (dist + 2.0 * radius) if kind == "box" else dist * 1e3
    return SceneSpace(kind=kind, center=np.asarray(center, dtype=np.float64), radius=float(radius), near=near,
                      far=float(far))


def camera_rays(cam: Camera, pixels: torch.Tensor | None = None, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays of a pinhole camera (distortion ignored: datasets hold undistorted images).

    Args:
        pixels: (R, 2) integer (col, row) pixel indices; None = every pixel in row-major order.
    Returns:
        origins (R, 3) and directions (R, 3) float32, with ``t`` along the direction = camera-space z.
    """
    if pixels is None:
        rows, cols = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
        pixels = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)
    pixels = pixels.to(device)
    u = pixels[:, 0].float() + 0.5
    v = pixels[:, 1].float() + 0.5
    d_cam = torch.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, torch.ones_like(u)], dim=-1)
    c2w = torch.as_tensor(cam.camera_to_world, dtype=torch.float32, device=device)
    dirs = d_cam @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(dirs)
    return origins.contiguous(), dirs


def box_interval(space: SceneSpace, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-ray [t_near, t_far] (R,) (camera z units): the box slab intersection for box scenes, clipped to the
    global near/far; rays that miss the box get t_near = t_far."""
    near = torch.full(rays_o.shape[:1], space.near, device=rays_o.device)
    far = torch.full(rays_o.shape[:1], space.far, device=rays_o.device)
    if space.kind != "box":
        return near, far
    c = torch.as_tensor(space.center, dtype=rays_o.dtype, device=rays_o.device)
    inv = 1.0 / torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (c - space.radius - rays_o) * inv
    t1 = (c + space.radius - rays_o) * inv
    t_min = torch.minimum(t0, t1).amax(-1)
    t_max = torch.maximum(t0, t1).amin(-1)
    t_near = torch.maximum(t_min, near)
    t_far = torch.minimum(t_max, far)
    return t_near, torch.maximum(t_far, t_near)
