"""The packing step of benchmarks/dynamic_service_basketball.py: one tar under a size cap whose ``job/`` folder is
a complete (trimmed) 4D result that `admin reimport` takes as DONE, so the local viewer can play it.

Synthetic layers (incompressible bytes) stand in for a long run; no server, no training. Budget: ~2 s.
"""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamic_service_basketball.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dynamic_service_basketball", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(tmp: Path, n_frames: int, static_bytes: int, frame_bytes: int) -> tuple[Path, Path, dict, dict]:
    """A job folder and a download folder as the benchmark leaves them after a DONE job."""
    from splatworks.dynamic.render import write_mp4

    rng = np.random.default_rng(0)
    job = tmp / "data" / "jobs" / "j"
    (job / "colmap").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"kind": "dynamic", "config": {"backend": "gaussians",
                                                                          "render_video": True}}))
    (job / "colmap" / "scene.json").write_text("{}")
    dl = tmp / "download"
    (dl / "frames").mkdir(parents=True)
    (dl / "static.splat").write_bytes(rng.bytes(static_bytes))
    files = [f"frames/{i:06d}.splat" for i in range(n_frames)]
    for rel in files:
        (dl / rel).write_bytes(rng.bytes(frame_bytes))
    video = rng.integers(0, 255, (12, 48, 128, 3), dtype=np.uint8)  # noise: a large video for its size
    write_mp4(list(video), dl / "heldout.mp4", 10.0, crf=0)
    manifest = {"frames": n_frames, "frames_ready": n_frames, "static": "static.splat", "frame_files": files,
                "frame_urls": files, "frame_numbers": list(range(n_frames)), "fps": 10.0,
                "bytes": {"static": static_bytes, "per_frame": [frame_bytes] * n_frames,
                          "per_frame_mean": frame_bytes, "per_frame_max": frame_bytes,
                          "total": static_bytes + n_frames * frame_bytes}}
    metrics = {"frames": n_frames, "frames_ready": n_frames, "held_out_camera": "cam01", "video": "heldout.mp4"}
    return job, dl, manifest, metrics


def test_pack_fits_the_cap_and_its_trimmed_job_is_a_complete_result(bench, tmp_path) -> None:
    from splatworks.service.admin import dynamic_folder_state

    out = tmp_path
    job, dl, manifest, metrics = _fake_run(tmp_path, n_frames=20, static_bytes=32 * 30_000,
                                           frame_bytes=32 * 10_000)
    (out / "summary.json").write_text("{}")
    budget = 2_500_000  # static (0.96 MB) + the video + 4 of the 20 frames (0.32 MB each)
    (dl / "heldout.mp4").rename(dl / "big.mp4")
    bench.small_video(dl / "big.mp4", dl / "heldout.mp4", max_bytes=(dl / "big.mp4").stat().st_size // 2)
    assert (dl / "heldout.mp4").stat().st_size < (dl / "big.mp4").stat().st_size // 2  # re-encoded smaller
    info = bench.pack(out, job, metrics, manifest, budget, lambda line: None, layers_from=dl)
    tar_path = Path(info["tar"])
    assert tar_path.stat().st_size <= budget
    k = info["frames_for_viewer"]
    assert 1 <= k < 20
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tar_path) as tar:
        tar.extractall(unpacked, filter="data")
    m = json.loads((unpacked / "job" / "export" / "manifest.json").read_text())
    assert m["frames"] == m["frames_ready"] == len(m["frame_files"]) == k and m["trimmed_from_frames"] == 20
    assert sorted(p.name for p in (unpacked / "job" / "export" / "frames").iterdir()) == \
        [f"{i:06d}.splat" for i in range(k)]
    assert (unpacked / "job" / "export" / "static.splat").read_bytes() == (dl / "static.splat").read_bytes()
    assert json.loads((unpacked / "manifest.json").read_text())["frames"] == 20  # the full manifest too
    meta = json.loads((unpacked / "job" / "job.json").read_text())
    state = dynamic_folder_state(unpacked / "job", meta)
    assert state.status == "DONE", state
    # One frame more than fits would have broken the cap (the packer is not just conservative).
    assert (k + 1) * manifest["bytes"]["per_frame"][0] + manifest["bytes"]["static"] > budget - 1_000_000


def test_markdown_rows_carry_the_numbers(bench) -> None:
    summary = {"settings": {"preset": "default"}, "cameras": 12, "held_out_camera": "cam01", "frames": 150,
               "upload_s": 1.2, "upload_mb": 12.5, "job_s": 1400.0, "first_playable_frame_s": 150.0,
               "job_timings_s": {"prepare_seconds": 80, "train_seconds": 1200, "evaluate_seconds": 40},
               "frame0": {"seconds": 95.0, "iterations": 7000},
               "later_frames": {"seconds": {"mean": 5.5, "median": 5.0, "max": 9.0},
                                "frame_wall_s": {"mean": 6.25, "max": 10.5}, "iterations": {"mean": 610}},
               "heldout": {"psnr_mean": 27.5, "ssim_mean": 0.9, "psnr_static_mean": 28.0, "flicker_levels": 0.5,
                           "drift_db_per_frame": -0.003},
               "export_bytes": {"per_frame_mean": 1.5e6, "per_frame_max": 1.9e6, "static": 8e6}}
    md = bench.markdown(summary)
    assert "| 95.0 s (7000 it) | 5.50 / 5.00 / 9.00 s | 6.25 / 10.50 s | 610 |" in md
    assert "27.50 dB | 0.900 | 28.00 dB | +0.50/255 | -0.0030 dB/frame | 1.50 / 1.90 MB (static 8.0 MB) |" in md
    assert "| 1.2 s (12.5 MB) | 1400.0 s | 150.0 s | 80 s | 1200 s | 40 s | 27.50 dB / 0.900 |" in md
