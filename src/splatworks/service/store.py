"""Job state in a database: the single source of truth about every job (nothing lives only in memory).

``JobStore`` is the interface (a server database can implement it later); ``SqliteJobStore`` is the embedded
default. The API process and the worker processes open the same database: SQLite in WAL mode lets readers
(status polls) run while a worker writes progress.

Attempts: each time a job starts running its ``attempt`` grows by one, and every progress/finish write names
the attempt it belongs to, so a stale worker (one the server already gave up on) can never overwrite a newer
attempt's state.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from splatworks.errors import UserError

PENDING, RUNNING, DONE, ERROR = "PENDING", "RUNNING", "DONE", "ERROR"
STATUSES = (PENDING, RUNNING, DONE, ERROR)


@dataclass
class JobRecord:
    """One row of the jobs table (internal model; the routes build their public responses from it)."""

    job_id: str
    pub_key: str
    kind: str = "static"
    status: str = PENDING
    stage: str | None = None       # sfm | training | exporting (None while queued)
    substage: str | None = None    # finer: ingest, sfm.extract, sfm.match, ...
    step: int = 0
    total: int = 0
    percent: float = 0.0
    eta_seconds: float | None = None
    latest_checkpoint: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancelled: bool = False
    cancel_requested: bool = False
    owner: str | None = None       # sha256 of the client token that created it (for "list my jobs")
    input_kind: str = "images"     # images | zip | video
    input_files: int = 0
    input_bytes: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    seq: int = 0                   # queue order
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    heartbeat_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in (DONE, ERROR)


_JSON_FIELDS = ("metrics", "config")
_BOOL_FIELDS = ("cancelled", "cancel_requested")
_COLUMNS = [f for f in JobRecord.__dataclass_fields__ if f != "seq"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    pub_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT, substage TEXT,
    step INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
    percent REAL NOT NULL DEFAULT 0, eta_seconds REAL, latest_checkpoint INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}', error TEXT,
    cancelled INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT, input_kind TEXT NOT NULL DEFAULT 'images', input_files INTEGER NOT NULL DEFAULT 0,
    input_bytes INTEGER NOT NULL DEFAULT 0, config TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL, heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE TABLE IF NOT EXISTS job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    time REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs(job_id, id);
"""


def record_from_row(row: dict[str, Any]) -> JobRecord:
    """A stored row (JSON text columns, 0/1 or bool flags) as a ``JobRecord``; shared by every store."""
    d = dict(row)
    for k in _JSON_FIELDS:
        d[k] = json.loads(d[k] or "{}")
    for k in _BOOL_FIELDS:
        d[k] = bool(d[k])
    return JobRecord(**d)


def encode_fields(fields: dict[str, Any], as_bool: Any = bool) -> dict[str, Any]:
    """Job fields as column values (JSON text for dicts; ``as_bool`` for flags); unknown fields are refused."""
    out = {}
    for k, v in fields.items():
        if k not in JobRecord.__dataclass_fields__ or k == "seq":
            raise ValueError(f"unknown job field {k!r}")
        if k in _JSON_FIELDS:
            v = json.dumps(v, sort_keys=True, default=float)
        elif k in _BOOL_FIELDS:
            v = as_bool(v)
        out[k] = v
    return out


class JobStore(ABC):
    """What the service needs from a job database. All methods are safe to call from any thread/process."""

    @abstractmethod
    def create(self, job: JobRecord) -> JobRecord: ...

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def get_by_pub_key(self, pub_key: str) -> JobRecord | None: ...

    @abstractmethod
    def list(self, job_ids: Iterable[str] = (), owner: str | None = None, limit: int = 200) -> list[JobRecord]: ...

    @abstractmethod
    def counts(self) -> dict[str, int]: ...

    @abstractmethod
    def claim_next(self) -> JobRecord | None:
        """Atomically move the oldest PENDING job to RUNNING (attempt + 1) and return it, or None."""

    @abstractmethod
    def update(self, job_id: str, attempt: int | None = None, **fields: Any) -> bool:
        """Set fields (only if the job is still on ``attempt`` when given); True if a row changed."""

    @abstractmethod
    def requeue_running(self, reason: str) -> list[str]:
        """Jobs left RUNNING by a stopped server go back to PENDING (same queue place); returns their ids."""

    @abstractmethod
    def append_log(self, job_id: str, lines: Iterable[str]) -> None: ...

    @abstractmethod
    def log_tail(self, job_id: str, n: int) -> list[str]: ...

    @abstractmethod
    def logs_after(self, job_id: str, after_id: int, limit: int = 200) -> list[tuple[int, str]]: ...

    @abstractmethod
    def delete(self, job_id: str) -> bool: ...

    def close(self) -> None:  # pragma: no cover - default no-op
        pass


def open_store(url: str) -> JobStore:
    """The store for a database URL (``sqlite:///path``)."""
    if url.startswith("sqlite:///"):
        return SqliteJobStore(Path(url[len("sqlite:///"):]))
    if url.startswith(("postgresql://", "postgres://")):
        from splatworks.service.store_postgres import PostgresJobStore

        return PostgresJobStore(url)
    raise UserError(f"database URL {url!r} is not supported; use sqlite:///PATH or postgresql://...")


class SqliteJobStore(JobStore):
    """The embedded store: one SQLite file in WAL mode, one connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    # ---- rows <-> records -------------------------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        return record_from_row(dict(row))

    @staticmethod
    def _encode(fields: dict[str, Any]) -> dict[str, Any]:
        return encode_fields(fields, as_bool=lambda v: int(bool(v)))  # SQLite has no boolean type

    # ---- JobStore ---------------------------------------------------------------------------------------------

    def create(self, job: JobRecord) -> JobRecord:
        now = time.time()
        job.created_at = job.created_at or now
        job.updated_at = now
        values = self._encode({k: getattr(job, k) for k in _COLUMNS})
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cur = self._conn().execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", list(values.values()))
        job.seq = int(cur.lastrowid or 0)
        return job

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._record(row) if row else None

    def get_by_pub_key(self, pub_key: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE pub_key = ?", (pub_key,)).fetchone()
        return self._record(row) if row else None

    def list(self, job_ids: Iterable[str] = (), owner: str | None = None, limit: int = 200) -> list[JobRecord]:
        ids = list(dict.fromkeys(job_ids))[:limit]
        clauses, args = [], []
        if ids:
            clauses.append(f"job_id IN ({', '.join('?' for _ in ids)})")
            args += ids
        if owner:
            clauses.append("owner = ?")
            args.append(owner)
        if not clauses:
            return []
        sql = f"SELECT * FROM jobs WHERE {' OR '.join(clauses)} ORDER BY seq DESC LIMIT ?"
        return [self._record(r) for r in self._conn().execute(sql, [*args, limit])]

    def all(self) -> list[JobRecord]:
        return [self._record(r) for r in self._conn().execute("SELECT * FROM jobs ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = {s: 0 for s in STATUSES}
        out.update({r[0]: r[1] for r in rows})
        return out

    def claim_next(self) -> JobRecord | None:
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")  # one claimer at a time, across processes
        try:
            row = conn.execute("SELECT seq FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (PENDING,)).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return None
            conn.execute("UPDATE jobs SET status = ?, attempt = attempt + 1, started_at = COALESCE(started_at, ?), "
                         "updated_at = ?, heartbeat_at = ?, eta_seconds = NULL WHERE seq = ?",
                         (RUNNING, now, now, now, row[0]))
            job = self._record(conn.execute("SELECT * FROM jobs WHERE seq = ?", (row[0],)).fetchone())
            conn.execute("COMMIT")
            return job
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def update(self, job_id: str, attempt: int | None = None, **fields: Any) -> bool:
        fields.setdefault("updated_at", time.time())
        values = self._encode(fields)
        sets = ", ".join(f"{k} = ?" for k in values)
        sql, args = f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id]
        if attempt is not None:
            sql += " AND attempt = ?"
            args.append(attempt)
        return self._conn().execute(sql, args).rowcount > 0

    def requeue_running(self, reason: str) -> list[str]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [r[0] for r in conn.execute("SELECT job_id FROM jobs WHERE status = ? ORDER BY seq", (RUNNING,))]
            conn.execute("UPDATE jobs SET status = ?, eta_seconds = NULL, updated_at = ? WHERE status = ?",
                         (PENDING, time.time(), RUNNING))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for job_id in ids:
            self.append_log(job_id, [reason])
        return ids

    def append_log(self, job_id: str, lines: Iterable[str]) -> None:
        now = time.time()
        rows = [(job_id, now, line) for line in lines]
        if rows:
            self._conn().executemany("INSERT INTO job_logs (job_id, time, line) VALUES (?, ?, ?)", rows)

    def log_tail(self, job_id: str, n: int) -> list[str]:
        rows = self._conn().execute("SELECT line FROM job_logs WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                                    (job_id, n)).fetchall()
        return [r[0] for r in reversed(rows)]

    def logs_after(self, job_id: str, after_id: int, limit: int = 200) -> list[tuple[int, str]]:
        rows = self._conn().execute("SELECT id, line FROM job_logs WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                                    (job_id, after_id, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def delete(self, job_id: str) -> bool:
        conn = self._conn()
        n = conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount
        conn.execute("DELETE FROM job_logs WHERE job_id = ?", (job_id,))
        return n > 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
