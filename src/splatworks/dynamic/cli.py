"""``splatworks dynamic ...``: the multi-view video commands.

``dynamic prepare`` and ``dynamic clean-plate`` live here. Other modules add their own sub-commands (``dynamic
train``, ``dynamic render``) by defining ``register_dynamic(dynamic_subparsers)``; the modules in
``DYNAMIC_COMMAND_MODULES`` are imported when present, so each can land on its own.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import json
from pathlib import Path

from splatworks.config import add_arguments, from_args, from_dict, to_dict

DYNAMIC_COMMAND_MODULES = [
    "splatworks.dynamic.train_cli",  # dynamic train / render (Gaussian 4D trainer)
    "splatworks.voxels.cli",         # MixVoxels-style backend
]

PREPARE_HELP = """\
Turn multi-view videos of fixed, synchronized cameras into a dataset for 4D training:
frames (images/camXX/NNNNNN.png), masks (masks/camXX/NNNNNN.png, 255 = static, 0 = dynamic),
calibrated cameras (scene.json, transforms.json, poses_bounds.npy, colmap_depth.npy), dataset.json.

Examples:
  splatworks dynamic prepare videos/ -o data/scene
  splatworks dynamic prepare videos/ -o data/scene --stride 2 --resize 0.5
  splatworks dynamic prepare videos/ -o data/scene --calibration.method import --calibration.file calibration.json
"""


CLEAN_PLATE_HELP = """\
Make a "clean plate" per camera (the rig's background with the moving subjects removed) from a prepared dataset's
frames and static/dynamic masks, and write it as a static scene for `splatworks train` (workflow B of depth
supervision: a static model of the empty scene, whose depth `splatworks depth export` hands to dynamic training).

Each pixel of a camera's plate is the temporal median of the frames in which that pixel is static (mask white);
where it is never static, the median of all frames used. masks/CAM.png marks the plate's confidence (255 = static
in at least --min-static-frames frames, 0 = fewer: look there first if the plate shows ghosts). The scene keeps the
rig's cameras exactly (same world frame as DATASET), the dataset's points (minus those on moving things in the
first frame) and its held-out cameras held out.

Examples:
  splatworks dynamic clean-plate data/rig -o data/rig_plate --stride 5
  splatworks train data/rig_plate -o out/plate --preset fast
  splatworks depth export out/plate data/rig -o data/rig/plate_depth.npy
  splatworks dynamic train data/rig -o out/4d --depth distill --depth-file data/rig/plate_depth.npy
"""


def _run_clean_plate(args: argparse.Namespace) -> int:
    from splatworks.dynamic.clean_plate import CleanPlateConfig, build_clean_plate

    cfg = from_args(CleanPlateConfig, args)
    scene = build_clean_plate(args.dataset, args.output, cfg, overwrite=args.force, show_bar=True)
    report = json.loads((Path(args.output) / "clean_plate.json").read_text())
    print(f"clean plate: {args.output}  ({len(scene.cameras)} cameras from {len(report['frames'])} frames, "
          f"held out: {', '.join(scene.test_names) or 'none'}; {len(scene.points)} points, "
          f"{report['points']['dropped_on_moving_things']} dropped on moving things)")
    for name, cam in report["cameras"].items():
        print(f"  {name}: {100 * cam['confident_fraction']:.1f}% confident, {100 * cam['never_static_fraction']:.2f}% "
              f"never static, median {cam['static_frames_median']:.0f} static frames per pixel")
    print(f"next: splatworks train {args.output} -o MODEL")
    return 0


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _run_prepare(args: argparse.Namespace) -> int:
    from splatworks.dynamic.prepare import PRESETS, PrepareConfig, prepare

    base = from_dict(PrepareConfig, _merge(to_dict(PrepareConfig()), PRESETS[args.preset]))
    cfg = from_args(PrepareConfig, args, base=base)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    ds = prepare(args.videos_dir, args.output, cfg, show_bars=True)
    meta = ds.meta
    print(f"dataset: {ds.root}  ({len(ds.camera_names)} cameras x {len(ds.frames)} frames, "
          f"test cameras: {', '.join(ds.test_cameras) or 'none'})")
    cal = meta.get("calibration", {})
    line = f"calibration: {cal.get('method')}"
    if cal.get("method") == "sfm":
        line += f", {cal.get('registered')}/{cal.get('cameras')} cameras registered, {cal.get('points')} points"
    err = cal.get("errors_vs_file")
    if err and "rotation_error_deg_mean" in err:
        line += (f"; vs file: rotation {err['rotation_error_deg_mean']:.3f} deg, centre "
                 f"{100 * err['centre_error_rel_radius_mean']:.2f}% of rig radius")
    print(line)
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in meta.get("timings_s", {}).items()))
    for w in meta.get("warnings", []):
        print(f"warning: {w}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from splatworks.dynamic.prepare import PRESETS, PrepareConfig

    dynamic = subparsers.add_parser("dynamic", help="multi-view video: prepare datasets, train and render 4D scenes",
                                    description="Commands for multi-view videos of fixed cameras.")
    dsub = dynamic.add_subparsers(dest="dynamic_command", metavar="SUBCOMMAND")
    dynamic.set_defaults(func=lambda _args: (dynamic.print_help(), 2)[1])

    p = dsub.add_parser("prepare", help="videos -> frames, calibrated cameras, static/dynamic masks",
                        description=PREPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos_dir", type=Path, help="folder with one video (cam00.mp4, ...) or frame folder per camera")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named settings to start from")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    add_arguments(p, PrepareConfig)
    p.set_defaults(func=_run_prepare)

    from splatworks.dynamic.clean_plate import CleanPlateConfig

    c = dsub.add_parser("clean-plate", help="dataset -> per-camera background without the moving subjects, as a "
                        "static scene", description=CLEAN_PLATE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("dataset", type=Path, help="prepared dataset (dataset.json) with masks")
    c.add_argument("-o", "--output", type=Path, required=True, help="scene folder to write (new or empty)")
    c.add_argument("--force", action="store_true", help="replace the clean plate in a non-empty OUTPUT (other files "
                   "there are kept; never the dataset itself)")
    add_arguments(c, CleanPlateConfig)
    c.set_defaults(func=_run_clean_plate)

    for name in DYNAMIC_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command has not landed yet
                continue
            logging.getLogger(__name__).warning("`dynamic` sub-commands of %s unavailable: %s", name, exc)
            continue
        hook = getattr(module, "register_dynamic", None)
        if hook is not None:
            hook(dsub)
