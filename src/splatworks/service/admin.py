"""Admin operations on the data folder: re-import job folders found on disk into the database.

Replaces the earlier tool's ``/admin/restore-job``: jobs are already in the database, so this is only needed
after the database was lost or job folders were copied in from another server (or, in tests, to make a finished
job out of a folder with known splats).

How a folder's status is judged (nothing in the folder is changed by judging or importing it in place):

- static job (``gs_output/``): DONE when a complete result is published, PENDING when only its upload is. A
  folder imported in place also counts what the job storage holds for it (a cluster job's checkpoints and its
  training stage's ``result.json`` are published there, not in the head node's folder).
- dynamic job (``job.json`` kind ``dynamic``, see ``splatworks.pipeline.dynamic``): DONE when its 4D export is
  complete, i.e. ``export/manifest.json`` has every requested frame (``frames_ready == frames``, matching
  ``train/state.json`` when present) and every layer it lists is a whole ``.splat``, and ``export/metrics.json``
  (written last by the job) agrees with it, with its held-out video present when it names one. Otherwise PENDING:
  the job resumes after its last finished frame, as after a restart (it needs its upload or prepared dataset).
- anything else: ERROR (neither results nor an upload), so the folder shows up and can be deleted.

A folder that cannot be read (``job.json`` or one of the dynamic job's JSON files is not valid JSON) is reported
with a :class:`UserError` and not imported: no database row, no copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splatworks.errors import UserError
from splatworks.service.jobs import (JobPaths, latest_checkpoint, new_id, valid_id,
                                     write_json_atomic)
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import DONE, ERROR, PENDING, JobRecord, JobStore, open_store

log = logging.getLogger("splatworks.service.admin")

# What a dynamic job's upload folder holds besides the camera videos.
_UPLOAD_EXTRAS = {"upload.json", "calibration.json"}


def _job_layout(folder: Path) -> bool:
    return (folder / "gs_output").is_dir() or (folder / "upload").is_dir() or (folder / "job.json").is_file()


def _read_json(path: Path, folder: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file does not exist; UserError when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{folder}: cannot read {path.relative_to(folder)} ({exc}); fix its permissions") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{folder}: {path.relative_to(folder)} is not valid JSON ({exc}); restore it from a "
                        "backup or remove the folder") from None
    if not isinstance(data, dict):
        raise UserError(f"{folder}: {path.relative_to(folder)} holds {type(data).__name__}, not a JSON object; "
                        "restore it from a backup or remove the folder")
    return data


@dataclass(frozen=True)
class DynamicFolderState:
    """How far a dynamic job folder got: ``status`` DONE | PENDING | ERROR and why (``reason``, for the log)."""

    status: str
    frames_done: int
    frames_total: int | None
    reason: str


def _export_problem(root: Path, state: dict[str, Any] | None) -> str | None:
    """Why ``root/export`` is not a complete 4D export of the job (None when it is)."""
    from splatworks.dynamic.export4d import layer_file_is_complete

    export = root / "export"
    manifest = _read_json(export / "manifest.json", root)
    if manifest is None:
        return "no 4D export yet"
    files = manifest.get("frame_files") or []
    frames, ready = manifest.get("frames"), manifest.get("frames_ready")
    if not isinstance(frames, int) or frames < 1 or ready != frames or len(files) != frames:
        return f"the 4D export has {ready} of {frames} frames"
    if state is not None:
        total, done = state.get("frames_total"), state.get("frames_done") or []
        if total != frames or len(done) != frames:
            return f"training has {len(done)} of {total} frames, the export {frames}"
    layers = ([manifest["static"]] if manifest.get("static") else []) + list(files)
    for rel in layers:
        path = (export / str(rel)).resolve()
        if export.resolve() not in path.parents or not layer_file_is_complete(path):  # .splat or .swd delta
            return f"layer {rel} of the 4D export is missing or incomplete"
    return None


def dynamic_folder_state(root: str | Path, meta: dict[str, Any]) -> DynamicFolderState:
    """Judge a dynamic job folder (layout in ``splatworks.pipeline.dynamic``) without changing anything in it.

    Raises:
        UserError: a JSON file of the job cannot be read (the folder is reported, not imported).
    """
    root = Path(root)
    config = meta.get("config") or {}
    state = _read_json(root / "train" / "state.json", root)
    metrics = _read_json(root / "export" / "metrics.json", root)
    done = len((state or {}).get("frames_done") or [])
    total = (state or {}).get("frames_total")
    problem = None
    if config.get("backend", "gaussians") == "gaussians":
        problem = _export_problem(root, state)
    if problem is None:
        if metrics is None:
            problem = "no held-out metrics yet (export/metrics.json is written last)"
        elif config.get("backend", "gaussians") == "gaussians":
            manifest = _read_json(root / "export" / "manifest.json", root) or {}
            if metrics.get("frames_ready") != manifest.get("frames_ready"):
                problem = (f"metrics.json covers {metrics.get('frames_ready')} frames, the export "
                           f"{manifest.get('frames_ready')}")
    if problem is None and metrics is not None:
        wants_video = config.get("render_video", True) and metrics.get("held_out_camera")
        video = metrics.get("video") or ("heldout.mp4" if wants_video else None)
        if video and not ((root / "export" / str(video)).is_file()
                          and (root / "export" / str(video)).stat().st_size > 0):
            problem = f"the held-out video export/{video} is missing"
    if problem is None:
        return DynamicFolderState(DONE, done, total, "4D export complete")
    upload = root / "upload"
    videos = [p for p in upload.iterdir() if p.is_file() and p.name not in _UPLOAD_EXTRAS] if upload.is_dir() else []
    if videos or (root / "dataset" / "dataset.json").is_file():
        where = f"after {done} finished frame(s) of {total}" if done else "from the start"
        return DynamicFolderState(PENDING, done, total, f"{problem}; the job resumes {where}")
    return DynamicFolderState(ERROR, done, total, f"{problem}, and the folder has neither its upload nor a "
                                                  "prepared dataset to resume from")


def import_job_dir(settings: ServiceSettings, folder: str | Path, store: JobStore | None = None) -> tuple[str, str]:
    """Make ``folder`` a job of this server; returns ``(job_id, pub_key)``.

    ``folder`` is a job folder (``upload/``, ``gs_output/``, ``job.json``, ...) or a trainer output folder (with
    ``point_cloud/iteration_N``). A folder inside ``data_dir/jobs`` keeps its ids (from ``job.json``, so viewer
    links stay valid) and is not changed; any other folder is copied in under new ids. Its status is judged as the
    module docstring says (static and dynamic jobs each by their own results).

    Raises:
        UserError: not a folder, already imported, or unreadable (nothing is imported then).
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a job folder or a trainer output folder")
    own = store is None
    store = store or open_store(settings.resolved_database_url)
    copied: Path | None = None
    try:
        meta = _read_json(folder / "job.json", folder) or {}
        kind = str(meta.get("kind", "static"))
        dynamic = _read_dynamic_state(folder, meta) if kind == "dynamic" else None  # judged before any copy
        jobs_dir = Path(settings.jobs_dir).resolve()
        in_place = folder.parent == jobs_dir and valid_id(folder.name)
        job_id = folder.name if in_place else new_id()
        pub_key = meta.get("pub_key") if in_place and valid_id(str(meta.get("pub_key", ""))) else new_id()
        if store.get(job_id) is not None:
            raise UserError(f"job {job_id} is already in the database; nothing to import")
        if store.get_by_pub_key(pub_key) is not None:
            pub_key = new_id()
        paths = JobPaths.of(jobs_dir, job_id)
        if not in_place:
            if paths.root.exists():
                raise UserError(f"{paths.root} already exists")
            jobs_dir.mkdir(parents=True, exist_ok=True)
            copied = paths.root
            if _job_layout(folder):
                shutil.copytree(folder, paths.root, symlinks=False)
            else:  # a trainer output folder: it becomes gs_output; a scene.json next to it becomes colmap/
                paths.root.mkdir()
                shutil.copytree(folder, paths.gs_output, symlinks=False)
                for candidate in (folder / "scene.json", folder.parent / "scene.json"):
                    if candidate.is_file():
                        paths.colmap.mkdir(exist_ok=True)
                        shutil.copy2(candidate, paths.colmap / "scene.json")
                        break
        if dynamic is not None:
            status, latest, why = dynamic.status, None, dynamic.reason
        else:
            paths.make()
            latest = latest_checkpoint(paths)
            has_upload = any(paths.upload.iterdir())
            finished = (paths.gs_output / "result.json").is_file()
            if in_place:  # a cluster job's checkpoints and results live in the job storage, not in its folder
                step, published_result = _published_state(settings, job_id)
                if step is not None and (latest is None or step > latest):
                    latest = step
                finished = finished or published_result
            finished = finished or (latest is not None and not has_upload)
            status = DONE if latest is not None and finished else (PENDING if has_upload else ERROR)
            why = "imported folder has neither results nor an upload"
        now = time.time()
        record = JobRecord(job_id=job_id, pub_key=pub_key, kind=kind, status=status,
                           stage="exporting" if status == DONE else None, percent=100.0 if status == DONE else 0.0,
                           latest_checkpoint=latest, config=meta.get("config", {}),
                           input_kind=meta.get("input_kind", "images"), input_files=int(meta.get("input_files", 0)),
                           input_bytes=int(meta.get("input_bytes", 0)), created_at=float(meta.get("created_at", now)),
                           finished_at=now if status != PENDING else None,
                           error=None if status != ERROR else why)
        new_meta = {**meta, "job_id": job_id, "pub_key": pub_key, "kind": record.kind, "config": record.config,
                    "input_kind": record.input_kind, "created_at": record.created_at}
        if new_meta != meta:  # a job folder imported in place with its own ids is left exactly as it was
            write_json_atomic(paths.job_json, new_meta)
        store.create(record)
        copied = None
        line = f"imported from {folder} as {status}"
        if dynamic is not None:
            line += f" ({why})"
        elif latest is not None:
            line += f" (latest checkpoint: iteration {latest})"
        store.append_log(job_id, [line])
        return job_id, pub_key
    finally:
        if copied is not None:  # never half-imported: a copy without its database row goes again
            shutil.rmtree(copied, ignore_errors=True)
        if own:
            store.close()


def _published_state(settings: ServiceSettings, job_id: str) -> tuple[int | None, bool]:
    """What the job storage holds for ``job_id``: the step of its newest published checkpoint (None: none) and
    whether its training stage published ``gs_output/result.json`` (the job finished). A storage that cannot be
    reached counts as holding nothing (the folder is judged on its own files, as before)."""
    from splatworks.service.jobs import job_storage
    from splatworks.service.storage import latest_checkpoint as published

    try:
        storage = job_storage(settings.storage_url, Path(settings.jobs_dir))
        cp = published(storage, job_id)
        stage = published(storage, job_id, series="train")
    except (OSError, UserError) as exc:
        log.warning("job %s: job storage not readable (%s); judging the folder alone", job_id, exc)
        return None, False
    return (cp.step if cp is not None else None), bool(stage is not None and "gs_output/result.json" in stage.files)


def _read_dynamic_state(folder: Path, meta: dict[str, Any]) -> DynamicFolderState:
    try:
        return dynamic_folder_state(folder, meta)
    except OSError as exc:
        raise UserError(f"{folder}: cannot read the dynamic job's files ({exc}); fix them or remove the folder") \
            from None


def reimport_all(settings: ServiceSettings, store: JobStore | None = None,
                 problems: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Import every job folder in ``data_dir/jobs`` that the database does not know; returns their ids.

    A folder that cannot be imported (unreadable, see :func:`import_job_dir`) is skipped and reported: logged, and
    appended to ``problems`` as ``(folder name, what to fix)``; the others are still imported.
    """
    own = store is None
    store = store or open_store(settings.resolved_database_url)
    try:
        out = []
        jobs_dir = Path(settings.jobs_dir)
        for folder in sorted(jobs_dir.iterdir()) if jobs_dir.is_dir() else []:
            if folder.is_dir() and valid_id(folder.name) and store.get(folder.name) is None:
                try:
                    out.append(import_job_dir(settings, folder, store))
                except UserError as exc:
                    log.warning("not imported: %s", exc)
                    if problems is not None:
                        problems.append((folder.name, str(exc)))
        return out
    finally:
        if own:
            store.close()


def sweep_incomplete_uploads(settings: ServiceSettings, store: JobStore, min_age_seconds: float = 600.0) -> list[str]:
    """Remove job folders of uploads that never completed (no ``job.json``, no database row), e.g. after a crash
    mid-upload. Folders younger than ``min_age_seconds`` are kept: an upload may still be arriving."""
    removed = []
    jobs_dir = Path(settings.jobs_dir)
    now = time.time()
    for folder in sorted(jobs_dir.iterdir()) if jobs_dir.is_dir() else []:
        if (folder.is_dir() and valid_id(folder.name) and not (folder / "job.json").exists()
                and now - folder.stat().st_mtime > min_age_seconds and store.get(folder.name) is None):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
