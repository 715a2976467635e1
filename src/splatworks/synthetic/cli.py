"""``splatworks synth static|dynamic -o OUT``: write a synthetic scene with ground truth (for tests and demos)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="generate a synthetic scene with exact ground truth",
                                   description="Render a textured synthetic scene from known cameras: images, depth "
                                               "and GT poses (static), or a fixed video rig with moving objects, GT "
                                               "masks and calibration.json (dynamic).")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    static = kinds.add_parser("static", help="orbit of views around a textured room corner")
    static.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    static.add_argument("--views", type=int, default=24, help="number of views (default: 24)")
    static.add_argument("--rgba", action="store_true", help="objects only, RGBA PNGs with transparent background")
    _common(static)
    static.set_defaults(func=_run_static)

    dynamic = kinds.add_parser("dynamic", help="fixed rig of video cameras, two moving objects")
    dynamic.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    dynamic.add_argument("--cameras", type=int, default=5, help="rig cameras (default: 5)")
    dynamic.add_argument("--frames", type=int, default=6, help="frames per camera (default: 6)")
    dynamic.add_argument("--fps", type=int, default=10, help="video frame rate (default: 10)")
    dynamic.add_argument("--no-videos", action="store_true", help="write PNG frames only, no MP4s")
    _common(dynamic)
    dynamic.set_defaults(func=_run_dynamic)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=160, help="image width in pixels (default: 160)")
    p.add_argument("--height", type=int, default=120, help="image height in pixels (default: 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same scene (default: 0)")


def _bar(total_hint: int, unit: str = "view"):  # noqa: ANN202 - tqdm-backed ProgressFn
    from tqdm import tqdm

    bar = tqdm(total=total_hint, unit=unit, desc="rendering")

    def progress(event) -> None:  # noqa: ANN001
        bar.total = event.total or bar.total
        bar.n = event.step
        bar.refresh()

    return bar, progress


def _check(args: argparse.Namespace, *counts: int) -> None:
    from splatworks.errors import UserError

    if args.width < 16 or args.height < 16 or min(counts) < 1:
        raise UserError("--width/--height must be at least 16 pixels and counts at least 1")


def _run_static(args: argparse.Namespace) -> int:
    from splatworks.synthetic.scenes import make_static_scene

    _check(args, args.views)
    bar, progress = _bar(args.views)
    with bar:
        scene = make_static_scene(args.output, n_views=args.views, width=args.width, height=args.height,
                                  seed=args.seed, rgba=args.rgba, progress=progress)
    print(f"wrote {len(scene.cameras)} views to {args.output / 'images'}, depth to {args.output / 'depth'}, "
          f"ground truth ({len(scene.points)} points) to {args.output / 'gt'}")
    return 0


def _run_dynamic(args: argparse.Namespace) -> int:
    from splatworks.synthetic.scenes import make_dynamic_rig

    _check(args, args.cameras, args.frames, args.fps)
    bar, progress = _bar(args.frames, "frame")
    with bar:
        truth = make_dynamic_rig(args.output, n_cameras=args.cameras, n_frames=args.frames, width=args.width,
                                 height=args.height, seed=args.seed, write_videos=not args.no_videos, fps=args.fps,
                                 progress=progress)
    print(f"wrote {len(truth.rig.cameras)} cameras x {truth.n_frames} frames to {args.output} "
          f"(videos/, frames/, masks_gt/, depth/, calibration.json, gt/)")
    return 0
