"""Job storage for clusters: a shared directory or an S3-compatible bucket, one interface, atomic publishing.

``open_storage(url)`` gives a :class:`JobStorage` rooted at

- a directory (``""`` = the service's jobs folder, ``/mnt/nfs/splatworks/jobs``, ``file:///...``): local disk and
  a shared cluster filesystem (NFS, CephFS, Lustre, ...) go through the very same code (plain POSIX calls);
- ``s3://bucket/prefix``: an S3-compatible bucket through fsspec/s3fs. Credentials come from the usual AWS
  environment variables; ``?endpoint_url=http://host:port`` (or ``AWS_ENDPOINT_URL``) points at MinIO, Ceph RGW,
  a cloud provider's S3 API, or a test server.

Keys are ``/``-separated paths relative to the root; a job's files live under ``{job_id}/``.

**Checkpoints** (``publish_checkpoint`` / ``latest_checkpoint`` / ``load_checkpoint``): the files of a
checkpoint are written completely (each one atomically: temp file + fsync + rename on disk, one PUT on S3)
under ``{job_id}/checkpoints/attempt-A/step-S/``, with a manifest of sizes and SHA-256 sums; only then is the
attempt's "latest" pointer ``{job_id}/latest/attempt-A.json`` replaced atomically. Readers take the pointer of
the highest attempt, so:

- a crash mid-write leaves at worst unreferenced files, never a pointer to a partial checkpoint;
- a stale or duplicated attempt (one the reconciler already gave up on) can never publish over a newer one:
  it is fenced twice, by the database (``fence()`` must say the job is still on this attempt right before the
  pointer is written) and by the pointer order (its pointer has a lower attempt number than the newer one's,
  so even a write that slipped past the fence is never chosen).

Files may be given as bytes or as local files (the trainer's checkpoint folder: copied, or hard-linked when the
storage is on the same disk, so the single-machine default costs no extra space). The same mechanism, with a
``series`` name, publishes a job stage's output (``{job_id}/stages/NAME/...``: the SfM folder a cluster's
training task starts from). Publishing prunes all but the two newest checkpoints of the series.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import parse_qsl, urlsplit

from splatworks.errors import UserError

_POINTER_RE = re.compile(r"attempt-(\d+)\.json$")


class JobStorage:
    """Files under one root, on a POSIX directory (local or shared) or an fsspec filesystem (S3)."""

    def __init__(self, url: str, root: str, fs: Any | None = None) -> None:
        self.url, self.root, self.fs = url, root.rstrip("/"), fs

    @property
    def is_directory(self) -> bool:
        """True for local disk / a shared filesystem (results can be served straight from ``local_path``)."""
        return self.fs is None

    def _full(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"storage key {key!r} may not contain '.' or '..'")
        return "/".join([self.root, *parts])

    def local_path(self, key: str = "") -> Path:
        if not self.is_directory:
            raise ValueError(f"{self.url} is not a directory storage")
        return Path(self._full(key)) if key else Path(self.root)

    # ---- files ------------------------------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole file atomically: readers see the old file or the complete new one, never a part."""
        path = self._full(key)
        if self.fs is not None:
            self.fs.pipe_file(path, data)  # one PUT: S3 makes an object visible only once it is complete
            return
        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk (and on the NFS server) before the rename publishes it

        _replace_atomically(Path(path), fill)

    def put_file(self, key: str, src: str | Path) -> None:
        """Copy a local file to ``key`` atomically (a hard link when the storage shares its filesystem)."""
        path = self._full(key)
        if self.fs is not None:
            self.fs.put_file(str(src), path)  # one PUT (or a multipart upload completed at the end): atomic
            return
        def fill(tmp: Path) -> None:
            try:
                os.link(src, tmp)  # same filesystem: no bytes copied (the writer never modifies a file in place)
            except OSError:
                _copy_synced(Path(src), tmp)

        _replace_atomically(Path(path), fill)

    def get_file(self, key: str, dest: str | Path) -> None:
        """Copy ``key`` to the local file ``dest`` (atomically; parent folders are made)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            if self.fs is not None:
                self.fs.get_file(self._full(key), str(tmp))
            else:
                try:
                    os.link(self._full(key), tmp)
                except OSError:
                    _copy_synced(Path(self._full(key)), tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def open_read(self, key: str) -> tuple[Any, int]:
        """(binary file object, size) of ``key``; the open file keeps reading the same object even if the key is
        replaced or removed meanwhile on a directory storage."""
        if self.fs is not None:
            f = self.fs.open(self._full(key), "rb", block_size=4 << 20)
            return f, int(f.size)
        f = open(self._full(key), "rb")
        return f, os.fstat(f.fileno()).st_size

    def read_bytes(self, key: str) -> bytes:
        if self.fs is not None:
            return self.fs.cat_file(self._full(key))
        return Path(self._full(key)).read_bytes()

    def exists(self, key: str) -> bool:
        if self.fs is not None:
            return bool(self.fs.exists(self._full(key)))
        return os.path.exists(self._full(key))

    def list(self, prefix: str) -> list[str]:
        """Keys of the files directly under ``prefix`` (a folder), sorted; [] if there is none."""
        full = self._full(prefix)
        if self.fs is not None:
            self.fs.invalidate_cache(full)  # other machines write here: never trust a cached listing
            try:
                names = [n.rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(full, detail=False)]
            except FileNotFoundError:
                return []
        else:
            try:
                names = [n for n in os.listdir(full) if not n.startswith(".")]
            except (FileNotFoundError, NotADirectoryError):
                return []
        return sorted(f"{prefix.rstrip('/')}/{n}" for n in names)

    def remove(self, prefix: str) -> None:
        """Delete a file or a folder with everything under it (missing is fine)."""
        full = self._full(prefix)
        if self.fs is not None:
            if self.fs.exists(full):
                self.fs.rm(full, recursive=True)
            return
        import shutil

        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        elif os.path.exists(full):
            os.unlink(full)

    def check_writable(self) -> None:
        """Write, read back and delete a probe file; raises UserError saying what to fix."""
        key = f".probe-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self.write_bytes(key, b"ok")
            ok = self.read_bytes(key) == b"ok"
            self.remove(key)
        except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the operator
            raise UserError(f"job storage {self.url} is not writable from this machine ({type(exc).__name__}: "
                            f"{exc}); mount the shared folder here, or check the bucket's credentials") from exc
        if not ok:
            raise UserError(f"job storage {self.url} returned different bytes than were written")


def _replace_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    """``fill(tmp)`` writes a temporary file next to ``path``, which then replaces ``path`` in one rename (the
    folder entry synced too); on any error the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _copy_synced(src: Path, dst: Path) -> None:
    import shutil

    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 4 << 20)
        fo.flush()
        os.fsync(fo.fileno())


def _sha256_file(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    except OSError:
        pass
    finally:
        os.close(fd)


def open_storage(url: str, default_dir: str | Path | None = None) -> JobStorage:
    """The storage for a URL: ``""`` (= ``default_dir``), a path / ``file://`` URL, or ``s3://bucket/prefix``.

    S3 options may ride on the URL's query: ``endpoint_url``, ``region``; credentials come from the environment
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) or the machine's AWS configuration.
    """
    if not url:
        if default_dir is None:
            raise UserError("no storage URL given and no default folder")
        return JobStorage(str(Path(default_dir).resolve()), str(Path(default_dir).resolve()))
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url:
        path = str(Path(url).expanduser().resolve())
        return JobStorage(path, path)
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "s3a"):
        raise UserError(f"storage URL {url!r} is not supported; use a folder path (local or shared filesystem) "
                        "or s3://bucket/prefix")
    if not parts.netloc:
        raise UserError(f"storage URL {url!r} names no bucket; use s3://bucket/prefix")
    try:
        import s3fs
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UserError("s3:// storage needs s3fs: pip install 'splatworks[cluster]'") from exc
    query = dict(parse_qsl(parts.query))
    client_kwargs = {}
    endpoint = query.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if query.get("region"):
        client_kwargs["region_name"] = query["region"]
    fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False, skip_instance_cache=True)
    root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    clean = f"s3://{root}" + (f"?endpoint_url={endpoint}" if endpoint else "")
    return JobStorage(clean, root, fs)


# ---- checkpoints (and stage outputs): complete files, then an atomic per-attempt pointer ----------------------

@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint: which attempt wrote it, at which step, and its files (name -> size, sha256).

    ``series`` is "checkpoints" for training checkpoints, else the name of the job stage whose output this is
    (e.g. "prepare": the SfM folder a static job's training stage starts from). File names may contain ``/``.
    """

    job_id: str
    attempt: int
    step: int
    prefix: str
    files: dict[str, dict[str, Any]]
    published_at: float
    series: str = "checkpoints"


CHECKPOINTS = "checkpoints"


def _series_root(job_id: str, series: str) -> str:
    if series == CHECKPOINTS:
        return job_id
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", series):
        raise ValueError(f"series name {series!r} must be a short lowercase word")
    return f"{job_id}/stages/{series}"


def _pointer_key(job_id: str, attempt: int, series: str = CHECKPOINTS) -> str:
    return f"{_series_root(job_id, series)}/latest/attempt-{attempt:06d}.json"


def _data_prefix(job_id: str, attempt: int, step: int, series: str = CHECKPOINTS) -> str:
    base = f"{job_id}/checkpoints" if series == CHECKPOINTS else _series_root(job_id, series)
    return f"{base}/attempt-{attempt:06d}/step-{step:09d}"


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"checkpoint file name {name!r} must be a relative path without '.' or '..' parts")


def publish_checkpoint(storage: JobStorage, job_id: str, attempt: int, step: int,
                       files: Mapping[str, bytes | Path], fence: Callable[[], bool] | None = None,
                       series: str = CHECKPOINTS, prune: bool = True) -> Checkpoint | None:
    """Write ``files`` completely, then move this attempt's "latest" pointer to them.

    Args:
        files: name (a relative path) -> the bytes, or a local file (copied; hard-linked on the same disk).
        fence: asked right before the pointer moves (e.g. "is the job still on my attempt in the database?");
            if it says no, nothing is published and None is returned. A step lower than the attempt's current
            pointer is refused too (a pointer never moves back).
        prune: after publishing, delete the series' older checkpoints, keeping the two newest (the one a client
            may still be downloading survives one more publication).
    """
    if attempt < 1 or step < 0:
        raise ValueError(f"attempt must be >= 1 and step >= 0, got attempt={attempt}, step={step}")
    prefix = _data_prefix(job_id, attempt, step, series)
    manifest = {}
    for name, data in files.items():
        _check_name(name)
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            storage.write_bytes(f"{prefix}/{name}", data)
            manifest[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        else:
            size, sha = _sha256_file(Path(data))
            storage.put_file(f"{prefix}/{name}", data)
            manifest[name] = {"size": size, "sha256": sha}
    current = _read_pointer(storage, _pointer_key(job_id, attempt, series))
    if current is not None and current.step > step:
        return None
    if fence is not None and not fence():
        return None
    cp = Checkpoint(job_id, attempt, step, prefix, manifest, time.time(), series)
    storage.write_bytes(_pointer_key(job_id, attempt, series), json.dumps(cp.__dict__, sort_keys=True).encode())
    if prune:
        prune_checkpoints(storage, job_id, series, keep=2)
    return cp


def _read_pointer(storage: JobStorage, key: str) -> Checkpoint | None:
    try:
        d = json.loads(storage.read_bytes(key))
        return Checkpoint(**d)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def checkpoints(storage: JobStorage, job_id: str, series: str = CHECKPOINTS) -> Iterator[Checkpoint]:
    """Each attempt's latest checkpoint of ``series``, newest attempt first."""
    keys = [k for k in storage.list(f"{_series_root(job_id, series)}/latest") if _POINTER_RE.search(k)]

    def attempt_of(key: str) -> int:
        m = _POINTER_RE.search(key)
        return int(m.group(1)) if m else -1

    for key in sorted(keys, key=attempt_of, reverse=True):
        cp = _read_pointer(storage, key)
        if cp is not None:
            yield cp


def latest_checkpoint(storage: JobStorage, job_id: str, max_attempt: int | None = None,
                      series: str = CHECKPOINTS) -> Checkpoint | None:
    """The checkpoint to resume from or serve: the highest attempt's pointer (at most ``max_attempt``)."""
    for cp in checkpoints(storage, job_id, series):
        if max_attempt is None or cp.attempt <= max_attempt:
            return cp
    return None


def prune_checkpoints(storage: JobStorage, job_id: str, series: str = CHECKPOINTS, keep: int = 2) -> list[str]:
    """Delete old checkpoints of ``series``: keep the one the highest attempt's pointer names and the ``keep - 1``
    newest below it (by attempt, then step); drop the rest, and the pointers of lower attempts left without data.
    Folders newer than the pointer (a write in progress) are never touched. Returns the removed prefixes.

    Call it only as an attempt that passed its fence.
    """
    top = next(checkpoints(storage, job_id, series), None)
    if top is None:
        return []
    base = f"{job_id}/checkpoints" if series == CHECKPOINTS else _series_root(job_id, series)
    found: list[tuple[int, int, str]] = []
    for att_key in storage.list(base):
        m = re.search(r"attempt-(\d+)$", att_key)
        if m and int(m.group(1)) <= top.attempt:
            for step_key in storage.list(att_key):
                sm = re.search(r"step-(\d+)$", step_key)
                if sm:
                    found.append((int(m.group(1)), int(sm.group(1)), step_key))
    below = sorted((f for f in found if (f[0], f[1]) < (top.attempt, top.step)), reverse=True)
    kept_attempts = {top.attempt} | {a for a, _, _ in below[:keep - 1]}
    removed = []
    for _, _, key in below[keep - 1:]:
        storage.remove(key)
        removed.append(key)
    for att in {a for a, _, _ in found} | {cp.attempt for cp in checkpoints(storage, job_id, series)}:
        if att < top.attempt and att not in kept_attempts:
            storage.remove(_pointer_key(job_id, att, series))
            storage.remove(f"{base}/attempt-{att:06d}")
    return removed


def load_checkpoint(storage: JobStorage, cp: Checkpoint) -> dict[str, bytes]:
    """The checkpoint's files, each checked against the manifest (size and SHA-256)."""
    out = {}
    for name, meta in cp.files.items():
        data = storage.read_bytes(f"{cp.prefix}/{name}")
        if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise OSError(f"checkpoint file {cp.prefix}/{name} does not match its manifest (damaged storage?)")
        out[name] = data
    return out


def fetch_checkpoint(storage: JobStorage, cp: Checkpoint, dest: str | Path) -> list[Path]:
    """Copy the checkpoint's files into the local folder ``dest`` (names keep their sub-folders), each checked
    against the manifest; returns the local paths."""
    out = []
    for name, meta in cp.files.items():
        path = Path(dest) / name
        storage.get_file(f"{cp.prefix}/{name}", path)
        if (path.stat().st_size, _sha256_file(path)[1]) != (meta["size"], meta["sha256"]):
            path.unlink(missing_ok=True)
            raise OSError(f"checkpoint file {cp.prefix}/{name} does not match its manifest (damaged storage?)")
        out.append(path)
    return out


def npz_bytes(**arrays: Any) -> bytes:
    """Arrays as .npz bytes (for checkpoint files)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_arrays(data: bytes) -> dict[str, Any]:
    import numpy as np

    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


# ---- the running job's context (set by the cluster runner; job functions read it) -----------------------------

@dataclass
class JobContext:
    """What a job function needs to publish checkpoints: where, as which attempt, and the database fence."""

    storage: JobStorage
    job_id: str
    attempt: int
    fence: Callable[[], bool] | None = None


_CURRENT: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("splatworks_job", default=None)


def set_job_context(ctx: JobContext | None) -> contextvars.Token:
    return _CURRENT.set(ctx)


def job_context(job_dir: str | Path, progress: Any = None) -> JobContext:
    """The context the runner set; else (the local executor) the job folder's parent directory as storage,
    with the attempt and fence taken from the local executor's progress recorder when it is one."""
    ctx = _CURRENT.get()
    if ctx is not None:
        return ctx
    job_dir = Path(job_dir).resolve()
    attempt = int(getattr(progress, "attempt", 1) or 1)
    store = getattr(progress, "store", None)
    fence = None
    if store is not None:
        def fence() -> bool:
            job = store.get(job_dir.name)
            return job is not None and job.attempt == attempt
    return JobContext(open_storage(str(job_dir.parent)), job_dir.name, attempt, fence)


__all__ = ["JobStorage", "open_storage", "Checkpoint", "CHECKPOINTS", "publish_checkpoint", "latest_checkpoint",
           "load_checkpoint", "fetch_checkpoint", "prune_checkpoints", "checkpoints", "JobContext", "job_context",
           "set_job_context", "npz_bytes", "npz_arrays"]
