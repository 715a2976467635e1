"""Job kinds split into stages, and the glue between a stage's job folder and the job storage.

A static job has two stages (``pipeline/static.py``): ``prepare`` (ingest + SfM: CPU only) and ``train``
(training + export: one GPU). The local executor runs both in the job folder, one after the other
(:func:`run_static_kind`); the Ray executor runs each as its own Ray task (``prepare`` with ``num_gpus=0``,
``train`` with ``num_gpus=1``), so no GPU waits idle while SfM runs. Both call the same stage functions.

On a cluster, a stage task works in a private folder on its node (``stage_workdir``) and everything crosses
between tasks through the job storage (a shared folder or an S3 bucket), fenced by the attempt number:

- its inputs are restored from storage first (the upload; the ``prepare`` stage's published output; the
  newest published training checkpoint, which the trainer resumes from);
- its output is published like a checkpoint (complete files, then the attempt's atomic "latest" pointer,
  only while the database says the job is still on this attempt), so a stale attempt's SfM result or checkpoint
  can never replace a newer attempt's;
- each training checkpoint (``point_cloud/iteration_N/{point_cloud.ply, scene.splat, trainer_state.pt}``) is
  published the moment the trainer has written it completely (:func:`checkpoint_publisher`); the results routes
  serve the newest published one from storage.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from splatworks.progress import Cancelled
from splatworks.service.storage import (CHECKPOINTS, JobContext, JobStorage, fetch_checkpoint, job_context,
                                        latest_checkpoint, publish_checkpoint)

# SfM files the training stage does not need (the raw database and models, the prepared input copies).
PREPARE_SKIP = ("colmap/input/", "colmap/database.db", "colmap/sparse_raw/", "colmap/sparse_repair/",
                "colmap/colmap.log")


@dataclass(frozen=True)
class Stage:
    """One stage of a job kind.

    ``function`` ("module:function") is called as ``fn(job_dir, job_config, progress)`` in the stage's folder;
    ``gpu``: whether its Ray task asks for GPUs (else CPUs only); ``publishes``: the job-folder paths (files,
    or folders ending in ``/``) that form its output, published to storage as the series named after the stage;
    ``restores``: earlier stages whose published output is restored into the folder before it runs (its own
    name included: a later attempt then skips work an earlier one finished); ``needs_upload``: it reads the
    job's upload; ``resumes_training``: the newest published training checkpoint is restored first.
    """

    name: str
    function: str
    gpu: bool
    publishes: tuple[str, ...] = ()
    restores: tuple[str, ...] = ()
    needs_upload: bool = False
    resumes_training: bool = False


STATIC_STAGES = (
    Stage("prepare", "splatworks.service.stages:run_static_prepare", gpu=False,
          publishes=("job_config.json", "work/.done", "colmap/"), restores=("prepare",), needs_upload=True),
    Stage("train", "splatworks.service.stages:run_static_train", gpu=True,
          publishes=("gs_output/result.json", "gs_output/metrics.json", "gs_output/config.json",
                     "gs_output/cameras.json"), restores=("prepare",), resumes_training=True),
)
# Kinds not listed run as one GPU stage in the shared job folder (their function handles storage itself).
JOB_STAGES: dict[str, tuple[Stage, ...]] = {"static": STATIC_STAGES}


def job_stages(kind: str, whole_job_function: str) -> tuple[Stage, ...]:
    """The stages of ``kind``; a kind without stages is one GPU stage running ``whole_job_function``."""
    return JOB_STAGES.get(kind) or (Stage("job", whole_job_function, gpu=True),)


# ---- the static job's stages (the same functions for the local and the Ray executor) --------------------------

def run_static_kind(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    """The whole static job in its folder (local executor, ``splatworks reconstruct``-like): both stages."""
    run_static_prepare(job_dir, job_config, progress)
    return run_static_train(job_dir, job_config, progress)


def run_static_prepare(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None],
                       input_path: str | Path | None = None) -> dict[str, Any]:
    from splatworks.config import from_dict
    from splatworks.pipeline.static import StaticJobConfig, prepare_static_job

    return prepare_static_job(job_dir, from_dict(StaticJobConfig, job_config), progress, input_path)


def run_static_train(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    from splatworks.config import from_dict
    from splatworks.pipeline.static import StaticJobConfig, train_static_job

    ctx = job_context(job_dir, progress)
    return train_static_job(job_dir, from_dict(StaticJobConfig, job_config), progress,
                            on_checkpoint=checkpoint_publisher(ctx))


def checkpoint_publisher(ctx: JobContext) -> Callable[[int, Path], None]:
    """``on_checkpoint(iteration, folder)`` for the trainer: publish the complete checkpoint folder to the job
    storage (fenced by the attempt). A refused publication means a newer attempt owns the job: stop."""

    def publish(iteration: int, folder: Path) -> None:
        files = {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith(".")}
        if publish_checkpoint(ctx.storage, ctx.job_id, ctx.attempt, iteration, files, fence=ctx.fence) is None:
            raise Cancelled(f"superseded: attempt {ctx.attempt} may no longer publish checkpoints of this job")

    return publish


# ---- a stage's private folder and its storage traffic (cluster tasks) -----------------------------------------

def stage_workdir(base: str | Path, job_id: str, attempt: int, stage: str) -> Path:
    """A fresh node-local folder for one stage of one attempt (``base`` empty: the system temp folder)."""
    root = Path(base or tempfile.gettempdir()) / "splatworks-work" / f"{job_id}-a{attempt}-{stage}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def _storage_is_jobs_dir(storage: JobStorage, jobs_dir: str | Path) -> bool:
    return storage.is_directory and storage.local_path() == Path(jobs_dir).resolve()


def push_upload(storage: JobStorage, jobs_dir: str | Path, job_id: str) -> int:
    """Copy a job's upload from this machine's jobs folder into storage (once; a manifest written last marks it
    complete). Nothing to do when the storage is that jobs folder. Returns the number of files copied."""
    if _storage_is_jobs_dir(storage, jobs_dir) or storage.exists(f"{job_id}/upload.manifest.json"):
        return 0
    import json

    upload = Path(jobs_dir) / job_id / "upload"
    files = sorted(p for p in upload.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        storage.put_file(f"{job_id}/upload/{p.relative_to(upload).as_posix()}", p)
    names = [p.relative_to(upload).as_posix() for p in files]
    storage.write_bytes(f"{job_id}/upload.manifest.json", json.dumps(names).encode())
    return len(files)


def upload_path(storage: JobStorage, job_id: str, workdir: Path) -> Path:
    """The job's upload as a local folder: on a directory storage the folder itself, else a copy in ``workdir``."""
    if storage.is_directory:
        return storage.local_path(f"{job_id}/upload")
    import json

    names = json.loads(storage.read_bytes(f"{job_id}/upload.manifest.json"))
    for name in names:
        storage.get_file(f"{job_id}/upload/{name}", workdir / "upload" / name)
    return workdir / "upload"


def restore_inputs(stage: Stage, ctx: JobContext, workdir: Path, log: Callable[[str], None]) -> None:
    """Before a stage runs in ``workdir``: restore the published output of ``stage.restores`` and, for a training
    stage, the newest published training checkpoint (as ``gs_output/point_cloud/iteration_N``)."""
    for series in stage.restores:
        cp = latest_checkpoint(ctx.storage, ctx.job_id, max_attempt=ctx.attempt, series=series)
        if cp is not None:
            fetch_checkpoint(ctx.storage, cp, workdir)
            log(f"restored the {series} stage's output from storage (written by attempt {cp.attempt})")
    if stage.resumes_training:
        cp = latest_checkpoint(ctx.storage, ctx.job_id, max_attempt=ctx.attempt, series=CHECKPOINTS)
        if cp is not None:
            fetch_checkpoint(ctx.storage, cp, workdir / "gs_output" / "point_cloud" / f"iteration_{cp.step}")
            log(f"resuming from the checkpoint at iteration {cp.step} (published by attempt {cp.attempt})")


def publish_outputs(stage: Stage, ctx: JobContext, workdir: Path) -> bool:
    """Publish the stage's output files from ``workdir`` (fenced); False if the attempt lost the job."""
    files: dict[str, bytes | Path] = {}
    for entry in stage.publishes:
        path = workdir / entry.rstrip("/")
        if entry.endswith("/"):
            for p in sorted(path.rglob("*")) if path.is_dir() else []:
                rel = p.relative_to(workdir).as_posix()
                if p.is_file() and not p.name.endswith(".tmp") and not any(
                        rel == s or rel.startswith(s) for s in PREPARE_SKIP):
                    files[rel] = p
        elif path.is_file():
            files[entry] = path
    if not files:
        return True
    return publish_checkpoint(ctx.storage, ctx.job_id, ctx.attempt, 0, files, fence=ctx.fence,
                              series=stage.name) is not None


__all__ = ["Stage", "JOB_STAGES", "STATIC_STAGES", "job_stages", "run_static_kind", "run_static_prepare",
           "run_static_train", "checkpoint_publisher", "stage_workdir", "push_upload", "upload_path",
           "restore_inputs", "publish_outputs"]
