"""benchmarks/mixvoxels_basketball.py on the real basketball capture (2 frames, 1/8 size, a few iterations):
the report has every phase, the held-out camera is cam01 and its static pixels are ``dynamic prepare``'s masks,
the Gaussian benchmark's pixels. The device run (150 frames, T preset) is ``bash benchmarks/device/mixvoxels_basketball.sh OUT``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "mixvoxels_basketball.py"


def _bench():
    spec = importlib.util.spec_from_file_location("mixvoxels_basketball", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_overrides_are_typed_and_checked():
    bench = _bench()
    got = bench.parse_overrides(["eval_chunk=32768", "lr_grid=0.01", "use_masks=yes", "upsample_at=10,20"])
    assert got == {"eval_chunk": 32768, "lr_grid": 0.01, "use_masks": True, "upsample_at": (10, 20)}
    with pytest.raises(SystemExit, match="no setting"):
        bench.parse_overrides(["nope=1"])


@pytest.mark.data
def test_benchmark_smoke_on_basketball(shared_data, tmp_path):
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.dynamic.metrics4d import static_pixels

    bench = _bench()
    report = tmp_path / "out" / "report.json"
    rc = bench.main(["-o", str(tmp_path / "work"), "--data", str(shared_data / "panoptic_basketball"),
                     "--frames", "2", "--scale", "0.125", "--preset", "tiny", "--iterations", "4",
                     "--set", "split_after=2", "occupancy_res=24", "--report", str(report)])
    assert rc == 0
    r = json.loads(report.read_text())
    assert r["status"] == "done" and r["test_camera"] == "cam01" and r["cameras_train"] == 11
    assert r["frames"] == 2 and r["resolution"] == [80, 45] and r["iterations"] == 4
    assert r["stopped_by_budget"] is False and r["model_bytes"] > 0
    assert set(r["seconds"]) >= {"dataset", "load_frames", "training", "render", "metrics", "video", "total"}
    assert len(r["psnr_per_frame"]) == 2 and 5 < r["psnr_mean"] < 40
    ds = DynamicDataset.load(tmp_path / "work" / "dataset")
    assert sorted(p.name for p in (ds.root / "masks").iterdir()) == ["cam01"]  # held-out camera only
    static = static_pixels(ds, "cam01", ds.frames)
    assert 0.5 < static.mean() < 1.0 and r["static_pixel_fraction"] == pytest.approx(float(static.mean()), abs=1e-4)
    assert Path(r["video"]).stat().st_size > 1000
    assert np.isfinite(r["flicker_levels"])
