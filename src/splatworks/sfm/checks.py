"""Do the registered poses agree with the images' own pairwise geometry? Find misplaced images.

COLMAP verifies every matched pair with a two-view geometry (essential matrix -> relative rotation and
translation direction, ``cam2_from_cam1``). A correctly placed image agrees with the well-supported pairs it
has with its true neighbours. An image registered onto a symmetric or repeated part of the object (lego's
mirrored sides) is placed where a few wrong matches put it; its pose then contradicts the relative poses of
most of its strong pairs. Neighbouring views can be misplaced together (they agree with each other), so each
image is judged by its pairs to the *trusted* part of the model, which is grown from the images that agree
with their pairs, strongest consensus first.

Notation: for images i, j with world_to_camera (R_i, t_i), the model's relative pose is
``R_ij = R_j R_i^T``, ``t_ij = t_j - R_ij t_i``; the pair's geometry gives ``(R*_ij, t*_ij)`` with
``|t*_ij| = 1``. Rotation disagreement: angle of ``R_ij R*_ij^T``; translation disagreement: angle between
``t_ij`` and ``t*_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TwoViewGeometry configurations whose relative pose has a translation direction, and the pure-rotation one.
_POSE_CONFIGS = ("CALIBRATED", "UNCALIBRATED", "PLANAR", "PLANAR_OR_PANORAMIC")
_ROTATION_ONLY_CONFIGS = ("PANORAMIC",)


@dataclass
class PairCheck:
    """One image pair's agreement with the model."""

    image1: int
    image2: int
    inliers: int
    rotation_deg: float
    translation_deg: float


@dataclass
class PoseVerdict:
    """An image the check finds misplaced, with the evidence."""

    image_id: int
    name: str
    reason: str
    agreeing: int
    disagreeing: int
    pairs: list[PairCheck] = field(default_factory=list)


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def _dir_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def pair_checks(rec: Any, db_path: str | Path, min_inliers: int = 50) -> list[PairCheck]:
    """Compare every registered pair's model relative pose with its verified two-view geometry."""
    import pycolmap

    db = pycolmap.Database.open(str(db_path))
    try:
        pair_ids, geoms = db.read_two_view_geometries()
    finally:
        db.close()
    registered = set(rec.reg_image_ids())
    poses = {i: np.asarray(rec.images[i].cam_from_world().matrix(), dtype=np.float64) for i in registered}
    out = []
    for pid, g in zip(pair_ids, geoms):
        i, j = pycolmap.pair_id_to_image_pair(pid)
        n = len(g.inlier_matches)
        if i not in registered or j not in registered or n < min_inliers:
            continue
        config = pycolmap.TwoViewGeometryConfiguration(int(g.config)).name
        if config not in _POSE_CONFIGS + _ROTATION_ONLY_CONFIGS:
            continue
        rel = g.cam2_from_cam1
        R_star = np.asarray(rel.rotation.matrix(), dtype=np.float64)
        t_star = np.asarray(rel.translation, dtype=np.float64)
        Pi, Pj = poses[i], poses[j]
        R_ij = Pj[:3, :3] @ Pi[:3, :3].T
        t_ij = Pj[:3, 3] - R_ij @ Pi[:3, 3]
        t_err = _dir_angle_deg(t_ij, t_star) if config in _POSE_CONFIGS else 0.0
        out.append(PairCheck(int(i), int(j), n, _angle_deg(R_ij @ R_star.T), t_err))
    return out


def find_misplaced(pairs: list[PairCheck], image_ids: list[int], max_angle_deg: float = 5.0
                   ) -> dict[int, tuple[int, int]]:
    """Images whose poses contradict their pairs to the trusted part of the model.

    The trusted set starts from images where (inlier-weighted) most pairs agree and grows, strongest first,
    with images that agree with the trusted set; the rest are misplaced. Returns image id ->
    (agreeing pairs, disagreeing pairs) counted against the trusted set, for misplaced images only.
    """
    agree: dict[int, list[tuple[int, int, bool]]] = {i: [] for i in image_ids}
    for p in pairs:
        ok = p.rotation_deg < max_angle_deg and p.translation_deg < max_angle_deg
        agree.setdefault(p.image1, []).append((p.image2, p.inliers, ok))
        agree.setdefault(p.image2, []).append((p.image1, p.inliers, ok))

    def score(i: int, trusted: set[int] | None) -> tuple[float, float]:
        good = bad = 0.0
        for j, n, ok in agree.get(i, []):
            if trusted is not None and j not in trusted:
                continue
            good, bad = (good + n, bad) if ok else (good, bad + n)
        return good, bad

    # Seed: images with a clear majority of agreeing inliers among all their pairs.
    trusted = {i for i in image_ids if (lambda gb: gb[0] > 3 * gb[1])(score(i, None))}
    if not trusted:
        return {}
    changed, rounds = True, 0
    while changed and rounds < 4 * len(image_ids) + 4:  # grow with images that agree with the trusted set; drop ones that no longer do
        changed, rounds = False, rounds + 1
        for i in image_ids:
            good, bad = score(i, trusted - {i})
            keep = good > bad and good > 0
            if keep and i not in trusted:
                trusted.add(i)
                changed = True
            elif not keep and i in trusted and bad > 0:
                trusted.discard(i)
                changed = True
    out = {}
    for i in image_ids:
        if i in trusted:
            continue
        n_good = sum(1 for j, _, ok in agree.get(i, []) if j in trusted and ok)
        n_bad = sum(1 for j, _, ok in agree.get(i, []) if j in trusted and not ok)
        if n_bad > 0:  # images with no strong pair to the trusted set are not judged
            out[i] = (n_good, n_bad)
    return out


def check_poses_against_two_view_geometries(rec: Any, db_path: str | Path, max_angle_deg: float = 5.0,
                                            min_inliers: int = 50) -> list[PoseVerdict]:
    """Misplaced images of reconstruction ``rec`` (built from ``db_path``), with the evidence."""
    pairs = pair_checks(rec, db_path, min_inliers=min_inliers)
    ids = sorted(int(i) for i in rec.reg_image_ids())
    bad = find_misplaced(pairs, ids, max_angle_deg=max_angle_deg)
    verdicts = []
    for i, (good, n_bad) in sorted(bad.items()):
        reason = (f"pose contradicts {n_bad} of its {good + n_bad} strong image pairs to the rest of the model "
                  f"(> {max_angle_deg:g} deg): likely registered onto a symmetric or repeated structure")
        verdicts.append(PoseVerdict(image_id=i, name=rec.images[i].name, reason=reason, agreeing=good,
                                    disagreeing=n_bad, pairs=[p for p in pairs if i in (p.image1, p.image2)]))
    return verdicts
