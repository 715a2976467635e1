"""Settings of the reconstruction service: one typed dataclass, every field a ``splatworks serve`` option.

``ServiceSettings.validate()`` refuses unsafe or inconsistent values with a message that says what to fix;
``create_app`` calls it, so a bad setting fails at start-up, not on the first request.

Paths: ``data_dir`` is relative to the directory where the server starts (``./data`` by default); job folders
live in ``data_dir/jobs/{job_id}``; the database defaults to ``sqlite:///{data_dir}/splatworks.db``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splatworks.config import from_dict, option, to_dict
from splatworks.errors import UserError

_MiB = 1024 * 1024
_GiB = 1024 * _MiB


@dataclass
class UploadLimits:
    """What one upload may contain. Each refusal is a 4xx whose message names the limit and what to do."""

    max_files: int = option(2000, "Most files in one upload (images, or entries of a .zip).")
    min_images: int = option(3, "Fewest images a reconstruction needs.")
    max_file_bytes: int = option(100 * _MiB, "Largest single image file, in bytes.")
    max_video_bytes: int = option(2 * _GiB, "Largest video file, in bytes.")
    max_total_bytes: int = option(4 * _GiB, "Largest upload in total (request body), in bytes.")
    max_image_pixels: int = option(60_000_000, "Largest image, in pixels (width x height); checked before decoding.")
    max_video_pixels: int = option(3840 * 2160, "Largest video frame, in pixels.")
    max_video_seconds: float = option(1800.0, "Longest video accepted, in seconds.")
    zip_max_entries: int = option(5000, "Most entries in a .zip upload.")
    zip_max_uncompressed_bytes: int = option(8 * _GiB, "Largest total uncompressed size of a .zip's entries.")
    zip_max_ratio: float = option(200.0, "Largest compression ratio of one .zip entry (zip-bomb guard).")
    min_free_disk_bytes: int = option(1 * _GiB, "Uploads are refused while the data disk has less free space.")


@dataclass
class ServiceSettings:
    """Settings of ``splatworks serve`` (embedded defaults: SQLite + local worker processes)."""

    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0 to accept other machines).")
    port: int = option(8000, "TCP port to listen on.")
    data_dir: Path = option(Path("data"), "Folder for job data and the database (relative to the current folder).")
    database_url: str = option("", "Job database URL; empty = sqlite:///{data_dir}/splatworks.db.")
    executor: str = option("local", "Where jobs run: 'local' worker processes on this machine, or 'ray' tasks on "
                                    "a Ray cluster (needs a postgresql:// database_url).", choices=("local", "ray"))
    # Cluster settings (executor 'ray'; see the README's "Running on a cluster").
    ray_address: str = option("", "Ray cluster address HEAD_IP:6379 for --executor ray (empty: RAY_ADDRESS or a "
                                  "cluster started on this machine).")
    ray_gpus_per_job: float = option(1.0, "GPUs each job's Ray task asks for (executor 'ray').")
    ray_cpus_per_cpu_stage: float = option(1.0, "CPUs the CPU-only stage task of a static job (ingest + SfM) asks "
                                                "Ray for; it holds no GPU (executor 'ray').")
    work_dir: str = option("", "Node-local folder where cluster stage tasks work (empty: the system temp folder); "
                               "what they make goes to the job storage (executor 'ray').")
    storage_url: str = option("", "Job storage for published checkpoints (served as results) and, on a cluster, "
                                  "uploads and stage outputs: empty = the jobs folder (a shared filesystem on a "
                                  "cluster), or s3://bucket/prefix[?endpoint_url=...].")
    heartbeat_seconds: float = option(5.0, "A running job's worker writes a heartbeat this often (executor 'ray').")
    heartbeat_timeout_seconds: float = option(60.0, "A running job whose heartbeat is older than this is requeued "
                                                    "as a new attempt (executor 'ray').")
    max_concurrent_jobs: int = option(2, "At most this many jobs run at once; the rest wait in order (PENDING).")
    api_token: str = option("", "If set, creating jobs and admin routes need 'Authorization: Bearer TOKEN'.")
    train_preset: str = option("default", "Training preset for new jobs (default, fast, or tiny for tests).")
    train_iterations: int | None = option(None, "Override the preset's training iterations (e.g. 30 for a test).")
    checkpoint_steps: tuple[int, ...] = option((), "Override the iterations at which results are published.")
    max_image_size: int = option(1600, "Longest image side used for SfM and training (pixels); larger are scaled.")
    video_frames: int = option(150, "Frames taken from an uploaded video (sampled evenly, blurriest dropped).")
    upload_check_workers: int = option(2, "Processes that decode and check uploaded files (at lower priority).")
    log_tail_lines: int = option(50, "Lines of the job log returned in status.log_tail.")
    cancel_grace_seconds: float = option(10.0, "A cancelled job's worker is killed if still running after this.")
    log_json: bool = option(True, "Write the service's own logs as one JSON object per line.")
    limits: UploadLimits = option(factory=UploadLimits, help="Upload limits.")

    # ---- derived ----------------------------------------------------------------------------------------------

    @property
    def jobs_dir(self) -> Path:
        return Path(self.data_dir) / "jobs"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(Path(self.data_dir) / 'splatworks.db').as_posix()}"

    def validate(self) -> "ServiceSettings":
        """Refuse unsafe values; returns self so it chains."""
        problems = []
        if not 1 <= self.max_concurrent_jobs <= 64:
            problems.append(f"max_concurrent_jobs={self.max_concurrent_jobs}: use 1..64 (each job needs a GPU "
                            "or CPU cores of its own).")
        if not 1 <= self.upload_check_workers <= 32:
            problems.append(f"upload_check_workers={self.upload_check_workers}: use 1..32.")
        if not 0 <= self.port <= 65535:
            problems.append(f"port={self.port}: use 0..65535.")
        if self.api_token and len(self.api_token) < 16:
            problems.append("api_token is shorter than 16 characters; use a long random token, e.g. the output "
                            "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
        url = self.resolved_database_url
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            problems.append(f"database_url={url!r}: use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB.")
        if self.executor == "ray" and url.startswith("sqlite:///"):
            problems.append("executor 'ray' runs jobs on other machines: they need a shared database, "
                            "--database-url postgresql://USER:PASSWORD@HOST:PORT/DB.")
        if self.executor == "ray" and not 0 < self.heartbeat_seconds * 3 <= self.heartbeat_timeout_seconds:
            problems.append("heartbeat_timeout_seconds must be at least 3 x heartbeat_seconds (and both positive).")
        if self.ray_cpus_per_cpu_stage <= 0:
            problems.append("ray_cpus_per_cpu_stage must be positive (SfM needs at least part of a CPU).")
        if self.train_iterations is not None and self.train_iterations < 1:
            problems.append("train_iterations must be at least 1 (or unset to use the preset).")
        lim = self.limits
        for name in ("max_files", "max_file_bytes", "max_total_bytes", "max_image_pixels", "zip_max_entries",
                     "zip_max_uncompressed_bytes", "max_video_bytes", "max_video_pixels"):
            if getattr(lim, name) <= 0:
                problems.append(f"limits.{name} must be positive.")
        if lim.zip_max_ratio < 1:
            problems.append("limits.zip_max_ratio must be at least 1.")
        if lim.min_images < 1:
            problems.append("limits.min_images must be at least 1.")
        if problems:
            raise UserError("invalid service settings:\n- " + "\n- ".join(problems))
        return self

    # ---- serialisation (settings travel to worker processes as JSON) ------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ServiceSettings":
        return from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "ServiceSettings":
        return dataclasses.replace(self, **changes)
