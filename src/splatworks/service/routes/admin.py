"""Health (open) and admin routes (need the API token; disabled on a server without one)."""

from __future__ import annotations

import shutil
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

import splatworks
from splatworks.service.admin import reimport_all
from splatworks.service.auth import require_admin
from splatworks.service.routes import executor_of, settings_of, store_of

router = APIRouter(tags=["admin"])
STARTED = time.time()


@router.get("/health", summary="Liveness and queue summary")
async def health(request: Request) -> dict[str, Any]:
    settings, store = settings_of(request), store_of(request)
    disk = shutil.disk_usage(settings.data_dir)
    return {"status": "ok", "version": getattr(splatworks, "__version__", "0"), "uptime_seconds": time.time() - STARTED,
            "jobs": store.counts(), "running_here": len(executor_of(request).running()),
            "max_concurrent_jobs": settings.max_concurrent_jobs, "disk_free_bytes": disk.free,
            "accepting_uploads": disk.free >= settings.limits.min_free_disk_bytes}


@router.post("/recon/admin/reimport", dependencies=[Depends(require_admin)],
             summary="Import job folders found in data/jobs that the database does not know")
async def admin_reimport(request: Request) -> dict[str, Any]:
    settings, store = settings_of(request), store_of(request)
    problems: list[tuple[str, str]] = []
    imported = await run_in_threadpool(reimport_all, settings, store, problems)
    executor_of(request).wake()
    out: dict[str, Any] = {"imported": [{"job_id": j, "pub_key": p} for j, p in imported]}
    if problems:  # unreadable folders: reported, not imported
        out["not_imported"] = [{"folder": f, "error": why} for f, why in problems]
    return out


@router.get("/recon/admin/jobs", dependencies=[Depends(require_admin)], summary="All jobs (admin)")
async def admin_jobs(request: Request) -> list[dict[str, Any]]:
    store = store_of(request)
    jobs = store.all() if hasattr(store, "all") else []
    return [{"job_id": j.job_id, "pub_key": j.pub_key, "status": j.status, "stage": j.stage, "percent": j.percent,
             "created_at": j.created_at, "error": j.error} for j in jobs]
