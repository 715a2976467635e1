"""Job storage: a directory (local or shared filesystem) and an S3-compatible bucket (a local moto server
process), through one interface; checkpoints published completely, then by an atomic per-attempt pointer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from splatworks.service.cluster_testing import S3Server
from splatworks.service.probe_job import ProbeConfig, probe_reference, run_probe_kind
from splatworks.service.storage import (JobContext, checkpoints, latest_checkpoint, load_checkpoint, npz_arrays,
                                        npz_bytes, open_storage, publish_checkpoint, set_job_context)

pytestmark = pytest.mark.timeout(120)
JOB = "J" * 32


@pytest.fixture(scope="module")
def s3():
    why = S3Server.available()
    if why:
        pytest.skip(why)
    server = S3Server().start()
    old = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(params=["directory", "s3"])
def storage(request, tmp_path):
    if request.param == "directory":
        return open_storage(str(tmp_path / "jobs"))
    server = request.getfixturevalue("s3")
    return open_storage(server.make_bucket(f"b{os.getpid()}-{tmp_path.name[-8:]}".lower().replace("_", "-")))


def test_files_round_trip(storage):
    storage.check_writable()
    storage.write_bytes(f"{JOB}/a/b.bin", b"x" * 1000)
    storage.write_bytes(f"{JOB}/a/b.bin", b"y" * 10)  # replaced whole
    assert storage.read_bytes(f"{JOB}/a/b.bin") == b"y" * 10
    assert storage.list(f"{JOB}/a") == [f"{JOB}/a/b.bin"]
    assert storage.exists(f"{JOB}/a/b.bin") and not storage.exists(f"{JOB}/a/c.bin")
    assert storage.list(f"{JOB}/missing") == []
    with pytest.raises(ValueError):
        storage.write_bytes("../escape", b"")
    storage.remove(JOB)
    assert not storage.exists(f"{JOB}/a/b.bin")


def test_checkpoint_pointer_and_fencing(storage):
    assert latest_checkpoint(storage, JOB) is None
    cp = publish_checkpoint(storage, JOB, 1, 5, {"state.npz": npz_bytes(x=np.arange(4.0))})
    assert latest_checkpoint(storage, JOB) == cp
    assert npz_arrays(load_checkpoint(storage, cp)["state.npz"])["x"].tolist() == [0, 1, 2, 3]
    # Attempt 2 takes over and publishes step 7.
    two = publish_checkpoint(storage, JOB, 2, 7, {"state.npz": npz_bytes(x=np.full(4, 7.0))})
    # The stale attempt 1 tries to publish a later step: the database fence refuses it ...
    assert publish_checkpoint(storage, JOB, 1, 9, {"state.npz": npz_bytes(x=np.full(4, 9.0))},
                              fence=lambda: False) is None
    assert latest_checkpoint(storage, JOB) == two
    # ... and even a write that slipped past the fence (it checked just before attempt 2 claimed the job)
    # never wins: pointers of lower attempts lose, whatever their step or time.
    late = publish_checkpoint(storage, JOB, 1, 10, {"state.npz": npz_bytes(x=np.full(4, 10.0))})
    assert late is not None and late.published_at > two.published_at
    assert latest_checkpoint(storage, JOB) == two
    assert npz_arrays(load_checkpoint(storage, latest_checkpoint(storage, JOB))["state.npz"])["x"][0] == 7.0
    # A pointer never moves back within an attempt.
    assert publish_checkpoint(storage, JOB, 2, 6, {"state.npz": b"old"}) is None
    assert latest_checkpoint(storage, JOB).step == 7


def test_damaged_checkpoint_is_detected(storage):
    cp = publish_checkpoint(storage, JOB, 1, 3, {"state.npz": npz_bytes(x=np.zeros(3))})
    storage.write_bytes(f"{cp.prefix}/state.npz", b"garbage")
    with pytest.raises(OSError, match="manifest"):
        load_checkpoint(storage, cp)


def test_probe_job_resumes_from_checkpoint(storage, tmp_path):
    """An interrupted attempt 1, then attempt 2 resumes from its checkpoint and ends exactly like a clean run."""
    cfg = ProbeConfig(steps=12, step_seconds=0.0, checkpoint_every=4, points=64)
    job_dir = tmp_path / "jobs" / JOB
    job_dir.mkdir(parents=True)

    class Stop(Exception):
        pass

    def stop_at_7(ev):
        if ev.stage == "training" and ev.step == 7:
            raise Stop()

    set_job_context(JobContext(storage, JOB, 1))
    with pytest.raises(Stop):
        run_probe_kind(str(job_dir), vars(cfg), stop_at_7)
    assert latest_checkpoint(storage, JOB).step == 4
    set_job_context(JobContext(storage, JOB, 2))
    try:
        result = run_probe_kind(str(job_dir), vars(cfg), lambda ev: None)
    finally:
        set_job_context(None)
    assert result["resumed_from"] == 4 and result["attempt"] == 2
    ply = storage.read_bytes(f"{JOB}/gs_output/point_cloud/iteration_12/point_cloud.ply")
    head, _, body = ply.partition(b"end_header\n")
    assert b"element vertex 64" in head
    got = np.frombuffer(body, dtype="<f4").reshape(64, 3)
    np.testing.assert_allclose(got, probe_reference(cfg).astype(np.float32), rtol=0, atol=0)


def _trainer_checkpoint(out_dir, iteration: int, seed: int):
    """A checkpoint folder made by the trainer's own writer (``splat.io.write_checkpoint``): .ply, .splat, state."""
    import torch

    from splatworks.splat.io import write_checkpoint, write_ply, write_splat
    from splatworks.viewer.testing import random_params

    params = random_params(40, seed=seed)

    def write(folder):
        write_ply(folder / "point_cloud.ply", params)
        write_splat(folder / "scene.splat", params)
        torch.save({"iteration": iteration, "params": params}, folder / "trainer_state.pt")

    return write_checkpoint(out_dir, iteration, write)


def test_stale_attempt_cannot_publish_a_trainer_checkpoint_over_a_newer_one(storage, tmp_path):
    """Trainer checkpoints go through the job's publisher (``stages.checkpoint_publisher``, fenced by the job
    database): a stale attempt is refused, a write that slipped past the fence never wins, and the results
    routes' lookup serves the newest attempt's bytes from storage; older checkpoints are pruned."""
    from splatworks.progress import Cancelled
    from splatworks.service.executor import attempt_fence
    from splatworks.service.jobs import new_id, published_result
    from splatworks.service.stages import checkpoint_publisher
    from splatworks.service.store import JobRecord, SqliteJobStore

    store = SqliteJobStore(tmp_path / "jobs.db")
    job_id = new_id()
    store.create(JobRecord(job_id=job_id, pub_key=new_id()))
    assert store.claim_next().attempt == 1
    store.requeue_running("attempt 1 given up")  # the scheduler gives attempt 1 up while it still runs ...
    assert store.claim_next().attempt == 2        # ... and attempt 2 owns the job now
    newer = checkpoint_publisher(JobContext(storage, job_id, 2, attempt_fence(store, job_id, 2)))
    stale = checkpoint_publisher(JobContext(storage, job_id, 1, attempt_fence(store, job_id, 1)))

    f4 = _trainer_checkpoint(tmp_path / "a2", 4, seed=2)
    newer(4, f4)
    cp = latest_checkpoint(storage, job_id)
    assert (cp.attempt, cp.step) == (2, 4)
    assert set(cp.files) == {"point_cloud.ply", "scene.splat", "trainer_state.pt"}
    served = (f4 / "point_cloud.ply").read_bytes()

    f6 = _trainer_checkpoint(tmp_path / "a1", 6, seed=1)
    with pytest.raises(Cancelled, match="superseded"):
        stale(6, f6)  # the database fence refuses attempt 1
    assert latest_checkpoint(storage, job_id) == cp
    # A publication that slipped past the fence (checked just before attempt 2 claimed) still loses.
    checkpoint_publisher(JobContext(storage, job_id, 1, None))(6, f6)
    assert latest_checkpoint(storage, job_id) == cp
    jobs_dir = tmp_path / "jobs"
    for kind, name in (("ply", "point_cloud.ply"), ("splat", "scene.splat")):
        found = published_result(storage.url, jobs_dir, job_id, kind)
        f, size = found.open()
        with f:
            assert found.iteration == 4 and f.read() == (f4 / name).read_bytes() and size == (f4 / name).stat().st_size
    assert served != (f6 / "point_cloud.ply").read_bytes()

    # Two more checkpoints of attempt 2: only the two newest stay in storage, attempt 1's are gone.
    for it in (8, 10):
        newer(it, _trainer_checkpoint(tmp_path / "a2", it, seed=it))
    kept = [k.rsplit("/", 2)[-2:] for k in storage.list(f"{job_id}/checkpoints/attempt-000002")]
    assert [s for _, s in kept] == ["step-000000008", "step-000000010"]
    assert storage.list(f"{job_id}/checkpoints/attempt-000001") == []
    assert [c.attempt for c in checkpoints(storage, job_id)] == [2]


def test_reimport_of_a_cluster_job_reads_its_published_checkpoints(storage, tmp_path):
    """A cluster job's results live in the job storage (its head-node folder has the upload, not gs_output):
    `admin reimport` of the folder takes the newest published checkpoint, and DONE only once the training stage
    published result.json."""
    from splatworks.service.admin import import_job_dir
    from splatworks.service.jobs import new_id
    from splatworks.service.settings import ServiceSettings
    from splatworks.service.store import open_store

    data = tmp_path / "data"
    url = "" if storage.is_directory else storage.url
    settings = ServiceSettings(data_dir=data, storage_url=url)
    if storage.is_directory:  # the default storage is the jobs folder itself
        storage = open_storage("", settings.jobs_dir)
    store = open_store(settings.resolved_database_url)
    try:
        states = []
        for finished in (False, True):
            job_id = new_id()
            folder = settings.jobs_dir / job_id
            (folder / "upload").mkdir(parents=True)
            (folder / "upload" / "a.jpg").write_bytes(b"photo")
            (folder / "job.json").write_text(json.dumps({"job_id": job_id, "pub_key": new_id(), "kind": "static"}))
            publish_checkpoint(storage, job_id, 1, 10000, {"point_cloud.splat": b"\0" * 64})
            publish_checkpoint(storage, job_id, 1, 20000, {"point_cloud.splat": b"\0" * 96})
            if finished:
                publish_checkpoint(storage, job_id, 1, 1, {"gs_output/result.json": b"{}"}, series="train")
            import_job_dir(settings, folder, store=store)
            rec = store.get(job_id)
            states.append((rec.status, rec.latest_checkpoint))
        assert states == [("PENDING", 20000), ("DONE", 20000)]
    finally:
        store.close()
