"""How right are the SfM poses? Robust similarity alignment to ground truth and per-camera errors.

An SfM reconstruction is defined up to a similarity (scale, rotation, translation), so the estimate is first
aligned to the ground truth by RANSAC over camera centres (3-point samples, Umeyama fit, inliers within a
fraction of the scene radius), refitted on the inliers. A camera is *correct* when, after alignment, its
rotation error is below ``max_rotation_deg`` and its centre error below ``max_center_frac`` of the scene radius
(issue 2's bar: 1 degree and 1 %). Registered cameras that are not correct are *wrong* (misplaced); cameras
without an estimate are *missing*.

Notation: ``x_gt = s * R @ x_est + t`` maps the estimate's world into the ground truth's world.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.scene.camera import Camera, Scene


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with ``dst ~ s * R @ src + t`` for (P, 3) point sets (Umeyama 1991).

    Returns (s, R (3, 3), t (3,)).
    """
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0  # a reflection is not a rotation
    R = U @ D @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / max(var_s, 1e-300))
    t = mu_d - s * R @ mu_s
    return s, R, t


def ransac_similarity(src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int = 2000,
                      seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Robust similarity between corresponding (P, 3) centres: RANSAC over 3-point samples, Umeyama refit.

    ``threshold`` is the inlier distance in ``dst`` units. Returns (s, R, t, inlier mask (P,)).
    """
    n = len(src)
    if n < 3:
        raise ValueError("need at least 3 corresponding cameras to align")
    rng = np.random.default_rng(seed)
    best = np.zeros(n, dtype=bool)
    best_err = np.inf
    for _ in range(iterations):
        idx = rng.choice(n, 3, replace=False)
        s, R, t = umeyama(src[idx], dst[idx])
        if not np.isfinite(s) or s <= 0:
            continue
        err = np.linalg.norm(src @ R.T * s + t - dst, axis=1)
        inl = err < threshold
        score = (inl.sum(), -err[inl].sum())
        if score[0] > best.sum() or (score[0] == best.sum() and -score[1] < best_err):
            best, best_err = inl, -score[1]
    if best.sum() < 3:
        best = np.ones(n, dtype=bool)  # nothing agrees: fall back to all points, errors will show it
    s, R, t = umeyama(src[best], dst[best])
    for _ in range(3):  # refit until the inlier set settles
        err = np.linalg.norm(src @ R.T * s + t - dst, axis=1)
        inl = err < threshold
        if inl.sum() < 3 or (inl == best).all():
            break
        best = inl
        s, R, t = umeyama(src[best], dst[best])
    return s, R, t, best


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees of (3, 3) or (N, 3, 3) rotation matrices."""
    tr = np.trace(np.asarray(R), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


@dataclass
class PoseReport:
    """Per-camera pose errors after alignment, and the issue's summary numbers.

    Attributes:
        total: ground-truth cameras.
        registered: estimated cameras that have a ground-truth counterpart.
        correct, wrong, missing: counts (correct + wrong = registered; registered + missing = total).
        mean_rotation_error_correct_deg: mean rotation error over correct cameras (degrees).
        mean_center_error_correct: mean centre error over correct cameras, as a fraction of the scene radius.
        scene_radius: max distance of GT centres from their mean (GT units).
        scale: similarity scale applied to the estimate.
        per_camera: name -> {"rotation_deg", "center_frac", "correct"} for registered cameras.
        wrong_names, missing_names: sorted names.
    """

    total: int
    registered: int
    correct: int
    wrong: int
    missing: int
    mean_rotation_error_correct_deg: float
    mean_center_error_correct: float
    scene_radius: float
    scale: float
    max_rotation_deg: float
    max_center_frac: float
    per_camera: dict[str, dict[str, Any]] = field(default_factory=dict)
    wrong_names: list[str] = field(default_factory=list)
    missing_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.correct}/{self.total} correct, {self.wrong} wrong, {self.missing} missing; "
                f"mean rotation error (correct) {self.mean_rotation_error_correct_deg:.3f} deg, "
                f"mean centre error {100 * self.mean_center_error_correct:.3f} % of radius")


def evaluate_poses(estimated: dict[str, np.ndarray], ground_truth: dict[str, np.ndarray],
                   max_rotation_deg: float = 1.0, max_center_frac: float = 0.01, seed: int = 0) -> PoseReport:
    """Compare world_to_camera (4, 4) poses by name (OpenCV axes on both sides).

    Names are matched by stem (``r_3.png`` matches ``r_3.jpg``), so re-encoded images still compare.
    """
    def stem(n: str) -> str:
        return str(Path(n).with_suffix(""))

    gt = {stem(k): np.asarray(v, dtype=np.float64) for k, v in ground_truth.items()}
    est = {stem(k): np.asarray(v, dtype=np.float64) for k, v in estimated.items() if stem(k) in gt}
    names = sorted(est)
    gt_centers_all = np.array([-v[:3, :3].T @ v[:3, 3] for v in gt.values()])
    radius = float(np.linalg.norm(gt_centers_all - gt_centers_all.mean(axis=0), axis=1).max())
    missing = sorted(set(gt) - set(est))
    if len(names) < 3:
        return PoseReport(total=len(gt), registered=len(names), correct=0, wrong=len(names), missing=len(missing),
                          mean_rotation_error_correct_deg=float("nan"), mean_center_error_correct=float("nan"),
                          scene_radius=radius, scale=float("nan"), max_rotation_deg=max_rotation_deg,
                          max_center_frac=max_center_frac, wrong_names=names, missing_names=missing)
    c_est = np.array([-est[n][:3, :3].T @ est[n][:3, 3] for n in names])
    c_gt = np.array([-gt[n][:3, :3].T @ gt[n][:3, 3] for n in names])
    s, R, t, _ = ransac_similarity(c_est, c_gt, threshold=max_center_frac * radius, seed=seed)
    center_err = np.linalg.norm(c_est @ R.T * s + t - c_gt, axis=1) / radius
    R_est = np.array([est[n][:3, :3] @ R.T for n in names])  # estimated rotation in the GT world
    R_gt = np.array([gt[n][:3, :3] for n in names])
    rot_err = rotation_angle_deg(R_gt @ np.transpose(R_est, (0, 2, 1)))
    ok = (rot_err < max_rotation_deg) & (center_err < max_center_frac)
    per_camera = {n: {"rotation_deg": round(float(r), 4), "center_frac": round(float(c), 5), "correct": bool(o)}
                  for n, r, c, o in zip(names, rot_err, center_err, ok)}
    return PoseReport(
        total=len(gt), registered=len(names), correct=int(ok.sum()), wrong=int((~ok).sum()), missing=len(missing),
        mean_rotation_error_correct_deg=float(rot_err[ok].mean()) if ok.any() else float("nan"),
        mean_center_error_correct=float(center_err[ok].mean()) if ok.any() else float("nan"),
        scene_radius=radius, scale=float(s), max_rotation_deg=max_rotation_deg, max_center_frac=max_center_frac,
        per_camera=per_camera, wrong_names=[n for n, o in zip(names, ok) if not o], missing_names=missing)


def evaluate_scene(estimated: Scene, ground_truth: Scene, **kwargs: Any) -> PoseReport:
    """``evaluate_poses`` for two Scenes (cameras matched by name stem)."""
    return evaluate_poses({c.name: c.world_to_camera for c in estimated.cameras},
                          {c.name: c.world_to_camera for c in ground_truth.cameras}, **kwargs)


def poses_from_transforms(path: str | Path) -> dict[str, np.ndarray]:
    """Ground-truth world_to_camera (OpenCV) by image name from a NeRF ``transforms*.json`` (OpenGL c2w).

    Names are the ``file_path`` basenames with ``.png`` appended when they have no suffix (Blender's layout).
    """
    doc = json.loads(Path(path).read_text())
    out: dict[str, np.ndarray] = {}
    for frame in doc["frames"]:
        name = Path(frame["file_path"]).name
        if not Path(name).suffix:
            name += ".png"
        out[name] = Camera.world_to_camera_from_opengl_c2w(np.array(frame["transform_matrix"]))
    return out


def quality_report(estimated: Scene, ground_truth: dict[str, np.ndarray] | Scene, **kwargs: Any) -> dict[str, Any]:
    """The report dict used by tests and the benchmark: pose accuracy plus the SfM statistics in scene.meta."""
    gt = ground_truth if isinstance(ground_truth, dict) else {c.name: c.world_to_camera for c in ground_truth.cameras}
    report = evaluate_poses({c.name: c.world_to_camera for c in estimated.cameras}, gt, **kwargs)
    out = report.to_dict()
    out["summary"] = report.summary()
    sfm = estimated.meta.get("sfm", {})
    out["sfm"] = {k: sfm.get(k) for k in ("registered", "total", "mean_reprojection_error", "num_points",
                                          "seconds", "dropped", "flagged", "models") if k in sfm}
    if math.isnan(out["mean_rotation_error_correct_deg"]):
        out["mean_rotation_error_correct_deg"] = None
    return out


def fraction_inside_silhouettes(points: np.ndarray, scene: Scene, dilation: int = 3) -> float:
    """Fraction of (P, 3) world points that project inside every camera's alpha silhouette (dilated by
    ``dilation`` pixels) wherever they are in view: a point off the object's surface falls outside some
    silhouette. For scenes whose images have alpha (NeRF-synthetic); NaN for no points."""
    import PIL.Image
    from scipy.ndimage import binary_dilation

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    inside = np.ones(len(points), dtype=bool)
    for cam in scene.cameras:
        alpha = np.asarray(PIL.Image.open(scene.image_path(cam)).convert("RGBA"))[..., 3] > 127
        mask = binary_dilation(alpha, iterations=dilation) if dilation > 0 else alpha
        uv, z = cam.project(points)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        seen = (z > 0) & (u >= 0) & (v >= 0) & (u < cam.width) & (v < cam.height)
        hit = np.zeros(len(points), dtype=bool)
        hit[seen] = mask[v[seen], u[seen]]
        inside &= hit | ~seen
    return float(inside.mean()) if len(points) else float("nan")
