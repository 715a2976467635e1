"""PostgresJobStore against a real PostgreSQL (Debian's package, started on loopback by the fixture).

Same contract as the SQLite store, plus what a cluster needs: concurrent claimers never share a job
(FOR UPDATE SKIP LOCKED), every write is fenced by the attempt number, heartbeats, stale-job requeue.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from splatworks.service.cluster_testing import PostgresServer
from splatworks.service.store import DONE, PENDING, RUNNING, JobRecord, open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    why = PostgresServer.available()
    if why:
        pytest.skip(why)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def store(pg):
    s = open_store(pg.new_database("t_" + uuid.uuid4().hex[:12]))
    yield s
    s.close_all()


def _job(**kw) -> JobRecord:
    return JobRecord(job_id=uuid.uuid4().hex + "abcd", pub_key=uuid.uuid4().hex + "efgh", **kw)


def test_round_trip_and_queue_order(store):
    a = store.create(_job(config={"iterations": 30}, metrics={"psnr": 21.5}, owner="o1"))
    b = store.create(_job(owner="o1"))
    got = store.get(a.job_id)
    assert got.config == {"iterations": 30} and got.metrics == {"psnr": 21.5} and got.status == PENDING
    assert store.get_by_pub_key(b.pub_key).job_id == b.job_id
    assert [j.job_id for j in store.list(owner="o1")] == [b.job_id, a.job_id]  # newest first
    assert [j.job_id for j in store.list([a.job_id])] == [a.job_id]
    assert store.counts() == {"PENDING": 2, "RUNNING": 0, "DONE": 0, "ERROR": 0}
    first = store.claim_next()
    assert first.job_id == a.job_id and first.status == RUNNING and first.attempt == 1
    assert store.claim(a.job_id) is None  # already RUNNING: a duplicate task gets nothing
    store.append_log(a.job_id, ["one", "two", "three"])
    assert store.log_tail(a.job_id, 2) == ["two", "three"]
    assert [line for _, line in store.logs_after(a.job_id, 0)] == ["one", "two", "three"]
    assert store.delete(b.job_id) and store.get(b.job_id) is None


def test_concurrent_claimers_never_share_a_job(pg, store):
    ids = [store.create(_job()).job_id for _ in range(30)]
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    url = store.url

    def claimer() -> None:
        s = open_store(url)  # its own connection, as on another machine
        while (job := s.claim_next()) is not None:
            with lock:
                claimed.append((job.job_id, job.attempt))
        s.close()

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _ in claimed) == sorted(ids)  # each job exactly once
    assert {a for _, a in claimed} == {1}


def test_stale_attempt_cannot_overwrite_newer(store):
    job = store.create(_job())
    one = store.claim(job.job_id)
    assert store.update(job.job_id, attempt=1, step=5, percent=30.0)
    store.update(job.job_id, heartbeat_at=time.time() - 100)  # attempt 1's node went silent
    assert store.requeue_stale(10.0, "lost attempt {attempt}") == [(job.job_id, 1)]
    assert store.get(job.job_id).status == PENDING
    two = store.claim(job.job_id)
    assert (one.attempt, two.attempt) == (1, 2)
    # The old attempt wakes up: none of its writes land.
    assert not store.update(job.job_id, attempt=1, status=DONE, step=99)
    assert not store.heartbeat(job.job_id, 1)
    assert store.heartbeat(job.job_id, 2)
    got = store.get(job.job_id)
    assert (got.status, got.attempt, got.step) == (RUNNING, 2, 5)
    assert "lost attempt 1" in store.log_tail(job.job_id, 5)
    # A fresh heartbeat keeps a job: nothing is requeued.
    assert store.requeue_stale(10.0, "x") == []


def test_attempt_records(store):
    job = store.create(_job())
    store.claim(job.job_id)
    store.record_attempt(job.job_id, 1, "node-a", "host", 123)
    store.end_attempt(job.job_id, 1, "lost")
    rows = store.attempts(job.job_id)
    assert [(r["attempt"], r["node"], r["outcome"]) for r in rows] == [(1, "node-a", "lost")]
    assert abs(store.db_time() - time.time()) < 5


def test_worker_command_checks_database_and_storage(pg, tmp_path):
    """`splatworks worker --check-only`: the checks a GPU machine runs before it joins the Ray cluster."""
    import subprocess
    import sys

    url = pg.new_database("worker_check")
    cmd = [sys.executable, "-m", "splatworks", "worker", "--address", "127.0.0.1:6379", "--check-only",
           "--data-dir", str(tmp_path / "data")]
    ok = subprocess.run([*cmd, "--database-url", url], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "database: ok (0 jobs)" in ok.stdout and f"storage: ok ({tmp_path / 'data' / 'jobs'})" in ok.stdout
    bad_port = url.replace(f":{pg.port}/", ":1/")
    bad = subprocess.run([*cmd, "--database-url", bad_port], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "cannot connect to the job database" in bad.stderr + bad.stdout
    assert "check that PostgreSQL is running" in bad.stderr + bad.stdout
