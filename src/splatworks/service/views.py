"""Public response models and how they are built from the internal ``JobRecord`` (routes stay thin)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from splatworks.service.jobs import JobPaths, published_result, scene_file
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import JobRecord, JobStore


class JobCreated(BaseModel):
    job_id: str = Field(description="Manages the job (status, cancel, delete). Keep it secret.")
    pub_key: str = Field(description="Views and downloads the result only; safe to share.")
    status_url: str
    viewer_url: str


class Files(BaseModel):
    splat: str | None = Field(None, description="URL of the latest complete .splat (null before the first checkpoint)")
    ply: str | None = Field(None, description="URL of the latest complete .ply (null before the first checkpoint)")


class JobStatus(BaseModel):
    job_id: str
    status: Literal["PENDING", "RUNNING", "DONE", "ERROR"]
    log_tail: list[str]
    viewer_url: str
    pub_key: str
    kind: str
    stage: str | None = Field(None, description="sfm | training | exporting (null while queued)")
    substage: str | None = Field(None, description="finer stage: ingest, sfm.extract, sfm.match, training, ...")
    iteration: int | None = Field(None, description="training iteration (null outside training)")
    total: int | None = Field(None, description="iterations of the training run (null outside training)")
    percent: float = Field(0.0, description="overall progress of the job, 0..100")
    eta_seconds: float | None = Field(None, description="estimated seconds left in the current stage")
    latest_checkpoint: int | None = Field(None, description="iteration of the newest published result")
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    cancelled: bool = False
    queue_position: int | None = Field(None, description="jobs ahead of this one (PENDING only)")
    input_kind: str
    files: Files
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float


class PublicInfo(BaseModel):
    """What the viewer page reads (``GET /recon/pub/{pub_key}/info``): no job id, no logs."""

    status: str
    stage: str | None
    percent: float
    iteration: int | None
    total: int | None
    latest_checkpoint: int | None
    error: str | None
    kind: str
    files: Files
    start_camera: dict[str, Any] | None
    updated_at: float
    manifest: str | None = Field(None, description="dynamic jobs: URL of the 4D manifest (null before frame 1)")
    video: str | None = Field(None, description="dynamic jobs: URL of the held-out camera's video (when done)")
    metrics_url: str | None = Field(None, description="dynamic jobs: URL of the held-out metrics (when done)")


def _files(settings: ServiceSettings, job: JobRecord, check_disk: bool) -> Files:
    base = f"/recon/pub/{job.pub_key}"
    if not check_disk:
        has = job.latest_checkpoint is not None
        return Files(splat=f"{base}/scene.splat" if has else None, ply=f"{base}/cloud.ply" if has else None)

    def has(kind: str) -> bool:  # published in the job storage (or, for older jobs, in the job folder)
        return published_result(settings.storage_url, settings.jobs_dir, job.job_id, kind) is not None

    return Files(splat=f"{base}/scene.splat" if has("splat") else None, ply=f"{base}/cloud.ply" if has("ply") else None)


def job_status(settings: ServiceSettings, store: JobStore, job: JobRecord) -> JobStatus:
    training = job.stage == "training"
    queue = None
    if job.status == "PENDING":
        queue = _queue_position(store, job)
    return JobStatus(
        job_id=job.job_id, status=job.status, log_tail=store.log_tail(job.job_id, settings.log_tail_lines),
        viewer_url=f"/v/{job.pub_key}", pub_key=job.pub_key, kind=job.kind, stage=job.stage,
        substage=job.substage, iteration=job.step if training else None, total=job.total if training else None,
        percent=job.percent, eta_seconds=job.eta_seconds, latest_checkpoint=job.latest_checkpoint,
        metrics=job.metrics, error=job.error, cancelled=job.cancelled, queue_position=queue,
        input_kind=job.input_kind, files=_files(settings, job, check_disk=False), created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, updated_at=job.updated_at)


def _queue_position(store: JobStore, job: JobRecord) -> int | None:
    if hasattr(store, "queue_position"):  # stores that answer it themselves (PostgresJobStore)
        return store.queue_position(job)
    conn = getattr(store, "_conn", None)
    if conn is None:
        return None
    row = conn().execute("SELECT COUNT(*) FROM jobs WHERE status = 'PENDING' AND seq < ?", (job.seq,)).fetchone()
    return int(row[0])


_camera_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
_camera_lock = threading.Lock()


def start_camera(settings: ServiceSettings, job: JobRecord) -> dict[str, Any] | None:
    """The viewer's first camera from the job's SfM scene (cached per scene.json version); None before SfM."""
    path = scene_file(settings.storage_url, settings.jobs_dir, job.job_id)
    if path is None:
        return None
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    with _camera_lock:
        hit = _camera_cache.get(str(path))
        if hit and hit[0] == mtime:
            return hit[1]
    try:
        from splatworks.scene.camera import Scene
        from splatworks.viewer.camera import viewer_start_camera

        value: dict[str, Any] | None = viewer_start_camera(Scene.load(path))
    except Exception:  # noqa: BLE001 - a scene the viewer cannot place gives the viewer's default camera
        value = None
    with _camera_lock:
        _camera_cache[str(path)] = (mtime, value)
    return value


def public_info(settings: ServiceSettings, job: JobRecord) -> PublicInfo:
    training = job.stage == "training"
    files = _files(settings, job, check_disk=True)
    latest = job.latest_checkpoint
    if latest is None and (files.splat or files.ply):
        from splatworks.service.jobs import latest_checkpoint

        latest = latest_checkpoint(JobPaths.of(settings.jobs_dir, job.job_id))
    return PublicInfo(status=job.status, stage=job.stage, percent=job.percent,
                      iteration=job.step if training else None, total=job.total if training else None,
                      latest_checkpoint=latest, error=job.error, kind=job.kind, files=files,
                      start_camera=start_camera(settings, job), updated_at=job.updated_at,
                      **(_dynamic_urls(settings, job) if job.kind == "dynamic" else {}))


def _dynamic_urls(settings: ServiceSettings, job: JobRecord) -> dict[str, str | None]:
    """The 4D files a dynamic job has published so far (routes/dynamic.py serves them)."""
    export = JobPaths.of(settings.jobs_dir, job.job_id).root / "export"
    base = f"/recon/pub/{job.pub_key}"
    return {"manifest": f"{base}/4d/manifest.json" if (export / "manifest.json").is_file() else None,
            "video": f"{base}/heldout.mp4" if (export / "heldout.mp4").is_file() else None,
            "metrics_url": f"{base}/metrics.json" if (export / "metrics.json").is_file() else None}


def job_dir(settings: ServiceSettings, job: JobRecord) -> Path:
    return JobPaths.of(settings.jobs_dir, job.job_id).root
