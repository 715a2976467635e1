"""What would each ``freeze_frames`` setting freeze? The static-layer vote applied to points, without training.

``sequential.frozen_rows_by_vote`` decides, after frame 0, which Gaussians form the frozen static layer: a centre is
dynamic when, at some voting frame, it lands on a (grown) dynamic mask pixel in at least ``freeze_quorum`` of the
training views that see it. ``freeze_frames`` 'all' votes with every frame, 'first' with frame 0 only. This script
applies both votes to a point cloud (e.g. a prepared dataset's ``points.npz``, as stand-ins for frame 0's rows) and
reports the frozen fraction overall and in thirds of the held-out camera's image (rows of pixels). CPU, about a
minute for 150 frames of 12 cameras at 640x360:

    python benchmarks/freeze_vote.py DATASET --points POINTS.npz [--out freeze_vote.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from splatworks.dynamic import sequential as seq
from splatworks.dynamic.dataset import DynamicDataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="prepared dataset whose masks vote")
    ap.add_argument("--points", type=Path, required=True, help=".npz with 'points' (P, 3), the dataset's world frame")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ds = DynamicDataset.load(args.dataset)
    pts = torch.as_tensor(np.load(args.points)["points"], dtype=torch.float32)
    cfg = seq.SequentialConfig()
    cpu = torch.device("cpu")
    views = seq.load_frame(ds, ds.frames[0], ds.train_camera_names, cpu)
    frozen = {name: seq.frozen_rows_by_vote(pts, views, ds, frames, cfg.freeze_dilation, cfg.freeze_quorum)
              for name, frames in (("all", ds.frames), ("first", ds.frames[:1]))}
    held = seq.load_frame(ds, ds.frames[0], ds.test_cameras, cpu)
    w, h = held.sizes[0]
    _, row, inside = seq.project_centres(pts, held.viewmats[0], held.Ks[0], w, h)
    regions = {"all points": torch.ones_like(inside), f"in {ds.test_cameras[0]}": inside,
               "top third": inside & (row < h // 3), "middle third": inside & (row >= h // 3) & (row < 2 * h // 3),
               "bottom third": inside & (row >= 2 * h // 3)}
    result = {"dataset": str(args.dataset), "points": len(pts), "frames": len(ds.frames),
              "freeze_dilation": cfg.freeze_dilation, "freeze_quorum": cfg.freeze_quorum, "regions": {}}
    for name, sel in regions.items():
        n = int(sel.sum())
        got = {k: round(float(v[sel].float().mean()), 4) if n else None for k, v in frozen.items()}
        result["regions"][name] = {"points": n, **{f"frozen_{k}": x for k, x in got.items()}}
        print(f"{name}: {n} points, frozen by 'all' {got['all']}, by 'first' {got['first']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
