"""Epipolar geometry of known poses, for matching at known poses (``splatworks.sfm.known_poses``); numpy only.

Conventions: cameras are ``splatworks.scene.camera.Camera`` (OpenCV axes, world-to-camera ``T``, pinhole ``K`` in
pixels with pixel centres at +0.5, as COLMAP's keypoints). For two views, ``cam2_from_cam1 = T2 T1^-1 = [R | t]``,
``E = [t]x R`` and ``F = K2^-T E K1^-1`` so that ``x2^T F x1 = 0`` (Hartley & Zisserman, eq. 9.12).
"""

from __future__ import annotations

import numpy as np

from splatworks.scene.camera import Camera


def fundamental_from_poses(cam1: Camera, cam2: Camera) -> np.ndarray:
    """(3, 3) fundamental matrix with ``x2^T F x1 = 0`` for pixels (centres at +0.5) of two pinhole cameras.

    Relative pose ``cam2_from_cam1 = T2 T1^-1`` (both world-to-camera, OpenCV); ``E = [t]x R``;
    ``F = K2^-T E K1^-1`` (Hartley & Zisserman, eq. 9.12).
    """
    rel = cam2.world_to_camera @ np.linalg.inv(cam1.world_to_camera)
    R, t = rel[:3, :3], rel[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(cam2.K).T @ (tx @ R) @ np.linalg.inv(cam1.K)


def sampson_distance(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """(M,) Sampson distance in pixels of matches x1 (M, 2) <-> x2 (M, 2) under ``F`` (first-order geometric error,
    H&Z eq. 11.9; square-rooted so it compares with a pixel threshold)."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], axis=1)
    Fx1 = h1 @ F.T
    Ftx2 = h2 @ F
    num = np.einsum("ij,ij->i", h2, Fx1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-18))


def guided_matches(F: np.ndarray, x1: np.ndarray, x2: np.ndarray, d1: np.ndarray, d2: np.ndarray, max_error: float,
                   max_ratio: float, max_distance: float, chunk: int = 1024) -> np.ndarray:
    """Match keypoints x1 (N1, 2) / x2 (N2, 2) px with unit descriptors d1 (N1, D) / d2 (N2, D) under ``F``.

    Candidates: Sampson distance below ``max_error`` px. Among them, mutual nearest neighbours (descriptor
    distance ``sqrt(2 - 2 cos)``) below ``max_distance`` that pass Lowe's ratio test against the second-best
    candidate. Returns (M, 2) int64 index pairs. Rows of image 1 go in chunks of ``chunk`` (memory chunk x N2).
    """
    n1, n2 = len(x1), len(x2)
    if n1 == 0 or n2 == 0:
        return np.zeros((0, 2), np.int64)
    h1 = np.concatenate([x1, np.ones((n1, 1))], axis=1)
    h2 = np.concatenate([x2, np.ones((n2, 1))], axis=1)
    Fx1 = h1 @ F.T                       # (N1, 3) epipolar lines in image 2
    Ftx2 = h2 @ F                        # (N2, 3) epipolar lines in image 1
    den2 = Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    best_j = np.full(n1, -1, np.int64)
    best_s = np.full(n1, -2.0, np.float32)
    second_s = np.full(n1, -2.0, np.float32)
    col_best_i = np.full(n2, -1, np.int64)
    col_best_s = np.full(n2, -2.0, np.float32)
    thr2 = max_error ** 2
    for lo in range(0, n1, chunk):
        hi = min(n1, lo + chunk)
        num = (Fx1[lo:hi] @ h2.T) ** 2    # (c, N2) (x2^T F x1)^2
        den = (Fx1[lo:hi, 0] ** 2 + Fx1[lo:hi, 1] ** 2)[:, None] + den2[None, :]
        sim = d1[lo:hi] @ d2.T
        sim[num > thr2 * np.maximum(den, 1e-18)] = -2.0   # outside the epipolar band
        if n2 >= 2:
            top2 = np.partition(sim, n2 - 2, axis=1)[:, -2:]
            second_s[lo:hi] = top2.min(axis=1)
        j = sim.argmax(axis=1)
        best_j[lo:hi] = j
        best_s[lo:hi] = sim[np.arange(hi - lo), j]
        i = sim.argmax(axis=0)
        s = sim[i, np.arange(n2)]
        better = s > col_best_s
        col_best_s[better] = s[better]
        col_best_i[better] = i[better] + lo
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * best_s))
    dist2 = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * second_s))
    idx = np.arange(n1)
    ok = (best_s > -2.0) & (dist < max_distance) & (dist < max_ratio * dist2)
    ok &= col_best_i[np.clip(best_j, 0, None)] == idx   # mutual nearest neighbours
    return np.stack([idx[ok], best_j[ok]], axis=1).astype(np.int64)


def match_pairs(cameras: list[Camera], ids: list[int], exhaustive_max: int, neighbours: int,
                max_angle_deg: float = 180.0) -> list[tuple[int, int]]:
    """Image-id pairs (a < b) to match: views whose optical axes differ by at most ``max_angle_deg``; all such
    pairs up to ``exhaustive_max`` images, else each image with its ``neighbours`` nearest cameras (centre
    distance plus viewing-direction difference: known poses tell which views overlap)."""
    n = len(cameras)
    dirs = np.array([c.R[2] for c in cameras]).reshape(-1, 3)   # optical axes in world coordinates
    close = dirs @ dirs.T >= np.cos(np.radians(max_angle_deg)) - 1e-9
    if n <= exhaustive_max:
        return sorted((min(ids[i], ids[j]), max(ids[i], ids[j])) for i in range(n) for j in range(i + 1, n)
                      if close[i, j])
    centers = np.array([c.center for c in cameras])
    scale = float(np.median(np.linalg.norm(centers - centers.mean(0), axis=1))) or 1.0
    cost = np.linalg.norm(centers[:, None] - centers[None], axis=2) / scale + (1 - dirs @ dirs.T)
    cost[~close] = np.inf
    np.fill_diagonal(cost, np.inf)
    out = set()
    for i in range(n):
        for j in np.argsort(cost[i])[:neighbours]:
            if not np.isfinite(cost[i, j]):
                break
            out.add((min(ids[i], ids[int(j)]), max(ids[i], ids[int(j)])))
    return sorted(out)


def rays_meet_in_front(c1: Camera, c2: Camera, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """(M,) bool: the mid-point of the two viewing rays of each match lies in front of both cameras."""
    def rays(cam: Camera, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.stack([(x[:, 0] - cam.cx) / cam.fx, (x[:, 1] - cam.cy) / cam.fy, np.ones(len(x))], axis=1)
        return cam.center, d @ cam.R  # camera -> world: R^T d (row vectors)

    o1, d1 = rays(c1, x1)
    o2, d2 = rays(c2, x2)
    w = o1 - o2
    a, b, c = (d1 * d1).sum(1), (d1 * d2).sum(1), (d2 * d2).sum(1)
    d, e = d1 @ w, d2 @ w
    den = a * c - b * b
    s = np.where(np.abs(den) > 1e-12, (b * e - c * d) / np.where(np.abs(den) > 1e-12, den, 1.0), -1.0)
    t = np.where(np.abs(den) > 1e-12, (a * e - b * d) / np.where(np.abs(den) > 1e-12, den, 1.0), -1.0)
    return (s > 0) & (t > 0)
