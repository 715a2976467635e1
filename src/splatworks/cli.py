"""The ``splatworks`` command: one subcommand per pipeline stage.

Each stage's CLI lives next to its code in a module with ``register(subparsers)``, which adds a parser whose
``func`` default runs the command. Modules are imported here by name so that ``--help`` stays quick and heavy
imports (torch, pycolmap) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from splatworks.errors import UserError

# Order here is the order in `splatworks --help`.
COMMAND_MODULES = [
    "splatworks.synthetic.cli",   # synth
    "splatworks.scene.cli",       # scene info / convert / check-images / prepare-images
    "splatworks.sfm.cli",         # sfm
    "splatworks.splat.cli",       # train, export, render, eval
    "splatworks.depth.cli",       # depth export
    "splatworks.dynamic.cli",     # dynamic prepare / train / render
    "splatworks.service.cli",     # serve, admin, worker
]

DESCRIPTION = """\
Turn photos and multi-view videos into 3D / 4D Gaussian-splatting scenes, and serve them to a browser.

Typical use:
  splatworks serve                          # web service + viewer on http://127.0.0.1:8000
  splatworks sfm photos/ -o work/           # cameras and sparse points from photos (pycolmap)
  splatworks train work/ -o out/            # train Gaussians (gsplat on GPU, reference rasterizer on CPU)
  splatworks export out/point_cloud/iteration_30000/point_cloud.ply -o scene.splat

Run `splatworks COMMAND --help` for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splatworks", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="verbosity of log messages (default: INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
