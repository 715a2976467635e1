"""Routes managed by the job id: create, status, live events, cancel, delete, list."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from splatworks.config import to_dict
from splatworks.pipeline.static import StaticJobConfig
from splatworks.service.auth import owner_hash, require_api_token
from splatworks.service.jobs import JobPaths, job_storage, new_id, write_json_atomic
from splatworks.service.limits import check_upload, receive_upload
from splatworks.service.routes import (executor_of, job_or_404, refusing_upload, run_upload_check,
                                       settings_of, store_of)
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import ERROR, PENDING, JobRecord, JobStore
from splatworks.service.views import JobCreated, JobStatus, job_status

log = logging.getLogger("splatworks.service.jobs")
router = APIRouter(prefix="/recon", tags=["jobs"])

UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "photos (JPEG/PNG/TIFF/WebP/HEIC), or one .zip of photos, or one "
                                            "video (MP4/MOV/MKV/WebM)"}}}}}}}


def job_config(settings: ServiceSettings) -> StaticJobConfig:
    return StaticJobConfig(preset=settings.train_preset, iterations=settings.train_iterations,
                           checkpoint_steps=tuple(settings.checkpoint_steps), max_image_size=settings.max_image_size,
                           video_frames=settings.video_frames)


@router.post("/jobs", response_model=JobCreated, dependencies=[Depends(require_api_token)],
             openapi_extra=UPLOAD_DOC, summary="Upload photos (or one video / .zip) and queue a reconstruction")
async def create_job(request: Request) -> JobCreated:
    """Multipart upload with a repeated field ``files``. Returns the job id (keep it: it manages the job) and
    the public key (share it: it opens the viewer). Optional header ``X-Client-Token`` lists your jobs later."""
    settings, store = settings_of(request), store_of(request)
    job_id, pub_key = new_id(), new_id()
    paths = JobPaths.of(settings.jobs_dir, job_id).make()
    async with refusing_upload(paths.root, log, "upload"):
        received = await receive_upload(request.headers.get("content-type", ""),
                                        request.headers.get("content-length"), request.stream(), paths.upload,
                                        settings.limits)
        checked = await run_upload_check(request, check_upload, received, paths.upload, settings.limits)
    config = to_dict(job_config(settings))
    meta = {"job_id": job_id, "pub_key": pub_key, "kind": "static", "config": config, "created_at": time.time(),
            "input_kind": checked.input_kind, "input_files": len(checked.files), "input_bytes": checked.total_bytes}
    record = JobRecord(job_id=job_id, pub_key=pub_key, kind="static", status=PENDING, owner=owner_hash(request),
                       input_kind=checked.input_kind, input_files=len(checked.files),
                       input_bytes=checked.total_bytes, config=config, created_at=meta["created_at"])

    def persist() -> None:
        write_json_atomic(paths.job_json, meta)  # first on disk, so `admin reimport` can always rebuild the row
        store.create(record)
        what = "video" if checked.input_kind == "video" else f"{len(checked.files)} images"
        store.append_log(job_id, [f"upload received: {what} ({checked.total_bytes / 1e6:.1f} MB, "
                                  f"{checked.input_kind}); queued"])

    await run_in_threadpool(persist)
    executor_of(request).wake()
    log.info("job created", extra={"job_id": job_id, "input_kind": checked.input_kind,
                                   "files": len(checked.files), "bytes": checked.total_bytes})
    return JobCreated(job_id=job_id, pub_key=pub_key, status_url=f"/recon/jobs/{job_id}/status",
                      viewer_url=f"/v/{pub_key}")


@router.get("/jobs/{job_id}/status", response_model=JobStatus, summary="Status, progress and log tail of a job")
async def get_status(job_id: str, request: Request) -> JobStatus:
    settings, store = settings_of(request), store_of(request)
    return job_status(settings, store, job_or_404(store, job_id))


@router.get("/jobs", response_model=list[JobStatus], summary="List my jobs (by the ids I hold, or by my token)")
async def list_jobs(request: Request, ids: str = Query("", description="comma-separated job ids")) -> list[JobStatus]:
    """Jobs whose ids are given in ``ids``, plus those created with the same ``X-Client-Token`` header."""
    settings, store = settings_of(request), store_of(request)
    wanted = [i for i in ids.split(",") if i][:200]
    owner = owner_hash(request)
    if not wanted and owner is None:
        raise HTTPException(400, "say which jobs: ?ids=ID1,ID2 (the job ids you hold) or the X-Client-Token header "
                                 "you sent when creating them")
    return [job_status(settings, store, j) for j in store.list(wanted, owner)]


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, summary="Cancel a queued or running job")
async def cancel_job(job_id: str, request: Request) -> JobStatus:
    settings, store, executor = settings_of(request), store_of(request), executor_of(request)
    job = job_or_404(store, job_id)
    if job.finished:
        raise HTTPException(409, f"the job already ended ({job.status}); delete it instead")

    def do() -> None:
        store.update(job_id, cancel_requested=True)
        # A queued job ends at once (unless a worker claimed it meanwhile: the attempt guard tells); a running
        # one stops at its next progress report, or its worker is killed after the grace period.
        ended = job.status == PENDING and store.update(job_id, attempt=job.attempt, status=ERROR, cancelled=True,
                                                       error="cancelled by the user", finished_at=time.time())
        if ended:
            store.append_log(job_id, ["cancelled by the user before it started"])
        else:
            executor.cancel(job_id)

    await run_in_threadpool(do)
    return job_status(settings, store, job_or_404(store, job_id))


@router.delete("/jobs/{job_id}", summary="Delete a job and all its files (cancels it first)")
async def delete_job(job_id: str, request: Request) -> dict[str, Any]:
    settings, store, executor = settings_of(request), store_of(request), executor_of(request)
    job = job_or_404(store, job_id)

    def do() -> None:
        store.update(job_id, cancel_requested=True)
        executor.cancel(job_id, wait=settings.cancel_grace_seconds)
        store.delete(job_id)  # the row first: a half-deleted folder is never served
        shutil.rmtree(JobPaths.of(settings.jobs_dir, job_id).root, ignore_errors=True)
        # Published checkpoints and stage outputs (a bucket with --storage-url s3://...; on local disk the same
        # folder, already gone).
        job_storage(settings.storage_url, settings.jobs_dir).remove(job_id)

    await run_in_threadpool(do)
    log.info("job deleted", extra={"job_id": job_id, "status": job.status})
    return {"job_id": job_id, "deleted": True}


# ---- server-sent events ---------------------------------------------------------------------------------------

async def sse_stream(request: Request, store: JobStore, job_id: str, payload: Callable[[JobRecord], dict[str, Any]],
                     with_logs: bool, poll: float = 0.5, max_seconds: float = 24 * 3600) -> AsyncIterator[str]:
    """``event: status`` whenever the job changes, ``event: log`` per new log line; ends when the job ends."""
    last_update, last_log, start, last_sent = None, 0, time.monotonic(), time.monotonic()
    if with_logs:
        tail = store.logs_after(job_id, 0, limit=1_000_000)
        last_log = tail[-1][0] if tail else 0
        for _, line in tail[-20:]:
            yield f"event: log\ndata: {json.dumps(line)}\n\n"
    while time.monotonic() - start < max_seconds:
        job = store.get(job_id)
        if job is None:
            yield "event: deleted\ndata: {}\n\n"
            return
        if with_logs:
            for log_id, line in store.logs_after(job_id, last_log):
                last_log = log_id
                yield f"event: log\ndata: {json.dumps(line)}\n\n"
        if job.updated_at != last_update:
            last_update, last_sent = job.updated_at, time.monotonic()
            yield f"event: status\ndata: {json.dumps(payload(job))}\n\n"
        if job.finished:
            yield "event: end\ndata: {}\n\n"
            return
        if time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll)


SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@router.get("/jobs/{job_id}/events", summary="Live progress as server-sent events (status, log, end)",
            response_class=StreamingResponse)
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    settings, store = settings_of(request), store_of(request)
    job_or_404(store, job_id)

    def payload(job: JobRecord) -> dict[str, Any]:
        data = job_status(settings, store, job).model_dump()
        data.pop("log_tail")  # log lines come as their own events
        return data

    return StreamingResponse(sse_stream(request, store, job_id, payload, with_logs=True),
                             media_type="text/event-stream", headers=SSE_HEADERS)
