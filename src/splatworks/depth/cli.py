"""``splatworks depth export MODEL DATASET -o all_depth.npy``: a static model's depth for distillation."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Render a static model's depth for every training camera of DATASET (never the held-out ones) into
all_depth.npy: float32 (C, H, W), camera-space z in world units, 0 = unknown; all_depth.json lists the cameras.
Use it in dynamic training with `splatworks dynamic train DATASET -o OUT --depth distill --depth-file all_depth.npy`.

Examples:
  splatworks train static_scene/ -o out/static
  splatworks depth export out/static data/rig -o data/rig/all_depth.npy
"""


def _run_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splatworks.depth.export import export_depth

    bar = tqdm(unit="camera", desc="depth")

    def progress(ev) -> None:
        bar.total = ev.total
        bar.update(ev.step - bar.n)

    try:
        path = export_depth(args.model, args.dataset, args.output, min_alpha=args.min_alpha, device=args.device,
                            progress=progress)
    finally:
        bar.close()
    import json

    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {len(meta['cameras'])} cameras, {100 * meta['coverage']:.1f}% of pixels with depth")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("depth", help="depth supervision files (static-model depth export)")
    sub = p.add_subparsers(dest="depth_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])
    e = sub.add_parser("export", help="render a static model's depth for a dataset's training cameras",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", type=Path, help=".ply / .splat, or a `splatworks train` output folder")
    e.add_argument("dataset", type=Path, help="prepared dataset (dataset.json) or scene folder (scene.json)")
    e.add_argument("-o", "--output", type=Path, required=True, help="all_depth.npy to write")
    e.add_argument("--min-alpha", type=float, default=0.5,
                   help="pixels less covered than this get depth 0 = unknown (default: 0.5)")
    e.add_argument("--device", default="auto", help="auto, cuda or cpu")
    e.set_defaults(func=_run_export)
