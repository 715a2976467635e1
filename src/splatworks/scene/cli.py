"""``splatworks scene info|convert|check-images|prepare-images``: inspect and convert scenes, check photos."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from splatworks.config import add_arguments
    from splatworks.scene.images import ImageLimits
    from splatworks.scene.io import FORMATS

    parser = subparsers.add_parser("scene", help="inspect or convert a scene (COLMAP, transforms.json, LLFF); "
                                                 "check a folder of photos",
                                   description="Scene formats: COLMAP sparse models (.bin/.txt), transforms.json "
                                               "(Blender/NeRF-synthetic and nerfstudio/instant-ngp), LLFF "
                                               "poses_bounds.npy, and splatworks' scene.json.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    info = verbs.add_parser("info", help="detect the format and summarise cameras and points")
    info.add_argument("path", type=Path, help="scene folder or file (scene.json, sparse/0, transforms.json, ...)")
    info.add_argument("--images", type=Path, default=None, help="image folder, if not the detected one")
    info.set_defaults(func=_info)

    convert = verbs.add_parser("convert", help="write a scene in another format (images are not copied)")
    convert.add_argument("path", type=Path, help="scene folder or file in any supported format")
    convert.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    convert.add_argument("--to", required=True, choices=FORMATS, help="output format")
    convert.add_argument("--images", type=Path, default=None, help="image folder, if not the detected one")
    convert.set_defaults(func=_convert)

    check = verbs.add_parser("check-images", help="check every photo in a folder; list all problems at once")
    check.add_argument("folder", type=Path, help="folder of photos (not modified)")
    add_arguments(check, ImageLimits)
    check.set_defaults(func=_check)

    prep = verbs.add_parser("prepare-images", help="write normalised 8-bit RGB copies (EXIF rotation applied, "
                                                   "alpha composited, optional downscale)")
    prep.add_argument("folder", type=Path, help="folder of photos (never modified)")
    prep.add_argument("-o", "--output", type=Path, required=True, help="folder for the copies")
    prep.add_argument("--max-size", type=int, default=None, help="longest side in pixels (default: keep size)")
    prep.add_argument("--background", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("R", "G", "B"),
                      help="colour in [0, 1] that transparent pixels are composited on (default: 1 1 1, white)")
    add_arguments(prep, ImageLimits)
    prep.set_defaults(func=_prepare)


def _info(args: argparse.Namespace) -> int:
    from splatworks.scene.io import detect_format, load_any

    fmt, where = detect_format(args.path)
    scene = load_any(args.path, images=args.images, check_images=False)
    models = Counter(c.model for c in scene.cameras)
    sizes = Counter(f"{c.width}x{c.height}" for c in scene.cameras)
    print(f"format:    {fmt} ({where})")
    print(f"cameras:   {len(scene.cameras)} ({len(scene.test_cameras)} held out), "
          f"{len({c.camera_id for c in scene.cameras})} intrinsics group(s)")
    print(f"models:    {dict(models)}")
    print(f"sizes:     {dict(sizes)}")
    print(f"points:    {len(scene.points)}")
    print(f"images:    {scene.image_dir}")
    if scene.cameras:
        missing = sum(not scene.image_path(c).is_file() for c in scene.cameras) if scene.image_dir else "?"
        print(f"missing:   {missing} image file(s)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from splatworks.scene.io import load_any, save_as

    scene = load_any(args.path, images=args.images, check_images=False)
    out = save_as(scene, args.output, args.to)
    print(f"wrote {len(scene.cameras)} cameras as {args.to}: {out}")
    return 0


def _limits(args: argparse.Namespace):  # noqa: ANN202
    from splatworks.config import from_args
    from splatworks.scene.images import ImageLimits

    return from_args(ImageLimits, args)


def _check(args: argparse.Namespace) -> int:
    from splatworks.scene.images import validate_image_folder

    infos = validate_image_folder(args.folder, _limits(args))
    sizes = Counter(f"{i.width}x{i.height}" for i in infos)
    formats = Counter(i.format for i in infos)
    print(f"{len(infos)} usable images in {args.folder}")
    print(f"formats:   {dict(formats)}")
    print(f"sizes:     {dict(sizes)}" + ("  (different sizes: allowed)" if len(sizes) > 1 else ""))
    print(f"rotated:   {sum(i.exif_rotated for i in infos)} by EXIF; with alpha: {sum(i.has_alpha for i in infos)}; "
          f"16-bit: {sum(i.bits == 16 for i in infos)}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from splatworks.scene.images import prepare_images

    infos = prepare_images(args.folder, args.output, background=tuple(args.background), limits=_limits(args),
                           max_size=args.max_size)
    print(f"wrote {len(infos)} images to {args.output}")
    return 0
