"""``RayExecutor``: jobs run as Ray tasks on a cluster of GPU machines; PostgreSQL holds the truth about them.

How a job runs (``splatworks serve --executor ray --database-url postgresql://... --ray-address HEAD:6379``):

1. The API's reconciler thread submits each PENDING job (oldest first, at most ``max_concurrent_jobs`` jobs in
   flight) as Ray tasks, one per stage of its kind (``service.stages``): a static job's ``prepare`` stage
   (ingest + SfM) asks for ``num_gpus=0`` and ``ray_cpus_per_cpu_stage`` CPUs, its ``train`` stage for
   ``num_gpus=ray_gpus_per_job``, so no GPU waits while SfM runs; a kind without stages (``probe``, ``dynamic``)
   is one GPU task. Ray places each task on a node with the free resources.
2. The first stage's task *claims* the job in the database (PENDING -> RUNNING, attempt + 1, row-level lock with
   ``FOR UPDATE SKIP LOCKED``); a duplicate task for the same job finds it RUNNING and ends at once. A later
   stage's task *adopts* that attempt, only if the job is still RUNNING on it. Each task records where it runs
   (``job_attempts``, plus its GPU ids and resources in the job log), heartbeats, and calls the stage function
   (the same function the local executor calls) with the same progress recorder.
3. Between two stages the next task may wait for a free GPU: the job's substage is ``<stage>.queued`` and the
   API heartbeats for the attempt until the task starts. A stage's output crosses to the next task through the
   job storage (a shared folder or an S3 bucket), never through one node's disk: each task works in a private
   folder on its node, restores its inputs from storage and publishes its output and every training checkpoint
   as complete files, then an atomic per-attempt pointer, fenced by the database (``storage.publish_checkpoint``).
4. Every write names the attempt, and the heartbeat thread notices when the job moved on (the progress
   callback then stops the work): a stale attempt can never overwrite a newer one, nor publish over it.

Ray's task status is *not* the source of truth: Ray retries are off (``max_retries=0``) and the reconciler looks
only at the database. A RUNNING job whose heartbeat is older than ``heartbeat_timeout_seconds`` (its node died,
its worker was killed, the API that owned the task died) goes back to PENDING keeping its queue place, and is
submitted again from its first stage: the next claim makes it attempt + 1, finished stages are restored from
storage instead of run again, and training resumes from the last published checkpoint. The API process keeps
nothing that a restart would lose, and needs no GPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splatworks.errors import UserError
from splatworks.service.executor import JOB_FUNCTIONS, Executor, record_failure
from splatworks.service.probe_job import probe_stages
from splatworks.service.settings import ServiceSettings
from splatworks.service.stages import (JOB_STAGES, Stage, job_stages, publish_outputs, push_upload, restore_inputs,
                                       stage_workdir, upload_path)
from splatworks.service.store import DONE, ERROR, PENDING, RUNNING, JobStore, open_store

log = logging.getLogger("splatworks.service.ray")

# The synthetic kind used by the cluster tests, the overhead benchmark and operators' smoke tests.
JOB_FUNCTIONS.setdefault("probe", "splatworks.service.probe_job:run_probe_kind")
JOB_FUNCTIONS.setdefault("probe-staged", "splatworks.service.probe_job:run_probe_staged_kind")
JOB_STAGES.setdefault("probe-staged", probe_stages())  # the same, shaped like a static job: CPU stage, GPU stage



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


def stage_resources(stage: Stage, settings: ServiceSettings) -> dict[str, float]:
    """Ray resources of one stage's task: GPU stages ask for ``ray_gpus_per_job`` GPUs, CPU stages for none."""
    if stage.gpu:
        return {"num_gpus": settings.ray_gpus_per_job, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": settings.ray_cpus_per_cpu_stage}


def queued_marker(stage: Stage) -> str:
    """The job's substage while its next stage's task waits for Ray to place it (the API heartbeats meanwhile)."""
    return f"{stage.name}.queued"


def _stages_of(kind: str) -> tuple[Stage, ...]:
    return job_stages(kind, JOB_FUNCTIONS.get(kind, ""))


def run_job_attempt(settings_json: str, job_id: str) -> dict[str, Any]:
    """All stages of one job attempt, one after the other in this process (tests, operators' manual runs).

    Returns the last stage's result (see :func:`run_job_stage`).
    """
    out = run_job_stage(settings_json, job_id, 0, None)
    while out["outcome"] == "stage-done":
        out = run_job_stage(settings_json, job_id, out["next_stage"], out["attempt"])
    return out


def run_job_stage(settings_json: str, job_id: str, stage_index: int = 0, attempt: int | None = None) -> dict[str, Any]:
    """Body of one Ray task (runs on a worker node): one stage of one job attempt.

    Stage 0 *claims* the job (PENDING -> RUNNING, attempt + 1); a later stage *adopts* the attempt that stage 0
    claimed, only while the job is still RUNNING on it. Either way the task heartbeats for the attempt while it
    runs, and every write and publication is fenced by the attempt number.

    Returns ``{"job_id", "attempt", "stage", "outcome", "node", "gpu_ids", "resources", "next_stage"}``; outcome
    "stage-done" (the reconciler submits ``next_stage``), "done", "not-claimed" (a duplicate task, a cancel, a
    delete, or a newer attempt), "superseded", "cancelled", "error", "interrupted".
    """
    import json

    from splatworks.progress import Cancelled
    from splatworks.service.jobs import JobPaths, ProgressRecorder, latest_checkpoint
    from splatworks.service.storage import CHECKPOINTS, JobContext, open_storage, set_job_context
    from splatworks.service.storage import latest_checkpoint as published_checkpoint

    settings = ServiceSettings.from_dict(json.loads(settings_json))
    node, gpu_ids, resources = _node_id(), *_placement()
    result: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "stage": stage_index, "outcome": "not-claimed",
                              "node": node, "gpu_ids": gpu_ids, "resources": resources, "next_stage": None}
    # Everything slow (connections, storage) is set up before the claim: once claimed, the heartbeat starts
    # at once, so a slow start on a busy node is not mistaken for a lost attempt.
    store: Any = open_store(settings.resolved_database_url)
    beat_store: Any = open_store(settings.resolved_database_url)
    storage = open_storage(settings.storage_url, settings.jobs_dir)
    if attempt is None:
        job = store.claim(job_id)
    else:
        job = store.get(job_id)
        if job is not None and (job.attempt != attempt or job.status != RUNNING):
            job = None
    if job is None:
        store.close()
        beat_store.close()
        return result
    attempt = result["attempt"] = job.attempt
    # From the previous stage's "queued" write to now: reconciler poll + Ray placement + worker start.
    queued_for = time.time() - job.updated_at if stage_index > 0 else None
    stages = _stages_of(job.kind)
    stage = stages[stage_index]
    beat = _Heartbeat(beat_store, job_id, attempt, settings.heartbeat_seconds)
    beat.start()
    store.record_attempt(job_id, attempt, node, socket.gethostname(), os.getpid())  # where the attempt runs now
    store.update(job_id, attempt=attempt, substage=f"{stage.name}.start")  # the API stops heartbeating for us

    def fence() -> bool:
        """True while the database says this attempt still owns the job."""
        if beat.lost.is_set():
            return False
        current = store.get(job_id)
        return current is not None and current.attempt == attempt and current.status == RUNNING

    # Kinds made of stages work in a private folder on this node; what crosses to the next task goes through
    # the job storage. Other kinds run in the shared job folder (their functions publish through storage).
    isolated = job.kind in JOB_STAGES
    shared = JobPaths.of(settings.jobs_dir, job_id)
    workdir = stage_workdir(settings.work_dir, job_id, attempt, stage.name) if isolated else shared.root
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = shared.run_log if storage.is_directory and shared.root.is_dir() else workdir / "run.log"
    ctx = JobContext(storage, job_id, attempt, fence)
    set_job_context(ctx)
    rec = ProgressRecorder(store, job_id, attempt, JobPaths(workdir), log_path=log_path)
    outcome = "error"

    def progress(ev: Any) -> None:
        if beat.lost.is_set():
            raise Cancelled("superseded by a newer attempt (this attempt's heartbeat was given up on)")
        rec(ev)

    where = f"node {node[:12]} ({socket.gethostname()}, pid {os.getpid()})"
    rec.log(f"attempt {attempt} started on {where}" if stage_index == 0 and len(stages) == 1 else
            f"attempt {attempt} stage {stage.name} ({stage_index + 1}/{len(stages)}) started on {where}"
            + (f" after {queued_for:.2f} s queued" if queued_for is not None else ""))
    rec.log(f"stage {stage.name} placement: gpu_ids={json.dumps(gpu_ids)} resources={json.dumps(resources)}")
    try:
        fn = _import(stage.function)
        if isolated:
            restore_inputs(stage, ctx, workdir, rec.log)
        if stage.needs_upload:
            fn(str(workdir), job.config, progress, input_path=upload_path(storage, job_id, workdir))
        else:
            fn(str(workdir), job.config, progress)
        if isolated and not publish_outputs(stage, ctx, workdir):
            raise Cancelled(f"superseded: attempt {attempt} may no longer publish the {stage.name} stage's output")
        if stage_index + 1 < len(stages):
            nxt = stages[stage_index + 1]
            if store.update(job_id, attempt=attempt, substage=queued_marker(nxt), heartbeat_at=time.time()):
                rec.log(f"stage {stage.name} finished; stage {nxt.name} is queued for "
                        f"{'a GPU' if nxt.gpu else 'a CPU'}")
                outcome, result["next_stage"] = "stage-done", stage_index + 1
            else:
                outcome = "superseded"
        else:
            cp = published_checkpoint(storage, job_id, max_attempt=attempt, series=CHECKPOINTS)
            latest = cp.step if cp is not None and isolated else latest_checkpoint(shared)
            if store.update(job_id, attempt=attempt, status=DONE, stage="exporting", substage="done",
                            percent=100.0, eta_seconds=0.0, finished_at=time.time(), latest_checkpoint=latest,
                            error=None):
                rec.log("job finished")
                outcome = "done"
            else:
                outcome = "superseded"
    except Cancelled as exc:
        rec.log(f"stopped: {exc}")
        current = store.get(job_id)
        superseded = current is not None and current.attempt != attempt
        outcome = "superseded" if superseded or beat.lost.is_set() or "superseded" in str(exc) else "cancelled"
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
        if outcome != "stage-done":
            try:
                store.end_attempt(job_id, attempt, outcome)
            except Exception:  # noqa: BLE001
                pass
        rec.close()
        store.close()
        if isolated:
            shutil.rmtree(workdir, ignore_errors=True)
    result["outcome"] = outcome
    return result


def _import(fn_path: str) -> Any:
    import importlib

    if ":" not in fn_path:
        raise UserError(f"no job function is registered for this job's kind ({fn_path!r})")
    module, name = fn_path.split(":")
    return getattr(importlib.import_module(module), name)


def _placement() -> tuple[list[str], dict[str, float]]:
    """(GPU ids Ray assigned to this task, the task's resources) - ([], {}) outside a Ray task."""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return [str(g) for g in ray.get_gpu_ids()], dict(ctx.get_assigned_resources())
    except Exception:  # noqa: BLE001 - a direct call in a test
        pass
    return [], {}


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
    stage_index: int = 0
    attempt: int | None = None    # known from the second stage on (the first stage's task claims it)
    waiting: bool = False         # a later stage's task not yet placed: the API heartbeats for its attempt


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
        self._storage: Any = None

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
        from splatworks.service.storage import open_storage

        self._storage = open_storage(self.settings.storage_url, self.settings.jobs_dir)
        self._task = ray.remote(max_retries=0)(run_job_stage)  # retries are ours (attempt numbers), not Ray's
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
                self._beat_for_waiting()
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
            out: dict[str, Any] | None = None
            try:
                out = ray.get(r.ref)
                log.info("job task ended", extra=out)
            except Exception as exc:  # noqa: BLE001 - node died, worker killed: the heartbeat decides, not Ray
                log.warning("job task failed in Ray", extra={"job_id": r.job_id, "error": f"{type(exc).__name__}"})
            nxt = None
            if out is not None and out.get("outcome") == "stage-done" and not self._stop.is_set():
                nxt = self._submit_stage(r.job_id, int(out["next_stage"]), int(out["attempt"]))
            with self._lock:
                if self._in_flight.get(r.job_id) is r:
                    if nxt is not None:
                        self._in_flight[r.job_id] = nxt
                    else:
                        del self._in_flight[r.job_id]

    def _submit_stage(self, job_id: str, stage_index: int, attempt: int | None) -> _InFlight | None:
        """Submit one stage of a job as a Ray task with that stage's resources; None if the job is gone."""
        job = self.store.get(job_id)
        if job is None:
            return None
        stages = _stages_of(job.kind)
        if stage_index >= len(stages):
            return None
        stage = stages[stage_index]
        resources = stage_resources(stage, self.settings)
        ref = self._task.options(**resources, name=f"splatworks-{stage.name}-{job_id[:8]}").remote(
            self._settings_json, job_id, stage_index, attempt)
        log.info("job stage submitted to ray", extra={"job_id": job_id, "kind": job.kind, "stage": stage.name,
                                                      "attempt": attempt, **resources})
        return _InFlight(job_id, ref, time.time(), stage_index=stage_index, attempt=attempt,
                         waiting=attempt is not None)

    def _beat_for_waiting(self) -> None:
        """A job whose next stage waits for Ray to place it (e.g. for a free GPU) has no task to heartbeat for
        it: the API does, until the task takes over (it changes the "queued" substage) or the attempt moves on.
        If the API dies meanwhile, the beats stop and the job is requeued like any lost job."""
        with self._lock:
            runs = [r for r in self._in_flight.values() if r.waiting]
        for r in runs:
            job = self.store.get(r.job_id)
            stages = _stages_of(job.kind) if job is not None else ()
            if (job is None or job.status != RUNNING or job.attempt != r.attempt or r.stage_index >= len(stages)
                    or job.substage != queued_marker(stages[r.stage_index])):
                r.waiting = False  # the stage's task has started (or the attempt is over): it beats itself
                continue
            if job.cancel_requested:  # nothing runs yet: end it now instead of waiting for a GPU to free
                import ray

                ray.cancel(r.ref, force=True)
                if self.store.update(r.job_id, attempt=r.attempt, status=ERROR, cancelled=True,
                                     error="cancelled by the user", finished_at=time.time(), eta_seconds=None):
                    self.store.end_attempt(r.job_id, r.attempt, "cancelled")  # type: ignore[attr-defined]
                r.waiting = False
                continue
            self.store.heartbeat(r.job_id, r.attempt)  # type: ignore[attr-defined]

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
            if any(s.needs_upload for s in _stages_of(job.kind)):
                # Tasks read the upload from the job storage: a bucket (or another folder) gets a copy first.
                copied = push_upload(self._storage, self.settings.jobs_dir, job_id)
                if copied:
                    log.info("upload copied to job storage", extra={"job_id": job_id, "files": copied})
            run = self._submit_stage(job_id, 0, None)
            if run is None:
                continue
            with self._lock:
                self._in_flight[job_id] = run
            free -= 1


__all__ = ["RayExecutor", "run_job_attempt", "run_job_stage", "stage_resources", "queued_marker"]
