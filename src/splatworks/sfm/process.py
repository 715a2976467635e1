"""pycolmap work in a spawned process: a native crash there cannot take the caller (CLI, service) down.

The parent starts ``target(job, queue)`` and relays its messages: ``("event", stage, step, total, message)``
becomes a ProgressEvent, ``("done", result)`` is returned, ``("error", "user"|"internal", text)`` is raised.
The worker side wraps its stage function with :func:`serve`. Used by full SfM (``sfm.pipeline``) and by the
known-poses triangulation (``sfm.known_poses``).
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import queue as queue_mod
import signal
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
    deadline, stage = (time.time() + timeout) if timeout else None, first_stage
    try:
        while True:
            try:
                msg = next_message(proc, q, deadline)
            except TimeoutError:
                raise UserError(f"{what} took longer than the {timeout:.0f} s limit (during {stage}); "
                                "use fewer or smaller images, or raise --timeout-s") from None
            if msg is None:
                raise RuntimeError(f"pycolmap crashed during {stage} (worker exit code {proc.exitcode}); "
                                   f"see {log_path} for COLMAP's log")
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
        stop_worker(proc)
        q.close()


def next_message(proc: Any, q: Any, deadline: float | None = None, poll: float = 0.5) -> Any:
    """The worker's next queue message; None once the worker has exited without sending one (a native crash).

    Raises:
        TimeoutError: ``deadline`` (a ``time.time()`` value, None = none) passed first.
    """
    while True:
        if deadline is not None and time.time() > deadline:
            raise TimeoutError
        try:
            return q.get(timeout=poll)
        except queue_mod.Empty:
            if proc.is_alive():
                continue
            try:  # the last message may still be in flight
                return q.get(timeout=1.0)
            except queue_mod.Empty:
                return None


def stop_worker(proc: Any, grace: float = 10.0) -> None:
    """Stop a worker process: SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if proc.is_alive():
        proc.terminate()
    proc.join(timeout=grace)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=grace)


# Signals for which pycolmap's import installs glog's failure handler (it prints a stack trace). That handler is
# not async-signal-safe: in a multi-threaded worker it can deadlock on a lock the crashed thread held, leaving a
# "crashed" worker alive forever and its caller waiting (seen in tests/test_sfm.py's crash test).
_FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGTERM)


def die_on_fatal_signals() -> None:
    """Worker side, after ``import pycolmap``: restore the default action (the process dies, its parent reports the
    crash) for the signals glog caught; a crash still leaves its Python traceback on stderr (the worker's log)."""
    for sig in _FATAL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    faulthandler.enable(all_threads=True)  # chains to SIG_DFL after writing the traceback


def serve(job: dict[str, Any], queue: Any, stages: Callable[[dict[str, Any], Send], Any]) -> None:
    """Worker side: COLMAP's native log to ``work_dir/colmap.log``, run ``stages(job, send)``, report the outcome."""
    import PIL.Image  # noqa: F401  - before pycolmap (project pitfall: PNG/zlib clash)
    import pycolmap  # noqa: F401  - imported here so that its signal handlers can be replaced before any work

    from splatworks.sfm.worker import _redirect_native_logs

    _redirect_native_logs(Path(job["work_dir"]) / "colmap.log")
    die_on_fatal_signals()

    def send(*msg: Any) -> None:
        queue.put(msg)

    try:
        send("done", stages(job, send))
    except Exception as exc:  # noqa: BLE001 - everything becomes a message for the parent
        kind = "user" if isinstance(exc, UserError) else "internal"
        send("error", kind, f"{exc}" if kind == "user" else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
