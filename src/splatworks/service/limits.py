"""Uploads: streamed to disk under generated names, checked by content, refused early with a 4xx that says why.

Two steps, both bounded by :class:`~splatworks.service.settings.UploadLimits`:

1. :func:`receive_upload` (in the event loop) parses the multipart body as it arrives and writes each ``files``
   part straight to ``upload/`` as ``00000.bin``, ``00001.bin``, ... The client's file name is kept only as text
   in ``upload.json`` next to ``upload/``; it never becomes a path. Count, per-file and total sizes are enforced while
   bytes arrive (a too-large body is cut off at the limit, not after it was stored).
2. :func:`check_upload` (in a thread) identifies every file by its bytes (image / .zip / video), decodes images
   completely (``scene.images.probe_image``: decompression bombs are refused from the header, before
   decoding), extracts a .zip entry by entry with ratio / size / count / path checks (zip bombs), and probes a
   video's stream. Files are renamed to their real type (``00000.jpg``).

Every refusal raises :class:`UploadRejected` (a ``UserError`` with an HTTP status).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, AsyncIterator

from splatworks.errors import InputError, UserError
from splatworks.service.settings import UploadLimits

CHUNK = 1 << 16
_MiB = 1024 * 1024
IMAGE_EXTS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp",
              "HEIF": ".heic", "GIF": ".gif"}
SKIP_IN_ZIP = {".txt", ".md", ".json", ".xml", ".ini", ".db", ".csv", ".html", ".pdf", ".yaml", ".yml"}
ARCHIVE_EXTS = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}


class UploadRejected(UserError):
    """An upload the service refuses; ``status_code`` is the HTTP answer (400, 411, 413, 415, 422, 507)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __reduce__(self) -> tuple[Any, ...]:  # crosses from the checking process back to the API process
        return (UploadRejected, (self.status_code, str(self)))


CHECK_NICE = 5


def _check_process_init() -> None:
    """Upload checks (decoding every photo) run in a pool of their own processes at lower priority: the API's
    event loop never waits for the GIL or a core while someone's 500 photos are decoded."""
    os.nice(CHECK_NICE)


def make_check_pool(workers: int) -> Any:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_check_process_init)


def _mb(n: float) -> str:
    return f"{n / _MiB:.0f} MB" if n >= _MiB else f"{n:.0f} bytes"


# ---- content sniffing -----------------------------------------------------------------------------------------

def sniff(head: bytes) -> str:
    """'zip' | 'video' | 'archive' (other archive formats) | 'image?' (to be decoded) from a file's first bytes."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[4:8] == b"ftyp" and head[8:12] not in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"hevc"):
        return "video"
    if head.startswith(b"\x1aE\xdf\xa3") or (head.startswith(b"RIFF") and head[8:12] == b"AVI "):
        return "video"
    if head.startswith((b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")) or head[257:262] == b"ustar":
        return "archive"
    return "image?"


# ---- step 1: streaming multipart -> files ---------------------------------------------------------------------

@dataclass
class ReceivedFile:
    path: Path
    client_name: str
    size: int = 0
    kind: str = ""
    field: str = ""  # the form field it came in (``file_field`` or one of ``extra_file_fields``)


@dataclass
class Received:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0


async def receive_upload(content_type: str, content_length: str | None, body: AsyncIterator[bytes],
                         dest: Path, limits: UploadLimits, file_field: str = "files",
                         extra_file_fields: tuple[str, ...] = ()) -> Received:
    """Stream a ``multipart/form-data`` body into ``dest``; refuse as soon as a limit is crossed."""
    from python_multipart import MultipartParser
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadRejected(415, "send the photos as multipart/form-data, one part per file in the field "
                                  f"'{file_field}' (e.g. curl -F {file_field}=@photo1.jpg -F {file_field}=@photo2.jpg)")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadRejected(400, "the Content-Length header is not a number") from None
        if declared > limits.max_total_bytes:
            raise UploadRejected(413, f"the upload is {_mb(declared)}, more than the limit of "
                                      f"{_mb(limits.max_total_bytes)}; send fewer or smaller files")
    free = shutil.disk_usage(dest).free
    if free - int(content_length or 0) < limits.min_free_disk_bytes:
        raise UploadRejected(507, "the server's disk is nearly full; try again later (an administrator must free "
                                  "space or delete old jobs)")

    out = Received()
    state: dict[str, Any] = {"headers": {}, "field": None, "fh": None, "buf": None, "hname": b"", "hval": b""}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hname"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hval"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hname"].decode("latin-1").lower()] = state["hval"]
        state["hname"], state["hval"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp or name == file_field or name in extra_file_fields:
            if name != file_field and name not in extra_file_fields:
                raise UploadRejected(400, f"file part in field {name!r}: send files in the field '{file_field}'")
            if len(out.files) >= limits.max_files:
                raise UploadRejected(413, f"more than {limits.max_files} files in one upload; send fewer photos "
                                          "(a few hundred overlapping photos are plenty)")
            client = disp.get(b"filename", b"").decode("utf-8", "replace")[:255]
            rf = ReceivedFile(dest / f"{len(out.files):05d}.part", client, field=name)
            out.files.append(rf)
            state["fh"], state["field"] = open(rf.path, "wb"), rf
        else:
            if len(out.fields) >= 32:
                raise UploadRejected(400, "too many form fields; send only 'files' (and a few options)")
            state["field"], state["buf"] = name, bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        n = end - start
        out.total_bytes += n
        if out.total_bytes > limits.max_total_bytes:
            raise UploadRejected(413, f"the upload is more than the limit of {_mb(limits.max_total_bytes)}; "
                                      "send fewer or smaller files")
        if state["fh"] is not None:
            rf: ReceivedFile = state["field"]
            if rf.size == 0:
                rf.kind = sniff(bytes(data[start:min(end, start + 512)]))
            rf.size += n
            cap = limits.max_video_bytes if rf.kind == "video" else (
                limits.max_total_bytes if rf.kind == "zip" else limits.max_file_bytes)
            if rf.size > cap:
                raise UploadRejected(413, f"file {rf.client_name or len(out.files)!r} is more than the limit of "
                                          f"{_mb(cap)} for one {'video' if rf.kind == 'video' else 'file'}; "
                                          "send a smaller (e.g. re-encoded or downscaled) file")
            state["fh"].write(data[start:end])
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > 4096:
                raise UploadRejected(400, f"form field {state['field']!r} is too long (4 KB at most)")

    def on_part_end() -> None:
        if state["fh"] is not None:
            state["fh"].close()
            state["fh"] = None
        elif state["field"] is not None:
            out.fields[state["field"]] = state["buf"].decode("utf-8", "replace")
        state["headers"], state["field"], state["buf"] = {}, None, None

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except UploadRejected:
        raise
    except OSError as exc:
        raise UploadRejected(507, f"the server could not store the upload ({exc.strerror}); try again later") \
            from exc
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types for a malformed body
        raise UploadRejected(400, f"the multipart body is malformed ({exc}); send it with a standard client "
                                  "(browser form, curl -F, requests files=)") from exc
    finally:
        if state["fh"] is not None:
            state["fh"].close()
    if not out.files:
        raise UploadRejected(400, f"no files received; send the photos (or one video or one .zip) in the field "
                                  f"'{file_field}'")
    empty = [f.client_name or str(i) for i, f in enumerate(out.files) if f.size == 0]
    if empty:
        raise UploadRejected(400, f"empty file(s): {', '.join(empty[:5])}; send the actual photos")
    return out


# ---- step 2: content checks -----------------------------------------------------------------------------------

@dataclass
class CheckedUpload:
    input_kind: str                 # images | zip | video
    files: list[Path]               # images (after zip extraction) or the one video
    total_bytes: int
    manifest: list[dict[str, Any]]  # generated name -> client name, size, format, pixels


def check_upload(received: Received, dest: Path, limits: UploadLimits) -> CheckedUpload:
    """Identify, decode and (for a .zip) safely extract the received files; write ``dest/manifest.json``."""
    kinds = [f.kind for f in received.files]
    if "archive" in kinds:
        raise UploadRejected(415, "only .zip archives are accepted (not tar/gz/7z/rar); re-pack the photos "
                                  "as a .zip or upload them directly")
    special = [k for k in kinds if k in ("zip", "video")]
    if special and len(received.files) > 1:
        raise UploadRejected(422, "send either photos, or ONE .zip of photos, or ONE video, not a mix "
                                  f"(got {len(received.files)} files including a {special[0]})")
    if kinds == ["video"]:
        return _check_video(received.files[0], dest, limits, received.total_bytes)
    if kinds == ["zip"]:
        images, manifest = _extract_zip(received.files[0], dest, limits)
        kind = "zip"
    else:
        images, manifest, problems = [], [], []
        for i, rf in enumerate(received.files):
            try:
                path, entry = _check_image(rf.path, dest, i, limits, rf.client_name)
                images.append(path)
                manifest.append(entry)
            except InputError as exc:
                problems.append(f"{rf.client_name or f'file {i + 1}'}: {_strip_path(str(exc), rf.path)}")
        if problems:
            raise UploadRejected(422, f"{len(problems)} of {len(received.files)} files are not usable images "
                                      "(JPEG, PNG, TIFF, WebP, HEIC); remove or replace them:\n- "
                                      + "\n- ".join(problems[:20]))
        kind = "images"
    if len(images) < limits.min_images:
        raise UploadRejected(422, f"{len(images)} image(s) received: a reconstruction needs at least "
                                  f"{limits.min_images} overlapping photos of the same scene (or one video)")
    _write_manifest(dest, kind, manifest)
    return CheckedUpload(kind, images, received.total_bytes, manifest)


def _strip_path(message: str, path: Path) -> str:
    """Messages from the image checks name the server-side path; users know their own file name instead."""
    return message.replace(str(path), "").replace(path.name, "").lstrip(": ").strip() or message


def _image_limits(limits: UploadLimits) -> Any:
    from splatworks.scene.images import ImageLimits

    return ImageLimits(max_pixels=limits.max_image_pixels, max_file_bytes=limits.max_file_bytes,
                       max_count=limits.max_files, min_count=1)


def _check_image(path: Path, dest: Path, index: int, limits: UploadLimits, client_name: str
                 ) -> tuple[Path, dict[str, Any]]:
    from splatworks.scene.images import probe_image

    info = probe_image(path, _image_limits(limits))  # decodes fully; refuses bombs before decoding
    final = dest / f"{index:05d}{IMAGE_EXTS.get(info.format, '.img')}"
    os.replace(path, final)
    return final, {"file": final.name, "client_name": client_name, "bytes": final.stat().st_size,
                   "format": info.format, "width": info.width, "height": info.height}


def _unsafe_entry(name: str) -> str | None:
    """Why a zip entry name is unsafe (None if fine). Names are never used as paths, but such an archive is
    malformed or hostile, so it is refused rather than silently skipped."""
    if "\x00" in name:
        return "contains a NUL byte"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "climbs out of the archive with '..'"
    if norm.count("/") > 16:
        return "is nested more than 16 folders deep"
    return None


def zip_entry_path(info: zipfile.ZipInfo, limits: UploadLimits, max_bytes: int, what: str
                   ) -> PurePosixPath | None:
    """The checks every .zip entry gets (photos or videos): unsafe names, links, nested archives, encryption,
    size and compression ratio (zip-bomb guard). Returns the entry's path, or None for folders and OS metadata.
    ``what`` names the expected content in messages ("photos", "videos")."""
    why = _unsafe_entry(info.filename)
    if why:
        raise UploadRejected(422, f"the .zip entry {info.filename!r} {why}; re-create the archive from a plain "
                                  f"folder of {what}")
    if info.is_dir():
        return None
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadRejected(422, f"the .zip entry {info.filename!r} is a symbolic link; zip the {what} themselves")
    base = PurePosixPath(info.filename.replace("\\", "/"))
    if any(p.startswith(".") or p == "__MACOSX" for p in base.parts):
        return None  # Finder/Explorer metadata
    if base.suffix.lower() in ARCHIVE_EXTS:
        raise UploadRejected(422, f"the .zip contains another archive ({info.filename!r}); nested archives are not "
                                  f"accepted: put the {what} directly in one .zip")
    if info.flag_bits & 0x1:
        raise UploadRejected(422, f"the .zip entry {info.filename!r} is encrypted; send an unencrypted .zip")
    if info.file_size > max_bytes:
        raise UploadRejected(413, f"the .zip entry {info.filename!r} is {_mb(info.file_size)}, more than the limit "
                                  f"of {_mb(max_bytes)}")
    ratio = info.file_size / max(1, info.compress_size)
    if ratio > limits.zip_max_ratio:
        raise UploadRejected(413, f"the .zip entry {info.filename!r} is compressed {ratio:.0f}:1, more than the "
                                  f"limit of {limits.zip_max_ratio:.0f}:1 (zip-bomb guard); {what} do not compress "
                                  f"like that: zip the original {what}")
    return base


def extract_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: UploadLimits,
                      total: int) -> int:
    """Copy one entry to ``target``, counting what really comes out (declared sizes are never trusted).
    ``total`` is the running uncompressed size of the archive so far; returns it updated."""
    written = 0
    try:
        src = zf.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise UploadRejected(422, f"the .zip entry {info.filename!r} cannot be read ({exc}); re-create "
                                  "the archive (plain deflate, no encryption)") from exc
    with src, open(target, "wb") as dst:
        while True:
            try:
                chunk = src.read(CHUNK)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise UploadRejected(422, f"the .zip entry {info.filename!r} is damaged ({exc or 'truncated'}); "
                                          "re-create the archive") from exc
            if not chunk:
                return total
            written += len(chunk)
            total += len(chunk)
            if written > max(info.file_size, 1) or total > limits.zip_max_uncompressed_bytes:
                raise UploadRejected(413, f"the .zip entry {info.filename!r} unpacks to more than it "
                                          "declares (a malformed or hostile archive); re-create it")
            dst.write(chunk)


def _extract_zip(rf: ReceivedFile, dest: Path, limits: UploadLimits) -> tuple[list[Path], list[dict[str, Any]]]:
    from splatworks.scene.camera import natural_key

    archive = dest / "upload.zip.part"  # out of the way of the extracted files' names
    os.replace(rf.path, archive)
    rf.path = archive
    try:
        zf = zipfile.ZipFile(rf.path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRejected(422, f"{rf.client_name or 'the .zip'} is not a readable .zip ({exc}); re-create it") \
            from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.zip_max_entries:
            raise UploadRejected(413, f"the .zip has {len(infos)} entries, more than the limit of "
                                      f"{limits.zip_max_entries}; put fewer files in it")
        declared = sum(i.file_size for i in infos)
        if declared > limits.zip_max_uncompressed_bytes:
            raise UploadRejected(413, f"the .zip unpacks to {_mb(declared)}, more than the limit of "
                                      f"{_mb(limits.zip_max_uncompressed_bytes)}; send fewer or smaller photos")
        entries = []
        for info in infos:
            base = zip_entry_path(info, limits, limits.max_file_bytes, "photos")
            if base is None or base.suffix.lower() in SKIP_IN_ZIP:
                continue  # folders, OS metadata, notes: not photos
            entries.append(info)
        entries.sort(key=lambda i: natural_key(i.filename))
        if len(entries) > limits.max_files:
            raise UploadRejected(413, f"the .zip holds {len(entries)} photos, more than the limit of "
                                      f"{limits.max_files}; send fewer photos")
        images, manifest, problems, total = [], [], [], 0
        for index, info in enumerate(entries):
            tmp = dest / f"{index:05d}.part"
            total = extract_zip_entry(zf, info, tmp, limits, total)
            try:
                path, entry = _check_image(tmp, dest, index, limits, info.filename)
                images.append(path)
                manifest.append(entry)
            except InputError as exc:
                tmp.unlink(missing_ok=True)
                problems.append(f"{info.filename}: {_strip_path(str(exc), tmp)}")
        if problems:
            raise UploadRejected(422, f"{len(problems)} entries of the .zip are not usable images; remove or "
                                      "replace them:\n- " + "\n- ".join(problems[:20]))
    rf.path.unlink()
    return images, manifest


def _check_video(rf: ReceivedFile, dest: Path, limits: UploadLimits, total: int) -> CheckedUpload:
    from splatworks.dynamic.frames import CameraSource, probe

    final = dest / "video.bin"
    os.replace(rf.path, final)
    try:
        src = probe(CameraSource(name="video", path=final))
    except InputError as exc:
        raise UploadRejected(422, f"{rf.client_name or 'the video'}: {_strip_path(str(exc), final)}; send an "
                                  "MP4/MOV/MKV/WebM video that plays in a browser") from exc
    if src.width * src.height > limits.max_video_pixels:
        raise UploadRejected(413, f"the video is {src.width}x{src.height}, larger than the limit of "
                                  f"{limits.max_video_pixels} pixels per frame; re-encode it at 4K or less")
    seconds = src.n_frames / src.fps if src.fps else 0.0
    if seconds > limits.max_video_seconds:
        raise UploadRejected(413, f"the video is {seconds:.0f} s long, more than the limit of "
                                  f"{limits.max_video_seconds:.0f} s; trim it to one walk around the object")
    if src.n_frames < limits.min_images:
        raise UploadRejected(422, f"the video has only {src.n_frames} frame(s); film a walk around the object")
    manifest = [{"file": final.name, "client_name": rf.client_name, "bytes": final.stat().st_size,
                 "width": src.width, "height": src.height, "fps": src.fps, "frames": src.n_frames}]
    _write_manifest(dest, "video", manifest)
    return CheckedUpload("video", [final], total, manifest)


def _write_manifest(dest: Path, kind: str, manifest: list[dict[str, Any]]) -> None:
    """``{job}/upload.json`` (next to ``upload/``, which holds only the user's files)."""
    tmp = dest.parent / ".upload.json.tmp"
    tmp.write_text(json.dumps({"input_kind": kind, "files": manifest}, indent=1))
    os.replace(tmp, dest.parent / "upload.json")
