"""The ray executor on real parts: a multi-node Ray cluster in this process tree (a head that runs no jobs, two
worker nodes each declaring one GPU), PostgreSQL from Debian's packages on loopback, a real ``splatworks serve
--executor ray`` process, the shared job folder as storage.

One job is the real static pipeline (upload -> SfM -> 30 training iterations -> .ply/.splat) through the API.
The failure scenarios use the ``probe`` kind (``splatworks.service.probe_job``): a deterministic synthetic
"training" that publishes real checkpoints through ``storage.publish_checkpoint`` and a real .ply result, so
"resumed from its last checkpoint" is checked exactly: the resumed run must end with the same numbers as an
uninterrupted one. The module takes about 1.5-2.5 minutes on the 2-core machine (most of it starting Ray).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from splatworks.service.cluster_testing import PostgresServer, ray_available, ray_cluster
from splatworks.service.jobs import JobPaths, new_id, write_json_atomic
from splatworks.service.probe_job import ProbeConfig, probe_reference, probe_result
from splatworks.service.settings import ServiceSettings
from splatworks.service.storage import checkpoints, latest_checkpoint, open_storage
from splatworks.service.store import DONE, PENDING, RUNNING, JobRecord, open_store
from splatworks.service.testing import ServerProcess, wait_for

pytestmark = pytest.mark.timeout(300)
HEARTBEAT, HEARTBEAT_TIMEOUT = 0.5, 5.0


@pytest.fixture(scope="module")
def pg():
    why = PostgresServer.available() or ray_available()
    if why:
        pytest.skip(why)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(pg):
    c, nodes = ray_cluster(workers=2, gpus_per_worker=1)
    yield c, nodes
    c.shutdown()


@pytest.fixture(scope="module")
def env(pg, cluster, tmp_path_factory):
    """(store, server, data_dir, cluster, nodes): one API process on the Ray cluster and the Postgres database."""
    c, nodes = cluster
    data_dir = tmp_path_factory.mktemp("cluster") / "data"
    url = pg.new_database("cluster")
    server = ServerProcess(data_dir, "--executor", "ray", "--database-url", url, "--ray-address", c.address,
                           "--heartbeat-seconds", str(HEARTBEAT), "--heartbeat-timeout-seconds",
                           str(HEARTBEAT_TIMEOUT), "--max-concurrent-jobs", "2",
                           "--train-preset", "tiny", "--train-iterations", "30")  # for the real static job
    try:
        server.start(timeout=120)
    except BaseException:
        server.kill()
        raise
    store = open_store(url)
    yield store, server, data_dir, c, nodes
    server.stop()
    store.close_all()


def submit(store, data_dir: Path, cfg: ProbeConfig) -> JobRecord:
    """Queue a probe job the way the upload route queues a job: job.json on disk, then the database row."""
    job_id, pub_key = new_id(), new_id()
    paths = JobPaths.of(Path(data_dir) / "jobs", job_id).make()
    write_json_atomic(paths.job_json, {"job_id": job_id, "pub_key": pub_key, "kind": "probe", "config": vars(cfg)})
    return store.create(JobRecord(job_id=job_id, pub_key=pub_key, kind="probe", config=vars(cfg)))


def wait_until(pred, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def check_result(data_dir: Path, job: JobRecord, cfg: ProbeConfig, client: httpx.Client) -> dict:
    """The job's .ply, downloaded through the API, holds exactly the uninterrupted run's numbers."""
    r = client.get(f"/recon/pub/{job.pub_key}/cloud.ply")
    assert r.status_code == 200, r.text
    head, _, body = r.content.partition(b"end_header\n")
    assert f"element vertex {cfg.points}".encode() in head
    np.testing.assert_array_equal(np.frombuffer(body, "<f4").reshape(-1, 3), probe_reference(cfg).astype(np.float32))
    return probe_result(Path(data_dir) / "jobs" / job.job_id)


def test_jobs_spread_over_both_nodes(env):
    store, server, data_dir, c, nodes = env
    cfg = ProbeConfig(steps=6, step_seconds=0.3, checkpoint_every=3, points=32)
    jobs = [submit(store, data_dir, cfg) for _ in range(2)]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for job in jobs:
            status = wait_for(client, job.job_id, timeout=90)
            assert status["status"] == "DONE", status
            check_result(data_dir, job, cfg, client)
    ran_on = {store.attempts(j.job_id)[0]["node"] for j in jobs}
    assert ran_on == {n.node_id for n in nodes}, "the two jobs should run on the two GPU nodes, one each"
    assert c.head_node.node_id not in ran_on


def test_real_static_job_runs_on_the_cluster(env, tmp_path):
    """The real pipeline (upload -> SfM -> training -> export) through the same API, as a Ray task on a GPU node."""
    import PIL.Image  # noqa: F401 - before pycolmap (see the conftest notes)

    from splatworks.service.jobs import ply_is_complete, splat_is_complete
    from splatworks.service.testing import multipart_files
    from splatworks.synthetic import make_static_scene

    store, server, data_dir, c, nodes = env
    make_static_scene(tmp_path / "scene", n_views=16, width=128, height=96, seed=3)
    views = sorted((tmp_path / "scene" / "images").glob("*.png"))[::2]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        created = client.post("/recon/jobs", files=multipart_files(views))
        assert created.status_code == 200, created.text
        job_id, pub_key = created.json()["job_id"], created.json()["pub_key"]
        status = wait_for(client, job_id, timeout=240)
        assert status["status"] == "DONE", status
        assert status["latest_checkpoint"] == 30
        for name, check in (("cloud.ply", ply_is_complete), ("scene.splat", splat_is_complete)):
            r = client.get(f"/recon/pub/{pub_key}/{name}")
            assert r.status_code == 200 and len(r.content) > 1000
            (tmp_path / name).write_bytes(r.content)
            assert check(tmp_path / name), name
    attempts = store.attempts(job_id)
    assert [a["outcome"] for a in attempts] == ["done"]
    assert attempts[0]["node"] in {n.node_id for n in nodes}


def test_duplicate_task_and_stale_attempt_are_harmless(pg, tmp_path):
    """A second task for a running job gets nothing; an attempt the reconciler gave up on while it still runs
    (a network partition, a frozen node) can neither write state nor publish over the newer attempt.

    The attempts are the real task body (``run_job_attempt``) run here by hand, on a database of their own,
    so that the test decides when the "reconciler" gives up on attempt 1.
    """
    from splatworks.service.ray_executor import run_job_attempt

    data_dir = tmp_path / "data"
    store = open_store(pg.new_database("dup"))
    settings = ServiceSettings(data_dir=data_dir, database_url=store.url, executor="ray", heartbeat_seconds=0.2,
                               heartbeat_timeout_seconds=0.6).to_json()
    cfg = ProbeConfig(steps=16, step_seconds=0.25, checkpoint_every=2, points=16)
    job = submit(store, data_dir, cfg)
    outcomes: dict[str, dict] = {}
    t1 = threading.Thread(target=lambda: outcomes.__setitem__("a1", run_job_attempt(settings, job.job_id)))
    t1.start()
    storage = open_storage("", data_dir / "jobs")
    wait_until(lambda: (cp := latest_checkpoint(storage, job.job_id)) and cp.step >= 4, 60, "attempt 1's checkpoint")
    assert run_job_attempt(settings, job.job_id)["outcome"] == "not-claimed"  # a duplicate task for attempt 1
    # The reconciler gives attempt 1 up (as after missed heartbeats) while it is in fact still running.
    assert store.requeue_stale(-1.0, "attempt {attempt} given up") == [(job.job_id, 1)]
    out2 = run_job_attempt(settings, job.job_id)
    t1.join(60)
    final = store.get(job.job_id)
    assert (final.status, final.attempt) == (DONE, 2)
    assert (outcomes["a1"]["outcome"], out2["outcome"]) == ("superseded", "done")
    pointers = {cp.attempt: cp.step for cp in checkpoints(storage, job.job_id)}
    assert latest_checkpoint(storage, job.job_id).attempt == 2 and pointers[2] == cfg.steps
    assert pointers[1] < cfg.steps, "the stale attempt must not have published past its fence"
    result = probe_result(data_dir / "jobs" / job.job_id)
    assert result["attempt"] == 2 and result["resumed_from"] >= 4
    assert [(a["attempt"], a["outcome"]) for a in store.attempts(job.job_id)] == [(1, "superseded"), (2, "done")]
    assert any("superseded" in line for line in store.log_tail(job.job_id, 50))
    store.close_all()


def test_api_killed_and_restarted_loses_no_job(env):
    store, server, data_dir, *_ = env
    cfg = ProbeConfig(steps=12, step_seconds=0.3, checkpoint_every=3, points=32)
    jobs = [submit(store, data_dir, cfg) for _ in range(3)]
    storage = open_storage("", Path(data_dir) / "jobs")
    wait_until(lambda: any((cp := latest_checkpoint(storage, j.job_id)) and cp.step >= 3 for j in jobs), 90,
               "a first checkpoint")
    server.kill(signal.SIGKILL)  # the API dies mid-training; Ray ends the tasks it owned
    assert {store.get(j.job_id).status for j in jobs} <= {PENDING, RUNNING}
    server.start(timeout=120)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        results = []
        for job in jobs:
            status = wait_for(client, job.job_id, timeout=120)
            assert status["status"] == "DONE", status
            results.append(check_result(data_dir, job, cfg, client))
    resumed = [r for r in results if r["attempt"] >= 2]
    assert resumed, "at least one job was running when the API died and must have resumed as a new attempt"
    assert any(r["resumed_from"] >= 3 for r in resumed), results


def test_cancel_a_running_cluster_job(env):
    store, server, data_dir, *_ = env
    job = submit(store, data_dir, ProbeConfig(steps=200, step_seconds=0.2, points=8))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        wait_for(client, job.job_id, done=lambda s: s["status"] == "RUNNING", timeout=60)
        assert client.post(f"/recon/jobs/{job.job_id}/cancel").status_code == 200
        status = wait_for(client, job.job_id, timeout=30)
    assert status["status"] == "ERROR" and status["cancelled"] is True, status
    assert store.attempts(job.job_id)[-1]["outcome"] == "cancelled"
    time.sleep(HEARTBEAT_TIMEOUT + 1)  # the reconciler must not bring a cancelled job back
    assert store.get(job.job_id).status == "ERROR"


def test_worker_node_killed_mid_training_continues_on_other_node(env):
    store, server, data_dir, c, nodes = env
    cfg = ProbeConfig(steps=24, step_seconds=0.3, checkpoint_every=4, points=32)
    job = submit(store, data_dir, cfg)
    storage = open_storage("", Path(data_dir) / "jobs")
    wait_until(lambda: (cp := latest_checkpoint(storage, job.job_id)) and cp.step >= 8, 90, "checkpoint at step 8")
    first = store.attempts(job.job_id)[-1]
    victim = next(n for n in nodes if n.node_id == first["node"])
    c.remove_node(victim, allow_graceful=False)  # SIGKILL the node's raylet and its workers
    killed_at = time.time()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        status = wait_for(client, job.job_id, timeout=120)
        assert status["status"] == "DONE", status
        result = check_result(data_dir, job, cfg, client)
    attempts = store.attempts(job.job_id)
    last = attempts[-1]
    survivor = next(n for n in nodes if n is not victim)
    assert (attempts[0]["attempt"], attempts[0]["node"], attempts[0]["outcome"]) == (first["attempt"],
                                                                                      victim.node_id, "lost")
    assert last["attempt"] == first["attempt"] + 1 and last["node"] == survivor.node_id and last["outcome"] == "done"
    assert result["attempt"] == last["attempt"] and result["resumed_from"] >= 8
    print(f"node killed -> job DONE on the other node in {time.time() - killed_at:.1f} s "
          f"(heartbeat timeout {HEARTBEAT_TIMEOUT} s), resumed from step {result['resumed_from']}")
