"""Fast motion on the synthetic rig: the defaults vs `--respawn` (MVS points), hull points, hull points + carving
(by place or by colour), and a static layer frozen by frame 0's masks only (`freeze_frames=first`).

The tiny rig of the tests (5 cameras at 64x48 on a 90-degree arc, cam02 held out) filmed at 5 instants of an
8-frame clip, so the sphere jumps 2.5x its radius per frame and the box about its size: farther than gradient
descent moves a splat. Frame 0 is trained once (300 iterations, torch rasterizer; again for `freeze_frames=first`,
which changes its split), then each arm continues from it for frames 1-4 (100 iterations per frame) and `dynamic
eval` scores the held-out camera. CPU, about a minute per arm:

    python benchmarks/respawn_fast_rig.py [--arms default hull+carve ...] [--out respawn_fast_rig.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from splatworks.dynamic import sequential as seq
from splatworks.dynamic.metrics4d import evaluate_sequence
from splatworks.sfm.mvs import DenseConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_rig import make_tiny_dataset  # noqa: E402  (the tests' synthetic rig)

BASE = dict(iterations_first_frame=300, iterations_per_frame=100, early_stop=False, converged_loss_ratio=0.0,
            device="cpu", backend="torch", sh_degree=0)
# The rig trains on 4 views, so the hull counts a voxel seen by 2 of them (basketball's default is 8 of 11).
ARMS = {"default": {},
        "mvs": dict(respawn=True, respawn_dilation=2,
                    respawn_mvs=DenseConfig(num_depths=48, min_consistent=1, max_points=0, scale=1.0, window=5)),
        "hull": dict(respawn=True, respawn_points="hull", respawn_hull_views=2, respawn_dilation=1),
        "hull+carve": dict(respawn=True, respawn_points="hull", respawn_carve=True, respawn_hull_views=2,
                           respawn_dilation=1),
        "hull+carve-colour": dict(respawn=True, respawn_points="hull", respawn_carve=True, respawn_hull_views=2,
                                  respawn_dilation=1, respawn_carve_colour=0.1)}
ARMS["freeze-first"] = dict(freeze_frames="first")
ARMS["freeze-first+hull+carve-colour"] = {**ARMS["hull+carve-colour"], "freeze_frames": "first"}


# Settings that decide frame 0's result or its stored split (static layer / dynamic rows): an arm that changes one
# continues from a frame 0 of its own.
FRAME0_KEYS = ("freeze_frames",)


def run_arms(dataset, root: Path, make_cfg, arms: dict[str, dict]) -> dict[str, dict]:
    """Continue a trained frame 0 of ``dataset`` once per arm, ``make_cfg(overrides)`` giving each arm's
    SequentialConfig, and score each on the held-out camera (``dynamic eval``): per-frame PSNR over all, moving and
    static pixels, flicker, frame-to-frame change and drift, plus the respawn counts per frame.

    Frame 0 is ``root/f0`` (trained here unless present); an arm that sets one of ``FRAME0_KEYS`` gets its own
    (``root/f0_<key>_<value>``), trained with those settings."""
    results = {}
    for name, kw in arms.items():
        own = {k: v for k, v in kw.items() if k in FRAME0_KEYS}
        frame0 = root / "_".join(["f0", *(f"{k}_{v}" for k, v in own.items())])
        if not (frame0 / seq.METRICS_FILE).exists():
            t0 = time.perf_counter()
            seq.train_sequence(dataset, frame0, make_cfg({**own, "max_frames": 1}))
            print(f"{frame0.name}: frame 0 in {time.perf_counter() - t0:.0f} s", flush=True)
        out = root / name.replace("+", "_")
        shutil.copytree(frame0, out)
        t0 = time.perf_counter()
        lines = seq.train_sequence(dataset, out, make_cfg(kw), resume=True)
        ev = evaluate_sequence(out, dataset, device="cpu")
        results[name] = {"seconds": round(time.perf_counter() - t0, 1),
                         **{k: [round(x, 2) for x in ev[k]] for k in ("psnr", "psnr_dynamic", "psnr_static")},
                         **{k: round(ev[k], 4) for k in ("flicker_levels", "frame_to_frame_levels",
                                                         "drift_db_per_frame")},
                         "n_dynamic": lines[0].get("n_dynamic") if lines else None,
                         "respawn": [{k: v for k, v in ln.items() if k.startswith("respawn_n_")} for ln in lines]}
        r = results[name]
        print(f"{name}: moving-pixel PSNR {r['psnr_dynamic']}, static {r['psnr_static']}, flicker "
              f"{r['flicker_levels']:+.2f}/255, drift {r['drift_db_per_frame']:+.4f} dB/frame, {r['seconds']} s",
              flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the per-arm results as JSON")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="which arms to run")
    ap.add_argument("--carve-colour", type=float, default=None,
                    help="override respawn_carve_colour of the hull+carve-colour arm (default 0.1)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fast_rig_"))
    rig = make_tiny_dataset(root / "rig", n_frames=5, timeline=8)
    if args.carve_colour is not None:
        ARMS["hull+carve-colour"]["respawn_carve_colour"] = args.carve_colour
    results = run_arms(rig, root, lambda kw: seq.preset("tiny", **{**BASE, **kw}),
                       {name: ARMS[name] for name in args.arms})
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
