"""``--model mixvoxels`` options of ``splatworks dynamic train`` / ``render`` / ``eval``.

``dynamic/cli.py`` calls :func:`register_dynamic` after the Gaussian trainer's commands are registered. The
MixVoxels settings are added to ``dynamic train`` as ``--mixvoxels.<setting>`` (so they never clash with the
Gaussian trainer's options), and the commands hand MixVoxels work to this module:

    splatworks dynamic train data/scene -o out/voxels --model mixvoxels --mixvoxels.preset M
    splatworks dynamic train data/scene -o out/quick --model mixvoxels --mixvoxels.iterations 2000
    splatworks dynamic render out/voxels --camera cam00 -o cam00.mp4
    splatworks dynamic eval out/voxels
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from splatworks.config import add_arguments, from_args, to_dict

PREFIX = "mixvoxels."


def is_mixvoxels_output(path: str | Path) -> bool:
    """True for an output folder written by ``train_mixvoxels``."""
    p = Path(path)
    if not (p / "checkpoint.pt").exists() or not (p / "config.json").exists():
        return False
    return (p / "rig" / "scene.json").exists()


def config_from_args(args: argparse.Namespace):
    """The MixVoxelsConfig of parsed ``--mixvoxels.*`` options: the preset first, then the given options."""
    from splatworks.voxels.config import MixVoxelsConfig, preset

    name = getattr(args, "mixvoxels__preset", "T")
    return from_args(MixVoxelsConfig, args, base=preset(name), prefix="mixvoxels__")


def _run_train(args: argparse.Namespace) -> int:
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.errors import UserError
    from splatworks.voxels.train import train_mixvoxels

    cfg = config_from_args(args)
    if getattr(args, "print_config", False):
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    try:
        ds = DynamicDataset.load(args.dataset)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    res = train_mixvoxels(ds, args.output, cfg, resume=not getattr(args, "no_resume", False),
                          show_progress_bar=True)
    print(f"MixVoxels model in {res.out_dir}: {res.iterations} iterations in {res.train_seconds:.0f} s, "
          f"model {res.model_bytes / 1e6:.1f} MB, peak memory {res.peak_memory_bytes / 2**30:.2f} GiB, "
          f"{100 * res.dynamic_voxel_share:.1f}% of occupied voxels dynamic"
          + (f"; stopped by the {res.time_budget_min:g}-minute time budget (of {res.iterations_planned} planned "
             f"iterations)" if res.stopped_by_budget else ""))
    return 0


def _run_render(args: argparse.Namespace) -> int:
    from splatworks.voxels.evaluation import render_video

    path = render_video(args.train_dir, args.camera, args.output, fps=getattr(args, "fps", None))
    print(f"wrote {path}")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.scene.camera import Scene
    from splatworks.voxels.evaluation import evaluate

    root = getattr(args, "dataset", None) or Scene.load(Path(args.train_dir) / "rig").meta["dataset"]
    ds = DynamicDataset.load(root)
    cams = [args.camera] if getattr(args, "camera", None) else None
    res = evaluate(args.train_dir, ds, cameras=cams)
    if getattr(args, "output", None):
        Path(args.output).write_text(json.dumps(res, indent=1))
    print(f"{res['camera']}: PSNR {res['psnr_mean']:.2f} dB, SSIM {res['ssim_mean']:.4f}, static PSNR "
          f"{res['psnr_static_mean']:.2f} dB, flicker {res['flicker_levels']:+.3f}/255, drift "
          f"{res['drift_db_per_frame']:+.4f} dB/frame")
    return 0


def _dispatch(parser: argparse.ArgumentParser, ours, use_ours) -> None:
    """Make ``parser`` run ``ours`` when ``use_ours(args)``, its previous command otherwise."""
    previous = parser.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if use_ours(args) or previous is None:
            return ours(args)
        return previous(args)

    parser.set_defaults(func=run)


def register_dynamic(dsub: argparse._SubParsersAction) -> None:
    from splatworks.voxels.config import PRESETS, MixVoxelsConfig

    parsers = dict(getattr(dsub, "choices", {}) or {})
    train = parsers.get("train")
    if train is None:  # the Gaussian trainer's commands are not installed: provide our own
        train = dsub.add_parser("train", help="train a 4D scene (--model mixvoxels)")
        train.add_argument("dataset", type=Path, help="prepared dataset folder (dataset.json)")
        train.add_argument("-o", "--output", type=Path, required=True, help="output folder (resumed when it exists)")
        train.add_argument("--model", default="mixvoxels", choices=("mixvoxels",), help="4D representation")
        train.add_argument("--no-resume", action="store_true", help="start over instead of continuing")
        train.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    group = train.add_argument_group("MixVoxels (--model mixvoxels)",
                                     "presets T / M / L follow the paper's budgets; tiny is for CPU smoke tests")
    add_arguments(group, MixVoxelsConfig, prefix=PREFIX)  # type: ignore[arg-type]
    for action in group._group_actions:
        if action.dest == "mixvoxels__preset":
            action.choices = sorted(PRESETS)
    _dispatch(train, _run_train, lambda a: getattr(a, "model", "mixvoxels") == "mixvoxels")

    render = parsers.get("render")
    if render is None:
        render = dsub.add_parser("render", help="fixed-camera video of a trained MixVoxels model")
        render.add_argument("train_dir", type=Path, help="output folder of `dynamic train`")
        render.add_argument("--camera", default="0", help="rig camera name (cam03) or index (default 0)")
        render.add_argument("--fps", type=float, default=None, help="frame rate (default: the dataset's)")
        render.add_argument("-o", "--output", type=Path, required=True, help="video file to write (.mp4)")
    _dispatch(render, _run_render, lambda a: is_mixvoxels_output(a.train_dir))

    ev = parsers.get("eval")
    if ev is None:
        ev = dsub.add_parser("eval", help="held-out PSNR/SSIM per frame, background flicker and drift")
        ev.add_argument("train_dir", type=Path, help="output folder of `dynamic train`")
        ev.add_argument("--camera", default=None, help="camera to score (default: the held-out cameras)")
        ev.add_argument("--dataset", type=Path, default=None, help="dataset folder (default: the one trained on)")
        ev.add_argument("-o", "--output", type=Path, default=None, help="write the results as JSON here")
    _dispatch(ev, _run_eval, lambda a: is_mixvoxels_output(a.train_dir))
