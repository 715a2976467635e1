"""FastAPI routers: ``jobs`` (managed by job id), ``public`` (pub_key: view/download), ``admin``, ``health``."""

from __future__ import annotations

from fastapi import HTTPException, Request

from splatworks.service.executor import Executor
from splatworks.service.jobs import valid_id
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
