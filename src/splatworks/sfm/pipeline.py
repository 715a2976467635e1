"""Structure from motion: a folder of photos -> calibrated pinhole cameras, undistorted images, sparse points.

``run_sfm(images_dir, work_dir)`` writes::

    WORK_DIR/
      input/                 prepared copies of the photos (EXIF rotation applied, RGBA composited on background)
      database.db            COLMAP features, matches and two-view geometries (minus pairs the pose check cut)
      sparse_raw/N/          every model COLMAP built (it splits when images do not connect)
      sparse_repair/         the model after the pose check re-registered misplaced images (when it did)
      sparse/0/              the kept model after undistortion (binary cameras/images/points3D, PINHOLE)
      images/                undistorted images: what training reads
      scene.json, points.npz the Scene (OpenCV world_to_camera, PINHOLE intrinsics); meta["sfm"] has the report
      sparse_depth.npz, colmap_depth.npy   per-view sparse depth (see ``splatworks.sfm.depth``)
      sfm_config.json        the resolved config;  colmap.log  COLMAP's own log

The input folder is never modified. pycolmap runs in a spawned worker process (``splatworks.sfm.worker``) so a
native crash surfaces as an error here instead of killing the caller; its progress comes back as events with
stages ``sfm.prepare``, ``sfm.extract``, ``sfm.match``, ``sfm.map``, ``sfm.check``, ``sfm.undistort``.
Call it from code guarded by ``if __name__ == "__main__":`` (the worker is started with multiprocessing's
spawn method, which re-imports the main module).

Beyond COLMAP's defaults: every registered pose is checked against the relative rotations of its verified
pairs (``splatworks.sfm.checks``). A group of images whose poses contradict their pairs to the rest of the model
(on lego, 6 neighbouring views registered onto the mirrored side) is repaired: the pairs that contradict the
corrected poses are removed from the database and the group is registered again. Images still misplaced after
that are dropped (or, with ``--no-drop-misplaced``, kept and flagged) and reported in ``meta["sfm"]``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from splatworks.config import option, to_dict, to_json
from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Scene

log = logging.getLogger("splatworks.sfm")

CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


@dataclass
class SfmConfig:
    """Settings of ``splatworks sfm`` (every field is a command-line option)."""

    max_image_size: int = option(1600, "Longest image side used for feature extraction (pixels); larger images "
                                       "are downscaled for SIFT only, undistorted images keep full size.")
    max_num_features: int = option(8192, "Most SIFT features kept per image.")
    estimate_affine_shape: bool = option(False, "Affine-covariant SIFT (slower; helps strong viewpoint changes).")
    domain_size_pooling: bool = option(False, "Domain-size pooled SIFT descriptors (slower; more robust).")
    matcher: str = option("auto", "Which image pairs to match: exhaustive (all pairs), sequential (neighbours "
                                  "in name order, for video frames), auto (exhaustive up to "
                                  "--exhaustive-max-images, sequential beyond for numbered frames).",
                          choices=("auto", "exhaustive", "sequential"))
    exhaustive_max_images: int = option(300, "auto matcher: largest set matched exhaustively.")
    sequential_overlap: int = option(10, "sequential matcher: neighbours matched on each side.")
    guided_matching: bool = option(False, "Re-match each verified pair guided by its epipolar geometry.")
    min_num_inliers: int = option(15, "Fewest RANSAC inliers for a pair of images to count as matched.")
    max_error: float = option(4.0, "RANSAC inlier threshold for two-view geometry (pixels).")
    mapper: str = option("incremental", "incremental (COLMAP's default) or global (rotation averaging + global "
                                        "positioning, pycolmap's GlobalPipeline).",
                         choices=("incremental", "global"))
    init_min_inliers: int = option(100, "incremental mapper: inliers needed by the initial image pair.")
    abs_pose_min_inliers: int = option(30, "incremental mapper: 2D-3D inliers needed to register an image.")
    camera_model: str = option("SIMPLE_RADIAL", "COLMAP camera model to calibrate.", choices=CAMERA_MODELS)
    camera_mode: str = option("auto", "Shared intrinsics: single (one camera for all images), per_image, or auto "
                                      "(single when all images have the same size and EXIF camera).",
                              choices=("auto", "single", "per_image"))
    background: tuple[float, float, float] = option((1.0, 1.0, 1.0), "RGB in [0, 1] that RGBA images are "
                                                                     "composited on.")
    pose_check: bool = option(True, "Check every registered pose against its pairs' two-view geometries and "
                                    "find images placed wrongly (e.g. on a symmetric part of the object).")
    pose_check_max_deg: float = option(10.0, "Pose check: largest disagreement (degrees) between a pair's "
                                             "relative rotation and the model's for the pair to agree.")
    pose_check_strong_inliers: int = option(100, "Pose check: inliers of a pair that can link images into the "
                                                 "trusted core (lowered for weakly matched sets).")
    pose_check_ratio: float = option(2.0, "Pose check: a group is misplaced when disagreeing inliers exceed "
                                          "this many times the agreeing ones.")
    repair_misplaced: bool = option(True, "Remove the pairs that contradict the model and register misplaced "
                                          "images again.")
    drop_misplaced: bool = option(True, "Drop images still misplaced after repair (else keep and flag them).")
    min_registered: int = option(3, "Fail when fewer images than this register.")
    min_registered_fraction: float = option(0.3, "Fail when less than this fraction of the images registers.")
    num_threads: int = option(-1, "CPU threads for COLMAP (-1: all cores).")
    seed: int = option(0, "Random seed (RANSAC, mapping) for repeatable runs.")
    timeout_s: float = option(0.0, "Give up after this many seconds (0: no limit).")


PRESETS: dict[str, SfmConfig] = {
    # COLMAP's own defaults, for comparison.
    "colmap": SfmConfig(pose_check=False),
    # Recommended: defaults plus the pose check.
    "default": SfmConfig(),
    # Small or quick runs (tests, previews).
    "fast": SfmConfig(max_image_size=1024, max_num_features=4096),
    # Hard captures: affine SIFT, DSP, guided matching, stricter verification.
    "quality": SfmConfig(estimate_affine_shape=True, domain_size_pooling=True, guided_matching=True,
                         min_num_inliers=30),
}


@dataclass
class SfmResult:
    """What ``run_sfm`` produced.

    Attributes:
        scene: registered cameras (undistorted PINHOLE) and sparse points; ``scene.meta["sfm"]`` is the report.
        work_dir: the work folder (layout in the module docstring).
        report: ``scene.meta["sfm"]``: registered/total, dropped and flagged images with reasons, mean
            reprojection error (pixels), number of points, seconds per stage, model sizes.
    """

    scene: Scene
    work_dir: Path
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def images_dir(self) -> Path:
        return self.work_dir / "images"

    @property
    def sparse_dir(self) -> Path:
        return self.work_dir / "sparse" / "0"


def run_sfm(images_dir: str | Path, work_dir: str | Path, config: SfmConfig | None = None,
            progress: ProgressFn | None = None) -> SfmResult:
    """Calibrate the photos in ``images_dir``; results go to ``work_dir`` (see the module docstring).

    Raises:
        InputError: unusable images (the message lists each file and its problem).
        UserError: too few images registered (the message names the likely causes), or bad settings.
        RuntimeError: pycolmap crashed or failed unexpectedly (see ``work_dir/colmap.log``).
    """
    from splatworks.scene.images import prepare_images

    cfg = config or SfmConfig()
    _validate(cfg)
    images_dir, work = Path(images_dir), Path(work_dir)
    if not images_dir.is_dir():
        raise InputError(f"image folder {images_dir} does not exist or is not a folder")
    if work.resolve() == images_dir.resolve() or images_dir.resolve() in work.resolve().parents:
        raise UserError(f"choose a work folder outside the image folder {images_dir} (it is never modified)")
    work.mkdir(parents=True, exist_ok=True)
    to_json(cfg, work / "sfm_config.json")

    t0 = time.time()
    emit(progress, "sfm.prepare", 0, 0, f"preparing images from {images_dir}")
    prepared = work / "input"
    if prepared.exists():
        import shutil

        shutil.rmtree(prepared)
    infos = prepare_images(images_dir, prepared, background=tuple(cfg.background))
    names = [i.path.name for i in infos]
    had_alpha = any(_source_has_alpha(i.source) for i in infos)
    camera_mode = cfg.camera_mode if cfg.camera_mode != "auto" else _auto_camera_mode(infos)
    matcher = cfg.matcher if cfg.matcher != "auto" else _auto_matcher(names, cfg.exhaustive_max_images)
    seconds = {"prepare": time.time() - t0}
    emit(progress, "sfm.prepare", len(names), len(names), f"{len(names)} images prepared ({matcher} matching, "
                                                          f"{camera_mode} camera)")
    job = {"config": to_dict(cfg), "work_dir": str(work), "prepared_dir": str(prepared), "names": names,
           "camera_mode": camera_mode, "matcher": matcher, "had_alpha": had_alpha, "seconds": seconds,
           "source_names": {i.path.name: i.source.name for i in infos if i.source is not None}}
    _run_worker(job, progress, timeout=cfg.timeout_s, log_path=work / "colmap.log")
    scene = Scene.load(work)
    report = scene.meta.get("sfm", {})
    for note in report.get("notes", []):
        log.warning(note)
    return SfmResult(scene=scene, work_dir=work, report=report)


def _validate(cfg: SfmConfig) -> None:
    if cfg.max_image_size < 64:
        raise UserError("--max-image-size must be at least 64 pixels")
    if cfg.camera_model not in CAMERA_MODELS:
        raise UserError(f"--camera-model must be one of {', '.join(CAMERA_MODELS)}")
    if len(cfg.background) != 3 or not all(0.0 <= c <= 1.0 for c in cfg.background):
        raise UserError("--background takes three numbers in [0, 1], e.g. --background 1 1 1")


def _source_has_alpha(path: Path | None) -> bool:
    if path is None:
        return False
    try:
        from splatworks.scene.images import probe_image

        return probe_image(path).has_alpha
    except Exception:  # noqa: BLE001 - already validated by prepare_images; this is only for the report
        return False


def _auto_camera_mode(infos: list[Any]) -> str:
    """One shared camera when every image has the same size and the same EXIF make/model/focal length."""
    sizes = {(i.width, i.height) for i in infos}
    if len(sizes) > 1:
        return "per_image"
    exif = {_exif_camera(i.path) for i in infos}
    return "single" if len(exif) == 1 else "per_image"


def _exif_camera(path: Path) -> tuple[Any, ...]:
    try:
        import PIL.Image

        with PIL.Image.open(path) as im:
            ex = im.getexif()
            sub = ex.get_ifd(0x8769) if ex else {}
            return (ex.get(0x010F), ex.get(0x0110), str(sub.get(0x920A)) if sub else None)
    except Exception:  # noqa: BLE001
        return (None, None, None)


_FRAME_RE = re.compile(r"^(.*?)(\d+)\.[A-Za-z0-9]+$")


def _auto_matcher(names: list[str], exhaustive_max: int) -> str:
    """Exhaustive for sets up to ``exhaustive_max``; sequential for larger sets of numbered video frames."""
    if len(names) <= exhaustive_max:
        return "exhaustive"
    parts = [_FRAME_RE.match(n) for n in names]
    if all(parts) and len({p.group(1) for p in parts if p}) == 1:
        return "sequential"
    log.warning("%d unordered images: exhaustive matching will be slow (quadratic in the number of images)",
                len(names))
    return "exhaustive"


def _run_worker(job: dict[str, Any], progress: ProgressFn | None, timeout: float, log_path: Path) -> dict[str, Any]:
    """Start the pycolmap worker, relay its progress, return its result or raise its error."""
    from splatworks.sfm.process import run_in_worker
    from splatworks.sfm.worker import worker_main

    return run_in_worker(worker_main, job, name="splatworks-sfm", what="SfM", progress=progress, timeout=timeout,
                         log_path=log_path)


def preset(name: str, **overrides: Any) -> SfmConfig:
    """A named preset (``colmap``, ``default``, ``fast``, ``quality``) with optional field overrides."""
    if name not in PRESETS:
        raise UserError(f"unknown SfM preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def load_report(work_dir: str | Path) -> dict[str, Any]:
    """The SfM report stored in ``work_dir/scene.json``."""
    return json.loads((Path(work_dir) / "scene.json").read_text()).get("meta", {}).get("sfm", {})
