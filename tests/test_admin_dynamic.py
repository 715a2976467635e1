"""`splatworks admin reimport` on dynamic job folders made by the real dynamic job function (tiny synthetic rig).

One job runs on CPU (4 cameras, 3 frames of 64x48, tiny preset): it is stopped after its first frame (a copy of
that folder is the half-finished job), then resumed to the end (the finished job). Re-imported into a fresh
database, the finished job is DONE, the half-finished one PENDING and resumes after its finished frame through
the executor's job function, and broken folders are reported and not imported. No reimport changes a file.
Budget: about 30 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import PIL.Image  # noqa: F401  (before anything that may load pycolmap)
from splatworks.config import to_dict
from splatworks.errors import UserError
from splatworks.progress import Cancelled, ProgressEvent

N_CAMERAS, N_FRAMES, W, H = 4, 3, 64, 48


def _config() -> Any:
    from splatworks.pipeline.dynamic import DynamicJobConfig

    # What the upload route stores for these videos and a calibration file (tiny budgets for CPU).
    return DynamicJobConfig(preset="tiny", calibration_file=True, device="cpu", end_frame=N_FRAMES,
                            iterations_per_frame=15, iterations_first_frame=30)


def _new_job(jobs: Path, rig: Any) -> Path:
    """A job folder as ``POST /recon/dynamic-jobs`` leaves it: upload/ (videos, calibration) and job.json."""
    from splatworks.service.jobs import new_id, write_json_atomic

    job_id = new_id()
    root = jobs / job_id
    (root / "upload").mkdir(parents=True)
    for v in rig.videos.values():
        shutil.copy(v, root / "upload" / Path(v).name)
    shutil.copy(rig.calibration, root / "upload" / "calibration.json")
    write_json_atomic(root / "job.json", {"job_id": job_id, "pub_key": new_id(), "kind": "dynamic",
                                          "config": to_dict(_config()), "created_at": 1.0, "input_kind": "videos",
                                          "input_files": N_CAMERAS, "input_bytes": 1})
    return root


def _stop_after_first_frame(ev: ProgressEvent) -> None:
    if ev.stage.startswith("frame 1 of") and ev.step >= 1000:  # frame 1 finished (and exported)
        raise Cancelled("stopped for the test")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"finished", "half"}: real job folders (outside any data folder), made by ``run_dynamic_job``."""
    from splatworks.pipeline.dynamic import run_dynamic_job
    from splatworks.synthetic.scenes import make_dynamic_rig

    base = tmp_path_factory.mktemp("admin-dyn")
    rig = make_dynamic_rig(base / "rig", n_cameras=N_CAMERAS, n_frames=N_FRAMES, width=W, height=H)
    job = _new_job(base / "made", rig)
    with pytest.raises(Cancelled):
        run_dynamic_job(job, _config(), _stop_after_first_frame)
    half = base / "half"
    shutil.copytree(job, half)
    from splatworks.service.jobs import new_id

    meta = json.loads((half / "job.json").read_text())  # another job: its own ids
    meta.update(job_id=new_id(), pub_key=new_id())
    (half / "job.json").write_text(json.dumps(meta))
    run_dynamic_job(job, _config())  # resumes to the end
    return {"finished": job, "half": half}


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: (size, mtime_ns, sha1) - to prove a reimport changed nothing."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "folder")
            for p in sorted(root.rglob("*"))}


def _data_dir(tmp_path: Path, folders: dict[str, Path], **extra: Path) -> tuple[Any, dict[str, str]]:
    """A data folder whose jobs/ holds copies of the given folders (under their own job ids), no database rows."""
    from splatworks.service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path / "data")
    jobs = Path(settings.jobs_dir)
    jobs.mkdir(parents=True)
    ids = {}
    for name, src in {**folders, **extra}.items():
        job_id = json.loads((src / "job.json").read_text())["job_id"] if name in folders else src.name
        shutil.copytree(src, jobs / job_id, copy_function=shutil.copy2)
        ids[name] = job_id
    return settings, ids


def test_the_job_folders_are_what_they_claim(folders) -> None:
    fin, half = folders["finished"], folders["half"]
    m = json.loads((fin / "export" / "manifest.json").read_text())
    assert m["frames"] == m["frames_ready"] == N_FRAMES and (fin / "export" / "heldout.mp4").stat().st_size > 0
    metrics = json.loads((fin / "export" / "metrics.json").read_text())
    # The job's outputs carry what issue 7's benchmark reports (same code as `dynamic eval`).
    assert len(metrics["heldout_per_frame"]["psnr_static"]) == N_FRAMES
    assert metrics["training"]["frames_trained"] == N_FRAMES and metrics["training"]["frame0"]["frame"] == 0
    assert len(metrics["training"]["per_frame"]["frame_wall_s"]) == N_FRAMES
    assert len(metrics["bytes"]["per_frame"]) == N_FRAMES
    hm = json.loads((half / "export" / "manifest.json").read_text())
    assert (hm["frames"], hm["frames_ready"]) == (N_FRAMES, 1)
    assert json.loads((half / "train" / "state.json").read_text())["frames_done"] == [0]
    assert not (half / "export" / "metrics.json").exists()


def test_reimport_judges_finished_half_finished_and_broken_folders(folders, tmp_path) -> None:
    from splatworks.service.admin import reimport_all
    from splatworks.service.store import open_store

    broken_json = tmp_path / "src" / "brokenA-aaaaaaaaaaaaaaaaaaaa"
    shutil.copytree(folders["finished"], broken_json)
    (broken_json / "job.json").write_text('{"kind": "dynamic", "job_id": ')  # cut short by a crash
    broken_manifest = tmp_path / "src" / "brokenB-bbbbbbbbbbbbbbbbbbbb"
    shutil.copytree(folders["half"], broken_manifest)
    meta = json.loads((broken_manifest / "job.json").read_text())
    meta["job_id"] = broken_manifest.name
    (broken_manifest / "job.json").write_text(json.dumps(meta))
    (broken_manifest / "train" / "state.json").write_text("{\"frames_done\": [0")
    no_video = tmp_path / "src" / "novideo-cccccccccccccccccccc"
    shutil.copytree(folders["finished"], no_video)
    (no_video / "export" / "heldout.mp4").unlink()
    meta = json.loads((no_video / "job.json").read_text())
    meta.update(job_id=no_video.name, pub_key="novideo-pub-cccccccccccccc")
    (no_video / "job.json").write_text(json.dumps(meta))

    settings, ids = _data_dir(tmp_path, folders, broken_json=broken_json, broken_manifest=broken_manifest,
                              no_video=no_video)
    jobs = Path(settings.jobs_dir)
    before = snapshot(jobs)
    problems: list[tuple[str, str]] = []
    store = open_store(settings.resolved_database_url)
    try:
        imported = dict(reimport_all(settings, store, problems))
        assert set(imported) == {ids["finished"], ids["half"], ids["no_video"]}
        fin, half, nov = (store.get(ids[k]) for k in ("finished", "half", "no_video"))
        assert (fin.kind, fin.status, fin.percent, fin.error) == ("dynamic", "DONE", 100.0, None)
        assert fin.pub_key == json.loads((folders["finished"] / "job.json").read_text())["pub_key"]  # links stay valid
        assert half.status == "PENDING" and half.kind == "dynamic" and half.config["end_frame"] == N_FRAMES
        assert nov.status == "PENDING"  # the job renders its video again when it resumes
        assert any("resumes after 1 finished frame(s) of 3" in line for line in store.log_tail(half.job_id, 5))
        assert any("held-out video" in line for line in store.log_tail(nov.job_id, 5))
        # Broken folders: reported with what is wrong, no database row.
        reported = dict(problems)
        assert set(reported) == {ids["broken_json"], ids["broken_manifest"]}
        assert "job.json is not valid JSON" in reported[ids["broken_json"]]
        assert "train/state.json is not valid JSON" in reported[ids["broken_manifest"]]
        assert store.get(ids["broken_json"]) is None and store.get(ids["broken_manifest"]) is None
        # Nothing on disk changed: not a byte, not a timestamp, no new file.
        assert snapshot(jobs) == before
        # A second reimport finds nothing new and still reports the broken folders.
        again: list[tuple[str, str]] = []
        assert reimport_all(settings, store, again) == [] and len(again) == 2
    finally:
        store.close()


def test_pending_reimport_resumes_after_its_finished_frame(folders, tmp_path) -> None:
    """The executor's job function, given the imported row's config, trains only the frames left."""
    from splatworks.service.admin import dynamic_folder_state, import_job_dir
    from splatworks.service.executor import run_dynamic_kind
    from splatworks.service.store import open_store

    settings, ids = _data_dir(tmp_path, {"half": folders["half"]})
    root = Path(settings.jobs_dir) / ids["half"]
    frame0 = root / "train" / "frames" / "000000.pt"
    mtime0 = frame0.stat().st_mtime_ns
    store = open_store(settings.resolved_database_url)
    try:
        job_id, _ = import_job_dir(settings, root, store)
        job = store.get(job_id)
        assert job.status == "PENDING"
        stages: list[str] = []
        run_dynamic_kind(str(root), job.config, lambda ev: stages.append(ev.stage))
    finally:
        store.close()
    assert frame0.stat().st_mtime_ns == mtime0, "the finished frame was trained again"
    lines = [json.loads(x) for x in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(N_FRAMES))
    assert "frame 1 of 3" not in stages and "frame 3 of 3" in stages
    meta = json.loads((root / "job.json").read_text())
    assert dynamic_folder_state(root, meta).status == "DONE"  # now it would be re-imported as finished


def test_cli_copies_a_finished_folder_in_and_reports_an_unreadable_one(folders, tmp_path) -> None:
    """`splatworks admin reimport FOLDER ...`: a folder from elsewhere is copied in under new ids (the source is
    untouched); an unreadable one is reported on stderr with exit status 1 and leaves nothing behind."""
    from splatworks.service.settings import ServiceSettings
    from splatworks.service.store import open_store

    broken = tmp_path / "broken"
    shutil.copytree(folders["finished"], broken)
    (broken / "export" / "metrics.json").write_text("not json")
    data = tmp_path / "data"
    src_before = snapshot(folders["finished"])
    cmd = [sys.executable, "-m", "splatworks", "admin", "reimport", str(folders["finished"]), str(broken),
           "--data-dir", str(data)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not imported" in r.stderr and "export/metrics.json is not valid JSON" in r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(out) == 1
    assert snapshot(folders["finished"]) == src_before
    settings = ServiceSettings(data_dir=data)
    copies = sorted(p.name for p in Path(settings.jobs_dir).iterdir())
    assert copies == [out[0]["job_id"]]  # the broken folder was not copied in
    store = open_store(settings.resolved_database_url)
    try:
        job = store.get(out[0]["job_id"])
        assert job.status == "DONE" and job.kind == "dynamic" and job.pub_key == out[0]["pub_key"]
    finally:
        store.close()
    copy = Path(settings.jobs_dir) / out[0]["job_id"]
    assert json.loads((copy / "job.json").read_text())["pub_key"] == out[0]["pub_key"]
    assert (copy / "export" / "manifest.json").read_bytes() == \
        (folders["finished"] / "export" / "manifest.json").read_bytes()


def test_unreadable_job_json_is_a_user_error(tmp_path) -> None:
    from splatworks.service.admin import import_job_dir
    from splatworks.service.settings import ServiceSettings

    folder = tmp_path / "job"
    (folder / "upload").mkdir(parents=True)
    (folder / "job.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        import_job_dir(ServiceSettings(data_dir=tmp_path / "data"), folder)
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())
