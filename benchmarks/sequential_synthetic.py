"""Sequential 4D Gaussians on the synthetic rig (CPU): anchor 'first' vs 'previous', static weight, speed options.

    .venv/bin/python benchmarks/sequential_synthetic.py [--frames 8] [--out bench_out/seq_synth]

Prints one row per variant (held-out PSNR mean and on static pixels, background flicker x255, drift, background
Gaussian displacement from frame 0, seconds per frame after frame 0) and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from splatworks.dynamic import sequential as seq  # noqa: E402
from splatworks.dynamic.metrics4d import evaluate_sequence  # noqa: E402
from tiny_rig import make_tiny_dataset  # noqa: E402

VARIANTS = {
    "first": {"anchor": "first"},
    "previous": {"anchor": "previous"},
    "no_constraint": {"static_loss_weight": 0.0},
    "first_frozen": {"anchor": "first", "freeze_static": True},
    "first_frozen_fast": {"anchor": "first", "freeze_static": True, "early_stop": True,
                          "converged_loss_ratio": 1.1},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench_out/seq_synth"))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.out.exists():
        shutil.rmtree(args.out)
    ds = make_tiny_dataset(args.out / "rig", n_frames=args.frames, timeline=24, width=80, height=60, n_points=500)
    base = dict(iterations_first_frame=300, iterations_per_frame=60, early_stop=False, converged_loss_ratio=0.0,
                freeze_static=False, device="cpu", backend="torch", min_iterations_per_frame=30,
                iterations_converged=30, early_stop_window=15)
    f0 = args.out / "frame0"
    seq.train_sequence(ds, f0, seq.preset("tiny", **base, max_frames=1))
    f0_frozen = args.out / "frame0_frozen"
    seq.train_sequence(ds, f0_frozen, seq.preset("tiny", **{**base, "freeze_static": True}, max_frames=1))
    first, _, _ = seq.load_frame_gaussians(f0, 0)
    views = seq.load_frame(ds, 0, ds.train_camera_names, torch.device("cpu"))
    background = seq.frozen_rows(first["means"], views, seq.dynamic_union_masks(ds, ds.train_camera_names,
                                                                                 ds.frames, 2))
    rows = {}
    for name in args.variants:
        kw = {**base, **VARIANTS[name]}
        out = args.out / name
        shutil.copytree(f0_frozen if kw.get("freeze_static") else f0, out)
        t0 = time.perf_counter()
        lines = seq.train_sequence(ds, out, seq.preset("tiny", **kw))
        wall = time.perf_counter() - t0
        ev = evaluate_sequence(out, ds, device="cpu")
        last, ids, _ = seq.load_frame_gaussians(out, ds.frames[-1])
        f0p, ids0, _ = seq.load_frame_gaussians(out, 0)
        keep = torch.isin(ids0, ids)
        disp = torch.linalg.vector_norm(last["means"] - f0p["means"][keep], dim=-1)[background[keep]].mean()
        rows[name] = {"psnr": ev["psnr_mean"], "psnr_static": ev["psnr_static_mean"],
                      "flicker_x255": ev["flicker_levels"], "drift_db_per_frame": ev["drift_db_per_frame"],
                      "background_displacement": float(disp),
                      "s_per_frame": wall / max(1, len(lines)),
                      "iterations_per_frame": sum(l["iterations"] for l in lines) / max(1, len(lines))}
        print(name, json.dumps({k: round(v, 4) for k, v in rows[name].items()}), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
