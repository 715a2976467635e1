"""Job storage: a directory (local or shared filesystem) and an S3-compatible bucket (a local moto server
process), through one interface; checkpoints published completely, then by an atomic per-attempt pointer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from splatworks.service.cluster_testing import S3Server
from splatworks.service.probe_job import ProbeConfig, probe_reference, run_probe_kind
from splatworks.service.storage import (JobContext, latest_checkpoint, load_checkpoint, npz_arrays, npz_bytes,
                                        open_storage, publish_checkpoint, set_job_context)

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
