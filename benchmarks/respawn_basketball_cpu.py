"""Do hull respawn and carving follow the basketball players? A reduced-scale run on the CPU (no GPU needed).

On the device, 150 frames under the defaults lost the people who walk across the court between frames 40 and 70
(moving-pixel PSNR of the held-out camera from 19.4 to 14.6 dB, BENCHMARKS.md, session 8). This script trains that
stretch of the real capture at a quarter of its size (160x90), from frame 30 to 78 every 3rd frame (17 frames,
so the people move three frames' worth between training frames), from dense points at the known poses, with the
torch rasterizer: frame 0 once, then each arm continues from it and `dynamic eval` scores the held-out camera
(cam01); an arm whose settings change frame 0's split gets its own frame 0:

- ``default``: every default (since session 10: ``freeze_frames`` first, ``anchor`` previous);
- ``hull+carve``: ``--respawn --respawn-points hull --respawn-carve`` (carving by place only);
- ``hull+carve-colour``: the same with ``--respawn-carve-colour 0.1`` (a row is carved only where its own colour
  differs from the static pixels it lands on, so the court under the players' path stays).
- ``freeze-first``: ``--freeze-frames first --anchor first`` (only frame 0's masks decide the frozen static layer,
  so the court and walls along the players' later path cannot be repainted to show them; frame 0 trained again for
  it; the anchor spelled out so the arm keeps session 9's meaning);
- ``freeze-first+hull+carve-colour``: both (anchor ``first`` too).
- ``freeze-first+anchor-previous`` and ``freeze-first+no-constraint``: the static constraint pulls a non-frozen
  splat that lands on a static pixel back to its frame-0 centre (``anchor first``); a splat that followed a person
  and lags behind by a pixel is pulled all the way back. These arms anchor to frame t-1, or drop the constraint.

The iteration counts are far below the defaults (a CPU budget), so the absolute numbers are not those of the
device; the arms differ only in these settings. On 2 cores a frame 0 takes about 7 minutes and an arm about 20:

    python benchmarks/respawn_basketball_cpu.py [--data ../shared/data/panoptic_basketball] [--work /tmp/bbcpu]
        [--arms default hull+carve-colour] [--out respawn_basketball_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from splatworks.config import from_dict, to_dict
from splatworks.dynamic import sequential as seq
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.prepare import PrepareConfig, prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
from respawn_fast_rig import run_arms  # noqa: E402

# A CPU budget: few Gaussians, few iterations, SH degree 1, two views per step.
BASE = dict(iterations_first_frame=1500, first_frame_cap_max=12000, first_frame_min_points=6000,
            iterations_per_frame=300, min_iterations_per_frame=150, iterations_converged=150, early_stop_window=100,
            sh_degree=1, views_per_step=2, respawn_iterations=60, device="cpu", backend="torch")
HULL = dict(respawn=True, respawn_points="hull", respawn_carve=True, respawn_dilation=1)
ARMS = {"default": {}, "hull+carve": HULL, "hull+carve-colour": {**HULL, "respawn_carve_colour": 0.1},
        "freeze-first": {"freeze_frames": "first", "anchor": "first"},
        "freeze-first+hull+carve-colour": {**HULL, "respawn_carve_colour": 0.1, "freeze_frames": "first",
                                           "anchor": "first"},
        "freeze-first+anchor-previous": {"freeze_frames": "first", "anchor": "previous"},
        "freeze-first+no-constraint": {"freeze_frames": "first", "static_loss_weight": 0.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/panoptic_basketball"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bbcpu"), help="dataset and runs (kept; a prepared "
                    "dataset and a trained frame 0 there are reused)")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--out", type=Path, default=None, help="write the per-arm results as JSON")
    args = ap.parse_args()
    ds_root = args.work / "dataset"
    t0 = time.perf_counter()
    if not (ds_root / "dataset.json").exists():
        d = to_dict(PrepareConfig())
        d.update({"start_frame": 30, "end_frame": 81, "stride": 3, "resize": 0.25, "test_cameras": "first",
                  "dense": "on"})
        d["calibration"].update({"method": "import", "file": str(args.data / "calibration.json")})
        prepare(args.data / "videos", ds_root, from_dict(PrepareConfig, d))
        print(f"prepared {ds_root} in {time.perf_counter() - t0:.0f} s", flush=True)
    ds = DynamicDataset.load(ds_root)

    def make_cfg(kw: dict) -> seq.SequentialConfig:
        return seq.SequentialConfig(**{**BASE, **kw})

    for name in args.arms:   # a rerun replaces an arm's folder
        shutil.rmtree(args.work / name.replace("+", "_"), ignore_errors=True)
    results = run_arms(ds, args.work, make_cfg, {name: ARMS[name] for name in args.arms})
    results["settings"] = {"frames": ds.frames, "size": ds.rig.camera(ds.test_cameras[0]).width, **BASE}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
