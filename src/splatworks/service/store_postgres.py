"""Job state in PostgreSQL: the same ``JobStore`` contract as the embedded SQLite store, for clusters.

Many processes on many machines share it: the API (status reads, the reconciler) and every worker (claims,
progress, heartbeats). Three rules keep it consistent without any in-memory state:

- **Claiming** is row-level: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a PENDING row no other claimer holds,
  and the same statement moves it to RUNNING with ``attempt + 1``. Two claimers never get the same attempt.
- **Fencing**: every worker write names its attempt (``WHERE attempt = %s``); once the reconciler has requeued a
  job (its heartbeat stopped) and a new attempt claimed it, the old attempt's writes change nothing.
- **Heartbeats**: a worker bumps ``heartbeat_at`` (database clock, seconds since the epoch) every few seconds;
  the API's reconciler requeues RUNNING jobs whose heartbeat is older than a timeout (``requeue_stale``).

``job_attempts`` records where each attempt ran (Ray node id, host, pid) and how it ended: the evidence for
"which node ran it" that Ray's own task table does not keep once a node is gone.

URLs: ``postgresql://user:password@host:port/dbname`` (libpq syntax; ``postgres://`` is accepted too).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable

from splatworks.errors import UserError
from splatworks.service.store import (_COLUMNS, encode_fields, record_from_row, ERROR, PENDING, RUNNING, STATUSES,
                                      JobRecord, JobStore)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    pub_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT, substage TEXT,
    step BIGINT NOT NULL DEFAULT 0, total BIGINT NOT NULL DEFAULT 0,
    percent DOUBLE PRECISION NOT NULL DEFAULT 0, eta_seconds DOUBLE PRECISION, latest_checkpoint BIGINT,
    metrics TEXT NOT NULL DEFAULT '{}', error TEXT,
    cancelled BOOLEAN NOT NULL DEFAULT FALSE, cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    owner TEXT, input_kind TEXT NOT NULL DEFAULT 'images', input_files BIGINT NOT NULL DEFAULT 0,
    input_bytes BIGINT NOT NULL DEFAULT 0, config TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE TABLE IF NOT EXISTS job_logs (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs(job_id, id);
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    node TEXT, host TEXT, pid INTEGER,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    outcome TEXT,
    PRIMARY KEY (job_id, attempt)
);
"""

# Seconds since the epoch on the database's clock: every machine's heartbeat is compared on one clock.
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UserError("a postgresql:// database needs psycopg: pip install 'splatworks[cluster]'") from exc
    return psycopg


class PostgresJobStore(JobStore):
    """``JobStore`` on PostgreSQL: one autocommit connection per thread, schema created on first open."""

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = "postgresql://" + url[len("postgres://"):] if url.startswith("postgres://") else url
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._all_conns: list[Any] = []
        self._conns_lock = threading.Lock()
        try:
            with self._conn().transaction():
                # Several processes may open a fresh database at once: serialise the CREATEs.
                self._conn().execute("SELECT pg_advisory_xact_lock(71153)")
                self._conn().execute(_SCHEMA)
        except _psycopg().OperationalError as exc:
            raise UserError(f"cannot connect to the job database {self._redacted()}: {exc}; check that PostgreSQL "
                            "is running and the URL's host, port, user, password and database name") from exc

    def _redacted(self) -> str:
        head, at, tail = self.url.rpartition("@")
        return f"postgresql://***@{tail}" if at else self.url

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            psycopg = _psycopg()
            from psycopg.rows import dict_row

            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=int(max(1, self.connect_timeout)))
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    def _run(self, sql: str, args: Any = (), fetch: str = "") -> Any:
        """Execute one statement; on a broken connection (server restart, network blip) reconnect once."""
        psycopg = _psycopg()
        for retry in (0, 1):
            try:
                cur = self._conn().execute(sql, args)
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return cur.rowcount
            except psycopg.OperationalError:
                conn = getattr(self._local, "conn", None)
                if retry or conn is None or not conn.closed and not conn.broken:
                    raise
                self._local.conn = None
        raise AssertionError("unreachable")

    # ---- rows <-> records (same encoding as the SQLite store: JSON text, so both stores round-trip alike) ----

    @staticmethod
    def _record(row: dict[str, Any]) -> JobRecord:
        return record_from_row(row)

    @staticmethod
    def _encode(fields: dict[str, Any]) -> dict[str, Any]:
        return encode_fields(fields)  # PostgreSQL has real booleans

    # ---- JobStore ---------------------------------------------------------------------------------------------

    def create(self, job: JobRecord) -> JobRecord:
        now = time.time()
        job.created_at = job.created_at or now
        job.updated_at = now
        values = self._encode({k: getattr(job, k) for k in _COLUMNS})
        cols = ", ".join(values)
        marks = ", ".join("%s" for _ in values)
        row = self._run(f"INSERT INTO jobs ({cols}) VALUES ({marks}) RETURNING seq", list(values.values()), "one")
        job.seq = int(row["seq"])
        return job

    def get(self, job_id: str) -> JobRecord | None:
        row = self._run("SELECT * FROM jobs WHERE job_id = %s", (job_id,), "one")
        return self._record(row) if row else None

    def get_by_pub_key(self, pub_key: str) -> JobRecord | None:
        row = self._run("SELECT * FROM jobs WHERE pub_key = %s", (pub_key,), "one")
        return self._record(row) if row else None

    def list(self, job_ids: Iterable[str] = (), owner: str | None = None, limit: int = 200) -> list[JobRecord]:
        ids = list(dict.fromkeys(job_ids))[:limit]
        if not ids and not owner:
            return []
        rows = self._run("SELECT * FROM jobs WHERE job_id = ANY(%s) OR (%s::text IS NOT NULL AND owner = %s) "
                         "ORDER BY seq DESC LIMIT %s", (ids, owner, owner, limit), "all")
        return [self._record(r) for r in rows]

    def all(self) -> list[JobRecord]:
        return [self._record(r) for r in self._run("SELECT * FROM jobs ORDER BY seq", (), "all")]

    def counts(self) -> dict[str, int]:
        rows = self._run("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status", (), "all")
        out = {s: 0 for s in STATUSES}
        out.update({r["status"]: int(r["n"]) for r in rows})
        return out

    def _claim(self, where: str, args: tuple[Any, ...]) -> JobRecord | None:
        # The inner SELECT locks one PENDING row that no concurrent claimer has locked (SKIP LOCKED: claimers
        # never wait on each other); the UPDATE re-checks the status, so a row claimed meanwhile is not taken.
        row = self._run(
            f"UPDATE jobs SET status = %s, attempt = attempt + 1, started_at = COALESCE(started_at, {_NOW}), "
            f"updated_at = {_NOW}, heartbeat_at = {_NOW}, eta_seconds = NULL "
            f"WHERE seq = (SELECT seq FROM jobs WHERE status = %s {where} ORDER BY seq LIMIT 1 "
            f"FOR UPDATE SKIP LOCKED) AND status = %s RETURNING *", (RUNNING, PENDING, *args, PENDING), "one")
        return self._record(row) if row else None

    def claim_next(self) -> JobRecord | None:
        return self._claim("", ())

    def claim(self, job_id: str) -> JobRecord | None:
        """Claim this job if it is PENDING (a cluster task carries the id it was submitted for); else None."""
        return self._claim("AND job_id = %s", (job_id,))

    def update(self, job_id: str, attempt: int | None = None, **fields: Any) -> bool:
        fields.setdefault("updated_at", time.time())
        values = self._encode(fields)
        sets = ", ".join(f"{k} = %s" for k in values)
        sql, args = f"UPDATE jobs SET {sets} WHERE job_id = %s", [*values.values(), job_id]
        if attempt is not None:
            sql += " AND attempt = %s"
            args.append(attempt)
        return self._run(sql, args) > 0

    def requeue_running(self, reason: str) -> list[str]:
        """Every RUNNING job back to PENDING. Only for a single-machine setup: on a cluster other API processes'
        jobs are alive, so the reconciler uses ``requeue_stale`` instead."""
        rows = self._run(f"UPDATE jobs SET status = %s, eta_seconds = NULL, updated_at = {_NOW} "
                         "WHERE status = %s RETURNING job_id, seq", (PENDING, RUNNING), "all")
        ids = [r["job_id"] for r in sorted(rows, key=lambda r: r["seq"])]
        for job_id in ids:
            self.append_log(job_id, [reason])
        return ids

    def append_log(self, job_id: str, lines: Iterable[str]) -> None:
        now = time.time()
        rows = [(job_id, now, line) for line in lines]
        if rows:
            with self._conn().cursor() as cur:
                cur.executemany("INSERT INTO job_logs (job_id, time, line) VALUES (%s, %s, %s)", rows)

    def log_tail(self, job_id: str, n: int) -> list[str]:
        rows = self._run("SELECT line FROM job_logs WHERE job_id = %s ORDER BY id DESC LIMIT %s", (job_id, n), "all")
        return [r["line"] for r in reversed(rows)]

    def logs_after(self, job_id: str, after_id: int, limit: int = 200) -> list[tuple[int, str]]:
        rows = self._run("SELECT id, line FROM job_logs WHERE job_id = %s AND id > %s ORDER BY id LIMIT %s",
                         (job_id, after_id, limit), "all")
        return [(int(r["id"]), r["line"]) for r in rows]

    def delete(self, job_id: str) -> bool:
        n = self._run("DELETE FROM jobs WHERE job_id = %s", (job_id,))
        self._run("DELETE FROM job_logs WHERE job_id = %s", (job_id,))
        self._run("DELETE FROM job_attempts WHERE job_id = %s", (job_id,))
        return n > 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close_all(self) -> None:
        """Close every thread's connection (at shutdown)."""
        with self._conns_lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    # ---- cluster extras: heartbeats, attempts, stale-job requeue ---------------------------------------------

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        """Mark attempt ``attempt`` alive now; False if the job moved on (requeued, superseded, deleted, done)."""
        alive = self._run(f"UPDATE jobs SET heartbeat_at = {_NOW} WHERE job_id = %s AND attempt = %s "
                          "AND status = %s", (job_id, attempt, RUNNING)) > 0
        self._run(f"UPDATE job_attempts SET heartbeat_at = {_NOW} WHERE job_id = %s AND attempt = %s",
                  (job_id, attempt))
        return alive

    def record_attempt(self, job_id: str, attempt: int, node: str, host: str, pid: int) -> None:
        self._run(f"INSERT INTO job_attempts (job_id, attempt, node, host, pid, started_at, heartbeat_at) "
                  f"VALUES (%s, %s, %s, %s, %s, {_NOW}, {_NOW}) ON CONFLICT (job_id, attempt) DO UPDATE SET "
                  "node = EXCLUDED.node, host = EXCLUDED.host, pid = EXCLUDED.pid",
                  (job_id, attempt, node, host, pid))

    def end_attempt(self, job_id: str, attempt: int, outcome: str) -> None:
        self._run(f"UPDATE job_attempts SET ended_at = {_NOW}, outcome = %s WHERE job_id = %s AND attempt = %s",
                  (outcome, job_id, attempt))

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """Where and how each attempt of a job ran, oldest first."""
        return list(self._run("SELECT * FROM job_attempts WHERE job_id = %s ORDER BY attempt", (job_id,), "all"))

    def requeue_stale(self, timeout_seconds: float, reason: str) -> list[tuple[str, int]]:
        """RUNNING jobs whose heartbeat is older than ``timeout_seconds`` go back to PENDING (their queue place
        kept); the next claim makes them attempt + 1. Returns (job_id, stale attempt) pairs."""
        # A lost job the user asked to cancel ends as cancelled instead of running again.
        for r in self._run(f"UPDATE jobs SET status = %s, cancelled = TRUE, error = %s, finished_at = {_NOW}, "
                           f"updated_at = {_NOW}, eta_seconds = NULL WHERE status = %s AND cancel_requested "
                           f"AND COALESCE(heartbeat_at, 0) < {_NOW} - %s RETURNING job_id, attempt",
                           (ERROR, "cancelled by the user", RUNNING, float(timeout_seconds)), "all"):
            self.end_attempt(r["job_id"], int(r["attempt"]), "cancelled")
        rows = self._run(
            f"UPDATE jobs SET status = %s, eta_seconds = NULL, updated_at = {_NOW} WHERE status = %s "
            f"AND NOT cancel_requested AND COALESCE(heartbeat_at, 0) < {_NOW} - %s RETURNING job_id, attempt, seq",
            (PENDING, RUNNING, float(timeout_seconds)), "all")
        out = [(r["job_id"], int(r["attempt"])) for r in sorted(rows, key=lambda r: r["seq"])]
        for job_id, attempt in out:
            self.end_attempt(job_id, attempt, "lost")
            self.append_log(job_id, [reason.format(attempt=attempt)])
        return out

    def queue_position(self, job: JobRecord) -> int | None:
        """How many PENDING jobs are ahead of ``job`` (None unless it is PENDING)."""
        if job.status != PENDING:
            return None
        row = self._run("SELECT COUNT(*) AS n FROM jobs WHERE status = %s AND seq < %s", (PENDING, job.seq), "one")
        return int(row["n"])

    def pending_ids(self, limit: int = 1000) -> list[str]:
        rows = self._run("SELECT job_id FROM jobs WHERE status = %s ORDER BY seq LIMIT %s", (PENDING, limit), "all")
        return [r["job_id"] for r in rows]

    def db_time(self) -> float:
        return float(self._run(f"SELECT {_NOW} AS t", (), "one")["t"])


__all__ = ["PostgresJobStore"]
