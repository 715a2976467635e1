"""Executors run jobs outside the API process. ``Executor`` is the interface; ``LocalExecutor`` the embedded one.

``LocalExecutor``: a scheduler thread claims the oldest PENDING job from the store (at most
``max_concurrent_jobs`` at once) and runs it in a fresh worker process (``multiprocessing`` spawn), which calls
the job function for the job's kind and writes its progress into the store itself. A worker that crashes, is
killed or runs out of memory leaves the job ``ERROR`` with the reason; the server and other jobs go on.

Workers die with the server (Linux ``PR_SET_PDEATHSIG``), so a server killed with SIGKILL leaves no orphan
writing into a job; on the next start, jobs the store still lists as RUNNING go back to the queue and resume
from their last finished stage / training checkpoint. A per-job lock file (``flock``) makes sure that two
workers never run the same job folder even if an orphan survived.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from splatworks.service.settings import ServiceSettings
from splatworks.service.store import DONE, ERROR, PENDING, RUNNING, JobStore, open_store

log = logging.getLogger("splatworks.service.executor")

# Job function per kind: "module:function", called as fn(job_dir, job_config: dict, progress) in the worker.
JOB_FUNCTIONS: dict[str, str] = {"static": "splatworks.service.executor:run_static_kind",
                                 "dynamic": "splatworks.service.executor:run_dynamic_kind"}
WORKER_NICE = 10


class Executor(ABC):
    """Runs queued jobs. The store is the source of truth: an executor may be restarted at any time."""

    @abstractmethod
    def start(self) -> None:
        """Requeue jobs a previous server left RUNNING and begin taking jobs from the queue."""

    @abstractmethod
    def wake(self) -> None:
        """A job was queued or cancelled: look at the queue now instead of at the next poll."""

    @abstractmethod
    def cancel(self, job_id: str, wait: float = 0.0) -> bool:
        """Stop a running job (it ends ERROR "cancelled"); with ``wait``, block until its worker has exited."""

    @abstractmethod
    def running(self) -> list[str]:
        """Ids of jobs this executor is running now."""

    @abstractmethod
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking jobs and stop the workers; their jobs stay RUNNING in the store and resume on restart."""


def run_static_kind(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    """Both stages of a static job in its folder, checkpoints published to the job storage (``service.stages``)."""
    from splatworks.service.stages import run_static_kind as run_both

    return run_both(job_dir, job_config, progress)


def job_function(kind: str) -> Callable[..., Any]:
    """The job function registered for ``kind`` in ``JOB_FUNCTIONS`` (imported on first use)."""
    from splatworks.errors import UserError

    fn_path = JOB_FUNCTIONS.get(kind)
    if fn_path is None:
        raise UserError(f"unknown job kind {kind!r}")
    module, name = fn_path.split(":")
    return getattr(importlib.import_module(module), name)


def record_failure(store: JobStore, rec: Any, job_id: str, attempt: int, exc: BaseException) -> None:
    """End a job attempt ERROR: a user error with its own message, anything else as an internal error whose
    traceback tail goes to the job log (disk full and out-of-memory get a message that says what to do)."""
    from splatworks.errors import UserError

    if isinstance(exc, UserError):
        rec.log(f"ERROR: {exc}")
        error = str(exc)
    else:
        for line in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()[-15:]:
            rec.log(line)
        msg = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.errno == 28:
            msg = "the job storage is full; free space and submit the job again"
        elif isinstance(exc, MemoryError):
            msg = "out of memory; use fewer or smaller images"
        error = f"internal error: {msg}"
    store.update(job_id, attempt=attempt, status=ERROR, error=error, finished_at=time.time(), eta_seconds=None)


def run_dynamic_kind(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    from splatworks.config import from_dict
    from splatworks.pipeline.dynamic import DynamicJobConfig, run_dynamic_job

    return run_dynamic_job(job_dir, from_dict(DynamicJobConfig, job_config), progress)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it exits (a killed server)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:  # not Linux: the flock below still prevents two workers on one job
        pass


def _kill_previous_group(pgid_file: "os.PathLike[str]") -> None:
    try:
        pgid = int(open(pgid_file).read().strip())
    except (OSError, ValueError):
        return
    if pgid > 1 and pgid != os.getpgid(0):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(process: Any, sig: int = signal.SIGKILL) -> None:
    """Signal a worker and every process of its group (a worker leads its own group)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if process.is_alive():  # in case it had not made its group yet (never a reaped, maybe reused pid)
        try:
            os.kill(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def worker_main(settings_json: str, job_id: str, attempt: int, parent_pid: int) -> None:
    """Entry point of a worker process: run one job attempt and record how it ended."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    os.setpgid(0, 0)  # its own process group: killing the group also ends helpers it starts (pycolmap)
    os.nice(WORKER_NICE)  # the API process keeps answering promptly while jobs use every core
    import json

    from splatworks.progress import Cancelled
    from splatworks.service.jobs import JobPaths, ProgressRecorder, latest_checkpoint
    from splatworks.service.storage import JobContext, open_storage, set_job_context

    settings = ServiceSettings.from_dict(json.loads(settings_json))
    # Share the CPU cores among the concurrent jobs (set before torch is imported by the job function).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // settings.max_concurrent_jobs)))
    store = open_store(settings.resolved_database_url)
    paths = JobPaths.of(settings.jobs_dir, job_id)
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = open(paths.lock, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # waits for a surviving older worker of this job, if any
    _kill_previous_group(paths.root / ".pgid")  # helpers an earlier, killed attempt left behind
    (paths.root / ".pgid").write_text(str(os.getpgid(0)))
    job = store.get(job_id)
    if job is None or job.attempt != attempt or job.status != RUNNING:
        return  # deleted, cancelled or superseded meanwhile
    rec = ProgressRecorder(store, job_id, attempt, paths)
    rec.log(f"attempt {attempt} started (worker pid {os.getpid()})")
    set_job_context(JobContext(open_storage(settings.storage_url, settings.jobs_dir), job_id, attempt,
                               attempt_fence(store, job_id, attempt)))
    try:
        job_function(job.kind)(str(paths.root), job.config, rec)
        store.update(job_id, attempt=attempt, status=DONE, stage="exporting", substage="done", percent=100.0,
                     eta_seconds=0.0, finished_at=time.time(), latest_checkpoint=latest_checkpoint(paths),
                     error=None)
        rec.log("job finished")
    except Cancelled as exc:
        rec.log(f"stopped: {exc}")
        store.update(job_id, attempt=attempt, status=ERROR, error=str(exc), cancelled=True,
                     finished_at=time.time(), eta_seconds=None)
    except BaseException as exc:  # noqa: BLE001 - a bad input, a bug or a resource problem: record it
        record_failure(store, rec, job_id, attempt, exc)
    finally:
        rec.close()
        store.close()
        lock.close()


def attempt_fence(store: JobStore, job_id: str, attempt: int) -> Callable[[], bool]:
    """True while the store says the job is still RUNNING on ``attempt`` (publishing is allowed)."""

    def fence() -> bool:
        job = store.get(job_id)
        return job is not None and job.attempt == attempt and job.status == RUNNING

    return fence


@dataclass
class _Running:
    job_id: str
    attempt: int
    process: Any
    cancel_at: float | None = None


class LocalExecutor(Executor):
    """Worker processes on this machine, at most ``settings.max_concurrent_jobs`` at once, in queue order."""

    def __init__(self, settings: ServiceSettings, store: JobStore, poll_seconds: float = 0.5) -> None:
        self.settings, self.store, self.poll = settings, store, poll_seconds
        self._ctx = mp.get_context("spawn")
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settings_json = settings.to_json()

    def start(self) -> None:
        reason = "server restarted: the job resumes from its last checkpoint"
        requeued = self.store.requeue_running(reason)
        for job_id in requeued:
            try:
                with open(self.settings.jobs_dir / job_id / "run.log", "a") as f:
                    f.write(time.strftime("%H:%M:%S ") + reason + "\n")
            except OSError:
                pass
        if requeued:
            log.info("requeued interrupted jobs", extra={"job_ids": requeued})
        self._thread = threading.Thread(target=self._loop, name="splatworks-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def cancel(self, job_id: str, wait: float = 0.0) -> bool:
        with self._lock:
            run = self._running.get(job_id)
            if run is not None and run.cancel_at is None:
                run.cancel_at = time.time() + self.settings.cancel_grace_seconds
        self.wake()
        if run is None:
            return False
        if wait > 0:
            run.process.join(wait)
            if run.process.is_alive():
                kill_tree(run.process)
                run.process.join(5)
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            runs = list(self._running.values())
        for run in runs:  # the jobs stay RUNNING in the store: the next start resumes them
            kill_tree(run.process, signal.SIGTERM)
        for run in runs:
            run.process.join(timeout)
            kill_tree(run.process)  # helpers (pycolmap) too, even when the worker itself ended

    # ---- the scheduler thread (workers are started from it, so PR_SET_PDEATHSIG follows it) -----------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._enforce_cancels()
                self._fill()
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the scheduler
                log.exception("scheduler iteration failed")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _fill(self) -> None:
        while len(self._running) < self.settings.max_concurrent_jobs and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                return
            proc = self._ctx.Process(target=worker_main, name=f"splatworks-job-{job.job_id[:8]}",
                                     args=(self._settings_json, job.job_id, job.attempt, os.getpid()))
            proc.start()
            with self._lock:
                self._running[job.job_id] = _Running(job.job_id, job.attempt, proc)
            log.info("job started", extra={"job_id": job.job_id, "attempt": job.attempt, "pid": proc.pid})

    def _reap(self) -> None:
        with self._lock:
            done = [r for r in self._running.values() if not r.process.is_alive()]
            for r in done:
                del self._running[r.job_id]
        for r in done:
            r.process.join(0)
            code = r.process.exitcode
            kill_tree(r.process)  # helpers a killed worker left behind
            job = self.store.get(r.job_id)
            if job is not None and job.status == RUNNING and job.attempt == r.attempt:
                # The worker ended without recording an outcome: killed (OOM killer, SIGKILL) or crashed.
                cancelled = job.cancel_requested
                why = "cancelled by the user" if cancelled else (
                    f"the worker process died (exit code {code}{', killed by signal ' + str(-code) if code and code < 0 else ''}); "
                    "the job can be submitted again")
                self.store.update(r.job_id, attempt=r.attempt, status=ERROR, error=why, cancelled=cancelled,
                                  finished_at=time.time(), eta_seconds=None)
                self.store.append_log(r.job_id, [f"ERROR: {why}"])
            log.info("job worker exited", extra={"job_id": r.job_id, "exit_code": code,
                                                 "status": job.status if job else "deleted"})

    def _enforce_cancels(self) -> None:
        now = time.time()
        with self._lock:
            runs = list(self._running.values())
        for r in runs:
            if r.cancel_at is None:
                job = self.store.get(r.job_id)
                if job is None or job.cancel_requested:
                    r.cancel_at = now + self.settings.cancel_grace_seconds
            if r.cancel_at is not None and now >= r.cancel_at and r.process.is_alive():
                log.warning("killing a cancelled job's worker", extra={"job_id": r.job_id})
                kill_tree(r.process)


def make_executor(settings: ServiceSettings, store: JobStore) -> Executor:
    if settings.executor == "local":
        return LocalExecutor(settings, store)
    if settings.executor == "ray":
        from splatworks.service.ray_executor import RayExecutor

        return RayExecutor(settings, store)
    raise ValueError(f"unknown executor {settings.executor!r}")


__all__ = ["Executor", "LocalExecutor", "make_executor", "JOB_FUNCTIONS", "worker_main", "attempt_fence", "PENDING",
           "RUNNING"]
