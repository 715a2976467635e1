"""Points to pixel indices in one pinhole view, in torch (the trainers' per-Gaussian mask and depth look-ups).

Conventions (docs/conventions.md): OpenCV axes, ``viewmat`` world-to-camera, pixel i covers [i, i + 1) (centres at
+0.5), depth = camera z.
"""

from __future__ import annotations

import torch


def project_to_pixels(points: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel indices and camera depth of world points in one view.

    Args:
        points: (N, 3) world points. viewmat: (4, 4) world-to-camera. K: (3, 3) intrinsics in pixels.
    Returns:
        col, row: (N,) int64 pixel indices, clamped into the image (use ``inside`` to tell).
        z: (N,) camera depth (world units).
        inside: (N,) bool, in front of the camera (z > 1e-6) and inside the image.
    """
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    u = K[0, 0] * cam[:, 0] / safe + K[0, 2]
    v = K[1, 1] * cam[:, 1] / safe + K[1, 2]
    inside = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    col = torch.floor(u.clamp(0, width - 1)).long()
    row = torch.floor(v.clamp(0, height - 1)).long()
    return col, row, z, inside
