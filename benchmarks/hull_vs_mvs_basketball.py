"""Where would respawn put new splats on basketball? The visual hull vs plane-sweep MVS, judged by the held-out camera.

Respawn (``dynamic/respawn.py``) places recycled splats on frame t's moving pixels, at points built from the
training views only. A point on a moving person projects onto that person in EVERY camera, the held-out one
included; a point at a wrong depth lands on the background there (the session-6 device run: MVS-placed splats showed
as blobs over the background in cam01). This script builds both kinds of points for one prepared frame, with every
moving pixel of the training views counted as uncovered (what respawn sees when nothing follows the people), and
scores them against the held-out camera's mask:

- precision: the fraction of the points in the held-out view that land on its moving pixels (within ``--tolerance``
  px); 1 - precision is the fraction that would show as blobs over the background there;
- recall: the fraction of the held-out view's moving pixels within ``--tolerance`` px of a point.

CPU or GPU; on a prepared dataset (``splatworks dynamic prepare``, masks included):

    python benchmarks/hull_vs_mvs_basketball.py DATASET [--frame 0 ...] [--truth-masks DIR] [--dilation PX]
        [--out hull_vs_mvs.json]

``--truth-masks`` (e.g. ``../shared/data/panoptic_basketball/masks``: ``camNN/FFFFFF.png``, True = moving) scores
the held-out camera against ground-truth masks instead of the dataset's own; the training views always use the
dataset's masks (what respawn sees).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from splatworks.dynamic import respawn as rsp
from splatworks.dynamic import sequential as seq
from splatworks.dynamic.dataset import DynamicDataset


def held_out_scores(points: torch.Tensor, views, tolerance: int) -> dict:
    """Precision and recall of (P, 3) world points against the moving pixels of the one view in ``views``."""
    (w, h), moving = views.sizes[0], ~views.static[0]
    col, row, inside = seq.project_centres(points, views.viewmats[0], views.Ks[0], w, h)
    dyn = rsp.DynamicPixels(views)
    on_moving = dyn.count(0, col[inside], row[inside], tolerance) > 0
    hit = torch.zeros(h, w, dtype=torch.bool, device=row.device)
    hit[row[inside], col[inside]] = True
    near = torch.nn.functional.max_pool2d(hit[None, None].float(), 2 * tolerance + 1, 1, tolerance)[0, 0] > 0
    return {"points": len(points), "in_view": int(inside.sum()),
            "precision": round(float(on_moving.float().mean()), 4) if len(on_moving) else None,
            "recall": round(float((near & moving).sum() / max(1, int(moving.sum()))), 4),
            "moving_px": int(moving.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--frame", type=int, nargs="+", default=[0], help="dataset frame numbers (source frame indices)")
    ap.add_argument("--truth-masks", type=Path, default=None, help="ground-truth masks for the held-out camera")
    ap.add_argument("--tolerance", type=int, default=4, help="pixels (respawn's default mask dilation)")
    ap.add_argument("--dilation", type=int, default=None, help="respawn_dilation (px) for both kinds of points "
                    "(default: SequentialConfig's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ds = DynamicDataset.load(args.dataset)
    cfg = seq.SequentialConfig(**({} if args.dilation is None else {"respawn_dilation": args.dilation}))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    radius = ds.rig.camera_extent()[1]
    hint = ds.rig.points if len(ds.rig.points) else None
    cameras = [ds.rig.camera(c) for c in ds.train_camera_names]
    result = {"dataset": str(args.dataset), "held_out": ds.test_cameras[0], "scene_radius": radius,
              "respawn_dilation": cfg.respawn_dilation, "respawn_hull_views": cfg.respawn_hull_views,
              "respawn_hull_voxel": cfg.respawn_hull_voxel,
              "tolerance_px": args.tolerance, "device": str(dev), "truth_masks": str(args.truth_masks or ""),
              "frames": {}}
    for frame in args.frame:
        views = seq.load_frame(ds, frame, ds.train_camera_names, dev)
        held = seq.load_frame(ds, frame, ds.test_cameras, dev)
        if args.truth_masks:
            from PIL import Image

            with Image.open(args.truth_masks / ds.test_cameras[0] / f"{frame:06d}.png") as im:
                truth = np.asarray(im.convert("L").resize(held.sizes[0], Image.NEAREST)) > 0
            held.static = [torch.as_tensor(~truth, device=dev)]
        uncovered = [~st for st in views.static]
        row = {}
        for name in ("hull", "mvs"):
            t0 = time.perf_counter()
            if name == "hull":
                pts, _ = rsp.hull_points(views, uncovered, cfg, radius=radius, points_hint=hint)
            else:
                pts, _ = rsp.mvs_points(views, cameras, uncovered, cfg, hint)
            seconds = time.perf_counter() - t0
            row[name] = {**held_out_scores(torch.as_tensor(pts, dtype=torch.float32, device=dev), held,
                                           args.tolerance), "seconds": round(seconds, 1)}
            print("frame", frame, name, row[name], flush=True)
        result["frames"][str(frame)] = row
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
