"""Sparse points at known camera poses: COLMAP's "point triangulator" (no pose estimation).

For calibrated rigs, NeRF-synthetic / ``transforms.json`` / LLFF / COLMAP scenes whose poses are already right,
full SfM is unnecessary and can fail outright (8 views 45 degrees apart: no initial pair). Here the poses and
intrinsics are kept exactly as given; only the 3D points are estimated:

1. SIFT features per image; the database's cameras get the known intrinsics before matching, so two-view
   verification is calibrated (essential matrix).
2. Epipolar-guided matching (default): for each pair of views (all pairs, or each view's nearest views for
   large sets), descriptors are matched only among keypoints within ``--epipolar-max-error`` pixels (Sampson distance) of
   the *known* epipolar geometry, mutual nearest neighbours with the ratio test inside that band. Unguided SIFT
   matching + RANSAC (``--no-pose-guided``) finds almost nothing between views 40+ degrees apart (lego, 8 views:
   one usable pair of 28); the band keeps far more true matches.
3. A ``pycolmap.Reconstruction`` whose cameras, rigs, frames and images carry the database's ids and the known
   poses (OpenCV world-to-camera, as COLMAP and our ``Scene``), then ``pycolmap.triangulate_points`` (COLMAP's
   ``IncrementalPipeline.TriangulateReconstruction``: triangulate, merge and complete tracks, bundle-adjust the
   points with every frame and camera fixed, filter by reprojection error and triangulation angle).

Coordinate conventions at this boundary: the input Scene is OpenCV world-to-camera (``transforms.json``'s OpenGL
camera-to-world is converted by its reader, ``scene.transforms``), and COLMAP's ``cam_from_world`` is the same
matrix, so poses are copied without conversion; intrinsics use pixel centres at +0.5 in both.

``run_known_poses(scene, work_dir)`` writes the same layout as ``run_sfm`` (module ``pipeline``)::

    WORK_DIR/
      images/                the scene's images, RGBA composited on the background (what training reads)
      database.db            features, matches, two-view geometries (may be large: not needed for training)
      sparse/0/              the model: known cameras and poses, triangulated points with tracks
      scene.json, points.npz the Scene: input cameras (held-out views kept in test_names), points with errors
      sparse_depth.npz, colmap_depth.npy, poses_bounds.npy   sparse depth (``splatworks.sfm.depth``); held-out
                             views have no samples (they are not matched unless ``--use-held-out``)
      sfm_config.json        the resolved configs;  colmap.log  COLMAP's own log

pycolmap runs in a spawned worker process (a native crash becomes an error here); PIL is imported before
pycolmap. Only pinhole cameras are accepted (undistort first: ``splatworks sfm`` on the photos does).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image  # noqa: F401  -- before pycolmap, always
import numpy as np

from splatworks.config import option, to_dict
from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Camera, Scene, natural_key
from splatworks.sfm.epipolar import (fundamental_from_poses, guided_matches, match_pairs,
                                     rays_meet_in_front)

log = logging.getLogger("splatworks.sfm")


@dataclass
class KnownPosesConfig:
    """Triangulation at known poses (``splatworks sfm SCENE --known-poses``). Features come from the SfM settings
    (``--max-image-size``, ``--max-num-features``, ``--estimate-affine-shape``, ...), as does ``--min-num-inliers``
    (matches a pair needs); ``--matcher`` and ``--max-error`` apply with ``--no-pose-guided`` only."""

    pose_guided: bool = option(True, "Match descriptors only along the known epipolar lines (Sampson distance "
                                     "below --epipolar-max-error) instead of COLMAP's matcher + RANSAC: many more matches "
                                     "between far-apart views.")
    max_pair_angle: float = option(60.0, "Pose-guided matching: only pair views whose optical axes differ by at most "
                                          "this many degrees (SIFT matches between views further apart are mostly "
                                          "wrong: on lego, 8 views, under 60 % of such points were on the object).")
    epipolar_max_error: float = option(1.0, "Pose-guided matching: largest Sampson distance of a match to the known "
                                            "epipolar geometry (pixels).")
    max_ratio: float = option(0.7, "Pose-guided matching: Lowe's ratio test (best / second-best descriptor distance "
                                   "within the epipolar band).")
    min_tri_angle: float = option(1.5, "Smallest triangulation angle of a point (degrees).")
    max_reproj_error: float = option(4.0, "Largest reprojection error of an observation kept in a track (pixels).")
    two_view_tracks: bool = option(True, "Also triangulate points seen in only two images (needed with few or "
                                         "far-apart views; COLMAP's mapper skips them).")
    use_held_out: bool = option(False, "Also match and triangulate the scene's held-out views (test_names); off so "
                                       "that evaluation views leak nothing into the points.")


def run_known_poses(scene: Scene | str | Path, work_dir: str | Path, sfm_config: Any = None,
                    config: KnownPosesConfig | None = None, progress: ProgressFn | None = None) -> Any:
    """Triangulate sparse points for ``scene``'s known cameras; results in ``work_dir`` (module docstring).

    Args:
        scene: a Scene, or any path ``splatworks.scene.io.load_any`` reads (transforms.json, LLFF, COLMAP, ...).
        sfm_config: ``SfmConfig`` for features and matching (``camera_model``, ``mapper`` and the pose check are
            not used: poses and intrinsics are given).
        config: triangulation settings.

    Returns:
        ``SfmResult`` (``report`` = ``scene.meta["sfm"]``: points, mean reprojection error, track lengths, ...).

    Raises:
        InputError: missing or mis-sized images, non-pinhole cameras, invalid poses.
        UserError: too few training views, nothing triangulated (the message says what to try).
        RuntimeError: pycolmap crashed (see ``work_dir/colmap.log``).
    """
    from splatworks.sfm.pipeline import SfmConfig, SfmResult, _validate

    sfm_cfg = sfm_config or SfmConfig()
    cfg = config or KnownPosesConfig()
    _validate(sfm_cfg)
    work = Path(work_dir)
    if not isinstance(scene, Scene):
        from splatworks.scene.io import load_any

        if Path(scene).resolve() in (work.resolve(), (work / "scene.json").resolve()):
            raise UserError(f"choose a work folder other than the input scene's {work} (its scene.json would be "
                            "replaced)")
        scene = load_any(scene)
    if scene.image_dir is not None and Path(scene.image_dir).resolve() == (work / "images").resolve():
        raise UserError(f"choose another work folder: {work / 'images'} holds this scene's images, which "
                        "triangulation rewrites")
    cams = _check_scene(scene, cfg)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sfm_config.json").write_text(json.dumps({"sfm": to_dict(sfm_cfg), "known_poses": to_dict(cfg)},
                                                     indent=1))
    t0 = time.time()
    background = tuple(scene.background) if scene.background is not None else tuple(sfm_cfg.background)
    emit(progress, "sfm.prepare", 0, len(scene.cameras), f"preparing {len(scene.cameras)} images")
    had_alpha = _prepare_images(scene, work / "images", background, progress)
    seconds = {"prepare": time.time() - t0}
    job = {"sfm": to_dict(sfm_cfg), "config": to_dict(cfg), "work_dir": str(work), "seconds": seconds,
           "cameras": [c.to_dict() for c in scene.cameras], "triangulate": [c.name for c in cams],
           "test_names": list(scene.test_names), "background": list(background) if had_alpha else None,
           "meta": scene.meta}
    _run_worker(job, progress, timeout=sfm_cfg.timeout_s, log_path=work / "colmap.log")
    out = Scene.load(work)
    return SfmResult(scene=out, work_dir=work, report=out.meta.get("sfm", {}))


# ---- parent side ------------------------------------------------------------------------------------------------

def _check_scene(scene: Scene, cfg: KnownPosesConfig) -> list[Camera]:
    """The cameras to triangulate with; InputError/UserError for what the triangulator cannot use."""
    bad = [c.name for c in scene.cameras if not c.is_pinhole]
    if bad:
        raise InputError(f"{len(bad)} camera(s) have lens distortion (e.g. {bad[0]!r}); --known-poses needs pinhole "
                         "cameras: undistort the images first (e.g. run `splatworks sfm` on the photos, or "
                         "`colmap image_undistorter`)")
    for c in scene.cameras:
        R = c.world_to_camera[:3, :3]
        if not np.all(np.isfinite(c.world_to_camera)) or abs(np.linalg.det(R) - 1) > 1e-3 \
                or np.abs(R @ R.T - np.eye(3)).max() > 1e-3:
            raise InputError(f"camera {c.name!r}: its pose is not a rotation + translation; fix the poses file")
    held_out = set(scene.test_names)
    cams = [c for c in scene.cameras if cfg.use_held_out or c.name not in held_out]
    if len(cams) < 2:
        raise UserError(f"--known-poses needs at least 2 views to triangulate, the scene has {len(cams)} "
                        f"(besides {len(held_out)} held out); add views or pass --use-held-out")
    if scene.image_dir is None:
        raise InputError("the scene does not say where its images are; pass a scene whose images folder exists")
    return cams


def _prepare_images(scene: Scene, dst: Path, background: tuple[float, ...], progress: ProgressFn | None) -> bool:
    """Copy each camera's image to ``dst/<name>``, RGBA composited on ``background``; sizes must match the
    cameras. Returns whether any image had alpha."""
    from splatworks.scene.images import load_image_rgba, to_uint8

    dst.mkdir(parents=True, exist_ok=True)
    had_alpha = False
    for i, cam in enumerate(scene.cameras):
        src = scene.image_path(cam)
        if not src.is_file():
            raise InputError(f"image {cam.name!r} not found in {scene.image_dir}; point the scene at the folder that "
                             "holds its images")
        rgb, alpha = load_image_rgba(src)
        if rgb.shape[:2] != (cam.height, cam.width):
            raise InputError(f"{src}: image is {rgb.shape[1]}x{rgb.shape[0]} but camera {cam.name!r} is "
                             f"{cam.width}x{cam.height}; use the images the poses were made for (or rescale the "
                             "intrinsics)")
        target = dst / cam.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if alpha is None and src.resolve() != target.resolve():
            shutil.copyfile(src, target)  # untouched: no re-encoding loss
        elif alpha is not None:
            had_alpha = True
            bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
            out = rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])  # straight alpha, as PNG stores it
            PIL.Image.fromarray(to_uint8(out), "RGB").save(target, format=_format_of(target))
        emit(progress, "sfm.prepare", i + 1, len(scene.cameras), "")
    return had_alpha


def _format_of(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}.get(ext, "PNG")


def _run_worker(job: dict[str, Any], progress: ProgressFn | None, timeout: float, log_path: Path) -> dict[str, Any]:
    """Run ``worker_main`` in a spawned process (``sfm.process``); return its result or raise its error."""
    from splatworks.sfm.process import run_in_worker

    return run_in_worker(worker_main, job, name="splatworks-known-poses", what="triangulation", progress=progress,
                         timeout=timeout, log_path=log_path)


# ---- worker side (pycolmap) -------------------------------------------------------------------------------------

def worker_main(job: dict[str, Any], queue: Any) -> None:
    """Entry point of the worker process."""
    from splatworks.sfm.process import serve

    serve(job, queue, triangulate_stages)


def triangulate_stages(job: dict[str, Any], send: Any) -> dict[str, Any]:
    """Features, matching, pose-guided verification, triangulation, export (runs in the worker)."""
    import pycolmap

    from splatworks.sfm.worker import LogProgress, extract_sift

    sfm, cfg = job["sfm"], job["config"]
    work = Path(job["work_dir"])
    images = work / "images"
    cameras = [Camera.from_dict(d) for d in job["cameras"]]
    by_name = {c.name: c for c in cameras}
    names: list[str] = job["triangulate"]
    seconds: dict[str, float] = dict(job["seconds"])
    threads = int(sfm["num_threads"])
    pycolmap.set_random_seed(int(sfm["seed"]))
    db_path = work / "database.db"
    if db_path.exists():
        db_path.unlink()  # a re-run starts from scratch

    # ---- features, with the known intrinsics written into the database ------------------------------------
    t0 = time.time()
    send("event", "sfm.extract", 0, len(names), f"extracting SIFT features from {len(names)} images")
    with LogProgress(work / "colmap.log", "sfm.extract", send):
        extract_sift(pycolmap, db_path, images, names, sfm, "PINHOLE", pycolmap.CameraMode.PER_IMAGE, threads)
    db = pycolmap.Database.open(db_path)
    try:
        db_images = {im.name: im for im in db.read_all_images()}
        for name, im in db_images.items():
            cam = db.read_camera(im.camera_id)
            k = by_name[name]
            cam.params = [k.fx, k.fy, k.cx, k.cy]  # PINHOLE, pixels of the stored image
            cam.has_prior_focal_length = True
            db.update_camera(cam)
    finally:
        db.close()
    seconds["extract"] = time.time() - t0
    send("event", "sfm.extract", len(names), len(names), f"features extracted in {seconds['extract']:.1f} s")

    # ---- matching and verification -----------------------------------------------------------------------------
    t0 = time.time()
    from splatworks.sfm.pipeline import _auto_matcher

    matcher = sfm["matcher"] if sfm["matcher"] != "auto" else _auto_matcher(names, int(sfm["exhaustive_max_images"]))
    send("event", "sfm.match", 0, 0, "epipolar-guided matching" if cfg["pose_guided"] else f"{matcher} matching")
    if cfg["pose_guided"]:
        db = pycolmap.Database.open(db_path)
        try:
            id_of = {im.name: im.image_id for im in db.read_all_images()}
        finally:
            db.close()
        pair_list = match_pairs([by_name[n] for n in names], [id_of[n] for n in names],
                                int(sfm["exhaustive_max_images"]), 2 * int(sfm["sequential_overlap"]),
                                float(cfg["max_pair_angle"]))
        pairs = {"pose_guided": epipolar_guided_matching(pycolmap, db_path, by_name, pair_list,
                                                          float(cfg["epipolar_max_error"]),
                                                          int(sfm["min_num_inliers"]), float(cfg["max_ratio"]),
                                                          progress=lambda k, n: send("event", "sfm.match", k, n, ""))}
        matcher = f"epipolar-guided ({len(pair_list)} pairs)"
    else:
        from splatworks.sfm.worker import match_database

        match_database(pycolmap, db_path, sfm, matcher, threads, work, send)
        pairs = {"ransac": _count_verified(pycolmap, db_path, int(sfm["min_num_inliers"]))}
    seconds["match"] = time.time() - t0
    used = next(iter(pairs.values()))
    send("event", "sfm.match", 1, 1, f"{used['pairs']} verified pairs, {used['matches']} matches "
                                     f"in {seconds['match']:.1f} s")
    if used["pairs"] == 0:
        raise UserError(f"no pair of the {len(names)} views shares enough matches ({sfm['min_num_inliers']}+) to "
                        "triangulate anything; use views that overlap more, more features (--max-num-features), or "
                        "a lower --min-num-inliers")

    # ---- triangulation at the known poses ----------------------------------------------------------------------
    t0 = time.time()
    send("event", "sfm.triangulate", 0, 1, "triangulating at the known poses")
    rec = known_pose_reconstruction(pycolmap, db_path, by_name)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.random_seed = int(sfm["seed"])
    opts.min_num_matches = int(sfm["min_num_inliers"])
    tri = opts.triangulation
    tri.ignore_two_view_tracks = not bool(cfg["two_view_tracks"])
    tri.min_angle = float(cfg["min_tri_angle"])
    tri.merge_max_reproj_error = tri.complete_max_reproj_error = float(cfg["max_reproj_error"])
    opts.mapper.filter_max_reproj_error = float(cfg["max_reproj_error"])
    opts.mapper.filter_min_tri_angle = float(cfg["min_tri_angle"])
    raw = work / "sparse_raw"
    _fresh(raw)
    rec = pycolmap.triangulate_points(rec, db_path, images, raw, clear_points=False, options=opts,
                                      refine_intrinsics=False)
    _check_poses_kept(rec, by_name)
    # Views that were not triangulated (held out) become registered images without observations, so that every
    # camera of the scene has a (possibly empty) entry in the sparse-depth files and poses_bounds.npy.
    _add_untriangulated(pycolmap, rec, [c for c in cameras if c.name not in set(names)])
    seconds["triangulate"] = time.time() - t0
    n_points = int(rec.num_points3D())
    if n_points == 0:
        raise UserError("the matches gave no 3D point at the known poses; check that the poses belong to these "
                        "images (same order, OpenCV vs OpenGL axes), or raise --max-reproj-error")
    mean_err = float(rec.compute_mean_reprojection_error())
    send("event", "sfm.triangulate", 1, 1, f"{n_points} points, mean reprojection error {mean_err:.2f} px")
    sparse = work / "sparse" / "0"
    _fresh(sparse)
    rec.write_binary(str(sparse))
    shutil.rmtree(raw)  # the triangulator's own copy, without the held-out views

    # ---- scene and sparse depth -------------------------------------------------------------------------------
    t0 = time.time()
    from splatworks.scene.colmap import scene_from_reconstruction
    from splatworks.sfm.depth import sparse_depth_from_reconstruction, write_colmap_depth, write_sparse_depth
    from splatworks.sfm.worker import _write_llff

    out = scene_from_reconstruction(rec, image_dir=images)
    order = {c.name: c for c in out.cameras}
    out.cameras = [order[c.name] for c in sorted(cameras, key=lambda c: natural_key(c.name))]
    for c in out.cameras:  # exact input values (the model stores them as float64 already; keep ids too)
        src = by_name[c.name]
        c.world_to_camera, c.fx, c.fy, c.cx, c.cy = src.world_to_camera.copy(), src.fx, src.fy, src.cx, src.cy
        c.camera_id, c.mask_name, c.frame = src.camera_id, src.mask_name, src.frame
    out.test_names = list(job["test_names"])
    out.background = tuple(job["background"]) if job["background"] else None
    views = sparse_depth_from_reconstruction(rec)
    write_sparse_depth(views, work / "sparse_depth.npz")
    write_colmap_depth(views, work / "colmap_depth.npy")
    notes: list[str] = []
    _write_llff(out, views, np.array(sorted(rec.points3D.keys()), dtype=np.int64), work, notes)
    seconds["depth"] = time.time() - t0
    tracks = np.array([p.track.length() for p in rec.points3D.values()], dtype=np.int64)
    given = {k: v for k, v in dict(job["meta"]).items() if k != "sfm"}
    out.meta = {**given, "source": "splatworks.sfm.known_poses", "input_source": given.get("source")}
    out.meta["sfm"] = {
        "known_poses": True, "registered": len(names), "total": len(cameras), "triangulated_views": len(names),
        "num_points": n_points, "mean_reprojection_error": mean_err,
        "mean_track_length": float(tracks.mean()), "track_lengths": {str(k): int(v) for k, v in
                                                                      zip(*np.unique(tracks, return_counts=True))},
        "depth_samples": int(sum(len(v) for v in views)), "pairs": pairs, "matcher": matcher,
        "mapper": "known poses", "camera_mode": "per_image", "dropped": [], "flagged": [], "notes": notes,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    out.save(work)
    return {"scene": str(work / "scene.json")}


def _count_verified(pycolmap: Any, db_path: Path, min_inliers: int) -> dict[str, int]:
    db = pycolmap.Database.open(db_path)
    try:
        pair_ids, geoms = db.read_two_view_geometries()
        counts = [len(g.inlier_matches) for g in geoms if len(g.inlier_matches) >= min_inliers]
    finally:
        db.close()
    return {"pairs": len(counts), "matches": int(sum(counts))}


def epipolar_guided_matching(pycolmap: Any, db_path: Path, cameras: dict[str, Camera], pairs: list[tuple[int, int]],
                             max_error: float, min_inliers: int, max_ratio: float = 0.8, max_distance: float = 0.7,
                             chunk: int = 1024, progress: Any = None) -> dict[str, int]:
    """Match SIFT descriptors of each image pair only among keypoints that agree with the known poses.

    For image ids ``(a, b)`` (a < b): candidates are keypoint pairs whose Sampson distance to the known epipolar
    geometry is below ``max_error`` px; among them, mutual nearest neighbours in descriptor space (unit-length
    SIFT, distance ``sqrt(2 - 2 cos)``) that pass Lowe's ratio test against the second-best *candidate* (the
    epipolar band removes most look-alikes, so far more true matches survive than with unguided matching) and
    whose rays meet in front of both cameras. Matches and a calibrated two-view geometry (known F and relative
    pose) are written to the database; pairs with fewer than ``min_inliers`` matches get none.
    ``progress(done, total)`` is called after each pair. Returns the number of pairs kept and their matches.
    """
    db = pycolmap.Database.open(db_path)
    kept, total = 0, 0
    try:
        images = {im.image_id: im for im in db.read_all_images()}
        keypoints = {i: np.asarray(db.read_keypoints(i))[:, :2].astype(np.float64) for i in images}
        desc = {}
        for i in images:
            d = np.asarray(db.read_descriptors(i).data, dtype=np.float32)
            desc[i] = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        for k, (a, b) in enumerate(pairs):
            if progress is not None:
                progress(k, len(pairs))
            c1, c2 = cameras[images[a].name], cameras[images[b].name]
            F = fundamental_from_poses(c1, c2)
            m = guided_matches(F, keypoints[a], keypoints[b], desc[a], desc[b], max_error, max_ratio, max_distance,
                             chunk)
            if len(m):
                m = m[rays_meet_in_front(c1, c2, keypoints[a][m[:, 0]], keypoints[b][m[:, 1]])]
            if len(m) < min_inliers:
                continue
            db.write_matches(a, b, m.astype(np.uint32))
            geom = pycolmap.TwoViewGeometry()
            rel = c2.world_to_camera @ np.linalg.inv(c1.world_to_camera)
            geom.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geom.inlier_matches = m.astype(np.uint32)
            geom.F = F
            geom.cam2_from_cam1 = pycolmap.Rigid3d(rel[:3, :4])
            db.write_two_view_geometry(a, b, geom)
            kept, total = kept + 1, total + len(m)
    finally:
        db.close()
    return {"pairs": kept, "matches": total}


def known_pose_reconstruction(pycolmap: Any, db_path: Path, cameras: dict[str, Camera]) -> Any:
    """A Reconstruction with the database's ids (cameras, trivial rigs and frames, images) and the known poses.

    ``extract_features`` made one camera + rig per image and a frame per image (frame id = image id, rig id =
    camera id), which is the trivial layout ``add_image_with_trivial_frame`` builds; the ids must match the
    database's for the triangulator to find each image's features.
    """
    rec = pycolmap.Reconstruction()
    db = pycolmap.Database.open(db_path)
    try:
        frames = {f.frame_id: f for f in db.read_all_frames()}
        for im in sorted(db.read_all_images(), key=lambda im: im.image_id):
            frame = frames.get(im.image_id)
            if frame is None or frame.rig_id != im.camera_id:
                raise RuntimeError(f"unexpected database layout for {im.name} (frame/rig ids); cannot triangulate")
            if not rec.exists_camera(im.camera_id):
                rec.add_camera_with_trivial_rig(db.read_camera(im.camera_id))
            w2c = cameras[im.name].world_to_camera
            rec.add_image_with_trivial_frame(pycolmap.Image(name=im.name, camera_id=im.camera_id,
                                                            image_id=im.image_id), pycolmap.Rigid3d(w2c[:3, :4]))
    finally:
        db.close()
    return rec


def _add_untriangulated(pycolmap: Any, rec: Any, cams: list[Camera]) -> None:
    """Register ``cams`` (pinhole, known pose) in ``rec`` without observations."""
    next_cam = max(list(rec.cameras.keys()) + [0]) + 1
    next_img = max(list(rec.images.keys()) + list(rec.frames.keys()) + [0]) + 1
    for cam in cams:
        rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=cam.width, height=cam.height,
                                                        params=[cam.fx, cam.fy, cam.cx, cam.cy], camera_id=next_cam))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=cam.name, camera_id=next_cam, image_id=next_img),
                                         pycolmap.Rigid3d(cam.world_to_camera[:3, :4]))
        next_cam, next_img = next_cam + 1, next_img + 1


def _check_poses_kept(rec: Any, cameras: dict[str, Camera]) -> None:
    """The triangulator fixes every frame; fail loudly if a pose moved anyway (it would corrupt the depth)."""
    for image_id in rec.reg_image_ids():
        image = rec.images[image_id]
        moved = np.abs(np.asarray(image.cam_from_world().matrix()) - cameras[image.name].world_to_camera[:3, :4]).max()
        if moved > 1e-6:
            raise RuntimeError(f"pose of {image.name} changed by {moved:.2e} during triangulation")


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
