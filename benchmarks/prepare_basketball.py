"""Benchmark `splatworks dynamic prepare` on the CMU Panoptic basketball capture (12 cameras, 150 frames, 640x360).

Runs the whole stage (frames, masks, calibration) with the given settings, then scores:
- calibration: cameras registered; after a similarity alignment to calibration.json, mean/max rotation error
  (degrees) and camera-centre error (fraction of the rig radius = mean distance of the true centres from their
  centroid);
- masks: dynamic-region IoU, precision and recall against the release's masks (True = DYNAMIC there, the inverse
  of our 255 = static), pixel counts summed over all cameras and frames, plus the mean of per-frame IoUs.

    .venv/bin/python benchmarks/prepare_basketball.py -o /tmp/basketball [prepare options, e.g. --stride 2]
    .venv/bin/python benchmarks/prepare_basketball.py -o /tmp/basketball --score-only   # re-score a dataset

Results go to OUT/benchmark.json and are printed as Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import PIL.Image  # noqa: F401  - before pycolmap (see the project's known pitfalls)
import numpy as np

from splatworks.config import add_arguments, from_args
from splatworks.dynamic import masks as mk
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.prepare import PrepareConfig, prepare

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panoptic_basketball"


def score_masks(ds: DynamicDataset, gt_dir: Path) -> dict:
    import cv2

    per_cam: dict[str, dict] = {}
    tot = np.zeros(3)
    frame_ious = []
    for cam in ds.camera_names:
        acc = np.zeros(3)
        for f in ds.frames:
            pred = cv2.imread(str(ds.mask_path(cam, f)), cv2.IMREAD_GRAYSCALE) == mk.DYNAMIC
            truth = cv2.imread(str(gt_dir / cam / f"{f:06d}.png"), cv2.IMREAD_GRAYSCALE) > 0  # True = dynamic
            s = mk.mask_scores(pred, truth)
            acc += [s["tp"], s["fp"], s["fn"]]
            frame_ious.append(mk.iou_precision_recall(s["tp"], s["fp"], s["fn"])[0])
        tot += acc
        iou, p, r = mk.iou_precision_recall(*acc)
        per_cam[cam] = {"iou": iou, "precision": p, "recall": r}
    iou, p, r = mk.iou_precision_recall(*tot)
    return {"iou": iou, "precision": p, "recall": r, "mean_frame_iou": float(np.mean(frame_ious)),
            "mean_camera_iou": float(np.mean([v["iou"] for v in per_cam.values()])), "per_camera": per_cam}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="panoptic_basketball folder")
    parser.add_argument("--score-only", action="store_true", help="score an existing dataset in --output")
    add_arguments(parser, PrepareConfig)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.data / "videos").is_dir():
        print(f"no basketball data at {args.data}", file=sys.stderr)
        return 2
    if not args.score_only:
        cfg = from_args(PrepareConfig, args, base=PrepareConfig(overwrite=True))
        if cfg.calibration.file is None:  # scores SfM against the truth (and falls back to it if SfM fails)
            cfg.calibration.file = args.data / "calibration.json"
        prepare(args.data / "videos", args.output, cfg, show_bars=True)
    ds = DynamicDataset.load(args.output)
    result = {"timings_s": ds.meta["timings_s"], "calibration": ds.meta["calibration"],
              "frames": len(ds.frames), "cameras": len(ds.camera_names)}
    if (ds.root / "masks").is_dir():
        result["masks"] = score_masks(ds, args.data / "masks")
    (args.output / "benchmark.json").write_text(json.dumps(result, indent=1))

    cal = ds.meta["calibration"]
    sfm = cal.get("sfm_attempt", cal) if cal.get("method") != "sfm" else cal
    err = sfm.get("errors_vs_file", {})
    print(json.dumps({k: v for k, v in result.items() if k != "calibration"}, indent=1)[:3000])
    print("\n| stage | time (s) |\n|---|---|")
    for k, v in ds.meta["timings_s"].items():
        print(f"| {k} | {v:.1f} |")
    if "masks" in result:
        m = result["masks"]
        print(f"\nmasks: IoU {m['iou']:.3f}, precision {m['precision']:.3f}, recall {m['recall']:.3f} "
              f"(mean per-frame IoU {m['mean_frame_iou']:.3f}, mean per-camera IoU {m['mean_camera_iou']:.3f})")
    print(f"calibration used: {cal.get('method')}" + (" (fallback from SfM)" if cal.get("fallback_from") else ""))
    if sfm.get("method") == "sfm":
        print(f"SfM ({sfm.get('images')}): registered {sfm.get('registered')}/{sfm.get('cameras')}, "
              f"{sfm.get('points')} points, reproj {sfm.get('mean_reprojection_error_px', float('nan')):.2f} px"
              + (f"; rotation {err['rotation_error_deg_mean']:.2f} deg mean / {err['rotation_error_deg_max']:.2f} max,"
                 f" centre {100 * err['centre_error_rel_radius_mean']:.2f}% / "
                 f"{100 * err['centre_error_rel_radius_max']:.2f}% of rig radius (registered cameras)"
                 if "rotation_error_deg_mean" in err else "")
              + (f"; error: {sfm['error']}" if "error" in sfm else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
