"""SfM on NeRF-synthetic lego: registration accuracy against the exact poses, and the time of each stage.

    python benchmarks/sfm_lego.py                                   # ../shared/data/nerf_synthetic_lego
    python benchmarks/sfm_lego.py --images DIR --transforms FILE    # e.g. lego composited on white as JPEG
    python benchmarks/sfm_lego.py --preset colmap                   # COLMAP's defaults, for comparison

Prints one JSON document: the pose-quality report (``splatworks.sfm.quality``: correct / wrong / missing
cameras after a RANSAC + Umeyama similarity alignment, rotation and centre errors), the SfM report (registered,
dropped and why, reprojection error, points, seconds per stage), the config and the machine. Issue 2's bar:
>= 95 of 100 correct (rotation < 1 deg, centre < 1 % of the scene radius), mean rotation error < 0.5 deg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import PIL.Image  # noqa: F401  -- before anything that may load pycolmap

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nerf_synthetic_lego"


def main(argv: list[str] | None = None) -> int:
    from splatworks.config import add_arguments, from_args, to_dict
    from splatworks.sfm.pipeline import PRESETS, SfmConfig, preset, run_sfm
    from splatworks.sfm.quality import poses_from_transforms, quality_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_DATA / "train", help="lego images (RGBA PNG or RGB)")
    parser.add_argument("--transforms", type=Path, default=DEFAULT_DATA / "transforms_train.json",
                        help="ground-truth poses (NeRF transforms.json, OpenGL camera-to-world)")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "bench_out" / "sfm_lego", help="work folder")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--json-out", type=Path, help="also write the JSON report here")
    add_arguments(parser, SfmConfig)
    args = parser.parse_args(argv)
    if not args.images.is_dir():
        print(f"lego images not found at {args.images}; pass --images", file=sys.stderr)
        return 2
    config = from_args(SfmConfig, args, base=preset(args.preset))

    stage_log: list[tuple[float, str, str]] = []
    t0 = time.time()

    def progress(event) -> None:  # noqa: ANN001
        if event.message:
            stage_log.append((round(time.time() - t0, 2), event.stage, event.message))
            print(f"[{time.time() - t0:7.1f} s] {event.stage}: {event.message}", file=sys.stderr, flush=True)

    result = run_sfm(args.images, args.output, config, progress=progress)
    wall = time.time() - t0
    report = quality_report(result.scene, poses_from_transforms(args.transforms))
    report.pop("per_camera", None)
    per_camera = quality_report(result.scene, poses_from_transforms(args.transforms))["per_camera"]
    doc = {
        "benchmark": "sfm_lego", "preset": args.preset, "wall_seconds": round(wall, 1),
        "quality": report,
        "worst_correct": sorted(((v["rotation_deg"], k) for k, v in per_camera.items() if v["correct"]))[-3:],
        "wrong": {k: v for k, v in per_camera.items() if not v["correct"]},
        "machine": {"cpus": os.cpu_count(), "threads": config.num_threads, "platform": platform.platform()},
        "config": to_dict(config), "log": stage_log,
    }
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
