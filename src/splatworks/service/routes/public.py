"""Routes opened by the public key: the viewer page, its info, the result files, live events. View only."""

from __future__ import annotations

import os
from typing import Any, Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from splatworks.service.jobs import published_result
from splatworks.service.routes import pub_job_or_404, settings_of, store_of
from splatworks.service.routes.jobs import SSE_HEADERS, sse_stream
from splatworks.service.store import JobRecord
from splatworks.service.views import PublicInfo, public_info

router = APIRouter(tags=["public"])

_FALLBACK_PAGE = ("<!doctype html><meta charset=utf-8><title>splatworks</title><h1>splatworks</h1>"
                  "<p>The web {what} is not installed; run <code>make viewer</code>. The API is documented at "
                  "<a href=/docs>/docs</a>.</p>")


def _page(name: str) -> str:
    try:
        import splatworks.viewer as viewer

        return viewer.viewer_page_html() if name == "viewer" else viewer.upload_page_html()
    except (ImportError, AttributeError, OSError):
        return _FALLBACK_PAGE.format(what=name + " page")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def upload_page() -> HTMLResponse:
    return HTMLResponse(_page("upload"))


@router.get("/v/{pub_key}", response_class=HTMLResponse, summary="The web viewer of a reconstruction")
async def viewer_page(pub_key: str, request: Request) -> HTMLResponse:
    # An unknown key still gets the page (with 404), which tells the user so instead of showing raw JSON.
    known = store_of(request).get_by_pub_key(pub_key) is not None
    return HTMLResponse(_page("viewer"), status_code=200 if known else 404, headers={"Cache-Control": "no-store"})


@router.get("/recon/pub/{pub_key}/info", response_model=PublicInfo, summary="Public state of a reconstruction")
async def info(pub_key: str, request: Request) -> PublicInfo:
    settings = settings_of(request)
    job = pub_job_or_404(store_of(request), pub_key)
    return await run_in_threadpool(public_info, settings, job)  # may read the job storage (a bucket)


def _stream_open_file(f: Any, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Stream an already-open file (a file object, or an OS file descriptor as routes/dynamic.py passes): a
    checkpoint replaced meanwhile cannot cut the download short."""
    read = (lambda n: os.read(f, n)) if isinstance(f, int) else f.read
    try:
        left = size
        while left > 0:
            data = read(min(chunk, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        if isinstance(f, int):
            os.close(f)
        else:
            f.close()


def _serve_result(request: Request, pub_key: str, kind: str, media_type: str, filename: str) -> StreamingResponse:
    """The newest published result, from the job storage (shared folder or bucket; see jobs.published_result)."""
    settings = settings_of(request)
    job = pub_job_or_404(store_of(request), pub_key)
    for _ in range(3):  # a newer checkpoint may replace this one between finding and opening it: look again
        found = published_result(settings.storage_url, settings.jobs_dir, job.job_id, kind)
        if found is None:
            break
        try:
            f, size = found.open()
        except FileNotFoundError:
            continue
        headers = {"Content-Length": str(size), "Cache-Control": "no-store",
                   "X-Splatworks-Iteration": str(found.iteration),
                   "Content-Disposition": f'attachment; filename="{filename}"'}
        return StreamingResponse(_stream_open_file(f, size), media_type=media_type, headers=headers)
    if job.status == "ERROR":
        detail = "the job failed before publishing a result: " + (job.error or "see its status")
    else:
        detail = "no result yet: the first one is published at the first training checkpoint; try again later"
    raise HTTPException(404, detail)


@router.get("/recon/pub/{pub_key}/cloud.ply", summary="Latest complete result as 3DGS .ply")
async def cloud_ply(pub_key: str, request: Request) -> StreamingResponse:
    return await run_in_threadpool(_serve_result, request, pub_key, "ply", "application/octet-stream", "cloud.ply")


@router.get("/recon/pub/{pub_key}/scene.splat", summary="Latest complete result as .splat")
async def scene_splat(pub_key: str, request: Request) -> StreamingResponse:
    return await run_in_threadpool(_serve_result, request, pub_key, "splat", "application/octet-stream",
                                   "scene.splat")


@router.get("/recon/pub/{pub_key}/events", summary="Live public state as server-sent events",
            response_class=StreamingResponse)
async def pub_events(pub_key: str, request: Request) -> StreamingResponse:
    settings, store = settings_of(request), store_of(request)
    job = pub_job_or_404(store, pub_key)

    def payload(j: JobRecord) -> dict[str, Any]:
        return public_info(settings, j).model_dump()

    return StreamingResponse(sse_stream(request, store, job.job_id, payload, with_logs=False),
                             media_type="text/event-stream", headers=SSE_HEADERS)
