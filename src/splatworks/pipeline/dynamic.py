"""The dynamic (multi-view video) job: prepare -> train frame by frame -> growing 4D export -> held-out video.

The service's workers call :func:`run_dynamic_job` (kind ``"dynamic"``); every step reuses the CLI pipeline:
``splatworks.dynamic.prepare`` (frames, masks, calibration), ``splatworks.dynamic.sequential`` (the default
``gaussians`` backend) or ``splatworks.voxels`` (``mixvoxels``), ``splatworks.dynamic.export4d`` (what the viewer
plays), ``dynamic.render`` / ``dynamic.metrics4d`` (held-out camera video and scores).

Job folder (next to the service's own files, see ``splatworks.service.jobs``)::

    upload/cam00.mp4 ...        one video per camera, named by camera (the upload route names them)
    upload/calibration.json     optional ground-truth calibration (skips SfM)
    dataset/                    prepared DynamicDataset (dataset.json written last: its presence = prepared)
    depth/all_depth.npy         depth workflow 'distill': depth of a static model of the first frame
    train/                      the trainer's folder (frames/NNNNNN.pt, state.json: resume point)
    export/manifest.json        4D export (static.splat, frames/000000.splat + per-frame .swd deltas), rewritten as frames finish
    export/heldout.mp4          held-out camera: rendering | ground truth, side by side
    export/metrics.json         held-out metrics (per frame: PSNR, SSIM, static-pixel PSNR; flicker, drift), per-frame
                                training cost (``training_summary``), 4D export bytes, timings, resolved configs

Resume: a restarted job keeps a prepared dataset and the frames already trained (``train_sequence`` resumes
after its last finished frame); nothing finished is computed again.

Progress stages (the job's status ``stage``): ``frames``, ``masks``, ``calibration``, ``frame k of n`` (per-frame
progress; the ETA covers the frames left), ``exporting``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image  # noqa: F401  (before pycolmap: see the project's known pitfalls)
from splatworks.config import option, to_dict
from splatworks.errors import UserError
from splatworks.progress import ProgressEvent, ProgressFn, emit

log = logging.getLogger(__name__)

BACKENDS = ("gaussians", "mixvoxels")
DEPTH_WORKFLOWS = ("none", "distill")
CALIBRATION_FILE = "calibration.json"
FRAME_STEPS = 1000  # progress steps per frame in the "frame k of n" stages (fractions of a frame)


@dataclass
class DynamicJobConfig:
    """How a dynamic job runs; saved as ``job_config.json`` next to its results."""

    held_out_camera: str = option("first", "Held-out camera (never trained on; scored and rendered): 'first' (the "
                                  "first camera by name), 'none', or a camera name such as cam00.")
    start_frame: int = option(0, "First video frame used (0-based).")
    end_frame: int = option(0, "Stop before this video frame (0 = to the end of the shortest video).")
    stride: int = option(1, "Use every n-th frame.")
    max_size: int = option(0, "Cap the longest frame side at this many pixels (0 = keep the videos' size).")
    backend: str = option("gaussians", "4D model: 'gaussians' (sequential 4D Gaussians, played by the viewer) or "
                          "'mixvoxels' (a MixVoxels field: video and metrics only).", choices=BACKENDS)
    preset: str = option("default", "Training preset: default, fast, tiny (CPU tests); mixvoxels: T, M, L, tiny.")
    iterations_per_frame: int | None = option(None, "Override the preset's iterations per frame (gaussians) or total "
                                              "iterations (mixvoxels).")
    iterations_first_frame: int | None = option(None, "Override the preset's iterations for the first frame "
                                                "(gaussians; the service's --train-iterations).")
    depth: str = option("none", "Depth workflow: 'none', or 'distill' (depth of a static model of the first frame "
                        "supervises the static pixels; gaussians only).", choices=DEPTH_WORKFLOWS)
    calibration_file: bool = option(False, "Use upload/calibration.json as the rig calibration instead of SfM.")
    render_video: bool = option(True, "Render the held-out camera's video (side by side with the ground truth).")
    device: str = option("auto", "Torch device: auto, cuda, cpu.")


def check_config(cfg: DynamicJobConfig) -> None:
    """Refuse settings that cannot work (the upload route calls it before anything is stored)."""
    problems = []
    if cfg.backend not in BACKENDS:
        problems.append(f"backend {cfg.backend!r}: use one of {', '.join(BACKENDS)}")
    if cfg.depth not in DEPTH_WORKFLOWS:
        problems.append(f"depth {cfg.depth!r}: use one of {', '.join(DEPTH_WORKFLOWS)}")
    if cfg.depth != "none" and cfg.backend != "gaussians":
        problems.append("the depth workflow 'distill' works with the gaussians backend only")
    if cfg.start_frame < 0 or cfg.end_frame < 0 or cfg.stride < 1:
        problems.append("start_frame and end_frame must be >= 0 and stride >= 1")
    if cfg.end_frame and cfg.end_frame <= cfg.start_frame:
        problems.append(f"end_frame ({cfg.end_frame}) must be after start_frame ({cfg.start_frame}), or 0")
    for name in ("iterations_per_frame", "iterations_first_frame"):
        value = getattr(cfg, name)
        if value is not None and not 1 <= value <= 1_000_000:
            problems.append(f"{name} must be between 1 and 1000000")
    if problems:
        raise UserError("; ".join(problems))


def sequential_config(cfg: DynamicJobConfig) -> Any:
    """The sequential trainer's config for this job: its preset, then the job's overrides."""
    from splatworks.dynamic.sequential import PRESETS, preset

    overrides: dict[str, Any] = {"device": cfg.device}
    if cfg.iterations_first_frame is not None:
        overrides["iterations_first_frame"] = cfg.iterations_first_frame
    if cfg.iterations_per_frame is not None:
        overrides["iterations_per_frame"] = cfg.iterations_per_frame
        overrides["min_iterations_per_frame"] = min(cfg.iterations_per_frame,
                                                    PRESETS.get(cfg.preset, {}).get("min_iterations_per_frame", 400))
        overrides["iterations_converged"] = min(cfg.iterations_per_frame,
                                                PRESETS.get(cfg.preset, {}).get("iterations_converged", 600))
    return preset(cfg.preset if cfg.preset in PRESETS else "default", **overrides)


def mixvoxels_config(cfg: DynamicJobConfig) -> Any:
    from splatworks.voxels import preset
    from splatworks.voxels.config import PRESETS

    overrides = {"iterations": cfg.iterations_per_frame} if cfg.iterations_per_frame else {}
    return preset(cfg.preset if cfg.preset in PRESETS else "T", **overrides)


# ---- progress -------------------------------------------------------------------------------------------------

class _JobProgress:
    """Turns the pipeline's events into the job's stages: prepare's pass through; every training event becomes
    ``frame k of n`` (step = frames done + the fraction of the current frame, in FRAME_STEPS units per frame);
    each finished frame triggers the (throttled) 4D export."""

    def __init__(self, progress: ProgressFn | None, on_frame_done: Any = None, joint: bool = False) -> None:
        self.progress, self.on_frame_done, self.joint = progress, on_frame_done, joint
        self.n_frames, self.done = 0, 0

    def _frame(self, fraction: float, message: str = "", metrics: dict[str, Any] | None = None) -> None:
        k = min(self.done + 1, self.n_frames)
        step = int(round((self.done + max(0.0, min(1.0, fraction))) * FRAME_STEPS))
        emit(self.progress, f"frame {k} of {self.n_frames}", min(step, self.n_frames * FRAME_STEPS),
             self.n_frames * FRAME_STEPS, message, metrics=metrics or {})

    def __call__(self, ev: ProgressEvent) -> None:
        head = ev.stage.split(".", 1)[0]
        if head in ("frames", "masks", "calibration", "exporting"):
            if self.progress is not None:
                self.progress(ev)
        elif self.joint:  # MixVoxels trains every frame at once: its own "training" stage, iterations
            if head == "training":
                emit(self.progress, "training", ev.step, ev.total, "" if ev.checkpoint else ev.message,
                     metrics=ev.metrics)
            elif ev.message:
                emit(self.progress, "training", 0, 0, ev.message)
        elif ev.stage == "dynamic.train":  # a frame finished
            # Counted here: train_sequence's own step number runs ahead when frames were already done.
            self.done = min(self.done + 1, self.n_frames)
            if self.on_frame_done is not None:
                self.on_frame_done(self.done, self.n_frames)
            metrics = {k: v for k, v in (ev.metrics or {}).items()
                       if k in ("psnr", "ssim", "n_gaussians", "n_dynamic", "iterations", "seconds")}
            self.done = min(self.done, self.n_frames)
            emit(self.progress, f"frame {min(self.done, self.n_frames)} of {self.n_frames}", self.done * FRAME_STEPS,
                 self.n_frames * FRAME_STEPS, ev.message, metrics=metrics)
        elif head in ("dynamic", "training", "train", "mixvoxels"):  # within a frame (or MixVoxels' whole run)
            self._frame(ev.fraction, "" if ev.checkpoint else ev.message)
        elif self.progress is not None and ev.message:  # anything else: only its message, as frame progress
            self._frame(0.0, ev.message)


class _Exporter:
    """Re-runs ``export_4d`` after a frame finishes, at most every ``max(min_interval, cost_factor x last export
    time)`` seconds, and always for the first and the last frame.

    Each export rewrites every layer, so its cost grows with the frames done (150 frames of ~50k dynamic Gaussians:
    seconds); ``cost_factor`` 8 keeps exporting under ~1/9 of the job's time while the first frame is playable at
    once and later ones arrive in small batches."""

    def __init__(self, train_dir: Path, export_dir: Path, min_interval: float = 2.0, cost_factor: float = 8.0
                 ) -> None:
        self.train_dir, self.export_dir, self.min_interval = train_dir, export_dir, min_interval
        self.cost_factor = cost_factor
        self.last, self.cost = 0.0, 0.0

    def __call__(self, done: int, total: int, force: bool = False) -> dict[str, Any] | None:
        from splatworks.dynamic.export4d import export_4d

        now = time.monotonic()
        if not (force or done >= total or now - self.last >= max(self.min_interval, self.cost_factor * self.cost)):
            return None
        t0 = time.monotonic()
        manifest = export_4d(self.train_dir, self.export_dir)
        self.last, self.cost = time.monotonic(), time.monotonic() - t0
        return manifest


# ---- what a run reports (shared with benchmarks/dynamic_basketball.py) ------------------------------------------

TRAINING_FIELDS = ("frame", "iterations", "seconds", "frame_wall_s", "n_gaussians", "n_dynamic", "stopped_early",
                   "pruned_too_large", "pruned_too_far")


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "max": None}
    ordered = sorted(values)
    return {"mean": round(sum(values) / len(values), 4), "median": round(ordered[len(ordered) // 2], 4),
            "max": round(ordered[-1], 4)}


def training_summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-frame training cost from the sequential trainer's ``metrics.jsonl`` lines (``read_metrics``: every
    frame, also those of an earlier attempt of a resumed job), frame 0 apart from the later frames.

    ``seconds``: the optimisation alone (frame 0: the static trainer's whole run); ``frame_wall_s``: the frame's
    wall time (loading its views, the converged-frame test, optimisation, pruning, saving; not its evaluation).
    Returns {"per_frame": {field: [one value per frame]}, "frame0": {...}, "later": {"seconds": {mean, median,
    max}, "frame_wall_s": {...}, "iterations": {...}}, "frames_stopped_early": n}.
    """
    per_frame = {k: [line.get(k) for line in lines] for k in TRAINING_FIELDS}
    first = {k: lines[0].get(k) for k in ("frame", "iterations", "seconds", "frame_wall_s", "n_gaussians",
                                          "n_dynamic")} if lines else None
    later = lines[1:]
    return {"frames_trained": len(lines), "per_frame": per_frame, "frame0": first,
            "later": {k: _stats([float(line[k]) for line in later if line.get(k) is not None])
                      for k in ("seconds", "frame_wall_s", "iterations")},
            "frames_stopped_early": sum(1 for line in later if line.get("stopped_early"))}


# ---- the job --------------------------------------------------------------------------------------------------

def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def prepare_config(cfg: DynamicJobConfig, job_dir: Path) -> Any:
    from splatworks.dynamic.prepare import PrepareConfig

    pc = PrepareConfig(start_frame=cfg.start_frame, end_frame=cfg.end_frame, stride=cfg.stride,
                       max_size=cfg.max_size, test_cameras=cfg.held_out_camera, overwrite=True)
    calib_file = job_dir / "upload" / CALIBRATION_FILE
    if cfg.calibration_file:
        if not calib_file.exists():
            raise UserError("the job asks for its calibration file, but upload/calibration.json is missing; "
                            "submit the job again with the calibration file")
        pc.calibration = dataclasses.replace(pc.calibration, method="import", file=calib_file)
    pc.masks = dataclasses.replace(pc.masks, preview_frames=0)  # previews are for the CLI user
    return pc


def _prepared(job_dir: Path, cfg: DynamicJobConfig, progress: ProgressFn) -> Any:
    """The prepared dataset: loaded when an earlier attempt finished it, else prepared (again) from the upload."""
    from splatworks.dynamic.dataset import DATASET_FILE, DynamicDataset
    from splatworks.dynamic.prepare import prepare

    root = job_dir / "dataset"
    if (root / DATASET_FILE).exists():
        ds = DynamicDataset.load(root)
        emit(progress, "calibration", 1, 1, f"dataset already prepared: {len(ds.camera_names)} cameras x "
                                            f"{len(ds.frames)} frames")
        return ds
    videos = job_dir / "upload"
    ds = prepare(videos, root, prepare_config(cfg, job_dir), progress)
    for w in ds.meta.get("warnings", []):
        emit(progress, "calibration", 1, 1, f"warning: {w}")
    # The rig where the service looks for a job's cameras (the viewer starts at one of them).
    ds.rig.save(job_dir / "colmap")
    return ds


def _depth_file(job_dir: Path, ds: Any, cfg: DynamicJobConfig, progress: ProgressFn) -> Path:
    """Depth workflow 'distill': a static model of the first frame (static trainer), its depth per camera."""
    from splatworks.depth.export import export_depth
    from splatworks.pipeline.static import StaticJobConfig, train_config
    from splatworks.splat.trainer import train

    out = job_dir / "depth" / "all_depth.npy"
    if out.exists():
        return out
    model = job_dir / "depth" / "static_model"
    tiny = cfg.preset == "tiny"
    tcfg = train_config(StaticJobConfig(preset="tiny" if tiny else "fast", device=cfg.device))
    emit(progress, "calibration", 1, 1, f"depth workflow: training a static model of frame {ds.frames[0]} "
                                        f"({tcfg.iterations} iterations)")
    def alive(ev: ProgressEvent) -> None:  # keeps the job's heartbeat and cancel checks going, quietly
        emit(progress, "calibration", 1, 1)

    train(ds.scene_at(ds.frames[0]), model, tcfg, alive, resume=True)
    export_depth(model, ds.root, out, device=cfg.device, progress=alive)
    return out


def run_dynamic_job(job_dir: str | Path, config: DynamicJobConfig | None = None,
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run (or resume) the dynamic job in ``job_dir``; returns the content of ``export/metrics.json``.

    Raises:
        UserError / InputError: bad input (the message says what to fix); Cancelled (from ``progress``).
    """
    cfg = config or DynamicJobConfig()
    check_config(cfg)
    job_dir = Path(job_dir)
    train_dir, export_dir = job_dir / "train", job_dir / "export"
    export_dir.mkdir(parents=True, exist_ok=True)
    _write_json(job_dir / "job_config.json", to_dict(cfg))
    timings: dict[str, float] = {}
    exporter = _Exporter(train_dir, export_dir)
    events = _JobProgress(progress, exporter if cfg.backend == "gaussians" else None,
                          joint=cfg.backend == "mixvoxels")

    t = time.time()
    ds = _prepared(job_dir, cfg, events)
    timings["prepare_seconds"] = round(time.time() - t, 2)
    held_out = list(ds.test_cameras)

    t = time.time()
    if cfg.backend == "gaussians":
        from splatworks.dynamic.sequential import trained_frames, train_sequence

        scfg = sequential_config(cfg)
        if cfg.depth == "distill":
            scfg = dataclasses.replace(scfg, depth="distill", depth_file=str(_depth_file(job_dir, ds, cfg, events)))
        frames = ds.frames[: scfg.max_frames] if scfg.max_frames > 0 else list(ds.frames)
        events.n_frames = len(frames)
        already = trained_frames(train_dir) if train_dir.exists() else []
        events.done = len(already) if already == frames[: len(already)] else 0
        if events.done:
            emit(progress, f"frame {min(events.done + 1, len(frames))} of {len(frames)}", events.done * FRAME_STEPS,
                 len(frames) * FRAME_STEPS, f"resuming after {events.done} finished frame(s) of {len(frames)}")
        lines = train_sequence(ds, train_dir, scfg, events, resume=True)
        timings["train_seconds"] = round(time.time() - t, 2)
        train_cfg = to_dict(scfg)
        emit(progress, "exporting", 0, 3, "exporting the 4D sequence")
        manifest = exporter(len(frames), len(frames), force=True)
        assert manifest is not None
    else:
        from splatworks.voxels import train_mixvoxels

        vcfg = mixvoxels_config(cfg)
        train_mixvoxels(ds, train_dir, vcfg, events, resume=True)
        timings["train_seconds"] = round(time.time() - t, 2)
        train_cfg, lines, manifest = to_dict(vcfg), [], None
        emit(progress, "exporting", 0, 3, "MixVoxels has no 4D splat export: rendering the video and metrics")

    t = time.time()
    metrics: dict[str, Any] = {}
    video = export_dir / "heldout.mp4"
    if held_out:
        emit(progress, "exporting", 1, 3, f"scoring the held-out camera {held_out[0]}")
        if cfg.backend == "gaussians":
            from splatworks.dynamic.metrics4d import evaluate_sequence

            metrics = evaluate_sequence(train_dir, ds, held_out[0], device=cfg.device)
        else:
            from splatworks.voxels.evaluation import evaluate

            metrics = evaluate(train_dir, ds, [held_out[0]], device=cfg.device, save_video=False)
            metrics.pop("cameras", None)
        if cfg.render_video:
            emit(progress, "exporting", 2, 3, f"rendering the held-out camera {held_out[0]}")
            tmp = export_dir / ".heldout.tmp.mp4"
            if cfg.backend == "gaussians":
                from splatworks.dynamic.render import render_video

                render_video(train_dir, tmp, camera=held_out[0], dataset_root=ds.root, device=cfg.device)
            else:
                from splatworks.voxels.evaluation import render_video as voxels_video

                voxels_video(train_dir, held_out[0], tmp, fps=ds.fps, device=cfg.device)
            os.replace(tmp, video)
    timings["evaluate_seconds"] = round(time.time() - t, 2)
    frame_seconds = [float(l["frame_wall_s"]) for l in lines if "frame_wall_s" in l]
    training = None
    if cfg.backend == "gaussians":
        from splatworks.dynamic.sequential import read_metrics

        training = training_summary(read_metrics(train_dir))
    summary = {
        "kind": "dynamic", "backend": cfg.backend, "cameras": ds.camera_names, "held_out_camera":
        held_out[0] if held_out else None, "frames": len(ds.frames), "fps": ds.fps,
        "heldout": {k: metrics.get(k) for k in ("psnr_mean", "ssim_mean", "psnr_static_mean", "flicker",
                                                 "flicker_levels", "drift_db_per_frame", "static_pixel_fraction")}
        if metrics else None,
        "heldout_per_frame": {k: metrics.get(k) for k in ("frames", "psnr", "ssim", "psnr_static")}
        if metrics else None,
        "training": training,
        "video": video.name if video.exists() else None,
        "manifest": "manifest.json" if manifest else None,
        "frames_ready": manifest["frames_ready"] if manifest else None,
        "bytes": manifest["bytes"] if manifest else None,
        "timings": {**timings, "frames_trained_this_attempt": len(lines),
                    "seconds_per_frame_mean": round(sum(frame_seconds) / len(frame_seconds), 3)
                    if frame_seconds else None},
        "dataset_timings_s": ds.meta.get("timings_s"), "warnings": ds.meta.get("warnings", []),
        "job_config": to_dict(cfg), "train_config": train_cfg,
    }
    _write_json(export_dir / "metrics.json", summary)
    msg = f"done: {len(ds.frames)} frames"
    if metrics:
        msg += f", held-out {held_out[0]} PSNR {metrics['psnr_mean']:.2f} dB, SSIM {metrics['ssim_mean']:.3f}"
    emit(progress, "exporting", 3, 3, msg)
    return summary


def clear_outputs(job_dir: str | Path) -> None:
    """Remove everything a dynamic job computed (not its upload): a job that must start over."""
    for sub in ("dataset", "depth", "train", "export"):
        shutil.rmtree(Path(job_dir) / sub, ignore_errors=True)
