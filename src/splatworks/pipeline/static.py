"""The static reconstruction job: ingest -> SfM -> training -> export, in one job folder.

``splatworks reconstruct`` and the service's local workers run :func:`run_static_job`; a cluster runs its two
stages, :func:`prepare_static_job` (CPU) and :func:`train_static_job` (GPU), as separate tasks: the same
functions. Each stage reads the previous stage's files and marks itself finished with a ``.done`` file, so a job
that is started again (after a server restart, a killed worker) skips finished stages and the trainer resumes
from its last checkpoint.

Job folder (see ``splatworks.service.jobs``)::

    upload/                 photos (any names), or one video file
    work/frames/            video only: the kept frames (sampled evenly, the blurriest of each slot dropped)
    work/images/            normalised images (EXIF orientation applied, downscaled to max_image_size)
    colmap/                 SfM: scene.json (+ undistorted images, sparse model)    <- prepare_static_job (CPU)
    gs_output/              trainer: point_cloud/iteration_N/{point_cloud.ply, scene.splat}, metrics.json
                                                                                    <- train_static_job (GPU)
    gs_output/result.json   export: what was made, how (the resolved config) and how long each stage took
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import PIL.Image  # noqa: F401  (before pycolmap: see the project's known pitfalls)
from splatworks.config import option, to_dict
from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


@dataclass
class StaticJobConfig:
    """How a static job runs; saved as ``job_config.json`` next to its results."""

    preset: str = option("default", "Training preset (default: 30k iterations; fast: 7k; tiny: tests on CPU).")
    iterations: int | None = option(None, "Override the preset's training iterations.")
    checkpoint_steps: tuple[int, ...] = option((), "Override the iterations at which results are published.")
    max_image_size: int = option(1600, "Longest image side for SfM and training (pixels); larger are downscaled.")
    video_frames: int = option(150, "Frames kept from a video input.")
    video_candidates: int = option(2, "Frames decoded per kept frame; the sharpest of each group is kept.")
    device: str = option("auto", "Torch device for training: auto, cuda, cpu.")
    sfm_matcher: str = option("auto", "SfM matcher (auto: sequential for video frames, exhaustive otherwise).",
                              choices=("auto", "exhaustive", "sequential"))


# Training presets beyond the trainer's own: "tiny" is for tests and smoke runs on a CPU.
TINY = {"iterations": 6, "checkpoint_steps": (2, 4, 6), "sh_degree": 0, "refine_start": 2, "refine_every": 2,
        "refine_stop": 4, "reset_every": 0, "log_every": 1, "init_num_random": 500, "eval_lpips": False,
        "hold_out_every": 0, "max_resolution": 64}


def train_config(config: StaticJobConfig) -> Any:
    """The trainer's config for this job: the preset, then the job's overrides."""
    from splatworks.splat import trainer

    overrides: dict[str, Any] = {"device": config.device}
    if config.preset == "tiny":
        cfg = dataclasses.replace(trainer.TrainConfig(), **TINY, **overrides)
    else:
        cfg = trainer.preset(config.preset, **overrides)
    if config.iterations is not None:
        steps = tuple(s for s in cfg.checkpoint_steps if s < config.iterations) + (config.iterations,)
        cfg = dataclasses.replace(cfg, iterations=config.iterations, checkpoint_steps=steps,
                                  refine_stop=min(cfg.refine_stop, max(1, int(config.iterations * 0.5))))
    if config.checkpoint_steps:
        cfg = dataclasses.replace(cfg, checkpoint_steps=tuple(config.checkpoint_steps))
    return cfg


# ---- ingest ---------------------------------------------------------------------------------------------------

def sharpness(rgb: np.ndarray, size: int = 480) -> float:
    """Variance of the Laplacian of the grayscale image, downscaled to ``size`` px (higher = sharper)."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = size / max(gray.shape)
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def extract_video_frames(video: Path, out_dir: Path, n_frames: int, candidates: int = 2,
                         progress: ProgressFn | None = None) -> list[Path]:
    """Write about ``n_frames`` sharp frames of ``video`` to ``out_dir`` (``frame_00000.jpg``, ...).

    ``n_frames * candidates`` frames are sampled evenly over the video; they form ``n_frames`` consecutive groups,
    and the sharpest frame of each group (variance of the Laplacian) is kept: the blurriest are dropped while
    the coverage stays even. Frames stream through (one group in memory at a time).
    """
    import cv2

    from splatworks.dynamic.frames import CameraSource, iter_frames, probe

    src = probe(CameraSource(name="video", path=video))
    wanted = min(src.n_frames, max(1, n_frames) * max(1, candidates))
    indices = sorted({int(round(x)) for x in np.linspace(0, src.n_frames - 1, wanted)})
    group = max(1, len(indices) // max(1, n_frames))
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: list[Path] = []
    best: tuple[float, int, np.ndarray] | None = None
    seen = 0

    def flush() -> None:
        nonlocal best
        if best is not None:
            path = out_dir / f"frame_{best[1]:06d}.jpg"
            tmp = out_dir / f".{path.name}.tmp.jpg"
            cv2.imwrite(str(tmp), cv2.cvtColor(best[2], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            os.replace(tmp, path)
            kept.append(path)
            best = None

    for i, (index, rgb) in enumerate(iter_frames(src, indices)):
        s = sharpness(rgb)
        if best is None or s > best[0]:
            best = (s, index, rgb)
        seen += 1
        if seen % group == 0:
            flush()
            emit(progress, "ingest.video", len(kept), n_frames)
    flush()
    if len(kept) < 3:
        raise InputError(f"only {len(kept)} frame(s) could be read from the video; film a longer walk-around")
    emit(progress, "ingest.video", len(kept), n_frames, f"kept {len(kept)} of {len(indices)} sampled video frames "
                                                       f"(the blurriest of each group of {group} dropped)")
    return kept


def find_video(upload: Path) -> Path | None:
    files = [p for p in upload.iterdir() if p.is_file() and not p.name.startswith(".")] if upload.is_dir() else []
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES or p.name == "video.bin"]
    return videos[0] if len(files) == 1 and videos else None


def ingest(input_path: Path, job_dir: Path, config: StaticJobConfig, progress: ProgressFn | None = None) -> Path:
    """Normalised images in ``job_dir/work/images`` from a folder of photos or one video."""
    from splatworks.scene.images import prepare_images

    images = job_dir / "work" / "images"
    video = input_path if input_path.is_file() else find_video(input_path)
    source = input_path
    if video is not None:
        emit(progress, "ingest.video", 0, config.video_frames, "extracting video frames")
        frames = job_dir / "work" / "frames"
        shutil.rmtree(frames, ignore_errors=True)
        extract_video_frames(video, frames, config.video_frames, config.video_candidates, progress)
        source = frames
    emit(progress, "ingest", 0, 1, "preparing images")
    shutil.rmtree(images, ignore_errors=True)
    infos = prepare_images(source, images, max_size=config.max_image_size)
    emit(progress, "ingest", 1, 1, f"{len(infos)} images ready ({infos[0].width}x{infos[0].height})")
    return images


# ---- the job --------------------------------------------------------------------------------------------------

def _done(marker: Path) -> bool:
    return marker.exists()


def _mark(marker: Path, info: dict[str, Any]) -> None:
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, marker)


def run_static_job(job_dir: str | Path, config: StaticJobConfig | None = None, progress: ProgressFn | None = None,
                   input_path: str | Path | None = None,
                   on_checkpoint: Callable[[int, Path], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the job in ``job_dir``; returns the content of ``gs_output/result.json``.

    The two stages, :func:`prepare_static_job` (ingest + SfM: CPU only) and :func:`train_static_job` (training +
    export: the GPU), one after the other; a cluster runs them as separate tasks (a GPU is not held during SfM).

    Args:
        job_dir: the job folder (created if missing).
        input_path: a folder of photos or one video file; default ``job_dir/upload``.
        progress: receives ProgressEvents (stages ``ingest*``, ``sfm.*``, ``training``, ``exporting``); it may
            raise ``Cancelled`` to stop at the next safe point.
        on_checkpoint: called as ``on_checkpoint(iteration, folder)`` once each training checkpoint folder is
            complete (before the progress event); the service publishes it to the job storage there.
    Raises:
        UserError / InputError: bad input (the message says what to fix); Cancelled.
    """
    timings = prepare_static_job(job_dir, config, progress, input_path)
    return train_static_job(job_dir, config, progress, on_checkpoint, timings)


def prepare_static_job(job_dir: str | Path, config: StaticJobConfig | None = None,
                       progress: ProgressFn | None = None, input_path: str | Path | None = None) -> dict[str, float]:
    """Stage 1, CPU only: ingest (video frames, normalised images) and SfM into ``job_dir/work`` and
    ``job_dir/colmap``; finished parts (``.done`` markers) are skipped. Returns the stage timings (seconds)."""
    config = config or StaticJobConfig()
    job_dir = Path(job_dir)
    input_path = Path(input_path) if input_path is not None else job_dir / "upload"
    work, colmap = job_dir / "work", job_dir / "colmap"
    for p in (work, colmap):
        p.mkdir(parents=True, exist_ok=True)
    (job_dir / "job_config.json").write_text(json.dumps(to_dict(config), indent=2, sort_keys=True))
    timings: dict[str, float] = {}

    t = time.time()
    if not _done(work / ".done"):
        images = ingest(input_path, job_dir, config, progress)
        _mark(work / ".done", {"images": len(list(images.iterdir())), "video": (work / "frames").is_dir()})
    else:
        emit(progress, "ingest", 1, 1, "images already prepared")
    timings["ingest_seconds"] = time.time() - t

    t = time.time()
    scene_json = colmap / "scene.json"
    if not (_done(colmap / ".done") and scene_json.exists()):
        from splatworks.sfm.pipeline import SfmConfig, run_sfm

        emit(progress, "sfm", 0, 0, "structure from motion (pycolmap)")
        sfm_cfg = SfmConfig(max_image_size=config.max_image_size)
        if config.sfm_matcher != "auto":
            sfm_cfg = dataclasses.replace(sfm_cfg, matcher=config.sfm_matcher)
        elif _from_video(work):  # video frames: neighbours in time overlap
            sfm_cfg = dataclasses.replace(sfm_cfg, matcher="sequential")
        result = run_sfm(work / "images", colmap, sfm_cfg, progress)
        report = getattr(result, "report", {}) or {}
        emit(progress, "sfm", 1, 1, f"SfM: {report.get('registered', len(result.scene.cameras))} images "
                                    f"registered, {len(result.scene.points)} points")
        _mark(colmap / ".done", {"scene": str(scene_json.name)})
    else:
        emit(progress, "sfm", 1, 1, "SfM already done")
    timings["sfm_seconds"] = time.time() - t
    return timings


def _from_video(work: Path) -> bool:
    if (work / "frames").is_dir():
        return True
    try:  # the frames folder may be absent where the stage output was restored from storage
        return bool(json.loads((work / ".done").read_text()).get("video"))
    except (OSError, ValueError, AttributeError):
        return False


def train_static_job(job_dir: str | Path, config: StaticJobConfig | None = None, progress: ProgressFn | None = None,
                     on_checkpoint: Callable[[int, Path], None] | None = None,
                     timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Stage 2, the GPU: train on ``job_dir/colmap/scene.json`` into ``job_dir/gs_output`` (resuming from its
    newest checkpoint folder) and write ``gs_output/result.json``; returns the result summary.

    ``on_checkpoint(iteration, folder)`` runs once each checkpoint folder is complete (see ``run_static_job``).
    """
    from splatworks.scene.camera import Scene
    from splatworks.splat.trainer import train

    config = config or StaticJobConfig()
    job_dir = Path(job_dir)
    gs_output = job_dir / "gs_output"
    gs_output.mkdir(parents=True, exist_ok=True)
    scene_json = job_dir / "colmap" / "scene.json"
    if not scene_json.exists():
        raise UserError(f"{scene_json} is missing: the SfM stage has not finished for this job")
    timings = dict(timings or {})

    def relay(ev: Any) -> None:
        if on_checkpoint is not None and ev.checkpoint:
            folder = Path(ev.checkpoint)
            on_checkpoint(int(folder.name.rsplit("_", 1)[-1]), folder)
        if progress is not None:
            progress(ev)

    t = time.time()
    scene = Scene.load(scene_json)
    tcfg = train_config(config)
    emit(progress, "training", 0, tcfg.iterations, f"training {tcfg.iterations} iterations on "
                                                   f"{len(scene.cameras)} images")
    result = train(scene, gs_output, tcfg, relay, resume=True)
    timings["train_seconds"] = time.time() - t

    emit(progress, "exporting", 0, 1, "checking results")
    summary = export_summary(job_dir, config, tcfg, result, timings)
    emit(progress, "exporting", 1, 1, f"done: iteration {summary['iteration']}, "
                                      f"{summary['num_gaussians']} Gaussians")
    return summary


def export_summary(job_dir: Path, config: StaticJobConfig, tcfg: Any, result: Any,
                   timings: dict[str, float]) -> dict[str, Any]:
    """Verify the published files of the last iteration and write ``gs_output/result.json`` atomically."""
    from splatworks.splat.io import latest_checkpoint

    latest = latest_checkpoint(job_dir / "gs_output")
    if latest is None:
        raise UserError("training finished without publishing a result; see run.log")
    iteration, folder = latest
    files = {name: (folder / name).stat().st_size for name in ("point_cloud.ply", "scene.splat")
             if (folder / name).exists()}
    if "point_cloud.ply" not in files:
        raise UserError(f"{folder} has no point_cloud.ply; the disk may be full (see run.log)")
    metrics = getattr(result, "metrics", {}) or {}
    summary = {"iteration": iteration, "files": files, "num_gaussians": getattr(result, "num_gaussians", None),
               "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"), "lpips": metrics.get("lpips"),
               "timings": timings, "job_config": to_dict(config), "train_config": to_dict(tcfg)}
    path = job_dir / "gs_output" / "result.json"
    tmp = path.with_name(".result.json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, path)
    return summary


# ---- CLI: `splatworks reconstruct` (registered by splatworks.service.cli) ------------------------------------

def register_reconstruct(sub: Any) -> None:
    from splatworks.config import add_arguments

    p = sub.add_parser("reconstruct", help="photos or a video -> trained Gaussians (the service's job, offline)",
                       description="Run the whole static pipeline (ingest, SfM, training, export) in one job "
                                   "folder; run it again to resume.")
    p.add_argument("input", type=Path, help="a folder of photos, or one video file")
    p.add_argument("-o", "--output", type=Path, required=True, help="job folder (created; reused to resume)")
    add_arguments(p, StaticJobConfig)
    p.set_defaults(func=_reconstruct_main)


def _reconstruct_main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splatworks.config import from_args

    config = from_args(StaticJobConfig, args)
    if not args.input.exists():
        raise UserError(f"{args.input} does not exist; give a folder of photos or a video file")
    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}] {postfix}")

    def progress(ev: Any) -> None:
        from splatworks.service.jobs import STAGE_SPAN, overall_percent

        key = ev.stage.split(".")[0]
        key = key if key in STAGE_SPAN else "sfm"
        bar.n = overall_percent(key, ev.fraction)
        bar.set_postfix_str(ev.stage + (f" {ev.step}/{ev.total}" if ev.total else ""))
        if ev.message:
            tqdm.write(f"[{ev.stage}] {ev.message}")

    try:
        summary = run_static_job(args.output, config, progress, input_path=args.input)
    finally:
        bar.close()
    print(json.dumps({k: summary[k] for k in ("iteration", "files", "num_gaussians", "psnr", "timings")}, indent=1))
    return 0
