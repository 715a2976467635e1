"""Motion priors of sequential 4D Gaussians (Luiten et al., "Dynamic 3D Gaussians", 3DV 2024, Sec. 3.2).

A person is many Gaussians that move together. Photometric loss alone lets each one wander on its own, and a
splat that drifts off its body is never pulled back (the loss on a sequence then climbs frame after frame). The
priors here tie each moving Gaussian to its neighbours:

- **Local rigidity**: neighbours keep their offsets in the Gaussian's own rotating frame from frame t-1 to t:
  ``w_ij || (mu_j,t - mu_i,t) - R_i,t R_i,t-1^T (mu_j,t-1 - mu_i,t-1) ||``.
- **Rotation similarity**: neighbours turn alike: ``w_ij || q_j,t q_j,t-1^-1 - q_i,t q_i,t-1^-1 ||``.
- **Constant-velocity start**: frame t starts from ``mu_t-1 + (mu_t-1 - mu_t-2)`` (and the same for rotations).

Neighbours are the k nearest moving Gaussians at frame t-1, weighted by ``exp(-d^2 / s_i^2)`` with ``s_i`` the mean
neighbour distance of Gaussian i (so the weights mean the same in any SfM scale). Offsets are measured in scene
radii R. Quaternions are (w, x, y, z), as gsplat's.

Shapes: N Gaussians, k neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splatworks.splat.reference import quat_to_rotmat  # noqa: F401  - (N, 4) wxyz -> (N, 3, 3), shared


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) Hamilton products a * b of (w, x, y, z) quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


def knn(points: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of each of (N, 3) ``points``: indices (N, k) int64 and distances (N, k).

    Brute force in chunks of rows (N x chunk distances at a time): ~50k moving Gaussians take milliseconds on a GPU.
    """
    n = len(points)
    k = min(k, n - 1)
    if k <= 0:
        return torch.zeros(n, 0, dtype=torch.long, device=points.device), torch.zeros(n, 0, device=points.device)
    idx, dist = [], []
    for s in range(0, n, chunk):
        d = torch.cdist(points[s:s + chunk], points)                                   # (c, N)
        d[torch.arange(len(d), device=d.device), torch.arange(s, s + len(d), device=d.device)] = float("inf")
        v, i = torch.topk(d, k, dim=1, largest=False)
        idx.append(i)
        dist.append(v)
    return torch.cat(idx), torch.cat(dist)


@dataclass
class RigidityPrior:
    """Neighbourhoods of the moving Gaussians at frame t-1 and the losses that keep them together at frame t."""

    neighbours: torch.Tensor   # (N, k) int64
    weights: torch.Tensor      # (N, k) float, sum over everything = 1
    offsets: torch.Tensor      # (N, k, 3) mu_j - mu_i at t-1, in scene radii
    quats: torch.Tensor        # (N, 4) unit quaternions at t-1
    radius: float
    subset: torch.Tensor | None = None   # (N,) rows of the optimised tensors this prior is about (None: all)

    @classmethod
    def build(cls, means: torch.Tensor, quats: torch.Tensor, radius: float, k: int = 20,
              subset: torch.Tensor | None = None) -> "RigidityPrior":
        """From (M, 3) centres and (M, 4) quaternions at frame t-1 (the start of frame t's optimisation); with
        ``subset`` (N,) row indices, only those rows (e.g. the ones on moving pixels) and their mutual neighbours."""
        means, quats = means.detach(), quats.detach()
        if subset is not None:
            means, quats = means[subset], quats[subset]
        idx, dist = knn(means, k)
        scale = dist.mean(dim=1, keepdim=True).clamp(min=1e-12)                        # s_i
        w = torch.exp(-(dist / scale) ** 2)
        w = w / w.sum().clamp(min=1e-12)
        offsets = (means[idx] - means[:, None]) / radius
        q = quats / quats.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return cls(neighbours=idx, weights=w, offsets=offsets, quats=q, radius=radius, subset=subset)

    def losses(self, means: torch.Tensor, quats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rigidity, rotation similarity) for the optimised (M, 3) centres and (M, 4) quaternions at frame t."""
        if self.subset is not None:
            means, quats = means[self.subset], quats[self.subset]
        if self.neighbours.shape[1] == 0:
            zero = means.sum() * 0
            return zero, zero
        q = quats / quats.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        rel = quat_multiply(q, quat_conjugate(self.quats))                            # (N, 4) turn since t-1
        rot = quat_to_rotmat(rel)                                                       # (N, 3, 3)
        now = (means[self.neighbours] - means[:, None]) / self.radius                   # (N, k, 3)
        expected = torch.einsum("nab,nkb->nka", rot, self.offsets)
        rigid = (self.weights * (now - expected).norm(dim=-1)).sum()
        turn = (self.weights * (rel[self.neighbours] - rel[:, None]).norm(dim=-1)).sum()
        return rigid, turn


def constant_velocity_start(now: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
    """Frame t's starting value ``now + (now - before)`` of (N, D) centres or quaternions (``before`` None: ``now``)."""
    if before is None or before.shape != now.shape:
        return now
    return now + (now - before)
