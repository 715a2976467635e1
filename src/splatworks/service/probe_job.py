"""The ``probe`` job kind: a tiny synthetic "training" that exercises the cluster's machinery, not the GPU.

It is what the cluster tests and the scheduling benchmark run, and what an operator can submit to check a new
cluster (storage reachable from every node, checkpoints, resume, heartbeats) in seconds. It goes through the
same paths as a real job: the executor calls it as ``fn(job_dir, job_config, progress)``, it reports progress,
publishes checkpoints through :func:`splatworks.service.storage.publish_checkpoint` (complete files, then the
atomic pointer; each checkpoint holds the state and a real binary ``.ply`` of it, which the results routes
serve), resumes from the latest checkpoint on a later attempt, and also writes the final ``.ply`` under
``gs_output/point_cloud/iteration_N/`` in storage.

The "model" is deterministic: ``points`` 3-D positions relaxed step by step, so a run that was interrupted and
resumed must end with exactly the same positions as an uninterrupted one (``probe_reference``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from splatworks.progress import emit
from splatworks.service.storage import job_context, latest_checkpoint, load_checkpoint, npz_arrays, npz_bytes


@dataclass
class ProbeConfig:
    steps: int = 20               # "iterations" of the synthetic training
    step_seconds: float = 0.1     # wall time each step sleeps (stands in for GPU work)
    checkpoint_every: int = 5     # publish a checkpoint every this many steps
    points: int = 256             # size of the model (and of the result .ply)
    seed: int = 0
    prepare_seconds: float = 0.0  # "probe-staged" kind: wall time of its CPU stage (stands in for SfM)

    @classmethod
    def of(cls, d: dict[str, Any]) -> "ProbeConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _initial(cfg: ProbeConfig) -> np.ndarray:
    return np.random.default_rng(cfg.seed).normal(size=(cfg.points, 3))


def _step(x: np.ndarray, step: int) -> np.ndarray:
    """One deterministic update (float64; independent of where or when it runs). x: (N, 3)."""
    target = np.array([np.sin(step * 0.1), np.cos(step * 0.1), 0.5])
    return x + 0.05 * (target - x) + 0.001 * np.roll(x, 1, axis=0)


def probe_reference(cfg: ProbeConfig) -> np.ndarray:
    """The positions an uninterrupted run ends with. (points, 3) float64."""
    x = _initial(cfg)
    for s in range(1, cfg.steps + 1):
        x = _step(x, s)
    return x


def ply_bytes(xyz: np.ndarray) -> bytes:
    """A binary little-endian .ply of points (x, y, z float32)."""
    body = np.ascontiguousarray(xyz, dtype="<f4").tobytes()
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n"
            "property float x\nproperty float y\nproperty float z\nend_header\n").encode()
    return head + body


def run_probe_kind(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None],
                   initial: np.ndarray | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = ProbeConfig.of(job_config)
    ctx = job_context(job_dir, progress)
    storage, job_id, attempt = ctx.storage, ctx.job_id, ctx.attempt
    x, start = (_initial(cfg) if initial is None else initial), 0
    cp = latest_checkpoint(storage, job_id, max_attempt=attempt)
    if cp is not None:
        x, start = npz_arrays(load_checkpoint(storage, cp)["state.npz"])["x"], cp.step
        emit(progress, "training", start, cfg.steps, message=f"resumed from the checkpoint at step {cp.step} "
                                                             f"(written by attempt {cp.attempt})")
    where = f"{socket.gethostname()}:{os.getpid()}"
    emit(progress, "training", start, cfg.steps, message=f"probe training steps {start + 1}..{cfg.steps} on {where}")
    for s in range(start + 1, cfg.steps + 1):
        time.sleep(cfg.step_seconds)
        x = _step(x, s)
        published = None
        if s % cfg.checkpoint_every == 0 or s == cfg.steps:
            published = publish_checkpoint_state(ctx, s, x)
        # The state checkpoint lives in job storage, not gs_output: reported as a message, not as a result.
        emit(progress, "training", s, cfg.steps, metrics={"spread": float(x.std())},
             message=f"checkpoint published: step {s} (attempt {attempt})" if published else "")
    result = {"job_id": job_id, "attempt": attempt, "resumed_from": start, "steps": cfg.steps,
              "config": asdict(cfg), "x_sha": _sha(x), **(extra or {})}
    ply_key = f"{job_id}/gs_output/point_cloud/iteration_{cfg.steps}/point_cloud.ply"
    if ctx.fence is None or ctx.fence():
        storage.write_bytes(ply_key, ply_bytes(x))
        storage.write_bytes(f"{job_id}/result.json", json.dumps(result, sort_keys=True).encode())
    emit(progress, "exporting", 1, 1, checkpoint=ply_key)
    return result


# ---- "probe-staged": the same, as two stages like a static job (a CPU stage, then a GPU stage) ---------------

def run_probe_prepare(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    """The CPU stage (stands in for ingest + SfM): after ``prepare_seconds`` it writes the initial positions to
    ``colmap/probe_scene.npz`` (with the attempt that made them) and ``colmap/.done``; skipped when done."""
    cfg = ProbeConfig.of(job_config)
    ctx = job_context(job_dir, progress)
    colmap = Path(job_dir) / "colmap"
    if (colmap / ".done").exists():
        emit(progress, "sfm", 1, 1, "probe scene already made")
        return {}
    n = max(1, int(round(cfg.prepare_seconds / 0.1)))
    for i in range(n):  # progress between sleeps: a cancel or a lost heartbeat stops the stage promptly
        time.sleep(cfg.prepare_seconds / n)
        emit(progress, "sfm", i + 1, n)
    colmap.mkdir(parents=True, exist_ok=True)
    (colmap / "probe_scene.npz").write_bytes(npz_bytes(x=_initial(cfg), attempt=np.array(ctx.attempt)))
    (colmap / ".done").write_text("probe\n")
    emit(progress, "sfm", n, n, f"probe scene made by attempt {ctx.attempt} on {socket.gethostname()}:{os.getpid()}")
    return {}


def run_probe_train(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    """The GPU stage: the probe training, starting from the positions the CPU stage made."""
    from splatworks.errors import UserError

    scene = Path(job_dir) / "colmap" / "probe_scene.npz"
    if not scene.exists():
        raise UserError("colmap/probe_scene.npz is missing: the prepare stage's output did not reach this stage")
    arrays = npz_arrays(scene.read_bytes())
    return run_probe_kind(job_dir, job_config, progress, initial=arrays["x"],
                          extra={"scene_attempt": int(arrays["attempt"])})


def run_probe_staged_kind(job_dir: str, job_config: dict[str, Any], progress: Callable[..., None]) -> dict[str, Any]:
    """Both stages in one job folder (the local executor)."""
    run_probe_prepare(job_dir, job_config, progress)
    return run_probe_train(job_dir, job_config, progress)


def probe_stages() -> tuple[Any, ...]:
    """The "probe-staged" kind's stages, shaped like the static job's (see ``service.stages``)."""
    from splatworks.service.stages import Stage

    return (Stage("prepare", "splatworks.service.probe_job:run_probe_prepare", gpu=False, publishes=("colmap/",),
                  restores=("prepare",)),
            Stage("train", "splatworks.service.probe_job:run_probe_train", gpu=True, restores=("prepare",)))


def publish_checkpoint_state(ctx: Any, step: int, x: np.ndarray) -> str | None:
    from splatworks.service.storage import publish_checkpoint

    # The .ply rides in the checkpoint, like the trainer's: the results routes serve the published one.
    cp = publish_checkpoint(ctx.storage, ctx.job_id, ctx.attempt, step,
                            {"state.npz": npz_bytes(x=x), "point_cloud.ply": ply_bytes(x)}, fence=ctx.fence)
    return cp.prefix if cp else None


def _sha(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f8").tobytes()).hexdigest()


def probe_result(job_dir: Path) -> dict[str, Any]:
    return json.loads((Path(job_dir) / "result.json").read_text())


__all__ = ["ProbeConfig", "run_probe_kind", "run_probe_prepare", "run_probe_train", "run_probe_staged_kind",
           "probe_stages", "probe_reference", "ply_bytes", "probe_result"]
