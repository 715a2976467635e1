"""The pycolmap side of SfM; runs in a spawned worker process (``pipeline.run_sfm`` starts it).

Native code can crash (segfault, abort) on odd input; in a worker that kills only the worker, and the parent
turns it into an error message. Messages to the parent go through a queue as plain tuples:

    ("event", stage, step, total, message)   progress (stage "sfm.extract", "sfm.match", "sfm.map", ...)
    ("done", result_dict)                    success; the Scene is already saved in the work dir
    ("error", kind, message)                 kind "user" (bad input: a UserError) or "internal"

Nothing here imports torch. PIL is imported before pycolmap (their PNG/zlib builds clash otherwise).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import PIL.Image  # noqa: F401  -- before pycolmap, always
import numpy as np

from splatworks.scene.camera import natural_key

log = logging.getLogger("splatworks.sfm")

Send = Callable[..., None]


def match_database(pycolmap: Any, db_path: str | Path, cfg: dict[str, Any], matcher: str, threads: int, work: Path,
                   send: Send, relative_pose: bool = False) -> None:
    """COLMAP's matcher (``exhaustive`` or ``sequential``) plus RANSAC verification over the database's features.

    ``cfg`` holds the SfmConfig fields guided_matching, min_num_inliers, max_error, seed, sequential_overlap.
    """
    mopts = pycolmap.FeatureMatchingOptions()
    mopts.num_threads = threads
    mopts.guided_matching = bool(cfg["guided_matching"])
    verify = pycolmap.TwoViewGeometryOptions()
    verify.min_num_inliers = int(cfg["min_num_inliers"])
    verify.compute_relative_pose = relative_pose
    verify.ransac.max_error = float(cfg["max_error"])
    verify.ransac.random_seed = int(cfg["seed"])
    with LogProgress(work / "colmap.log", "sfm.match", send):
        if matcher == "sequential":
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = int(cfg["sequential_overlap"])
            pycolmap.match_sequential(db_path, matching_options=mopts, pairing_options=pairing,
                                      verification_options=verify, device=pycolmap.Device.cpu)
        else:
            pycolmap.match_exhaustive(db_path, matching_options=mopts, verification_options=verify,
                                      device=pycolmap.Device.cpu)


def extract_sift(pycolmap: Any, db_path: str | Path, images: Path, names: list[str], cfg: dict[str, Any],
                 camera_model: str, camera_mode: Any, threads: int) -> None:
    """COLMAP SIFT extraction into ``db_path`` with the SfM config's feature settings (CPU), one call for full SfM
    and for triangulation at known poses."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    ext = pycolmap.FeatureExtractionOptions()
    ext.max_image_size = int(cfg["max_image_size"])
    ext.num_threads = threads
    ext.sift.max_num_features = int(cfg["max_num_features"])
    ext.sift.estimate_affine_shape = bool(cfg["estimate_affine_shape"])
    ext.sift.domain_size_pooling = bool(cfg["domain_size_pooling"])
    pycolmap.extract_features(db_path, images, image_names=names, camera_mode=camera_mode, reader_options=reader,
                              extraction_options=ext, device=pycolmap.Device.cpu)


def worker_main(job: dict[str, Any], queue: Any) -> None:
    """Entry point of the worker process: run every stage, report through ``queue`` (``sfm.process``)."""
    from splatworks.sfm.process import serve

    serve(job, queue, run_stages)


def _redirect_native_logs(path: Path) -> None:
    """Send COLMAP's glog output (C++ stderr) to a file in the work dir instead of the user's terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


# COLMAP's progress lines in its log: per image while extracting, per block (exhaustive) or image (sequential).
_PROGRESS = {
    "sfm.extract": re.compile(r"Processed file \[(\d+)/(\d+)\]"),
    "sfm.match": re.compile(r"(?:Processing block \[(\d+)/(\d+), (\d+)/(\d+)\])|(?:Matching image \[(\d+)/(\d+)\])"),
}


class LogProgress:
    """Follow COLMAP's log file during a stage and turn its progress lines into events (no native hooks)."""

    def __init__(self, path: Path, stage: str, send: Send) -> None:
        self.path, self.stage, self.send = path, stage, send
        self.stop = threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LogProgress":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=2)

    def _run(self) -> None:
        pattern = _PROGRESS[self.stage]
        while not self.stop.wait(0.5):
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
            except OSError:
                continue
            cut = chunk.rfind(b"\n") + 1  # only whole lines
            self.offset += cut
            last = None
            for m in pattern.finditer(chunk[:cut].decode("utf-8", "replace")):
                last = m
            if last is None:
                continue
            g = [int(x) if x else 0 for x in last.groups()]
            if self.stage == "sfm.extract":
                step, total = g[0], g[1]
            elif g[0]:  # block a/b, c/d of a b x d grid
                step, total = (g[0] - 1) * g[3] + g[2] - 1, g[1] * g[3]
            else:
                step, total = g[4], g[5]
            self.send("event", self.stage, step, total, "")


def run_stages(job: dict[str, Any], send: Send) -> dict[str, Any]:
    """Extract, match, map, check, undistort, export. ``job`` holds plain values (see ``pipeline._job``)."""
    import pycolmap

    cfg = job["config"]
    work = Path(job["work_dir"])
    images = Path(job["prepared_dir"])
    names: list[str] = job["names"]
    db_path = work / "database.db"
    if db_path.exists():
        db_path.unlink()  # a re-run starts from scratch: stale features would be mixed with new ones
    seconds: dict[str, float] = dict(job.get("seconds", {}))
    pycolmap.set_random_seed(int(cfg["seed"]))
    threads = int(cfg["num_threads"])

    # ---- features ----------------------------------------------------------------------------------------------
    t0 = time.time()
    send("event", "sfm.extract", 0, len(names), f"extracting SIFT features from {len(names)} images")
    mode = {"single": pycolmap.CameraMode.SINGLE, "per_image": pycolmap.CameraMode.PER_IMAGE}[job["camera_mode"]]
    with LogProgress(work / "colmap.log", "sfm.extract", send):
        extract_sift(pycolmap, db_path, images, names, cfg, cfg["camera_model"], mode, threads)
    seconds["extract"] = time.time() - t0
    send("event", "sfm.extract", len(names), len(names), f"features extracted in {seconds['extract']:.1f} s")

    # ---- matching ----------------------------------------------------------------------------------------------
    t0 = time.time()
    matcher = job["matcher"]
    send("event", "sfm.match", 0, 0, f"{matcher} matching")
    # the pose check compares the model against the pairs' relative poses
    match_database(pycolmap, db_path, cfg, matcher, threads, work, send, relative_pose=True)
    seconds["match"] = time.time() - t0
    send("event", "sfm.match", 1, 1, f"matched in {seconds['match']:.1f} s")  # 1 of 1: stage done

    # ---- mapping -----------------------------------------------------------------------------------------------
    t0 = time.time()
    raw = work / "sparse_raw"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    models = _map(pycolmap, cfg, db_path, images, raw, len(names), send)
    seconds["map"] = time.time() - t0
    if not models:
        raise _too_few(0, len(names), "COLMAP could not find an initial image pair")
    sizes = sorted(((int(rec.num_reg_images()), idx) for idx, rec in models.items()), reverse=True)
    best = models[sizes[0][1]]
    send("event", "sfm.map", sizes[0][0], len(names),
         f"registered {sizes[0][0]} of {len(names)} images in {seconds['map']:.1f} s")
    notes: list[str] = []
    if len(models) > 1:
        notes.append(f"COLMAP split the images into {len(models)} separate models "
                     f"(sizes {[s for s, _ in sizes]}); kept the largest ({sizes[0][0]} images)")
        send("event", "sfm.map", sizes[0][0], len(names), notes[-1])

    # ---- pose check (misplaced images) -------------------------------------------------------------------------
    t0 = time.time()
    flagged: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    if cfg["pose_check"]:
        send("event", "sfm.check", 0, 1, "checking each pose against its two-view geometries")
        before = len(notes)
        best, groups = _check_and_repair(pycolmap, cfg, best, db_path, images, work, len(names), notes)
        outcome = notes[-1] if len(notes) > before else "all poses agree with their matches"
        for g in groups:
            reason = (f"misplaced with {len(g.image_ids) - 1} neighbouring view(s): its pairs to the rest of the "
                      f"model disagree with its pose ({g.disagreeing} inliers disagree, {g.agreeing} agree; "
                      "likely registered onto a symmetric or repeated part of the scene)")
            for image_id, name in zip(g.image_ids, g.names):
                if cfg["drop_misplaced"]:
                    dropped.append({"name": name, "reason": reason})
                    _deregister(best, image_id)
                else:
                    flagged.append({"name": name, "reason": reason})
        if dropped:
            notes.append(f"dropped {len(dropped)} misplaced image(s) that could not be placed consistently: "
                         + ", ".join(d["name"] for d in dropped))
        elif flagged:
            notes.append(f"flagged {len(flagged)} image(s) whose pose disagrees with their matches (kept): "
                         + ", ".join(d["name"] for d in flagged))
        send("event", "sfm.check", 1, 1, notes[-1] if (dropped or flagged) else outcome)
    seconds["check"] = time.time() - t0

    registered = sorted(best.images[i].name for i in best.reg_image_ids())
    reg_set = set(registered)
    elsewhere = {rec.images[i].name for idx, rec in models.items() if idx != sizes[0][1]
                 for i in rec.reg_image_ids()}
    already = {d["name"] for d in dropped}
    for name in names:
        if name in reg_set or name in already:
            continue
        reason = ("in a smaller separate model: no matches connect it to the kept one" if name in elsewhere
                  else "not registered: too few matches to the model")
        dropped.append({"name": name, "reason": reason})
    min_needed = max(int(cfg["min_registered"]), int(np.ceil(float(cfg["min_registered_fraction"]) * len(names))))
    if len(registered) < min_needed:
        raise _too_few(len(registered), len(names), f"only {len(registered)} images could be placed")

    # ---- undistortion and export -------------------------------------------------------------------------------
    t0 = time.time()
    send("event", "sfm.undistort", 0, len(registered), f"undistorting {len(registered)} images to pinhole")
    distorted = work / "sparse_distorted"
    _fresh(distorted)
    best.write_binary(str(distorted))
    und = work / "_undistort"
    _fresh(und)
    pycolmap.undistort_images(und, distorted, images, image_names=registered, num_threads=threads)
    rec = pycolmap.Reconstruction(str(und / "sparse"))
    for target in (work / "images", work / "sparse"):
        if target.exists():
            shutil.rmtree(target)
    (und / "images").rename(work / "images")
    (work / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(work / "sparse" / "0"))
    shutil.rmtree(und)
    seconds["undistort"] = time.time() - t0
    send("event", "sfm.undistort", len(registered), len(registered), f"undistorted in {seconds['undistort']:.1f} s")

    # ---- scene, sparse depth -----------------------------------------------------------------------------------
    t0 = time.time()
    from splatworks.scene.colmap import scene_from_reconstruction
    from splatworks.sfm.depth import sparse_depth_from_reconstruction, write_colmap_depth, write_sparse_depth

    scene = scene_from_reconstruction(rec, image_dir=work / "images")
    views = sparse_depth_from_reconstruction(rec)
    write_sparse_depth(views, work / "sparse_depth.npz")
    write_colmap_depth(views, work / "colmap_depth.npy")
    _write_llff(scene, views, np.array(sorted(rec.points3D.keys()), dtype=np.int64), work, notes)
    seconds["depth"] = time.time() - t0
    mean_err = float(rec.compute_mean_reprojection_error())
    scene.background = tuple(cfg["background"]) if job["had_alpha"] else None
    scene.meta.update({
        "source": "splatworks.sfm",
        "sfm": {
            "registered": len(scene.cameras), "total": len(names),
            "dropped": dropped, "flagged": flagged, "notes": notes,
            "mean_reprojection_error": mean_err, "num_points": int(rec.num_points3D()),
            "models": [s for s, _ in sizes], "matcher": matcher, "mapper": cfg["mapper"],
            "camera_mode": job["camera_mode"], "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "source_names": job.get("source_names", {}),
        },
    })
    scene.save(work)
    return {"scene": str(work / "scene.json"), "notes": notes}


def _map(pycolmap: Any, cfg: dict[str, Any], db_path: Path, images: Path, out: Path, total: int,
         send: Send) -> dict[int, Any]:
    if cfg["mapper"] == "global":
        send("event", "sfm.map", 0, total, "global mapping (rotation averaging + global positioning)")
        opts = pycolmap.GlobalPipelineOptions()
        opts.num_threads = int(cfg["num_threads"])
        opts.random_seed = int(cfg["seed"])
        return dict(pycolmap.global_mapping(db_path, images, out, opts))
    opts = _incremental_options(pycolmap, cfg, total)
    count = [0]

    def next_image() -> None:
        count[0] += 1
        send("event", "sfm.map", min(count[0] + 1, total), total, "")

    send("event", "sfm.map", 0, total, "incremental mapping")
    return dict(pycolmap.incremental_mapping(db_path, images, out, opts, next_image_callback=next_image))


def _check_and_repair(pycolmap: Any, cfg: dict[str, Any], rec: Any, db_path: Path, images: Path, work: Path,
                      total: int, notes: list[str]) -> tuple[Any, list[Any]]:
    """Find misplaced groups (``checks.py``); with ``repair_misplaced``, cut the pairs that contradict the
    corrected poses and register the groups again. Returns the model and the groups still misplaced."""
    from splatworks.sfm import checks

    max_deg = float(cfg["pose_check_max_deg"])

    def find(model: Any) -> tuple[list[int], list[Any], list[Any], dict[int, Any]]:
        edges = checks.read_edges(db_path, min_inliers=int(cfg["min_num_inliers"]), model=model)
        rots = checks.model_rotations(model)
        strong = checks.strong_threshold(edges, int(cfg["pose_check_strong_inliers"]))
        main, groups = checks.find_misplaced(edges, rots, max_deg=max_deg, strong=strong,
                                             ratio=float(cfg["pose_check_ratio"]))
        if len(main) < 0.5 * len(rots):  # no dominant consistent part: the check has nothing to trust
            notes.append(f"pose check skipped: only {len(main)} of {len(rots)} images form a consistent core")
            return main, [], edges, rots
        for g in groups:
            g.names = [model.images[i].name for i in g.image_ids]
        return main, groups, edges, rots

    main, groups, edges, rots = find(rec)
    if not groups or not cfg["repair_misplaced"]:
        return rec, groups
    for g in groups:
        checks.correction_for(g, edges, rots, set(main), max_deg=max_deg)
    cut = checks.edges_to_remove(edges, rots, groups, max_deg=max_deg)
    checks.delete_pairs(db_path, cut)
    moved = sorted((n for g in groups for n in g.names), key=natural_key)  # stable order for the report
    for g in groups:
        for image_id in g.image_ids:
            _deregister(rec, image_id)
    start = work / "sparse_check"
    _fresh(start)
    rec.write_binary(str(start))
    out = work / "sparse_repair"
    _fresh(out)
    opts = _incremental_options(pycolmap, cfg, total)
    models = dict(pycolmap.incremental_mapping(db_path, images, out, opts, input_path=start))
    repaired = max(models.values(), key=lambda r: r.num_reg_images()) if models else rec
    back = sorted(set(moved) & {repaired.images[i].name for i in repaired.reg_image_ids()})
    notes.append(f"{len(moved)} image(s) were misplaced ({', '.join(moved)}); removed {len(cut)} image pairs that "
                 f"contradict the model and registered again: {len(back)} placed back")
    _, still, _, _ = find(repaired)
    return repaired, still


def _write_llff(scene: Any, views: list[Any], point_ids: np.ndarray, work: Path, notes: list[str]) -> None:
    """poses_bounds.npy next to scene.json, near/far from the points each image observes (scene/llff.py)."""
    import warnings

    from splatworks.sfm.depth import visibility_matrix

    try:
        from splatworks.scene.llff import write_llff
    except ImportError:  # the LLFF writer is optional; the scene is complete without it
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undistorted PINHOLE cameras are what LLFF can hold
        write_llff(scene, work, visibility=visibility_matrix(views, [c.name for c in scene.cameras], point_ids))


def _incremental_options(pycolmap: Any, cfg: dict[str, Any], total: int) -> Any:
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = int(cfg["num_threads"])
    opts.random_seed = int(cfg["seed"])
    opts.min_model_size = min(int(opts.min_model_size), max(3, total // 4))
    opts.mapper.abs_pose_min_num_inliers = int(cfg["abs_pose_min_inliers"])
    opts.mapper.init_min_num_inliers = int(cfg["init_min_inliers"])
    return opts


def _deregister(rec: Any, image_id: int) -> None:
    """Remove an image's pose and its observations from the model (pycolmap 4: deregister its frame)."""
    image = rec.images[image_id]
    for idx, p2d in enumerate(image.points2D):
        if p2d.has_point3D():
            rec.delete_observation(image_id, idx)
    rec.deregister_frame(image.frame_id)


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _too_few(registered: int, total: int, what: str) -> Exception:
    from splatworks.errors import UserError

    return UserError(
        f"{what} ({registered} of {total} registered). Likely causes: too little overlap between neighbouring "
        "photos (each part of the scene should appear in 3+ photos taken a step apart), blurry or featureless "
        "images (plain walls, sky, motion blur), or too few images (take 20+ photos around the subject).")
