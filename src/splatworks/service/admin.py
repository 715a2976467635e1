"""Admin operations on the data folder: re-import job folders found on disk into the database.

Replaces the earlier tool's ``/admin/restore-job``: jobs are already in the database, so this is only needed
after the database was lost or job folders were copied in from another server (or, in tests, to make a finished
job out of a folder with known splats).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from splatworks.errors import UserError
from splatworks.service.jobs import JobPaths, latest_checkpoint, new_id, valid_id, write_json_atomic
from splatworks.service.settings import ServiceSettings
from splatworks.service.store import DONE, ERROR, PENDING, JobRecord, JobStore, open_store


def _job_layout(folder: Path) -> bool:
    return (folder / "gs_output").is_dir() or (folder / "upload").is_dir() or (folder / "job.json").is_file()


def import_job_dir(settings: ServiceSettings, folder: str | Path, store: JobStore | None = None) -> tuple[str, str]:
    """Make ``folder`` a job of this server; returns ``(job_id, pub_key)``.

    ``folder`` is a job folder (``upload/``, ``gs_output/``, ``job.json``, ...) or a trainer output folder (with
    ``point_cloud/iteration_N``). A folder inside ``data_dir/jobs`` keeps its ids (from ``job.json``, so viewer
    links stay valid); any other folder is copied in under new ids. The job is DONE when a result is published,
    PENDING (it will run, resuming what is there) when only its upload is, and ERROR otherwise.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a job folder or a trainer output folder")
    own = store is None
    store = store or open_store(settings.resolved_database_url)
    try:
        meta = json.loads((folder / "job.json").read_text()) if (folder / "job.json").is_file() else {}
        jobs_dir = Path(settings.jobs_dir).resolve()
        in_place = folder.parent == jobs_dir and valid_id(folder.name)
        job_id = folder.name if in_place else new_id()
        pub_key = meta.get("pub_key") if in_place and valid_id(meta.get("pub_key", "")) else new_id()
        if store.get(job_id) is not None:
            raise UserError(f"job {job_id} is already in the database; nothing to import")
        if store.get_by_pub_key(pub_key) is not None:
            pub_key = new_id()
        paths = JobPaths.of(jobs_dir, job_id)
        if not in_place:
            if paths.root.exists():
                raise UserError(f"{paths.root} already exists")
            jobs_dir.mkdir(parents=True, exist_ok=True)
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
        paths.make()
        latest = latest_checkpoint(paths)
        finished = (paths.gs_output / "result.json").is_file() or (latest is not None and not any(paths.upload.iterdir()))
        has_upload = any(paths.upload.iterdir())
        status = DONE if latest is not None and finished else (PENDING if has_upload else ERROR)
        now = time.time()
        record = JobRecord(job_id=job_id, pub_key=pub_key, kind=meta.get("kind", "static"), status=status,
                           stage="exporting" if status == DONE else None, percent=100.0 if status == DONE else 0.0,
                           latest_checkpoint=latest, config=meta.get("config", {}),
                           input_kind=meta.get("input_kind", "images"), input_files=int(meta.get("input_files", 0)),
                           input_bytes=int(meta.get("input_bytes", 0)), created_at=float(meta.get("created_at", now)),
                           finished_at=now if status != PENDING else None,
                           error=None if status != ERROR else "imported folder has neither results nor an upload")
        store.create(record)
        meta.update(job_id=job_id, pub_key=pub_key, kind=record.kind, config=record.config,
                    input_kind=record.input_kind, created_at=record.created_at)
        write_json_atomic(paths.job_json, meta)
        store.append_log(job_id, [f"imported from {folder} as {status}"
                                  + (f" (latest checkpoint: iteration {latest})" if latest is not None else "")])
        return job_id, pub_key
    finally:
        if own:
            store.close()


def reimport_all(settings: ServiceSettings, store: JobStore | None = None) -> list[tuple[str, str]]:
    """Import every job folder in ``data_dir/jobs`` that the database does not know; returns their ids."""
    own = store is None
    store = store or open_store(settings.resolved_database_url)
    try:
        out = []
        jobs_dir = Path(settings.jobs_dir)
        for folder in sorted(jobs_dir.iterdir()) if jobs_dir.is_dir() else []:
            if folder.is_dir() and valid_id(folder.name) and store.get(folder.name) is None:
                out.append(import_job_dir(settings, folder, store))
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
