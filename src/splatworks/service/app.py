"""The FastAPI application: ``create_app(settings)`` wires the store, the executor and the routers.

Routes are thin (validate, store, enqueue, answer); SfM and training run in worker processes. The store and the
executor live on ``app.state`` and start/stop with the app's lifespan, so a test can build an app per data dir.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from splatworks.errors import UserError
from splatworks.service.executor import Executor, make_executor
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import JobStore, open_store

log = logging.getLogger("splatworks.service")

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any ``extra={...}`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                                + f".{int(record.msecs):03d}Z", "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                data[k] = v
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(json_logs: bool = True, level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


class ServerTiming:
    """Pure ASGI middleware: adds ``Server-Timing: app;dur=MS`` (time from request to response headers), so a
    client can tell the server's own time from network and queueing time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_with_timing(message: dict) -> None:
            if message["type"] == "http.response.start":
                dur = (time.perf_counter() - t0) * 1000
                message.setdefault("headers", []).append((b"server-timing", f"app;dur={dur:.2f}".encode()))
            await send(message)

        await self.app(scope, receive, send_with_timing)


def create_app(settings: ServiceSettings | None = None, store: JobStore | None = None,
               executor: Executor | None = None) -> FastAPI:
    """The service app. ``store``/``executor`` default to the ones the settings name (tests may pass others)."""
    settings = (settings or ServiceSettings()).validate()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or open_store(settings.resolved_database_url)
        app.state.executor = executor or make_executor(settings, app.state.store)
        from splatworks.service.admin import sweep_incomplete_uploads

        swept = sweep_incomplete_uploads(settings, app.state.store)
        if swept:
            log.info("removed incomplete uploads", extra={"job_ids": swept})
        from splatworks.service.limits import make_check_pool

        app.state.check_pool = make_check_pool(settings.upload_check_workers)
        app.state.executor.start()
        log.info("service started", extra={"data_dir": str(Path(settings.data_dir).resolve()),
                                           "database": settings.resolved_database_url,
                                           "max_concurrent_jobs": settings.max_concurrent_jobs})
        try:
            yield
        finally:
            app.state.executor.shutdown()
            app.state.check_pool.shutdown(wait=False, cancel_futures=True)
            log.info("service stopped")

    app = FastAPI(title="splatworks", version="0.1.0", lifespan=lifespan,
                  description="Photos or a video in, a Gaussian-splatting scene out: upload, watch progress, "
                              "open the viewer, download results.")
    app.state.settings = settings

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status_code", 400))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": f"invalid request ({problems})"}, status_code=422)

    app.add_middleware(ServerTiming)
    from splatworks.service.routes import admin, dynamic, jobs, public

    app.include_router(jobs.router)
    app.include_router(dynamic.router)
    app.include_router(public.router)
    app.include_router(admin.router)
    try:
        from splatworks.viewer import STATIC_DIR

        if Path(STATIC_DIR).is_dir():
            app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    except ImportError:  # viewer not installed: the API still works
        pass
    return app
