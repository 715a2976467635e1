"""pycolmap work in a spawned process: a native crash there cannot take the caller (CLI, service) down.

The parent starts ``target(job, queue)`` and relays its messages: ``("event", stage, step, total, message)``
becomes a ProgressEvent, ``("done", result)`` is returned, ``("error", "user"|"internal", text)`` is raised.
The worker side wraps its stage function with :func:`serve`. Used by full SfM (``sfm.pipeline``) and by the
known-poses triangulation (``sfm.known_poses``).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from splatworks.errors import UserError
from splatworks.progress import ProgressEvent, ProgressFn

Send = Callable[..., None]


def run_in_worker(target: Callable[[dict[str, Any], Any], None], job: dict[str, Any], *, name: str, what: str,
                  progress: ProgressFn | None, timeout: float, log_path: Path,
                  first_stage: str = "sfm.extract") -> Any:
    """Run ``target(job, queue)`` in a spawned process; relay its events; return its result or raise its error.

    ``what`` names the work in messages ("SfM", "triangulation"); ``timeout`` (s, 0 = none) stops a run that hangs.
    """
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(job, q), name=name, daemon=True)
    proc.start()
    started, stage = time.time(), first_stage
    try:
        while True:
            if timeout and time.time() - started > timeout:
                raise UserError(f"{what} took longer than the {timeout:.0f} s limit (during {stage}); "
                                "use fewer or smaller images, or raise --timeout-s")
            try:
                msg = q.get(timeout=0.5)
            except queue_mod.Empty:
                if proc.is_alive():
                    continue
                try:  # the last message may still be in flight
                    msg = q.get(timeout=1.0)
                except queue_mod.Empty:
                    raise RuntimeError(f"pycolmap crashed during {stage} (worker exit code {proc.exitcode}); "
                                       f"see {log_path} for COLMAP's log") from None
            kind = msg[0]
            if kind == "event":
                _, stage, step, total, message = msg
                if progress is not None:  # may raise Cancelled: the finally below stops the worker
                    progress(ProgressEvent(stage=stage, step=step, total=total, message=message))
            elif kind == "done":
                return msg[1]
            elif kind == "error":
                if msg[1] == "user":
                    raise UserError(msg[2])
                raise RuntimeError(f"{what} failed during {stage}: {msg[2]}")
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)
        q.close()


def serve(job: dict[str, Any], queue: Any, stages: Callable[[dict[str, Any], Send], Any]) -> None:
    """Worker side: COLMAP's native log to ``work_dir/colmap.log``, run ``stages(job, send)``, report the outcome."""
    from splatworks.sfm.worker import _redirect_native_logs

    _redirect_native_logs(Path(job["work_dir"]) / "colmap.log")

    def send(*msg: Any) -> None:
        queue.put(msg)

    try:
        send("done", stages(job, send))
    except Exception as exc:  # noqa: BLE001 - everything becomes a message for the parent
        kind = "user" if isinstance(exc, UserError) else "internal"
        send("error", kind, f"{exc}" if kind == "user" else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
