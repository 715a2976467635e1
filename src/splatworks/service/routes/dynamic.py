"""Dynamic (multi-view video) jobs: the upload route and the public 4D files.

``POST /recon/dynamic-jobs`` takes one video per camera (field ``videos``; file names give camera names,
``cam00.mp4`` -> ``cam00``) or one ``.zip`` of them, optional form fields (held-out camera, frame range and
stride, backend, depth workflow, iterations per frame) and an optional ground-truth calibration file (field
``calibration``). Every video is probed at upload (readable, same frame rate, size and length limits), so bad
input is a 4xx before anything is queued. The job runs ``splatworks.pipeline.dynamic.run_dynamic_job``; the same
status, events, cancel and delete routes as static jobs apply.

Public files (by pub_key): ``/recon/pub/{k}/4d/manifest.json``, ``/4d/static.splat``, ``/4d/frames/NNNNNN.splat``
and ``.swd`` deltas (``dynamic/export4d.py``; growing while frames train), ``/recon/pub/{k}/heldout.mp4`` and
``/recon/pub/{k}/metrics.json`` when done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from splatworks.config import to_dict
from splatworks.errors import InputError, UserError
from splatworks.pipeline.dynamic import CALIBRATION_FILE, DynamicJobConfig, check_config
from splatworks.service.auth import owner_hash, require_api_token
from splatworks.service.jobs import JobPaths, new_id, write_json_atomic
from splatworks.service.limits import (UploadRejected, Received, _mb, _write_manifest, extract_zip_entry,
                                       receive_upload, sniff, zip_entry_path)
from splatworks.service.routes import (executor_of, pub_job_or_404, refusing_upload, run_upload_check,
                                       settings_of, store_of)
from splatworks.service.settings import ServiceSettings, UploadLimits
from splatworks.service.store import PENDING, JobRecord
from splatworks.service.views import JobCreated

log = logging.getLogger("splatworks.service.dynamic")
router = APIRouter(tags=["dynamic"])

VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CAMERAS = 128
# Form fields -> (DynamicJobConfig field, type).
OPTION_FIELDS: dict[str, tuple[str, type]] = {
    "held_out_camera": ("held_out_camera", str), "start_frame": ("start_frame", int),
    "end_frame": ("end_frame", int), "stride": ("stride", int), "backend": ("backend", str),
    "depth": ("depth", str), "iterations_per_frame": ("iterations_per_frame", int), "max_size": ("max_size", int),
}

UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["videos"],
    "properties": {
        "videos": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "one synchronized video per fixed camera (the file name is the camera name, "
                                  "e.g. cam00.mp4), or one .zip of them"},
        "calibration": {"type": "string", "format": "binary",
                        "description": "optional ground-truth calibration JSON ({width, height, cameras: [{name, K, "
                                       "w2c}]}, OpenCV axes): replaces SfM"},
        "held_out_camera": {"type": "string", "description": "'first' (default), 'none' or a camera name"},
        "start_frame": {"type": "integer"}, "end_frame": {"type": "integer", "description": "0 = to the end"},
        "stride": {"type": "integer"}, "backend": {"type": "string", "enum": ["gaussians", "mixvoxels"]},
        "depth": {"type": "string", "enum": ["none", "distill"]}, "iterations_per_frame": {"type": "integer"},
        "max_size": {"type": "integer", "description": "cap on the longest frame side in pixels (0 = none)"}}}}}}}


# ---- upload checks (run in the check pool: top-level, picklable) ----------------------------------------------

@dataclass
class CheckedVideos:
    input_kind: str                    # videos | zip
    cameras: list[str]
    total_bytes: int
    frames: int                        # frames common to every camera
    fps: float
    warnings: list[str] = field(default_factory=list)
    calibration: bool = False


def job_config(settings: ServiceSettings, fields: dict[str, str]) -> DynamicJobConfig:
    """The job's config from the service's settings and the upload's form fields (422 on a bad value)."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise UploadRejected(400, f"unknown form field(s) {', '.join(unknown)}; the options are "
                                  f"{', '.join(OPTION_FIELDS)} (and the files: videos, calibration)")
    values: dict[str, Any] = {"preset": settings.train_preset, "max_size": settings.max_image_size,
                              "iterations_first_frame": settings.train_iterations}
    for name, raw in fields.items():
        key, typ = OPTION_FIELDS[name]
        raw = raw.strip()
        if raw == "":
            continue
        try:
            values[key] = typ(raw)
        except ValueError:
            raise UploadRejected(422, f"form field {name}={raw!r} is not a whole number") from None
    cfg = dataclasses.replace(DynamicJobConfig(), **values)
    try:
        check_config(cfg)
    except UserError as exc:
        raise UploadRejected(422, str(exc)) from None
    return cfg


def _camera_name(client_name: str, index: int) -> tuple[str, str]:
    """(camera, suffix) from a client's file name; refuses names that cannot name a camera."""
    base = PurePosixPath(client_name.replace("\\", "/")).name
    suffix = PurePosixPath(base).suffix.lower()
    stem = base[: len(base) - len(suffix)] if suffix else base
    if not CAMERA_RE.match(stem or ""):
        raise UploadRejected(422, f"file {index + 1} ({client_name!r}): its name must be the camera's name, e.g. "
                                  "cam00.mp4 (letters, digits, '_', '-', '.'; at most 64 characters)")
    return stem, suffix if suffix in VIDEO_EXTS else ".mp4"


def _extract_videos(zip_path: Path, dest: Path, limits: UploadLimits, client: str
                    ) -> tuple[list[tuple[str, Path]], Path | None]:
    """Safely unpack a .zip of camera videos: [(client name, file)], and a calibration.json if it holds one."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRejected(422, f"{client or 'the .zip'} is not a readable .zip ({exc}); re-create it") from exc
    out: list[tuple[str, Path]] = []
    calib: Path | None = None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.zip_max_entries:
            raise UploadRejected(413, f"the .zip has {len(infos)} entries, more than the limit of "
                                      f"{limits.zip_max_entries}")
        declared = sum(i.file_size for i in infos)
        if declared > limits.zip_max_uncompressed_bytes:
            raise UploadRejected(413, f"the .zip unpacks to {_mb(declared)}, more than the limit of "
                                      f"{_mb(limits.zip_max_uncompressed_bytes)}; send fewer or shorter videos")
        total = 0
        for info in infos:
            is_calib = PurePosixPath(info.filename.replace("\\", "/")).name.lower() == CALIBRATION_FILE
            base = zip_entry_path(info, limits, limits.max_file_bytes if is_calib else limits.max_video_bytes,
                                  "videos")
            if base is None or (base.suffix.lower() not in VIDEO_EXTS and not is_calib):
                continue  # folders, OS metadata, notes, previews: not camera inputs
            target = dest / (".calibration.part" if is_calib else f"{len(out):05d}.zpart")
            total = extract_zip_entry(zf, info, target, limits, total)
            if is_calib:
                calib = target
            else:
                out.append((base.name, target))
    zip_path.unlink()
    return out, calib


def check_dynamic_upload(received: Received, dest: Path, limits: UploadLimits, config: DynamicJobConfig
                         ) -> tuple[CheckedVideos, DynamicJobConfig]:
    """Name, probe and cross-check the camera videos; write ``dest/{camera}{ext}`` and ``upload.json``.

    Raises UploadRejected: 415/422/413 with what to fix (not a video, unreadable, one camera, different frame
    rates, too large or long, bad calibration file, options that do not fit the videos).
    """
    from splatworks.dynamic import calibration as calib
    from splatworks.dynamic import frames as fr

    videos = [f for f in received.files if f.field != "calibration"]
    calib_parts = [f for f in received.files if f.field == "calibration"]
    if len(calib_parts) > 1:
        raise UploadRejected(422, "send at most one calibration file")
    if not videos:
        raise UploadRejected(400, "no videos received; send one video per camera in the field 'videos' "
                                  "(e.g. curl -F videos=@cam00.mp4 -F videos=@cam01.mp4)")
    calib_path: Path | None = None
    kind = "videos"
    named: list[tuple[str, Path, str]] = []  # (client name, received file, sniffed kind)
    if len(videos) == 1 and videos[0].kind == "zip":
        kind = "zip"
        entries, calib_path = _extract_videos(videos[0].path, dest, limits, videos[0].client_name)
        for client, path in entries:
            with open(path, "rb") as f:
                named.append((client, path, sniff(f.read(512))))
    else:
        if any(v.kind == "zip" for v in videos):
            raise UploadRejected(422, "send either the camera videos, or ONE .zip of them, not a mix")
        named = [(v.client_name, v.path, v.kind) for v in videos]
    if calib_parts:
        calib_path = calib_parts[0].path
    if len(named) > MAX_CAMERAS:
        raise UploadRejected(413, f"{len(named)} videos: at most {MAX_CAMERAS} cameras per job")
    cameras: dict[str, Path] = {}
    for i, (client, path, sniffed) in enumerate(named):
        name, suffix = _camera_name(client, i)
        if sniffed != "video":
            raise UploadRejected(415, f"{client or f'file {i + 1}'} is not a video (MP4/MOV/MKV/WebM/AVI); send one "
                                      "video per camera")
        if name in cameras:
            raise UploadRejected(422, f"two videos are named {name!r}; each camera needs its own file name")
        final = dest / f"{name}{suffix}"
        os.replace(path, final)
        cameras[name] = final
    if len(cameras) < 2:
        raise UploadRejected(422, f"only one camera video received ({next(iter(cameras))}); a dynamic job needs "
                                  "at least 2 synchronized cameras (for a single video use POST /recon/jobs)")
    sources = [fr.CameraSource(name=n, path=p) for n, p in cameras.items()]
    try:
        sources, warnings = fr.probe_all(sources)
    except InputError as exc:
        raise UploadRejected(422, str(exc).replace(str(dest) + os.sep, "")) from None
    for s in sources:
        if s.width * s.height > limits.max_video_pixels:
            raise UploadRejected(413, f"{s.name}: the video is {s.width}x{s.height}, larger than the limit of "
                                      f"{limits.max_video_pixels} pixels per frame; re-encode it at 4K or less")
        seconds = s.n_frames / s.fps if s.fps else 0.0
        if seconds > limits.max_video_seconds:
            raise UploadRejected(413, f"{s.name}: the video is {seconds:.0f} s long, more than the limit of "
                                      f"{limits.max_video_seconds:.0f} s; trim the videos")
    common = min(s.n_frames for s in sources)
    if config.start_frame >= common:
        raise UploadRejected(422, f"start_frame={config.start_frame}, but the shortest video has {common} frames")
    names = [s.name for s in sources]
    held = config.held_out_camera.strip()
    if held not in ("first", "none", ""):
        missing = [n for n in held.split(",") if n.strip() not in names]
        if missing:
            raise UploadRejected(422, f"held_out_camera {', '.join(missing)} is not one of the cameras "
                                      f"({', '.join(names)})")
    n_held = 0 if held in ("none", "") else (1 if held == "first" else len(held.split(",")))
    if len(names) - n_held < 2:
        raise UploadRejected(422, f"{len(names)} cameras with {n_held} held out leaves fewer than 2 to train on; "
                                  "send more cameras or set held_out_camera=none")
    if calib_path is not None:
        final = dest / CALIBRATION_FILE
        os.replace(calib_path, final)
        from splatworks.dynamic.frames import output_size

        sizes = {s.name: output_size(s.width, s.height, 1.0, config.max_size) for s in sources}
        try:
            calib.import_calibration(final, names, sizes)
        except (InputError, UserError) as exc:
            raise UploadRejected(422, "the calibration file cannot be used: "
                                      + str(exc).replace(str(final), CALIBRATION_FILE)) from None
        config = dataclasses.replace(config, calibration_file=True)
    manifest = [{"file": cameras[s.name].name, "camera": s.name, "bytes": cameras[s.name].stat().st_size,
                 "width": s.width, "height": s.height, "fps": s.fps, "frames": s.n_frames} for s in sources]
    _write_manifest(dest, kind, manifest)
    checked = CheckedVideos(kind, names, received.total_bytes, common, sources[0].fps, warnings,
                            calib_path is not None)
    return checked, config


# ---- routes ---------------------------------------------------------------------------------------------------

@router.post("/recon/dynamic-jobs", response_model=JobCreated, dependencies=[Depends(require_api_token)],
             openapi_extra=UPLOAD_DOC, summary="Upload multi-view videos and queue a 4D reconstruction")
async def create_dynamic_job(request: Request) -> JobCreated:
    """Multipart upload: repeated field ``videos`` (one per camera, or one .zip), optional ``calibration`` file
    and option fields. Returns the job id (manages the job) and the public key (opens the viewer)."""
    settings, store = settings_of(request), store_of(request)
    job_id, pub_key = new_id(), new_id()
    paths = JobPaths.of(settings.jobs_dir, job_id).make()
    async with refusing_upload(paths.root, log, "dynamic upload"):
        received = await receive_upload(request.headers.get("content-type", ""),
                                        request.headers.get("content-length"), request.stream(), paths.upload,
                                        settings.limits, file_field="videos", extra_file_fields=("calibration",))
        config = job_config(settings, received.fields)
        checked, config = await run_upload_check(request, check_dynamic_upload, received, paths.upload,
                                                  settings.limits, config)
    cfg = to_dict(config)
    meta = {"job_id": job_id, "pub_key": pub_key, "kind": "dynamic", "config": cfg, "created_at": time.time(),
            "input_kind": checked.input_kind, "input_files": len(checked.cameras),
            "input_bytes": checked.total_bytes}
    record = JobRecord(job_id=job_id, pub_key=pub_key, kind="dynamic", status=PENDING, owner=owner_hash(request),
                       input_kind=checked.input_kind, input_files=len(checked.cameras),
                       input_bytes=checked.total_bytes, config=cfg, created_at=meta["created_at"])

    def persist() -> None:
        write_json_atomic(paths.job_json, meta)  # first on disk, so `admin reimport` can always rebuild the row
        store.create(record)
        lines = [f"upload received: {len(checked.cameras)} cameras ({', '.join(checked.cameras[:12])}"
                 f"{', ...' if len(checked.cameras) > 12 else ''}), {checked.frames} frames at {checked.fps:g} fps, "
                 f"{checked.total_bytes / 1e6:.1f} MB; backend {config.backend}"
                 f"{', calibration file' if checked.calibration else ''}; queued"]
        lines += [f"warning: {w}" for w in checked.warnings]
        store.append_log(job_id, lines)

    await run_in_threadpool(persist)
    executor_of(request).wake()
    log.info("dynamic job created", extra={"job_id": job_id, "cameras": len(checked.cameras),
                                           "bytes": checked.total_bytes})
    return JobCreated(job_id=job_id, pub_key=pub_key, status_url=f"/recon/jobs/{job_id}/status",
                      viewer_url=f"/v/{pub_key}")


def _export_dir(request: Request, pub_key: str) -> tuple[JobRecord, Path]:
    settings = settings_of(request)
    job = pub_job_or_404(store_of(request), pub_key)
    if job.kind != "dynamic":
        raise HTTPException(404, "this reconstruction is static: it has no 4D sequence (open /v/KEY or "
                                 "download scene.splat)")
    return job, JobPaths.of(settings.jobs_dir, job.job_id).root / "export"


def _not_yet(job: JobRecord, what: str) -> HTTPException:
    if job.status == "ERROR":
        return HTTPException(404, f"the job failed before publishing {what}: {job.error or 'see its status'}")
    return HTTPException(404, f"no {what} yet: it is published as the job goes on; try again later")


def _serve_file(path: Path, media_type: str, filename: str, job: JobRecord, what: str,
                cache: str = "no-store") -> StreamingResponse:
    from splatworks.service.routes.public import _stream_open_file

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise _not_yet(job, what) from None
    size = os.fstat(fd).st_size
    headers = {"Content-Length": str(size), "Cache-Control": cache,
               "Content-Disposition": f'inline; filename="{filename}"'}
    return StreamingResponse(_stream_open_file(fd, size), media_type=media_type, headers=headers)


@router.get("/recon/pub/{pub_key}/4d/manifest.json", summary="4D sequence manifest (grows as frames finish)")
async def manifest(pub_key: str, request: Request) -> Response:
    job, export = _export_dir(request, pub_key)
    try:
        data = (export / "manifest.json").read_bytes()  # replaced atomically: always a whole manifest
    except FileNotFoundError:
        raise _not_yet(job, "4D frames") from None
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/recon/pub/{pub_key}/4d/static.splat", summary="4D sequence: the static layer")
async def static_layer(pub_key: str, request: Request) -> StreamingResponse:
    job, export = _export_dir(request, pub_key)
    return _serve_file(export / "static.splat", "application/octet-stream", "static.splat", job, "the static layer")


@router.get("/recon/pub/{pub_key}/4d/frames/{name}", summary="4D sequence: one frame's dynamic layer")
async def frame_layer(pub_key: str, name: str, request: Request) -> StreamingResponse:
    if not re.fullmatch(r"\d{6}\.(splat|swd)", name):
        raise HTTPException(404, "frame layers are named NNNNNN.splat or NNNNNN.swd (deltas; see the manifest's "
                                 "frame_urls)")
    job, export = _export_dir(request, pub_key)
    # A finished frame's layer never changes, but an export in progress may rewrite it: revalidate.
    return _serve_file(export / "frames" / name, "application/octet-stream", name, job, f"frame {name}",
                       cache="no-cache")


@router.get("/recon/pub/{pub_key}/heldout.mp4", summary="Held-out camera video: rendering | ground truth")
async def heldout_video(pub_key: str, request: Request) -> StreamingResponse:
    job, export = _export_dir(request, pub_key)
    return _serve_file(export / "heldout.mp4", "video/mp4", "heldout.mp4", job, "the held-out video (made at the end)")


@router.get("/recon/pub/{pub_key}/metrics.json", summary="Held-out metrics, timings and configs of a 4D job")
async def metrics(pub_key: str, request: Request) -> Response:
    job, export = _export_dir(request, pub_key)
    try:
        data = (export / "metrics.json").read_bytes()
    except FileNotFoundError:
        raise _not_yet(job, "metrics (made at the end)") from None
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})
