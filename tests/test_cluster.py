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

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from splatworks.service.cluster_testing import S3_TEST_ENV, PostgresServer, S3Server, ray_available, ray_cluster
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
    # Ray's worker processes inherit this environment: the S3 test server's (dummy) credentials must be in it.
    os.environ.update({k: os.environ.get(k, v) for k, v in S3_TEST_ENV.items()})
    # Two CPUs per node: a CPU-only SfM task and another job's GPU task can share a node.
    c, nodes = ray_cluster(workers=2, gpus_per_worker=1, cpus_per_worker=2)
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


def submit(store, data_dir: Path, cfg: ProbeConfig, kind: str = "probe") -> JobRecord:
    """Queue a probe job the way the upload route queues a job: job.json on disk, then the database row."""
    job_id, pub_key = new_id(), new_id()
    paths = JobPaths.of(Path(data_dir) / "jobs", job_id).make()
    write_json_atomic(paths.job_json, {"job_id": job_id, "pub_key": pub_key, "kind": kind, "config": vars(cfg)})
    return store.create(JobRecord(job_id=job_id, pub_key=pub_key, kind=kind, config=vars(cfg)))


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


def stage_placements(store, job_id: str) -> dict[str, tuple[list[str], dict[str, float]]]:
    """stage name -> (GPU ids Ray assigned to its task, the task's resources), from the job log."""
    out = {}
    for line in store.log_tail(job_id, 1000):
        m = re.search(r"stage (\w+) placement: gpu_ids=(\[.*?\]) resources=(\{.*\})", line)
        if m:
            out[m.group(1)] = (json.loads(m.group(2)), json.loads(m.group(3)))
    return out


def run_static_job_through_api(server, store, tmp_path: Path, iterations: int) -> tuple[str, str]:
    """Upload 8 synthetic photos, wait for DONE, check the downloads; returns (job_id, pub_key)."""
    import PIL.Image  # noqa: F401 - before pycolmap (see the conftest notes)

    from splatworks.service.jobs import ply_is_complete, splat_is_complete
    from splatworks.service.testing import multipart_files
    from splatworks.synthetic import make_static_scene

    make_static_scene(tmp_path / "scene", n_views=16, width=128, height=96, seed=3)
    views = sorted((tmp_path / "scene" / "images").glob("*.png"))[::2]
    t0 = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        created = client.post("/recon/jobs", files=multipart_files(views))
        assert created.status_code == 200, created.text
        job_id, pub_key = created.json()["job_id"], created.json()["pub_key"]
        status = wait_for(client, job_id, timeout=240)
        assert status["status"] == "DONE", status
        assert status["latest_checkpoint"] == iterations
        print(f"static job, {iterations} iterations: upload -> DONE in {time.monotonic() - t0:.1f} s")
        for name, check in (("cloud.ply", ply_is_complete), ("scene.splat", splat_is_complete)):
            r = client.get(f"/recon/pub/{pub_key}/{name}")
            assert r.status_code == 200 and len(r.content) > 1000
            assert int(r.headers["x-splatworks-iteration"]) == iterations
            (tmp_path / name).write_bytes(r.content)
            assert check(tmp_path / name), name
    return job_id, pub_key


def check_stages_ran_apart(store, job_id: str, nodes) -> None:
    """SfM ran as a task holding no GPU, training as a task holding one, each on a GPU node of the cluster."""
    placed = stage_placements(store, job_id)
    assert set(placed) == {"prepare", "train"}, placed
    (sfm_gpus, sfm_res), (train_gpus, train_res) = placed["prepare"], placed["train"]
    assert sfm_gpus == [] and sfm_res.get("GPU", 0) == 0 and sfm_res.get("CPU", 0) >= 1, placed
    assert len(train_gpus) == 1 and train_res.get("GPU") == 1.0, placed
    attempts = store.attempts(job_id)
    assert [a["outcome"] for a in attempts] == ["done"]
    assert attempts[0]["node"] in {n.node_id for n in nodes}
    log = "\n".join(store.log_tail(job_id, 1000))
    assert "restored the prepare stage's output from storage" in log  # SfM reached training through storage
    queued = re.search(r"stage train \(2/2\) started on .* after ([0-9.]+) s queued", log)
    assert queued, log
    print(f"SfM task end -> training task start: {float(queued.group(1)):.2f} s")


def test_real_static_job_runs_on_the_cluster(env, tmp_path):
    """The real pipeline (upload -> SfM -> training -> export) through the same API: SfM as a CPU-only Ray task,
    training as a GPU task; the stages meet, and the results are served, through the shared job folder storage."""
    store, server, data_dir, c, nodes = env
    job_id, pub_key = run_static_job_through_api(server, store, tmp_path, iterations=30)
    check_stages_ran_apart(store, job_id, nodes)
    storage = open_storage("", Path(data_dir) / "jobs")
    cp = latest_checkpoint(storage, job_id)
    assert (cp.attempt, cp.step) == (1, 30)
    assert set(cp.files) == {"point_cloud.ply", "scene.splat", "trainer_state.pt"}
    assert (tmp_path / "cloud.ply").read_bytes() == storage.read_bytes(f"{cp.prefix}/point_cloud.ply")
    # No stage worked in the shared job folder: SfM output and checkpoints exist only as published copies.
    job_dir = Path(data_dir) / "jobs" / job_id
    assert not (job_dir / "colmap" / "scene.json").exists() and not (job_dir / "gs_output" / "point_cloud").exists()
    sfm = latest_checkpoint(storage, job_id, series="prepare")
    assert sfm.attempt == 1 and "colmap/scene.json" in sfm.files
    assert any(n.startswith("colmap/images/") for n in sfm.files)  # the undistorted images training reads
    assert not any(n.startswith(("colmap/input/", "colmap/database.db")) for n in sfm.files)  # not needed later
    with httpx.Client(base_url=server.url, timeout=30) as client:
        info = client.get(f"/recon/pub/{pub_key}/info").json()
    assert info["files"]["ply"] and info["start_camera"], info


@pytest.fixture(scope="module")
def s3_env(pg, cluster, tmp_path_factory):
    """(store, server, data_dir, storage): a second API process on the same cluster whose job storage is a bucket
    of a local S3-compatible server process (moto): nothing a job makes goes through a shared folder."""
    why = S3Server.available()
    if why:
        pytest.skip(why)
    c, _ = cluster
    s3 = S3Server().start()
    url = s3.make_bucket("splatworks-cluster")
    data_dir = tmp_path_factory.mktemp("cluster-s3") / "data"
    db = pg.new_database("cluster_s3")
    server = ServerProcess(data_dir, "--executor", "ray", "--database-url", db, "--ray-address", c.address,
                           "--storage-url", url, "--heartbeat-seconds", str(HEARTBEAT),
                           "--heartbeat-timeout-seconds", str(HEARTBEAT_TIMEOUT), "--train-preset", "tiny",
                           "--train-iterations", "8", env=s3.env)
    try:
        server.start(timeout=120)
    except BaseException:
        server.kill()
        s3.stop()
        raise
    store = open_store(db)
    yield store, server, data_dir, open_storage(url)
    server.stop()
    store.close_all()
    s3.stop()


def test_static_job_with_s3_storage(s3_env, cluster, tmp_path):
    """With --storage-url s3://...: the upload, the SfM output and every checkpoint cross between the API and the
    stage tasks through the bucket; the public routes serve the newest published checkpoint from it."""
    store, server, data_dir, storage = s3_env
    _, nodes = cluster
    job_id, pub_key = run_static_job_through_api(server, store, tmp_path, iterations=8)
    check_stages_ran_apart(store, job_id, nodes)
    cp = latest_checkpoint(storage, job_id)
    assert (cp.attempt, cp.step) == (1, 8) and set(cp.files) == {"point_cloud.ply", "scene.splat", "trainer_state.pt"}
    assert storage.fs is not None  # a bucket, not a folder
    for name, file in (("cloud.ply", "point_cloud.ply"), ("scene.splat", "scene.splat")):
        assert (tmp_path / name).read_bytes() == storage.read_bytes(f"{cp.prefix}/{file}")
    # Older checkpoints (iterations 2, 4) were pruned; 6 stays for a download that may still be running.
    steps = [k.rsplit("-", 1)[-1] for k in storage.list(f"{job_id}/checkpoints/attempt-000001")]
    assert [int(s) for s in steps] == [6, 8]
    # The API machine holds only the upload: SfM and training worked on the nodes, their output is in the bucket.
    job_dir = Path(data_dir) / "jobs" / job_id
    assert not (job_dir / "colmap").exists() or not any((job_dir / "colmap").iterdir())
    assert not (job_dir / "gs_output" / "point_cloud").exists()
    assert latest_checkpoint(storage, job_id, series="prepare").attempt == 1
    assert storage.exists(f"{job_id}/upload.manifest.json")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        info = client.get(f"/recon/pub/{pub_key}/info").json()
    assert info["files"]["ply"] and info["files"]["splat"] and info["latest_checkpoint"] == 8
    assert info["start_camera"], "the viewer's first camera comes from the SfM scene published in the bucket"
    # Deleting the job deletes its objects in the bucket too (its upload, stage outputs and checkpoints).
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.delete(f"/recon/jobs/{job_id}").json()["deleted"] is True
        assert client.get(f"/recon/pub/{pub_key}/scene.splat").status_code == 404
    assert not storage.exists(f"{job_id}/upload.manifest.json") and not storage.list(f"{job_id}/checkpoints")


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
    time.sleep(0.5)  # a publication whose fence check passed just before lands now; none can start after it
    given_up_at = latest_checkpoint(storage, job.job_id, max_attempt=1).step
    out2 = run_job_attempt(settings, job.job_id)
    t1.join(60)
    final = store.get(job.job_id)
    assert (final.status, final.attempt) == (DONE, 2)
    assert (outcomes["a1"]["outcome"], out2["outcome"]) == ("superseded", "done")
    pointers = {cp.attempt: cp.step for cp in checkpoints(storage, job.job_id)}
    assert latest_checkpoint(storage, job.job_id).attempt == 2 and pointers[2] == cfg.steps
    # Attempt 2's later checkpoints pruned attempt 1's away; its log says what it managed to publish.
    published_by_1 = [int(m.group(1)) for line in store.log_tail(job.job_id, 500)
                      if (m := re.search(r"checkpoint published: step (\d+) \(attempt 1\)", line))]
    assert published_by_1 and max(published_by_1) <= given_up_at < cfg.steps, \
        "the stale attempt must not have published past its fence"
    assert 1 not in pointers or pointers[1] == given_up_at
    result = probe_result(data_dir / "jobs" / job.job_id)
    assert result["attempt"] == 2 and result["resumed_from"] >= 4
    assert [(a["attempt"], a["outcome"]) for a in store.attempts(job.job_id)] == [(1, "superseded"), (2, "done")]
    assert any("superseded" in line for line in store.log_tail(job.job_id, 50))
    store.close_all()


def test_stale_attempt_cannot_publish_its_sfm_over_a_newer_one(pg, tmp_path):
    """Two-stage jobs by hand (the real task bodies): attempt 1 is given up during its CPU stage while it still
    runs; attempt 2 makes and publishes its own stage output and finishes. Attempt 1 publishes nothing, and the
    training stage worked on attempt 2's output."""
    from splatworks.service.ray_executor import run_job_attempt, run_job_stage

    data_dir = tmp_path / "data"
    store = open_store(pg.new_database("stale_sfm"))
    settings = ServiceSettings(data_dir=data_dir, database_url=store.url, executor="ray", heartbeat_seconds=0.2,
                               heartbeat_timeout_seconds=0.6).to_json()
    cfg = ProbeConfig(steps=4, step_seconds=0.0, checkpoint_every=2, points=16, prepare_seconds=2.0)
    job = submit(store, data_dir, cfg, kind="probe-staged")
    outcomes: dict[str, dict] = {}
    t1 = threading.Thread(target=lambda: outcomes.__setitem__("a1", run_job_stage(settings, job.job_id, 0, None)))
    t1.start()
    wait_until(lambda: (j := store.get(job.job_id)).status == RUNNING and j.substage == "sfm", 30, "attempt 1's SfM")
    assert store.requeue_stale(-1.0, "attempt {attempt} given up") == [(job.job_id, 1)]
    out2 = run_job_attempt(settings, job.job_id)
    t1.join(30)
    assert (outcomes["a1"]["outcome"], out2["outcome"], out2["attempt"]) == ("superseded", "done", 2)
    storage = open_storage("", data_dir / "jobs")
    assert [cp.attempt for cp in checkpoints(storage, job.job_id, series="prepare")] == [2]
    result = probe_result(data_dir / "jobs" / job.job_id)
    assert (result["attempt"], result["scene_attempt"]) == (2, 2)
    # A late training task of attempt 1 (e.g. submitted before the API died) is turned away.
    assert run_job_stage(settings, job.job_id, 1, 1)["outcome"] == "not-claimed"
    store.close_all()


def test_staged_job_lost_in_either_stage_resumes(env):
    """A job shaped like a static one (a CPU stage, then a GPU stage): its worker killed during the CPU stage,
    then its next attempt's worker killed during training; each time the reconciler requeues it, and the last
    attempt restores the published stage output and resumes from the published checkpoint."""
    store, server, data_dir, *_ = env
    cfg = ProbeConfig(steps=12, step_seconds=0.3, checkpoint_every=3, points=32, prepare_seconds=3.0)
    job = submit(store, data_dir, cfg, kind="probe-staged")
    storage = open_storage("", Path(data_dir) / "jobs")

    def running_stage(attempt: int, stage: str):
        placed = stage_placements(store, job.job_id)
        rows = store.attempts(job.job_id)
        return stage in placed and rows and rows[-1]["attempt"] == attempt and rows[-1]

    row = wait_until(lambda: running_stage(1, "prepare"), 60, "attempt 1's CPU stage")
    assert stage_placements(store, job.job_id)["prepare"][0] == []  # no GPU held during the CPU stage
    os.kill(row["pid"], signal.SIGKILL)  # the worker dies mid-SfM
    wait_until(lambda: (cp := latest_checkpoint(storage, job.job_id)) and cp.attempt == 2 and cp.step >= 3, 90,
               "attempt 2's first training checkpoint")
    row = store.attempts(job.job_id)[-1]
    assert row["attempt"] == 2 and stage_placements(store, job.job_id)["train"][0] != []
    os.kill(row["pid"], signal.SIGKILL)  # the worker dies mid-training
    with httpx.Client(base_url=server.url, timeout=10) as client:
        status = wait_for(client, job.job_id, timeout=90)
        assert status["status"] == "DONE", status
        result = check_result(data_dir, job, cfg, client)
    assert [(a["attempt"], a["outcome"]) for a in store.attempts(job.job_id)] == [(1, "lost"), (2, "lost"),
                                                                                  (3, "done")]
    assert result["attempt"] == 3 and result["resumed_from"] >= 3 and result["scene_attempt"] == 2
    log = "\n".join(store.log_tail(job.job_id, 1000))
    assert "restored the prepare stage's output from storage (written by attempt 2)" in log


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
