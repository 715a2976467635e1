"""FastAPI routers: ``jobs`` (managed by job id), ``public`` (pub_key: view/download), ``admin``, ``health``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from splatworks.service.executor import Executor
from splatworks.service.jobs import valid_id
from splatworks.service.limits import UploadRejected
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import JobRecord, JobStore


def settings_of(request: Request) -> ServiceSettings:
    return request.app.state.settings


def store_of(request: Request) -> JobStore:
    return request.app.state.store


def executor_of(request: Request) -> Executor:
    return request.app.state.executor


def job_or_404(store: JobStore, job_id: str) -> JobRecord:
    job = store.get(job_id) if valid_id(job_id) else None
    if job is None:
        raise HTTPException(404, "no job with this id (it was deleted, or the id is mistyped)")
    return job


def pub_job_or_404(store: JobStore, pub_key: str) -> JobRecord:
    job = store.get_by_pub_key(pub_key) if valid_id(pub_key) else None
    if job is None:
        raise HTTPException(404, "no reconstruction with this key (it was deleted, or the link is incomplete)")
    return job


async def run_upload_check(request: Request, check: Callable[..., Any], *args: Any) -> Any:
    """Run an upload check (decoding photos, probing videos) off the event loop: in the app's pool of checker
    processes when it has one (so status requests stay fast), else in a thread."""
    pool = getattr(request.app.state, "check_pool", None)
    if pool is not None:
        return await asyncio.get_running_loop().run_in_executor(pool, check, *args)
    return await run_in_threadpool(check, *args)


@contextlib.asynccontextmanager
async def refusing_upload(job_root: Path, log: logging.Logger, what: str) -> AsyncIterator[None]:
    """Around receiving and checking an upload: on any failure the half-made job folder goes, and a refusal
    becomes its 4xx with the message that says what to fix."""
    try:
        yield
    except UploadRejected as exc:
        await run_in_threadpool(shutil.rmtree, job_root, True)
        log.info(f"{what} refused", extra={"status_code": exc.status_code, "reason": str(exc)})
        raise HTTPException(exc.status_code, str(exc)) from None
    except BaseException:
        await run_in_threadpool(shutil.rmtree, job_root, True)
        raise
