"""Rig calibration for fixed multi-view cameras: pycolmap SfM on a few images per camera, or a ground-truth import.

The cameras do not move, so one pose per camera holds for every frame. SfM runs on calibration images: frame 0 of
every camera by default, or several frames, or each camera's temporal-median background (the moving people are gone
from it, so features land on the static set). Each camera's folder gets its own intrinsics (COLMAP PER_FOLDER);
when a camera has several calibration images, its pose is the average of their registered poses.

pycolmap runs in a spawned worker process, so a native crash surfaces as an error here instead of killing the
caller (Pillow is imported before pycolmap there: the reverse order corrupts PNG writing).

Conventions: OpenCV axes, ``world_to_camera``, pixel centres at +0.5 (COLMAP's and ours agree; no conversion).
Shapes: C cameras, P sparse points.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.config import option
from splatworks.errors import InputError, UserError
from splatworks.scene.camera import Camera, Scene
from splatworks.sfm.process import die_on_fatal_signals, next_message, stop_worker
from splatworks.sfm.quality import umeyama

log = logging.getLogger(__name__)


@dataclass
class CalibrationConfig:
    method: str = option("sfm", "How to calibrate the rig: 'sfm' (pycolmap on the frames) or 'import' (read "
                         "--calibration FILE, e.g. a studio's calibration.json).", choices=("sfm", "import"))
    file: Path | None = option(None, "Ground-truth calibration JSON (the basketball schema: per camera name, K "
                               "and w2c in OpenCV axes). With method sfm it is only used to score the result.")
    images: str = option("background", "Which images per camera SfM sees: 'frame0' (first extracted frame), "
                         "'frames' (the --calibration.num-frames most static frames by their masks, or evenly spaced "
                         "without masks; dynamic parts masked out), "
                         "'background' (the temporal median background: moving people removed), or 'synced' "
                         "(--calibration.num-frames instants, unmasked: at one instant the people are rigid "
                         "texture shared by all cameras, so images are matched across cameras only within an "
                         "instant, and across instants only within a camera).",
                         choices=("frame0", "frames", "background", "synced"))
    num_frames: int = option(4, "Frames per camera for --calibration.images frames or synced.")
    use_masks: bool = option(True, "Ignore features inside the dynamic masks (images 'frame0'/'frames').")
    camera_model: str = option("SIMPLE_RADIAL", "COLMAP model per camera (one intrinsics set per camera). "
                               "Distortion, if any, is stored per camera; PINHOLE/SIMPLE_PINHOLE keeps images "
                               "distortion-free.", choices=("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"))
    max_features: int = option(8192, "SIFT features per image.")
    peak_threshold: float = option(0.004, "SIFT contrast threshold (COLMAP default 0.0067); lower finds more "
                                   "features on low-texture studio walls.")
    min_inliers: int = option(50, "Inlier matches needed by the initial camera pair (COLMAP default 100).")
    min_tri_angle: float = option(8.0, "Triangulation angle in degrees needed by the initial pair (COLMAP 16).")
    upscale: float = option(1.0, "Scale calibration images by this factor before SfM (e.g. 2 at 640x360 gives "
                            "SIFT more usable features); intrinsics are scaled back.")
    fallback_import: bool = option(True, "When SfM cannot register every camera and --calibration.file is given, "
                                   "use the file's calibration (the SfM attempt is reported in dataset meta).")
    timeout_s: float = option(1800.0, "Give up on the SfM worker after this many seconds.")


# ---- ground-truth import ------------------------------------------------------------------------------------
def import_calibration(path: str | Path, cameras: list[str], sizes: dict[str, tuple[int, int]]) -> Scene:
    """Rig Scene from a calibration JSON: ``{"width", "height", "cameras": [{"name", "K", "w2c"}, ...]}`` and an
    optional ``"points": {"xyz": [[x, y, z], ...], "rgb": [[r, g, b], ...]}`` (the rig's sparse points, world frame).

    ``K`` is in pixels of the file's ``width`` x ``height`` (per camera keys override); intrinsics are scaled to
    the extracted frame size ``sizes[name] = (W, H)``. ``w2c`` is 4x4 (or 3x4) world-to-camera, OpenCV axes.

    Raises:
        InputError: the file is unreadable or lacks one of the cameras.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        entries = {str(c["name"]): c for c in doc["cameras"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a calibration file with a 'cameras' list of {{name, K, w2c}} ({exc})") from exc
    missing = [c for c in cameras if c not in entries]
    if missing:
        raise InputError(f"{path} has no calibration for cameras {missing} (it has {sorted(entries)}); "
                         "name the videos after the calibration's cameras")
    out: list[Camera] = []
    for cid, name in enumerate(cameras, start=1):
        e = entries[name]
        K = np.asarray(e["K"], dtype=np.float64)
        w2c = np.eye(4)
        w2c[:3, :4] = np.asarray(e["w2c"], dtype=np.float64)[:3, :4]
        src_w = int(e.get("width", doc.get("width", sizes[name][0])))
        src_h = int(e.get("height", doc.get("height", sizes[name][1])))
        w, h = sizes[name]
        sx, sy = w / src_w, h / src_h
        dist = tuple(float(d) for d in e.get("dist", ()) or ())
        model = "OPENCV" if any(dist) else "PINHOLE"
        out.append(Camera(name=name, width=w, height=h, fx=K[0, 0] * sx, fy=K[1, 1] * sy, cx=K[0, 2] * sx,
                          cy=K[1, 2] * sy, world_to_camera=w2c, model=model,
                          distortion=(dist + (0.0,) * 4)[:4] if model == "OPENCV" else (), camera_id=cid))
    from splatworks.dynamic.points import points_from_json

    # An optional "points" entry (world frame of the file) is the rig's initial point cloud.
    xyz, rgb = points_from_json(doc)
    return Scene(cameras=out, points=xyz, point_colors=rgb, point_errors=np.full(len(xyz), np.nan),
                 meta={"calibration": {"method": "import", "file": str(path.resolve())}})


# ---- alignment and errors -----------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) with ``dst ≈ s * R @ src + t``; src, dst are (P, 3), P >= 3."""
    return umeyama(np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64))


def rotation_angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def calibration_errors(estimate: Scene, truth: Scene) -> dict[str, Any]:
    """Align ``estimate`` to ``truth`` by a similarity on camera centres; per-camera rotation/centre errors.

    Cameras are matched by name (only those in both count). The rig radius is the mean distance of the true
    camera centres from their centroid; centre errors are also given as a fraction of it.
    """
    names = [c.name for c in estimate.cameras if c.name in {t.name for t in truth.cameras}]
    if len(names) < 3:
        return {"cameras_compared": len(names), "note": "fewer than 3 common cameras: no alignment"}
    est = [estimate.camera(n) for n in names]
    gt = [truth.camera(n) for n in names]
    ce, cg = np.array([c.center for c in est]), np.array([c.center for c in gt])
    radius = float(np.linalg.norm(cg - cg.mean(0), axis=1).mean())
    s, _, _ = similarity_transform(ce, cg)
    # Centres alone pin the rotation poorly for a near-planar rig: add points one rig radius along each camera's
    # viewing and down axes, so the alignment fits positions and orientations together.
    def anchors(cams: list[Camera], length: float) -> np.ndarray:
        return np.concatenate([[c.center, c.center + length * c.R[2], c.center + length * c.R[1]] for c in cams])
    s, R, t = similarity_transform(anchors(est, radius / max(s, 1e-12)), anchors(gt, radius))
    rot_err, centre_err, focal_err = {}, {}, {}
    for n, e, g in zip(names, est, gt):
        rot_err[n] = rotation_angle_deg(e.R @ R.T @ g.R.T)
        centre_err[n] = float(np.linalg.norm(s * R @ e.center + t - g.center))
        focal_err[n] = float(abs(e.fx / (g.fx * e.width / g.width) - 1.0))
    return {
        "cameras_compared": len(names),
        "scale": s,
        "rig_radius": radius,
        "rotation_error_deg_mean": float(np.mean(list(rot_err.values()))),
        "rotation_error_deg_max": float(np.max(list(rot_err.values()))),
        "centre_error_mean": float(np.mean(list(centre_err.values()))),
        "centre_error_rel_radius_mean": float(np.mean(list(centre_err.values())) / radius),
        "centre_error_rel_radius_max": float(np.max(list(centre_err.values())) / radius),
        "focal_error_rel_mean": float(np.mean(list(focal_err.values()))),
        "per_camera": {n: {"rotation_deg": rot_err[n], "centre_rel_radius": centre_err[n] / radius,
                           "focal_rel": focal_err[n]} for n in names},
    }


# ---- SfM ----------------------------------------------------------------------------------------------------
def _mean_rotation(Rs: list[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean of rotations (projection of their sum onto SO(3))."""
    U, _, Vt = np.linalg.svd(np.sum(Rs, axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _sfm_worker(image_dir: str, mask_dir: str | None, work_dir: str, cfg: dict[str, Any], queue: Any) -> None:
    """Runs in a spawned process: feature extraction, exhaustive matching, incremental mapping."""
    try:
        import PIL.Image  # noqa: F401  - before pycolmap (see module docstring)
        import pycolmap

        die_on_fatal_signals()  # a native crash ends the worker (its parent reports it) instead of hanging it

        work = Path(work_dir)
        db = work / "database.db"
        if db.exists():
            db.unlink()
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = cfg["camera_model"]
        if mask_dir:
            reader.mask_path = mask_dir
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = int(cfg["max_features"])
        extraction.sift.peak_threshold = float(cfg["peak_threshold"])
        extraction.num_threads = int(cfg["num_threads"])
        pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.PER_FOLDER, reader_options=reader,
                                  extraction_options=extraction, device=pycolmap.Device.cpu)
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = int(cfg["num_threads"])
        if cfg.get("pairs_file"):
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = cfg["pairs_file"]
            pycolmap.match_image_pairs(db, matching_options=matching, pairing_options=pairing,
                                       device=pycolmap.Device.cpu)
        else:
            pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.min_model_size = int(cfg["min_model_size"])
        opts.num_threads = int(cfg["num_threads"])
        opts.random_seed = 0
        opts.mapper.init_min_tri_angle = float(cfg["min_tri_angle"])
        opts.mapper.init_min_num_inliers = int(cfg["min_inliers"])
        opts.mapper.abs_pose_min_num_inliers = min(30, int(cfg["min_inliers"]))
        (work / "sparse").mkdir(exist_ok=True)
        recs = pycolmap.incremental_mapping(db, image_dir, work / "sparse", options=opts)
        if not recs:
            queue.put({"ok": False, "error": "SfM found no reconstruction (too few matches between cameras)"})
            return
        rec = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
        images = []
        for img in rec.images.values():
            if not img.has_pose:
                continue
            cam = rec.cameras[img.camera_id]
            w2c = np.eye(4)
            w2c[:3, :4] = img.cam_from_world().matrix()
            obs = [(int(p.point3D_id), float(p.xy[0]), float(p.xy[1])) for p in img.points2D if p.has_point3D()]
            images.append({"name": img.name, "model": cam.model.name, "params": list(map(float, cam.params)),
                           "width": int(cam.width), "height": int(cam.height), "w2c": w2c.tolist(),
                           "observations": obs})
        pts = rec.points3D
        queue.put({"ok": True, "images": images, "point_ids": [int(k) for k in pts.keys()],
                   "points": np.array([p.xyz for p in pts.values()]).reshape(-1, 3).tolist(),
                   "colors": np.array([p.color for p in pts.values()]).reshape(-1, 3).tolist(),
                   "errors": [float(p.error) for p in pts.values()],
                   "mean_reprojection_error": float(rec.compute_mean_reprojection_error()),
                   "num_models": len(recs)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a message
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def run_pycolmap(image_dir: Path, work_dir: Path, cfg: CalibrationConfig, mask_dir: Path | None = None,
                 min_model_size: int = 3, num_threads: int = 2, pairs_file: Path | None = None) -> dict[str, Any]:
    """Run the SfM worker on ``image_dir/<camera>/<image>.png``; returns its result dict (raises on failure)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = {"camera_model": cfg.camera_model, "max_features": cfg.max_features, "min_model_size": min_model_size,
            "num_threads": num_threads, "peak_threshold": cfg.peak_threshold, "min_inliers": cfg.min_inliers,
            "min_tri_angle": cfg.min_tri_angle, "pairs_file": str(pairs_file) if pairs_file else ""}
    proc = ctx.Process(target=_sfm_worker, args=(str(image_dir), str(mask_dir) if mask_dir else None,
                                                 str(work_dir), args, queue), daemon=True)
    proc.start()
    hint = "try --calibration.images background, or import a calibration with --calibration.file"
    try:
        result = next_message(proc, queue, time.time() + cfg.timeout_s if cfg.timeout_s else None)
    except TimeoutError:
        raise UserError(f"SfM worker gave no result within {cfg.timeout_s:.0f} s; {hint}") from None
    finally:
        stop_worker(proc)
    if result is None:
        raise UserError(f"the SfM worker (pycolmap) crashed (exit code {proc.exitcode}); {hint}")
    if not result.get("ok"):
        raise UserError(f"rig calibration failed: {result.get('error')}; try --calibration.images background or "
                        "frames, or import a known calibration with --calibration.method import --calibration.file")
    return result


def rig_from_sfm(result: dict[str, Any], cameras: list[str], sizes: dict[str, tuple[int, int]],
                 upscale: float = 1.0) -> tuple[Scene, list[str], dict[str, dict[int, tuple[float, float]]]]:
    """Turn the worker's images (``<camera>/<tag>.png``) into one Camera per rig camera.

    Returns the rig (registered cameras only, in ``cameras`` order), the names of unregistered cameras, and per
    registered camera the sparse points it observed, ``{camera: {point index: (u, v) pixels}}``.
    Intrinsics are scaled from the calibration image size back to ``sizes[camera] = (W, H)``.
    """
    by_cam: dict[str, list[dict[str, Any]]] = {}
    for img in result["images"]:
        by_cam.setdefault(img["name"].split("/")[0], []).append(img)
    rig: list[Camera] = []
    spread: dict[str, float] = {}
    for cid, name in enumerate(cameras, start=1):
        imgs = by_cam.get(name)
        if not imgs:
            continue
        first = imgs[0]
        w2cs = [np.asarray(i["w2c"]) for i in imgs]
        R = _mean_rotation([T[:3, :3] for T in w2cs])
        centre = np.mean([-T[:3, :3].T @ T[:3, 3] for T in w2cs], axis=0)
        if len(w2cs) > 1:
            spread[name] = max(rotation_angle_deg(T[:3, :3] @ R.T) for T in w2cs)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
        cam = _camera_from_colmap(name, first["model"], first["params"], first["width"], first["height"], w2c, cid)
        rig.append(cam.scaled(1.0 / upscale) if upscale != 1.0 else cam)
        if (rig[-1].width, rig[-1].height) != sizes[name]:
            rig[-1] = rig[-1].scaled(sizes[name][0] / rig[-1].width)
    # Observations per rig camera: {point index: (u, v)} in extracted-frame pixels (for the sparse depth file).
    index = {pid: k for k, pid in enumerate(result.get("point_ids", []))}
    observations: dict[str, dict[int, tuple[float, float]]] = {}
    for cam in rig:
        first = by_cam[cam.name][0]
        sx, sy = cam.width / first["width"], cam.height / first["height"]
        observations[cam.name] = {index[pid]: (u * sx, v * sy) for img in by_cam[cam.name]
                                  for pid, u, v in img.get("observations", []) if pid in index}
    scene = Scene(cameras=rig, points=np.array(result["points"]).reshape(-1, 3),
                  point_colors=np.array(result["colors"], dtype=np.uint8).reshape(-1, 3),
                  point_errors=np.array(result["errors"]))
    if spread:
        scene.meta["pose_spread_deg_max"] = max(spread.values())
    return scene, [n for n in cameras if n not in by_cam], observations


def _camera_from_colmap(name: str, model: str, p: list[float], width: int, height: int, w2c: np.ndarray,
                        cid: int) -> Camera:
    if model == "SIMPLE_PINHOLE":
        return Camera(name, width, height, p[0], p[0], p[1], p[2], w2c, "PINHOLE", (), cid)
    if model == "PINHOLE":
        return Camera(name, width, height, p[0], p[1], p[2], p[3], w2c, "PINHOLE", (), cid)
    if model == "SIMPLE_RADIAL":
        return Camera(name, width, height, p[0], p[0], p[1], p[2], w2c, "SIMPLE_RADIAL", (p[3],), cid)
    if model == "OPENCV":
        return Camera(name, width, height, p[0], p[1], p[2], p[3], w2c, "OPENCV", tuple(p[4:8]), cid)
    raise UserError(f"camera model {model} is not supported here; use SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL or OPENCV")


def write_calibration_images(images: dict[str, list[tuple[str, np.ndarray]]], out_dir: Path, upscale: float = 1.0,
                             masks: dict[str, list[np.ndarray]] | None = None) -> tuple[Path, Path | None]:
    """Write ``out_dir/images/<camera>/<tag>.png`` (and COLMAP masks ``masks/<camera>/<tag>.png.png``).

    Args:
        images: {camera: [(tag, (H, W, 3) uint8 RGB), ...]}.
        masks: optional {camera: [(H, W) uint8, 255 = static (features allowed), 0 = dynamic]} aligned with images.
    """
    import cv2

    if out_dir.exists():
        shutil.rmtree(out_dir)
    img_dir, mask_dir = out_dir / "images", (out_dir / "masks" if masks else None)
    for cam, items in images.items():
        (img_dir / cam).mkdir(parents=True, exist_ok=True)
        for k, (tag, rgb) in enumerate(items):
            if upscale != 1.0:
                rgb = cv2.resize(rgb, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(img_dir / cam / f"{tag}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if mask_dir is not None and masks is not None:
                (mask_dir / cam).mkdir(parents=True, exist_ok=True)
                m = masks[cam][k]
                if upscale != 1.0:
                    m = cv2.resize(m, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
                # COLMAP reads the mask of image X.png from X.png.png; zero pixels get no features.
                cv2.imwrite(str(mask_dir / cam / f"{tag}.png.png"), m)
    return img_dir, mask_dir


def synced_pairs(images: dict[str, list[tuple[str, np.ndarray]]], path: Path) -> Path:
    """Image pairs for synchronized instants: every camera pair at the same instant (tag), and every instant pair
    of the same camera (zero baseline: ties each camera's instants into one track set)."""
    lines = []
    cams = list(images)
    tags = {c: [t for t, _ in images[c]] for c in cams}
    for i, a in enumerate(cams):
        for b in cams[i + 1:]:
            lines += [f"{a}/{t}.png {b}/{t}.png" for t in tags[a] if t in set(tags[b])]
        lines += [f"{a}/{t1}.png {a}/{t2}.png" for k, t1 in enumerate(tags[a]) for t2 in tags[a][k + 1:]]
    path.write_text("\n".join(lines) + "\n")
    return path


def calibrate_sfm(images: dict[str, list[tuple[str, np.ndarray]]], work_dir: Path, cfg: CalibrationConfig,
                  sizes: dict[str, tuple[int, int]], masks: dict[str, list[np.ndarray]] | None = None,
                  num_threads: int = 2) -> tuple[Scene, dict[str, dict[int, tuple[float, float]]]]:
    """Calibrate the rig with pycolmap.

    Returns the rig (registered cameras only: ``meta["calibration"]["unregistered"]`` lists the others; see
    ``require_all_registered``) and the sparse observations per camera (see ``rig_from_sfm``).

    Raises:
        UserError: SfM found no model at all.
    """
    cameras = list(images)
    img_dir, mask_dir = write_calibration_images(images, work_dir, cfg.upscale, masks)
    n_images = sum(len(v) for v in images.values())
    pairs_file = synced_pairs(images, work_dir / "pairs.txt") if cfg.images == "synced" else None
    result = run_pycolmap(img_dir, work_dir, cfg, mask_dir, min_model_size=min(3, n_images),
                          num_threads=num_threads, pairs_file=pairs_file)
    rig, missing, observations = rig_from_sfm(result, cameras, sizes, cfg.upscale)
    rig.meta["calibration"] = {"method": "sfm", "images": cfg.images, "camera_model": cfg.camera_model,
                               "registered": len(rig.cameras), "cameras": len(cameras), "unregistered": missing,
                               "points": int(len(rig.points)),
                               "mean_reprojection_error_px": result["mean_reprojection_error"],
                               "models_found": result["num_models"]}
    if "pose_spread_deg_max" in rig.meta:
        rig.meta["calibration"]["pose_spread_deg_max"] = rig.meta.pop("pose_spread_deg_max")
    return rig, observations


def require_all_registered(rig: Scene) -> None:
    """Raise UserError naming the cameras that SfM left unregistered (a rig needs every camera)."""
    cal = rig.meta.get("calibration", {})
    if cal.get("unregistered"):
        raise UserError(f"SfM registered {cal['registered']} of {cal['cameras']} cameras; not registered: "
                        f"{cal['unregistered']}. Try --calibration.images background or frames (more static "
                        "texture), --calibration.upscale 2, or import a known calibration with "
                        "--calibration.method import --calibration.file FILE (or give --calibration.file with "
                        "--calibration.fallback-import)")
