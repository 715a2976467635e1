"""``splatworks dynamic prepare``: multi-view videos -> a calibrated, masked :class:`DynamicDataset`.

Stages (each timed into ``dataset.json`` meta): frames (streaming decode to PNG), masks (per-camera background
model, or a pluggable segmenter), calibration (pycolmap on the static background, or a ground-truth import).
Nothing loads a whole video: decoding is one frame at a time and the background model sees a bounded sample.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.config import option, to_dict, to_json
from splatworks.dynamic import calibration as calib
from splatworks.dynamic import exchange, frames as fr, masks as mk
from splatworks.dynamic.dataset import DATASET_FILE, DENSE_DEPTH_FILE, DynamicDataset
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.sfm.mvs import DenseConfig

log = logging.getLogger(__name__)

# Dense points ('auto') need working images (after --mvs.scale) at least this many pixels on their short side.
MIN_DENSE_SIDE = 96

CONFIG_FILE = "prepare_config.json"
OUTPUT_DIRS = ("images", "masks", "previews", "calibration")  # what prepare writes besides single files


@dataclass
class PrepareConfig:
    start_frame: int = option(0, "First frame to extract (0-based index in the videos).")
    end_frame: int = option(0, "Stop before this frame (0 = to the end of the shortest video).")
    stride: int = option(1, "Keep every n-th frame.")
    resize: float = option(1.0, "Scale frames by this factor (e.g. 0.5 halves width and height).")
    max_size: int = option(0, "Cap the longest frame side at this many pixels (0 = no cap).")
    fps: float = option(30.0, "Frame rate to record for folders of frames (videos carry their own).")
    test_cameras: str = option("first", "Held-out test cameras (calibrated, never trained on): 'first' (the first "
                               "camera by name), 'none', or comma-separated names, e.g. cam00,cam05.")
    overwrite: bool = option(False, "Replace an existing dataset in the output folder.")
    num_threads: int = option(2, "Threads for SfM.")
    points: Path | None = option(None, "Import a point cloud (world frame of the calibration) as the rig's sparse "
                                 "points, the first frame's initial Gaussians: .ply (x, y, z, red, green, blue), "
                                 ".npz (points, colors) or a calibration .json with a 'points' entry.")
    triangulate: str = option("auto", "Sparse points at the imported calibration's poses (COLMAP's point "
                              "triangulator on the first frame's training views): 'auto' (when the calibration has "
                              "no points and no --points file; on failure training starts from random points), "
                              "'on' (a failure stops prepare), 'off'.", choices=("auto", "on", "off"))
    dense: str = option("auto", "Dense points at the known poses (plane-sweep multi-view stereo on the first frame's "
                        "training views, added to the sparse points): 'auto' (with an imported calibration and no "
                        "--points file, unless --triangulate off; on failure a warning), "
                        "'on' (always; a failure stops prepare), 'off'.", choices=("auto", "on", "off"))
    mvs: DenseConfig = option(factory=DenseConfig, help="dense points (plane-sweep MVS)")
    masks: mk.MaskConfig = option(factory=mk.MaskConfig, help="static/dynamic masks")
    calibration: calib.CalibrationConfig = option(factory=calib.CalibrationConfig, help="rig calibration")


PRESETS: dict[str, dict[str, Any]] = {
    # Quick look: every other frame, SfM on frame 0 only.
    "fast": {"stride": 2, "calibration": {"images": "frame0"}},
    # Default behaviour, spelled out.
    "default": {},
    # A studio with a calibration file: no SfM.
    "calibrated": {"calibration": {"method": "import"}},
}


def _select_test_cameras(spec: str, cameras: list[str]) -> list[str]:
    spec = spec.strip()
    if spec in ("", "none"):
        return []
    if spec == "first":
        return [cameras[0]]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in cameras]
    if unknown:
        raise UserError(f"--test-cameras names {unknown}, which are not among the cameras {cameras}")
    if len(names) >= len(cameras):
        raise UserError("--test-cameras holds out every camera; leave at least one for training")
    return names


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"cannot read {path} back (disk problem?)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _bar(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


def make_masks(root: Path, cameras: list[str], frames: list[int], cfg: mk.MaskConfig, need_background: bool,
               progress: ProgressFn | None = None, show_bar: bool = False
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Write ``masks/<camera>/<frame>.png`` and ``previews/<camera>.png``; return background images and a report.

    Returns:
        {camera: (H, W, 3) uint8 median background image} (only when ``need_background``) and
        {"method", "dynamic_fraction": {camera: mean fraction of dynamic pixels},
         "frame_dynamic_fraction": [per frame, mean over cameras of the dynamic fraction]}.
    """
    segmenter = mk.make_segmenter(cfg)
    backgrounds: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {"method": cfg.method, "dynamic_fraction": {}}
    per_frame = np.zeros(len(frames))
    total = len(cameras) * len(frames)
    bar = _bar(total, "masks", show_bar and segmenter is not None)
    done = 0
    n_samples = max(1, min(cfg.samples, len(frames)))
    sample_frames = [frames[i] for i in np.linspace(0, len(frames) - 1, n_samples).round().astype(int)]
    preview_frames = set(frames[i] for i in np.linspace(0, len(frames) - 1, min(cfg.preview_frames, len(frames)))
                         .round().astype(int)) if cfg.preview_frames > 0 else set()
    try:
        for cam in cameras:
            samples = [_read_rgb(root / "images" / cam / f"{f:06d}.png") for f in dict.fromkeys(sample_frames)]
            if need_background:
                # Unblurred median for SfM (the mask model's median is of blurred frames: too soft for SIFT).
                backgrounds[cam] = mk.median_image(samples)
            if segmenter is None:
                continue
            segmenter.fit(cam, samples)
            del samples
            out = root / "masks" / cam
            out.mkdir(parents=True, exist_ok=True)
            shown: list[np.ndarray] = []
            shown_dyn: list[np.ndarray] = []
            fraction = 0.0
            k = 0
            import cv2

            for f in frames:
                rgb = _read_rgb(root / "images" / cam / f"{f:06d}.png")
                dyn = segmenter.segment(cam, rgb)
                fraction += float(dyn.mean())
                per_frame[k] += float(dyn.mean()) / len(cameras)
                k += 1
                cv2.imwrite(str(out / f"{f:06d}.png"), mk.to_mask_image(dyn))
                if f in preview_frames:
                    shown.append(rgb)
                    shown_dyn.append(dyn)
                done += 1
                if bar is not None:
                    bar.update(1)
                emit(progress, "masks", done, total, f"{cam} frame {f}")
            report["dynamic_fraction"][cam] = fraction / len(frames)
            report["frame_dynamic_fraction"] = [round(float(x), 5) for x in per_frame]
            if shown:
                mk.contact_sheet(shown, shown_dyn, root / "previews" / f"{cam}.png")
    finally:
        if bar is not None:
            bar.close()
    return backgrounds, report


def _calibration_images(root: Path, cameras: list[str], frames: list[int], cfg: calib.CalibrationConfig,
                        backgrounds: dict[str, np.ndarray], have_masks: bool,
                        dynamic_fraction: list[float] | None = None
                        ) -> tuple[dict[str, list[tuple[str, np.ndarray]]], dict[str, list[np.ndarray]] | None]:
    """Images (and COLMAP feature masks) per camera for SfM, as chosen by ``cfg.images``."""
    import cv2

    if cfg.images == "background":
        return {c: [("background", backgrounds[c])] for c in cameras}, None
    chosen = [frames[0]] if cfg.images == "frame0" else \
        [frames[i] for i in dict.fromkeys(np.linspace(0, len(frames) - 1, max(1, cfg.num_frames)).round().astype(int))]
    if cfg.images == "frames" and dynamic_fraction:
        # The most static frames: the least of the scene is hidden behind (or confused by) moving things.
        order = np.argsort(np.asarray(dynamic_fraction), kind="stable")[: max(1, cfg.num_frames)]
        chosen = [frames[i] for i in sorted(order)]
    images = {c: [(f"{f:06d}", _read_rgb(root / "images" / c / f"{f:06d}.png")) for f in chosen] for c in cameras}
    masks = None
    if cfg.use_masks and have_masks and cfg.images == "frames":
        masks = {c: [cv2.imread(str(root / "masks" / c / f"{f:06d}.png"), cv2.IMREAD_GRAYSCALE) for f in chosen]
                 for c in cameras}
    return images, masks


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from splatworks.dynamic.points import read_points_file

    return read_points_file(path)


def _rig_points(rig: Any, root: Path, frame: int, cfg: PrepareConfig,
                imported: tuple[np.ndarray, np.ndarray] | None, warnings: list[str],
                progress: ProgressFn | None) -> dict[str, Any]:
    """Give ``rig`` sparse points: ``imported`` (``cfg.points``, read before any long work), else its own (SfM,
    or the calibration file's), else triangulation at its known poses.

    Returns a report for dataset meta: {"source": "sfm" | "calibration" | "file" | "triangulated" | "none",
    "count", ...}. A failed triangulation (``triangulate`` 'auto') is a warning: training falls back to random.
    """
    from splatworks.dynamic import points as pt

    if imported is not None:
        xyz, rgb = imported
        rig.points, rig.point_colors, rig.point_errors = xyz, rgb, np.full(len(xyz), np.nan)
        return {"source": "file", "file": str(Path(cfg.points).resolve()), "count": int(len(xyz))}
    if len(rig.points) > 0:
        method = rig.meta.get("calibration", {}).get("method", "sfm")
        return {"source": "calibration" if method == "import" else "sfm", "count": int(len(rig.points))}
    if cfg.triangulate == "off":
        return {"source": "none", "count": 0}
    emit(progress, "calibration", 0, 1, f"triangulating points of frame {frame} at the known poses")
    try:
        xyz, rgb, err, report = pt.triangulate_rig(rig, root / "images", frame, root / "calibration" / "points",
                                                   num_threads=cfg.num_threads)
    except (UserError, RuntimeError, ImportError, OSError) as exc:
        if cfg.triangulate == "on":
            raise UserError(f"triangulating points at the known poses failed: {exc}; pass --points FILE or "
                            "--triangulate off (random initial points)") from exc
        log.warning("triangulation at the known poses failed (%s); training will start from random points", exc)
        warnings.append(f"no 3D points: triangulation failed ({exc}); frame 0 starts from random points")
        return {"source": "none", "count": 0, "error": str(exc)}
    rig.points, rig.point_colors, rig.point_errors = xyz, rgb, err
    log.info("triangulated %d points of frame %d at the known poses", len(xyz), frame)
    return {"source": "triangulated", "frame": frame, "count": int(len(xyz)), **report}


def _dense_points(rig: Any, root: Path, frame: int, cfg: PrepareConfig, points_report: dict[str, Any],
                  warnings: list[str], progress: ProgressFn | None = None) -> dict[str, Any] | None:
    """Add plane-sweep MVS points of ``frame``'s training views to ``rig.points`` (see ``PrepareConfig.dense``).

    Returns the MVS report for dataset meta ("count", "valid_fraction", "consistent_fraction", "seconds", ...),
    or None when skipped. Updates ``points_report["count"]`` to the total and keeps the sparse count apart.
    """
    imported = rig.meta.get("calibration", {}).get("method") == "import"
    wanted = cfg.dense == "on" or (cfg.dense == "auto" and imported and cfg.triangulate != "off"
                                   and points_report.get("source") in ("triangulated", "calibration", "none"))
    if not wanted:
        return None
    smallest = min(min(c.width, c.height) for c in rig.cameras) * cfg.mvs.scale
    if cfg.dense == "auto" and smallest < MIN_DENSE_SIDE:
        # A plane sweep with 7x7 NCC windows on thumbnails finds mostly noise (measured: a 64x48 rig's static
        # model lost its depth coverage, 0.6 % of pixels instead of > 30 %).
        log.info("dense points skipped: working images are %d px on their short side (< %d); use --dense on "
                 "to force them", smallest, MIN_DENSE_SIDE)
        return None
    from splatworks.dynamic import points as pt

    emit(progress, "calibration", 0, 1, f"dense points of frame {frame} at the known poses")
    try:
        xyz, rgb, report = pt.dense_rig_points(rig, root / "images", frame, cfg.mvs,
                                               depth_out=root / DENSE_DEPTH_FILE)
    except (UserError, RuntimeError, ValueError, OSError) as exc:
        if cfg.dense == "on":
            raise UserError(f"dense points at the known poses failed: {exc}; pass --dense off") from exc
        log.warning("dense points at the known poses failed (%s); keeping the sparse points", exc)
        warnings.append(f"dense points failed ({exc}); frame 0 starts from the sparse points")
        return {"count": 0, "error": str(exc)}
    sparse = len(rig.points)
    rig.points = np.concatenate([rig.points, xyz])
    rig.point_colors = np.concatenate([rig.point_colors, rgb])
    rig.point_errors = np.concatenate([rig.point_errors, np.full(len(xyz), np.nan)])
    points_report["sparse_count"], points_report["count"] = sparse, int(len(rig.points))
    log.info("points of frame %d: %d sparse + %d dense (plane-sweep MVS on %d training views, %.1f s)", frame,
             sparse, len(xyz), len(report["views"]), sum(report["seconds"].values()))
    report = {k: v for k, v in report.items() if k != "views"}
    return {**report, "frame": frame, "depth_maps": DENSE_DEPTH_FILE}


def prepare(videos_dir: str | Path, out_dir: str | Path, config: PrepareConfig | None = None,
            progress: ProgressFn | None = None, show_bars: bool = False) -> DynamicDataset:
    """Extract frames, make masks and calibrate the rig; write and return the dataset.

    Args:
        videos_dir: one video (``cam00.mp4``) or one frame folder (``cam00/``) per fixed camera; >= 2 cameras.
        out_dir: dataset folder (layout in ``splatworks.dynamic.dataset``); refused if it holds a dataset and
            ``config.overwrite`` is off.
        progress: optional callback for ``ProgressEvent``s (stages ``frames``, ``masks``, ``calibration``).
        show_bars: draw tqdm bars (the CLI sets it).
    """
    cfg = config or PrepareConfig()
    root = Path(out_dir)
    if (root / DATASET_FILE).exists() and not cfg.overwrite:
        raise UserError(f"{root} already holds a prepared dataset; choose another -o folder or pass --overwrite")
    if cfg.calibration.method == "import" and cfg.calibration.file is None:
        raise UserError("--calibration.method import needs --calibration.file CALIBRATION.json")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # ---- frames
    t0 = time.perf_counter()
    sources, warnings = fr.probe_all(fr.discover_cameras(videos_dir), default_fps=cfg.fps)
    for w in warnings:
        log.warning(w)
    cameras = [s.name for s in sources]
    test_cameras = _select_test_cameras(cfg.test_cameras, cameras)
    n_common = min(s.n_frames for s in sources)
    indices = fr.frame_indices(n_common, cfg.start_frame, cfg.end_frame, cfg.stride)
    sizes = {s.name: fr.output_size(s.width, s.height, cfg.resize, cfg.max_size) for s in sources}
    # Read a calibration file before any long work, so that a wrong file fails fast.
    truth = (calib.import_calibration(cfg.calibration.file, cameras, sizes)
             if cfg.calibration.file is not None else None)
    imported_points = _read_points(cfg.points) if cfg.points is not None else None
    if (root / DATASET_FILE).exists():  # --overwrite: drop the old dataset's outputs, so no stale frame remains
        import shutil

        (root / DATASET_FILE).unlink()
        for sub in OUTPUT_DIRS:
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    to_json(cfg, root / CONFIG_FILE)
    emit(progress, "frames", 0, len(indices) * len(cameras), f"{len(cameras)} cameras x {len(indices)} frames")
    fr.extract_frames(sources, root / "images", indices, resize=cfg.resize, max_size=cfg.max_size,
                              progress=progress, show_bar=show_bars)
    timings["frames"] = time.perf_counter() - t0

    # ---- masks (before calibration: SfM uses the background images or the masks)
    t0 = time.perf_counter()
    need_bg = cfg.calibration.method == "sfm" and cfg.calibration.images == "background"
    backgrounds, mask_report = make_masks(root, cameras, indices, cfg.masks, need_bg, progress, show_bars)
    timings["masks"] = time.perf_counter() - t0

    # ---- calibration
    t0 = time.perf_counter()
    emit(progress, "calibration", 0, 1, f"calibrating {len(cameras)} cameras ({cfg.calibration.method})")
    observations = None
    if cfg.calibration.method == "import":
        assert truth is not None
        rig = truth
    else:
        images, sfm_masks = _calibration_images(root, cameras, indices, cfg.calibration, backgrounds,
                                                cfg.masks.method != "none",
                                                mask_report.get("frame_dynamic_fraction"))
        rig = None
        try:
            rig, observations = calib.calibrate_sfm(images, root / "calibration", cfg.calibration, sizes,
                                                    sfm_masks, num_threads=cfg.num_threads)
            if truth is not None:
                rig.meta["calibration"]["errors_vs_file"] = calib.calibration_errors(rig, truth)
                rig.meta["calibration"]["file"] = str(Path(cfg.calibration.file).resolve())
            calib.require_all_registered(rig)
        except UserError as exc:
            if truth is None or not cfg.calibration.fallback_import:
                raise
            attempt = rig.meta["calibration"] if rig is not None else \
                {"method": "sfm", "images": cfg.calibration.images, "error": str(exc)}
            log.warning("%s; using the calibration file instead", exc)
            warnings.append(f"SfM calibration incomplete ({exc}); imported {cfg.calibration.file} instead")
            rig, observations = truth, None
            rig.meta["calibration"] = {**rig.meta["calibration"], "fallback_from": "sfm", "sfm_attempt": attempt}
    timings["calibration"] = time.perf_counter() - t0
    emit(progress, "calibration", 1, 1, "calibrated")

    # ---- initial points (an imported calibration has none of SfM's)
    rig.test_names = list(test_cameras)
    t0 = time.perf_counter()
    points_report = _rig_points(rig, root, indices[0], cfg, imported_points, warnings, progress)
    dense_report = _dense_points(rig, root, indices[0], cfg, points_report, warnings, progress)
    if dense_report is not None:
        points_report["dense"] = dense_report
    timings["points"] = time.perf_counter() - t0

    # ---- dataset files
    fps = sources[0].fps
    rig.mask_dir = root / "masks" if cfg.masks.method != "none" else None
    timings["total"] = time.perf_counter() - t_all
    meta = {"source": str(Path(videos_dir).resolve()), "cameras": cameras,
            "source_size": {s.name: [s.width, s.height] for s in sources},
            "source_frames": {s.name: s.n_frames for s in sources}, "warnings": warnings,
            "calibration": rig.meta.get("calibration", {}), "masks": mask_report, "points": points_report,
            "timings_s": {k: round(v, 2) for k, v in timings.items()}, "config": to_dict(cfg)}
    rig.meta = {"calibration": meta["calibration"]}
    ds = DynamicDataset(root=root, rig=rig, frames=indices, test_cameras=test_cameras, fps=fps, meta=meta)
    exchange.write_transforms(root, rig, indices, test_cameras, fps, cfg.masks.method != "none")
    exchange.write_poses_bounds(root, rig, observations)
    exchange.write_sparse_depth(root, rig, observations)
    ds.save()
    log.info("prepared %s: %d cameras x %d frames; stage times %s", root, len(cameras), len(indices),
             meta["timings_s"])
    return ds
