"""``splatworks dynamic clean-plate``: a per-camera clean plate (the rig's background without the moving subjects).

Workflow B of depth supervision (issue 8) trains a static model on a static capture of the scene: one image per
rig camera *without* the moving subject. A frame of the clip is not one (the players hide the floor exactly where
they walk later). The clean plate is made from the prepared dataset's own frames and static/dynamic masks:

- for each camera and pixel, the temporal **median of the frames in which the pixel is static** (mask white);
- where a pixel is never static in the frames used, the median over all of them (the best guess left);
- a per-camera **plate confidence** mask: 255 where the pixel was static in at least K frames, 0 where fewer.

Output: a static scene folder that ``splatworks train SCENE -o MODEL`` trains as-is, in the dataset's world frame
(the rig's cameras unchanged: OpenCV axes, ``world_to_camera`` bit-identical), so that
``splatworks depth export MODEL DATASET`` renders depth maps that line up with the dataset's frames::

    SCENE/
      scene.json, points.npz   one camera per rig camera (image "cam01.png"), the dataset's points (without those on
                               moving things in the first frame, unless --keep-dynamic-points), the dataset's
                               held-out cameras held out (Scene.test_names: evaluated, never trained on)
      images/cam01.png         the clean plate of cam01, 8-bit RGB at the dataset's frame size
      masks/cam01.png          plate confidence, 255 = static in >= K of the frames used, 0 = fewer (Scene masks:
                               white = usable background; the static trainer does not read masks yet)
      static_counts.npz        per camera: (H, W) uint16, in how many of the frames used each pixel was static
      clean_plate.json         the resolved config, the dataset, the frames used, a report per camera

Shapes: T frames used, H x W frame size, P pixels (flattened), C = 3 colour channels (RGB, uint8).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.config import option, to_dict
from splatworks.dynamic.dataset import DATASET_FILE, DynamicDataset
from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Scene

log = logging.getLogger(__name__)

REPORT_FILE = "clean_plate.json"
COUNTS_FILE = "static_counts.npz"
# A mask value at or above this is static (masks are 0 / 255; the midpoint tolerates resampled masks).
STATIC_LEVEL = 128
# Stands in for "not static" in the masked median: above any uint8 value, so it sorts after every real sample.
_NOT_STATIC = np.int16(1024)
# Pixels per chunk of the median (bounds the int16 copy and its sort at T x 65536 x 3 x 2 bytes, 59 MB at T=150).
_CHUNK = 1 << 16


@dataclass
class CleanPlateConfig:
    """Settings of ``splatworks dynamic clean-plate``."""

    stride: int = option(1, "Use every n-th frame of the dataset (1 = all). The median needs frames spread over the "
                         "clip, not many of them: --stride 5 on 150 frames reads 30 frames per camera, 5x faster.")
    min_static_frames: int = option(3, "K: a pixel static in fewer than K of the frames used is marked low-confidence "
                                    "in masks/ (0 there); never-static pixels take the median of all frames.")
    keep_dynamic_points: bool = option(False, "Keep the dataset's points that lie on moving things in the first "
                                       "frame (dynamic in more than half of the training views that see them). "
                                       "By default they are dropped: the plate does not show those things.")


@dataclass
class Plate:
    """One camera's clean plate.

    Attributes:
        image: (H, W, 3) uint8 RGB plate.
        static_count: (H, W) uint16, in how many of the T frames used each pixel was static.
        confident: (H, W) bool, ``static_count >= K``.
    """

    image: np.ndarray
    static_count: np.ndarray
    confident: np.ndarray


# ---- pure functions ------------------------------------------------------------------------------------------
def masked_temporal_median(values: np.ndarray, static: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the frames in which that pixel is static.

    Args:
        values: (T, P, C) uint8 colours of P pixels in T frames.
        static: (T, P) bool, True where the pixel is static (usable) in that frame.

    Returns:
        median: (P, C) uint8; of an even number n of samples, the mean of the two middle ones rounded half up;
            0 where the pixel is never static (see ``count``).
        count: (P,) int64, the number of static samples per pixel.
    """
    if values.ndim != 3 or static.shape != values.shape[:2]:
        raise ValueError(f"values must be (T, P, C) and static (T, P); got {values.shape} and {static.shape}")
    count = static.sum(axis=0)
    if values.shape[0] == 0:
        return np.zeros(values.shape[1:], np.uint8), count
    # Non-static samples sort after every real value, so the static ones are the first `count` of each column.
    samples = np.where(static[..., None], values.astype(np.int16), _NOT_STATIC)
    samples.sort(axis=0)
    lo = np.maximum(count - 1, 0) // 2
    hi = np.maximum(count // 2, lo)  # count 0 -> both 0 (masked below)
    idx_lo = np.broadcast_to(lo[None, :, None], (1, *values.shape[1:]))
    idx_hi = np.broadcast_to(hi[None, :, None], (1, *values.shape[1:]))
    a = np.take_along_axis(samples, idx_lo, axis=0)[0].astype(np.int32)
    b = np.take_along_axis(samples, idx_hi, axis=0)[0].astype(np.int32)
    median = np.where((count > 0)[:, None], (a + b + 1) // 2, 0)
    return median.astype(np.uint8), count


def clean_plate(frames: np.ndarray, static: np.ndarray, min_static_frames: int) -> Plate:
    """The clean plate of one camera from its frames and static masks.

    Args:
        frames: (T, H, W, 3) uint8 RGB frames of one fixed camera.
        static: (T, H, W) bool, True = static background (mask white).
        min_static_frames: K; pixels static in fewer than K frames are not ``confident``.

    Returns:
        A :class:`Plate`: the median of each pixel's static samples, or of all T samples where it has none.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or static.shape != frames.shape[:3]:
        raise ValueError(f"frames must be (T, H, W, 3) and static (T, H, W); got {frames.shape} and {static.shape}")
    t, h, w, _ = frames.shape
    values = frames.reshape(t, h * w, 3)
    mask = static.reshape(t, h * w)
    image = np.empty((h * w, 3), np.uint8)
    count = np.empty(h * w, np.int64)
    for start in range(0, h * w, _CHUNK):  # chunks bound the int16 copy that the sort works on
        sl = slice(start, start + _CHUNK)
        image[sl], count[sl] = masked_temporal_median(values[:, sl], mask[:, sl])
    never = np.flatnonzero(count == 0)
    if len(never):  # never static: the median of every frame is the best guess left (flagged as not confident)
        image[never], _ = masked_temporal_median(values[:, never], np.ones((t, len(never)), bool))
    count = count.reshape(h, w)
    return Plate(image=image.reshape(h, w, 3), static_count=np.minimum(count, np.iinfo(np.uint16).max)
                 .astype(np.uint16), confident=count >= min_static_frames)


def dynamic_point_mask(points: np.ndarray, cameras: list[Any], static_masks: list[np.ndarray]) -> np.ndarray:
    """Which world points lie on moving things: dynamic in more than half of the views that see them.

    No occlusion test: a floor point behind a person in one view gets a dynamic vote there, and the other views
    outvote it (a strict majority: on the synthetic rig, ">= half" dropped 6 % of the static points, "> half" 0.3 %,
    while still dropping 98 % of the points on the moving objects).

    Args:
        points: (P, 3) world points.
        cameras: V cameras (OpenCV, world_to_camera), each with its ``static_masks`` entry.
        static_masks: V (H_v, W_v) bool masks, True = static.

    Returns:
        (P,) bool, True = on a moving thing (points seen by no view are kept: False).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    seen = np.zeros(len(pts), np.int32)
    dynamic = np.zeros(len(pts), np.int32)
    for cam, mask in zip(cameras, static_masks):
        uv, z = cam.project(pts)
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)  # centres at +0.5
        inside = (z > 0) & (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
        idx = np.flatnonzero(inside)
        seen[idx] += 1
        dynamic[idx] += ~mask[row[idx], col[idx]]
    return (seen > 0) & (2 * dynamic > seen)


# ---- files -----------------------------------------------------------------------------------------------------
def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read frame {path}; re-run `splatworks dynamic prepare` for this dataset")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_static(path: Path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise InputError(f"cannot read mask {path}; re-run `splatworks dynamic prepare` with masks for this dataset")
    return m >= STATIC_LEVEL


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(path.stem + ".tmp.png")
    ok = cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise UserError(f"cannot write {path} (disk full or no permission?)")
    tmp.replace(path)


def check_inputs(dataset: DynamicDataset, config: CleanPlateConfig) -> list[int]:
    """The frames to use; a ``UserError`` that says what to fix when the dataset or the settings cannot work."""
    if config.stride < 1:
        raise UserError(f"--stride must be >= 1 (got {config.stride})")
    if config.min_static_frames < 1:
        raise UserError(f"--min-static-frames must be >= 1 (got {config.min_static_frames})")
    frames = dataset.frames[:: config.stride]
    if not frames:
        raise UserError(f"{dataset.root} has no frames; re-run `splatworks dynamic prepare`")
    missing = [(c, f) for c in dataset.camera_names for f in (frames[0], frames[-1])
               if not dataset.mask_path(c, f).is_file()]
    if missing:
        cam, f = missing[0]
        raise UserError(f"{dataset.root} has no static/dynamic masks (e.g. {dataset.mask_path(cam, f)} is missing); "
                        f"a clean plate needs them: prepare the dataset with masks, `splatworks dynamic prepare "
                        f"VIDEOS_DIR -o {dataset.root} --overwrite --masks.method background`")
    if config.min_static_frames > len(frames):
        raise UserError(f"--min-static-frames {config.min_static_frames} exceeds the {len(frames)} frames used "
                        f"({len(dataset.frames)} frames, --stride {config.stride}); lower it or the stride")
    return frames


def _check_output(out: Path, dataset_root: Path, overwrite: bool) -> dict[str, Any] | None:
    """Refuse an output that would lose data; the previous clean_plate.json when --force replaces a plate."""
    root, target = dataset_root.resolve(), out.resolve()
    if target == root or root.is_relative_to(target) or target.is_relative_to(root / "images") \
            or target.is_relative_to(root / "masks") or (out / DATASET_FILE).exists():
        raise UserError(f"{out} would overwrite the dataset's own files; write the clean plate to a new folder, e.g. "
                        f"-o {dataset_root.parent / (dataset_root.name + '_plate')}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a folder for the clean-plate scene")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty; choose another -o folder or pass --force to replace "
                            "the clean plate there (other files in it are kept)")
        if (out / REPORT_FILE).exists():
            try:
                return json.loads((out / REPORT_FILE).read_text())
            except (OSError, ValueError):
                return None
    return None


def build_clean_plate(dataset: str | Path | DynamicDataset, out_dir: str | Path, config: CleanPlateConfig | None = None,
                      overwrite: bool = False, progress: ProgressFn | None = None, show_bar: bool = False,
                      workers: int = 0) -> Scene:
    """Compute every camera's clean plate and write the static scene folder (layout in the module docstring).

    Nothing is written until every plate is computed, so bad input leaves an existing output as it was.

    Args:
        dataset: a prepared dataset (folder or loaded) with masks.
        out_dir: scene folder to write; refused when not empty unless ``overwrite`` (then only the files of a
            previous clean plate are replaced) and always when it would overwrite the dataset.
        progress: ``ProgressEvent``s of stage ``dynamic.clean_plate`` (step = frames read, over all cameras).
        show_bar: draw a tqdm bar (the CLI sets it).
        workers: threads reading PNGs (0 = up to 8, by CPU count).

    Returns:
        The written Scene (as ``Scene.load(out_dir)`` reads it back).
    """
    cfg = config or CleanPlateConfig()
    ds = dataset if isinstance(dataset, DynamicDataset) else DynamicDataset.load(dataset)
    out = Path(out_dir)
    frames = check_inputs(ds, cfg)
    previous = _check_output(out, ds.root, overwrite)
    names = ds.camera_names
    total = len(names) * len(frames)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="clean plate", unit="frame")
    plates: dict[str, Plate] = {}
    done = 0
    try:
        with ThreadPoolExecutor(workers) as pool:  # cv2 decodes without the GIL
            for cam in ds.rig.cameras:
                def load(f: int, cam_name: str = cam.name) -> tuple[np.ndarray, np.ndarray]:
                    return _read_rgb(ds.image_path(cam_name, f)), _read_static(ds.mask_path(cam_name, f))

                rgb = np.empty((len(frames), cam.height, cam.width, 3), np.uint8)
                static = np.empty((len(frames), cam.height, cam.width), bool)
                for k, (image, mask) in enumerate(pool.map(load, frames)):
                    f = frames[k]
                    if image.shape[:2] != (cam.height, cam.width) or mask.shape != image.shape[:2]:
                        raise InputError(f"{cam.name} frame {f}: image {image.shape[1]}x{image.shape[0]}, mask "
                                         f"{mask.shape[1]}x{mask.shape[0]}, camera {cam.width}x{cam.height}; they "
                                         "must agree: re-run `splatworks dynamic prepare` for this dataset")
                    rgb[k], static[k] = image, mask
                    done += 1
                    if bar is not None:
                        bar.update(1)
                    emit(progress, "dynamic.clean_plate", done, total, f"{cam.name} frame {f}")
                plates[cam.name] = clean_plate(rgb, static, cfg.min_static_frames)
                del rgb, static
    finally:
        if bar is not None:
            bar.close()

    points, colors, errors = ds.rig.points, ds.rig.point_colors, ds.rig.point_errors
    dropped = 0
    if not cfg.keep_dynamic_points and len(points):
        # The points come from the first frame (SfM / triangulation / dense MVS of it): some lie on the people.
        train = [c for c in ds.rig.cameras if c.name not in set(ds.test_cameras)]
        first = [_read_static(ds.mask_path(c.name, ds.frames[0])) for c in train]
        on_movers = dynamic_point_mask(points, train, first)
        dropped = int(on_movers.sum())
        points, colors, errors = points[~on_movers], colors[~on_movers], errors[~on_movers]

    report: dict[str, Any] = {
        "format": "splatworks.clean_plate/1", "dataset": str(ds.root.resolve()), "config": to_dict(cfg),
        "frames": frames, "test_cameras": list(ds.test_cameras),
        "points": {"kept": int(len(points)), "dropped_on_moving_things": dropped},
        "confidence_mask": "masks/<camera>.png: 255 = static in >= min_static_frames of the frames used, 0 = fewer",
        "cameras": {}}
    for name, plate in plates.items():
        c = plate.static_count
        report["cameras"][name] = {"image": f"{name}.png",
                                   "confident_fraction": round(float(plate.confident.mean()), 5),
                                   "never_static_fraction": round(float((c == 0).mean()), 5),
                                   "static_frames_median": float(np.median(c)), "static_frames_min": int(c.min())}

    # ---- write (everything above could fail without touching the output)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    stale = set((previous or {}).get("cameras", {})) - set(plates)
    for name in stale:  # a previous plate's cameras that this dataset lacks: its files only
        for sub in ("images", "masks"):
            (out / sub / f"{name}.png").unlink(missing_ok=True)
    for name, plate in plates.items():
        _write_png(out / "images" / f"{name}.png", plate.image)
        _write_png(out / "masks" / f"{name}.png", np.where(plate.confident, 255, 0).astype(np.uint8))
    np.savez_compressed(out / "static_counts.tmp.npz", **{n: p.static_count for n, p in plates.items()})
    (out / "static_counts.tmp.npz").replace(out / COUNTS_FILE)
    cameras = [replace(cam, name=f"{cam.name}.png", mask_name=f"{cam.name}.png", frame=None,
                       world_to_camera=cam.world_to_camera.copy()) for cam in ds.rig.cameras]
    scene = Scene(cameras=cameras, image_dir=out / "images", mask_dir=out / "masks", points=points,
                  point_colors=colors, point_errors=errors, test_names=[f"{n}.png" for n in ds.test_cameras],
                  background=ds.rig.background,
                  meta={"source": "clean_plate", "dataset": str(ds.root.resolve()),
                        "calibration": ds.rig.meta.get("calibration", {}), "clean_plate": REPORT_FILE})
    scene.save(out)
    tmp = out / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out / REPORT_FILE)
    log.info("clean plate of %d cameras from %d frames -> %s (%d points, %d dropped on moving things)",
             len(plates), len(frames), out, len(points), dropped)
    return Scene.load(out)


def load_static_counts(scene_dir: str | Path) -> dict[str, np.ndarray]:
    """camera name -> (H, W) uint16 static-frame counts of a clean-plate scene (``static_counts.npz``)."""
    path = Path(scene_dir) / COUNTS_FILE
    if not path.exists():
        raise InputError(f"{path} not found; is {scene_dir} a `splatworks dynamic clean-plate` output?")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


__all__ = ["CleanPlateConfig", "Plate", "build_clean_plate", "check_inputs", "clean_plate", "dynamic_point_mask",
           "load_static_counts", "masked_temporal_median", "REPORT_FILE", "COUNTS_FILE"]
