"""``splatworks train``, ``export``, ``eval``: thin command lines over ``splat.trainer`` and ``splat.io``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from splatworks.config import add_arguments, from_args
from splatworks.errors import UserError

log = logging.getLogger(__name__)


def _load_scene(path: Path):
    from splatworks.scene.camera import SCENE_FILE, Scene

    try:
        from splatworks.scene.io import load_any
    except ImportError:
        load_any = None
    if load_any is not None:
        return load_any(path)
    if (path / SCENE_FILE).exists() or path.name == SCENE_FILE:
        return Scene.load(path)
    raise UserError(f"{path}: no scene.json here (other formats need splatworks.scene.io)")


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from splatworks.splat.trainer import TrainConfig, preset, train

    base = preset(args.preset)
    config: TrainConfig = from_args(TrainConfig, args, base=base)
    scene = _load_scene(Path(args.scene))
    print(f"training {len(scene.cameras)} images -> {args.out} ({args.preset} preset, {config.iterations} iterations)")
    bar = tqdm(total=config.iterations, unit="it", dynamic_ncols=True)

    def progress(ev) -> None:
        if ev.metrics.get("loss") is not None:
            bar.set_description("training")
            bar.update(ev.step - bar.n)
            m = ev.metrics
            bar.set_postfix(loss=f"{m['loss']:.4f}", psnr=f"{m['psnr']:.2f}", gaussians=m["num_gaussians"])
        elif ev.checkpoint:
            bar.write(f"checkpoint: {ev.checkpoint}")
        elif ev.message:
            bar.set_description(ev.message)

    from splatworks.depth.losses import DepthConfig, sparse_depth_loss_for  # --depth sparse (issue 8)
    from splatworks.splat.trainer import pick_device

    depth_loss = sparse_depth_loss_for(scene, Path(args.scene), from_args(DepthConfig, args), config.iterations,
                                       pick_device(config.device))
    try:
        result = train(scene, Path(args.out), config, progress=progress, resume=not args.restart,
                       extra_losses=[depth_loss] if depth_loss is not None else None)
    finally:
        bar.close()
    m = result.metrics
    if m.get("psnr") is not None:
        print(f"held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} on {m['test']['num_views']} views")
    print(f"{result.num_gaussians} Gaussians, {m['train_seconds']:.1f} s; results in {result.checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from splatworks.splat import io as sio

    src, dst = Path(args.input), Path(args.output)
    if src.is_dir():  # a training output folder: its newest checkpoint
        latest = sio.latest_checkpoint(src)
        if latest is None:
            raise UserError(f"{src}: no point_cloud/iteration_N checkpoint in this folder")
        src = latest[1] / "point_cloud.ply"
    params = sio.read_gaussians(src)
    sio.write_gaussians(dst, params)
    print(f"{len(params['means'])} Gaussians: {src} -> {dst}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from splatworks.splat import io as sio
    from splatworks.splat.data import load_views
    from splatworks.splat.gaussians import params_from_tensors
    from splatworks.splat.trainer import evaluate, pick_device

    scene = _load_scene(Path(args.scene))
    if not scene.test_names:
        scene.hold_out_every(args.hold_out_every)
    device = pick_device(args.device)
    raw = sio.read_gaussians(Path(args.gaussians))
    params = params_from_tensors(raw, device)
    degree = int(round((raw["shN"].shape[1] + 1) ** 0.5)) - 1
    bg = tuple(scene.background or (0.0, 0.0, 0.0))
    views = load_views(scene, scene.test_cameras or scene.cameras, bg, device, args.max_resolution, args.downscale)
    ev = evaluate(params, views, torch.tensor(bg, device=device), degree, near_plane=args.near_plane)
    print(json.dumps(ev["mean"], indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(ev, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from splatworks.splat.render import DEFAULT_NEAR_PLANE
    from splatworks.splat.trainer import PRESETS, TrainConfig

    p = subparsers.add_parser("train", help="train Gaussians on a calibrated scene",
                              description="Train 3D Gaussians (gsplat on GPU, the torch reference on CPU). SCENE: "
                              "an SfM work dir, COLMAP model, NeRF-synthetic / instant-ngp transforms, or LLFF.")
    p.add_argument("scene", help="scene folder")
    p.add_argument("-o", "--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="default: 30k iterations, checkpoints at 10k/20k/30k; fast: a quick look")
    p.add_argument("--restart", action="store_true", help="ignore checkpoints in OUT and start over")
    add_arguments(p, TrainConfig, presets=PRESETS)
    from splatworks.depth.losses import DepthConfig

    add_arguments(p, DepthConfig)  # --depth sparse, --depth-weight ... (splatworks.depth)
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("export", help="convert Gaussians between .ply (3DGS) and .splat (antimatter15)",
                              description="Convert IN (.ply, .splat, or a training folder) to OUT (.ply or .splat).")
    e.add_argument("input", help=".ply, .splat, or a training output folder (its newest checkpoint)")
    e.add_argument("-o", "--output", required=True, help="output file, .ply or .splat")
    e.set_defaults(func=cmd_export)

    v = subparsers.add_parser("eval", help="PSNR/SSIM of trained Gaussians on a scene's held-out views")
    v.add_argument("scene", help="scene folder")
    v.add_argument("gaussians", help=".ply or .splat")
    v.add_argument("--hold-out-every", type=int, default=8, help="when the scene names no held-out views")
    v.add_argument("--device", default="auto", help="auto, cuda or cpu")
    v.add_argument("--max-resolution", type=int, default=0, help="longest image side, as in training (0 = as stored)")
    v.add_argument("--downscale", type=float, default=1.0, help="image downscale factor, as in training")
    v.add_argument("--near-plane", type=float, default=DEFAULT_NEAR_PLANE,
                   help="near clipping plane in scene units, as in training (--near-plane; 0.01 = gsplat's default)")
    v.add_argument("-o", "--output", default=None, help="write per-view metrics JSON here")
    v.set_defaults(func=cmd_eval)
