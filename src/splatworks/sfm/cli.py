"""``splatworks sfm IMAGES_DIR -o WORK_DIR``: calibrate photos with pycolmap (thin wrapper over ``run_sfm``).

``splatworks sfm SCENE -o WORK_DIR --known-poses``: keep a scene's poses and intrinsics (transforms.json, LLFF,
COLMAP, scene.json) and only triangulate points (``splatworks.sfm.known_poses``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from splatworks.config import add_arguments, from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from splatworks.sfm.pipeline import PRESETS, SfmConfig

    parser = subparsers.add_parser(
        "sfm", help="structure from motion: cameras and sparse points from photos (pycolmap)",
        description="Extract SIFT features, match, map (incremental or global), check every pose against its "
                    "pairs, undistort to pinhole images and write WORK_DIR/scene.json, sparse/0, images/, "
                    "sparse_depth.npz and colmap_depth.npy. The image folder is never modified.")
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of photos (JPEG/PNG/HEIC, RGBA ok); "
                        "with --known-poses, a scene with poses (transforms.json, LLFF, COLMAP model, scene.json)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="WORK_DIR", help="work/output folder")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="starting settings: colmap (COLMAP defaults, no pose check), default, fast, quality; "
                             "options below override it (default: default)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_arguments(parser, SfmConfig)
    from splatworks.sfm.known_poses import KnownPosesConfig

    parser.add_argument("--known-poses", action="store_true",
                        help="the input already has exact poses and pinhole intrinsics (calibrated rig, NeRF-synthetic, "
                             "transforms.json, LLFF): keep them, only match features and triangulate points at those "
                             "poses, then write the same files as full SfM (points, sparse depth). Options below apply")
    add_arguments(parser, KnownPosesConfig)
    parser.set_defaults(func=_run)
    from splatworks.sfm.mvs import register_dense

    register_dense(subparsers)  # `splatworks dense SCENE -o points.ply`: plane-sweep MVS at known poses


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splatworks.sfm.pipeline import SfmConfig, preset, run_sfm

    config = from_args(SfmConfig, args, base=preset(args.preset))
    bars: dict[str, Any] = {}

    def progress(event: Any) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[event.stage] = tqdm(total=event.total or None, desc=event.stage, unit="img", leave=True)
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.n = event.step
        if event.message:
            bar.set_postfix_str(event.message[:60], refresh=False)
        bar.refresh()

    try:
        if args.known_poses:
            from splatworks.sfm.known_poses import KnownPosesConfig, run_known_poses

            result = run_known_poses(args.images, args.output, config, from_args(KnownPosesConfig, args),
                                     progress=progress)
        else:
            result = run_sfm(args.images, args.output, config, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    report = result.report
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "source_names"}, indent=1))
        return 0
    print(format_report(report, result.work_dir))
    return 0


def format_report(report: dict[str, Any], work_dir: Path) -> str:
    """The human-readable summary printed after ``splatworks sfm``."""
    if report.get("known_poses"):
        lines = [f"known poses: triangulated from {report['triangulated_views']} of {report['total']} views "
                 f"({report['matcher']} matching), {report['depth_samples']} depth samples",
                 f"mean reprojection error {report['mean_reprojection_error']:.3f} px, {report['num_points']} points, "
                 f"mean track length {report['mean_track_length']:.2f}"]
        secs = report.get("seconds", {})
        lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
        lines.append(f"wrote {work_dir / 'scene.json'}, {work_dir / 'sparse_depth.npz'}, {work_dir / 'colmap_depth.npy'}")
        return "\n".join(lines)
    lines = [f"registered {report['registered']} of {report['total']} images "
             f"({report['matcher']} matching, {report['mapper']} mapping, {report['camera_mode']} camera)",
             f"mean reprojection error {report['mean_reprojection_error']:.3f} px, {report['num_points']} points"]
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for d in report.get("dropped", []):
        lines.append(f"dropped {d['name']}: {d['reason']}")
    for d in report.get("flagged", []):
        lines.append(f"flagged {d['name']}: {d['reason']}")
    secs = report.get("seconds", {})
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items())
                 + f" (total {sum(secs.values()):.1f})")
    lines.append(f"wrote {work_dir / 'scene.json'}, {work_dir / 'images'}, {work_dir / 'sparse' / '0'}")
    return "\n".join(lines)
