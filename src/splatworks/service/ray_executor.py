"""``RayExecutor``: jobs run as Ray tasks on a cluster of GPU machines; PostgreSQL holds the truth about them.

How a job runs (``splatworks serve --executor ray --database-url postgresql://... --ray-address HEAD:6379``):

1. The API's reconciler thread submits each PENDING job (oldest first, at most ``max_concurrent_jobs`` tasks in
   flight) as a Ray task that asks for ``num_gpus=1``; Ray places it on a node with a free GPU.
2. On the node, the task *claims* the job in the database (PENDING -> RUNNING, attempt + 1, row-level lock with
   ``FOR UPDATE SKIP LOCKED``); a duplicate task for the same job finds it RUNNING and ends at once. It records
   where it runs (``job_attempts``), starts a heartbeat thread, and calls the job function of the job's kind
   (``executor.JOB_FUNCTIONS``: the same function the local executor calls) with the same progress recorder.
3. Every write names the attempt, and the heartbeat thread notices when the job moved on (the progress
   callback then stops the work): a stale attempt can never overwrite a newer one. Checkpoints go through
   ``storage.publish_checkpoint`` (complete files, then an atomic per-attempt pointer, fenced by the database).

Ray's task status is *not* the source of truth: Ray retries are off (``max_retries=0``) and the reconciler looks
only at the database. A RUNNING job whose heartbeat is older than ``heartbeat_timeout_seconds`` (its node died,
its worker was killed, the API that owned the task died) goes back to PENDING keeping its queue place, and is
submitted again: the next claim makes it attempt + 1, and the job function resumes from the last published
checkpoint. The API process keeps nothing that a restart would lose, and needs no GPU.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splatworks.errors import UserError
from splatworks.service.executor import JOB_FUNCTIONS, Executor, job_function, record_failure
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import DONE, ERROR, PENDING, RUNNING, JobStore, open_store

log = logging.getLogger("splatworks.service.ray")

# The synthetic kind used by the cluster tests, the overhead benchmark and operators' smoke tests.
JOB_FUNCTIONS.setdefault("probe", "splatworks.service.probe_job:run_probe_kind")

# Ray resources per job kind: GPU work asks for one GPU; Ray schedules on free GPUs across nodes.
KIND_RESOURCES: dict[str, dict[str, float]] = {"static": {"num_gpus": 1, "num_cpus": 1},
                                               "probe": {"num_gpus": 1, "num_cpus": 1}}


class _Heartbeat(threading.Thread):
    """Bumps the attempt's heartbeat every ``interval`` s; sets ``lost`` when the job moved on without us."""

    def __init__(self, store: Any, job_id: str, attempt: int, interval: float) -> None:
        super().__init__(name=f"splatworks-heartbeat-{job_id[:8]}", daemon=True)
        self.store, self.job_id, self.attempt, self.interval = store, job_id, attempt, interval
        self.stop = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.store.heartbeat(self.job_id, self.attempt):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database blip: the next beat tries again
                log.warning("heartbeat failed", exc_info=True)
            self.stop.wait(self.interval)
        try:
            self.store.close()
        except Exception:  # noqa: BLE001
            pass


def run_job_attempt(settings_json: str, job_id: str) -> dict[str, Any]:
    """Body of one job's Ray task (runs on a worker node): claim, heartbeat, run the job function, record.

    Returns ``{"job_id", "attempt", "outcome", "node"}``; outcome "not-claimed" when the job was not PENDING
    (a duplicate submission, a cancel, a delete).
    """
    import json

    from splatworks.progress import Cancelled
    from splatworks.service.jobs import JobPaths, ProgressRecorder, latest_checkpoint
    from splatworks.service.storage import JobContext, open_storage, set_job_context

    settings = ServiceSettings.from_dict(json.loads(settings_json))
    node = _node_id()
    # Everything slow (connections, storage) is set up before the claim: once claimed, the heartbeat starts
    # at once, so a slow start on a busy node is not mistaken for a lost attempt.
    store: Any = open_store(settings.resolved_database_url)
    beat_store: Any = open_store(settings.resolved_database_url)
    storage = open_storage(settings.storage_url, settings.jobs_dir)
    paths = JobPaths.of(settings.jobs_dir, job_id)
    job = store.claim(job_id)
    if job is None:
        store.close()
        beat_store.close()
        return {"job_id": job_id, "attempt": None, "outcome": "not-claimed", "node": node}
    attempt = job.attempt
    beat = _Heartbeat(beat_store, job_id, attempt, settings.heartbeat_seconds)
    beat.start()
    store.record_attempt(job_id, attempt, node, socket.gethostname(), os.getpid())

    def fence() -> bool:
        """True while the database says this attempt still owns the job."""
        if beat.lost.is_set():
            return False
        current = store.get(job_id)
        return current is not None and current.attempt == attempt and current.status == RUNNING

    paths.root.mkdir(parents=True, exist_ok=True)
    set_job_context(JobContext(storage, job_id, attempt, fence))
    rec = ProgressRecorder(store, job_id, attempt, paths)
    outcome = "error"

    def progress(ev: Any) -> None:
        if beat.lost.is_set():
            raise Cancelled("superseded by a newer attempt (this attempt's heartbeat was given up on)")
        rec(ev)

    rec.log(f"attempt {attempt} started on node {node[:12]} ({socket.gethostname()}, pid {os.getpid()})")
    try:
        job_function(job.kind)(str(paths.root), job.config, progress)
        if store.update(job_id, attempt=attempt, status=DONE, stage="exporting", substage="done", percent=100.0,
                        eta_seconds=0.0, finished_at=time.time(), latest_checkpoint=latest_checkpoint(paths),
                        error=None):
            rec.log("job finished")
            outcome = "done"
        else:
            outcome = "superseded"
    except Cancelled as exc:
        rec.log(f"stopped: {exc}")
        current = store.get(job_id)
        superseded = current is not None and current.attempt != attempt
        outcome = "superseded" if superseded or beat.lost.is_set() else "cancelled"
        if outcome == "cancelled":
            store.update(job_id, attempt=attempt, status=ERROR, error=str(exc), cancelled=True,
                         finished_at=time.time(), eta_seconds=None)
    except (SystemExit, KeyboardInterrupt):
        # Ray stops the worker (SIGTERM): its owner, the API process, died, or the node shuts down. Not the
        # job's fault: back to the queue at once (no need to wait for the heartbeat timeout), then exit.
        outcome = "interrupted"
        if store.update(job_id, attempt=attempt, status=PENDING, eta_seconds=None):
            rec.log(f"attempt {attempt} was stopped by the cluster (node shutdown or API restart); the job goes "
                    "back to the queue and resumes from its last checkpoint")
        raise
    except BaseException as exc:  # noqa: BLE001 - a bad input, a bug or a resource problem: record it, keep the node alive
        record_failure(store, rec, job_id, attempt, exc)
    finally:
        beat.stop.set()
        set_job_context(None)
        try:
            store.end_attempt(job_id, attempt, outcome)
        except Exception:  # noqa: BLE001
            pass
        rec.close()
        store.close()
    return {"job_id": job_id, "attempt": attempt, "outcome": outcome, "node": node}


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (a direct call in a test): the host name will do
        pass
    return f"host:{socket.gethostname()}"


@dataclass
class _InFlight:
    job_id: str
    ref: Any
    submitted_at: float
    kill_at: float | None = None  # a cancelled job's task is force-killed at this time if still running


class RayExecutor(Executor):
    """Submits PENDING jobs to a Ray cluster; a reconciler requeues jobs whose heartbeat stopped."""

    def __init__(self, settings: ServiceSettings, store: JobStore, poll_seconds: float = 0.5) -> None:
        for method in ("claim", "heartbeat", "requeue_stale", "pending_ids"):
            if not hasattr(store, method):
                raise UserError("the ray executor needs a database that machines can share: use "
                                "--database-url postgresql://USER:PASSWORD@HOST:PORT/DB")
        self.settings, self.store, self.poll = settings, store, poll_seconds
        # Workers on other machines need absolute paths to the shared folder.
        self._settings_json = settings.replace(data_dir=Path(settings.data_dir).resolve()).to_json()
        self._in_flight: dict[str, _InFlight] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: Any = None

    def start(self) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise UserError("the ray executor needs Ray: pip install 'splatworks[cluster]'") from exc
        if not ray.is_initialized():
            address = self.settings.ray_address or "auto"
            try:
                ray.init(address=address, namespace="splatworks", log_to_driver=False,
                         configure_logging=False, include_dashboard=False)
            except ConnectionError as exc:
                raise UserError(f"cannot reach the Ray cluster at {address!r} ({exc}); start it with `ray start "
                                "--head` and pass --ray-address HEAD_IP:6379") from exc
        self._task = ray.remote(max_retries=0)(run_job_attempt)  # retries are ours (attempt numbers), not Ray's
        self._thread = threading.Thread(target=self._loop, name="splatworks-reconciler", daemon=True)
        self._thread.start()
        log.info("ray executor started", extra={"resources": ray.cluster_resources()})

    def wake(self) -> None:
        self._wake.set()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._in_flight)

    def cancel(self, job_id: str, wait: float = 0.0) -> bool:
        """The route has set ``cancel_requested``: the task's progress callback stops it. With ``wait``, give it
        that long, then force-kill the Ray task."""
        with self._lock:
            run = self._in_flight.get(job_id)
        if run is None:
            return False
        if run.kill_at is None:
            run.kill_at = time.time() + self.settings.cancel_grace_seconds
        if wait > 0:
            import ray

            ready, _ = ray.wait([run.ref], timeout=wait)
            if not ready:
                ray.cancel(run.ref, force=True)
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # The tasks die with this driver (Ray ties a task to its owner); their jobs stay RUNNING and the next
        # API's reconciler requeues them once their heartbeat is stale.

    # ---- the reconciler thread -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._requeue_lost()
                self._enforce_cancels()
                self._reap()
                self._submit()
            except Exception:  # noqa: BLE001 - a database or Ray hiccup must not stop the reconciler
                log.exception("reconciler iteration failed")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _requeue_lost(self) -> None:
        lost = self.store.requeue_stale(self.settings.heartbeat_timeout_seconds,  # type: ignore[attr-defined]
                                        "attempt {attempt} stopped sending heartbeats (node or worker lost); "
                                        "the job goes back to the queue and resumes from its last checkpoint")
        for job_id, attempt in lost:
            log.warning("job requeued: heartbeat lost", extra={"job_id": job_id, "attempt": attempt})
            with self._lock:
                run = self._in_flight.pop(job_id, None)
            if run is not None:
                try:
                    import ray

                    ray.cancel(run.ref, force=True)
                except Exception:  # noqa: BLE001 - its node may be gone already
                    pass

    def _enforce_cancels(self) -> None:
        """A cancelled job that did not stop within the grace period (no progress report): kill its task."""
        now = time.time()
        with self._lock:
            due = [r for r in self._in_flight.values() if r.kill_at is not None and now >= r.kill_at]
        for r in due:
            import ray

            job = self.store.get(r.job_id)
            if job is not None and job.status == RUNNING and job.cancel_requested:
                log.warning("killing a cancelled job's task", extra={"job_id": r.job_id})
                ray.cancel(r.ref, force=True)
                self.store.update(r.job_id, attempt=job.attempt, status=ERROR, cancelled=True,
                                  error="cancelled by the user", finished_at=now, eta_seconds=None)
            r.kill_at = None

    def _reap(self) -> None:
        import ray

        with self._lock:
            runs = list(self._in_flight.values())
        if not runs:
            return
        ready, _ = ray.wait([r.ref for r in runs], num_returns=len(runs), timeout=0)
        ready_set = set(ready)
        for r in runs:
            if r.ref not in ready_set:
                continue
            try:
                out = ray.get(r.ref)
                log.info("job task ended", extra=out)
            except Exception as exc:  # noqa: BLE001 - node died, worker killed: the heartbeat decides, not Ray
                log.warning("job task failed in Ray", extra={"job_id": r.job_id, "error": f"{type(exc).__name__}"})
            with self._lock:
                if self._in_flight.get(r.job_id) is r:
                    del self._in_flight[r.job_id]

    def _submit(self) -> None:
        with self._lock:
            free = self.settings.max_concurrent_jobs - len(self._in_flight)
            busy = set(self._in_flight)
        if free <= 0:
            return
        for job_id in self.store.pending_ids(limit=free + len(busy)):  # type: ignore[attr-defined]
            if free <= 0 or self._stop.is_set():
                return
            if job_id in busy:
                continue
            job = self.store.get(job_id)
            if job is None or job.status != PENDING:
                continue
            resources = KIND_RESOURCES.get(job.kind, {"num_gpus": self.settings.ray_gpus_per_job, "num_cpus": 1})
            resources = {**resources, "num_gpus": self.settings.ray_gpus_per_job}
            ref = self._task.options(**resources, name=f"splatworks-job-{job_id[:8]}").remote(self._settings_json,
                                                                                             job_id)
            with self._lock:
                self._in_flight[job_id] = _InFlight(job_id, ref, time.time())
            free -= 1
            log.info("job submitted to ray", extra={"job_id": job_id, "kind": job.kind, **resources})


__all__ = ["RayExecutor", "run_job_attempt", "KIND_RESOURCES"]
