"""Benchmark: train NeRF-synthetic lego and report held-out PSNR/SSIM, time and peak GPU memory.

Protocol (issue 3): the 100 training images of ``nerf_synthetic_lego`` composited on white, every 8th image in
natural name order held out (r_0, r_8, ..., r_96: 13 views), trained on the other 87 at 800x800. Training time
is the wall time of the training loop (gsplat's one-time kernel compile and image loading excluded).

    python benchmarks/train_lego.py --data ../shared/data/nerf_synthetic_lego --preset fast -o bench_out/fast
    python benchmarks/train_lego.py --preset default --set strategy=mcmc --set cap_max=300000
    python benchmarks/train_lego.py --preset default --profile 300     # also time the phases of a step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"default": {"psnr": 37.4, "seconds": 150.0, "gib": 1.5}, "fast": {"psnr": 36.0, "seconds": 45.0}}


def load_lego(path: Path):
    """The scene through the project's reader; a NeRF-synthetic fallback while scene.io is not there."""
    from splatworks.scene.camera import Camera, Scene

    try:
        from splatworks.scene.io import load_any
    except ImportError:
        load_any = None
    if load_any is not None:
        scene = load_any(path)
    else:
        meta = json.loads((path / "transforms_train.json").read_text())
        cams = []
        for fr in meta["frames"]:
            name = fr["file_path"].removeprefix("./") + ".png"
            w = h = 800
            f = 0.5 * w / np.tan(0.5 * meta["camera_angle_x"])
            cams.append(Camera(name=name, width=w, height=h, fx=f, fy=f, cx=w / 2, cy=h / 2,
                               world_to_camera=Camera.world_to_camera_from_opengl_c2w(np.array(fr["transform_matrix"]))))
        scene = Scene(cameras=cams, image_dir=path, background=(1.0, 1.0, 1.0))
    scene.background = (1.0, 1.0, 1.0)
    scene.hold_out_every(8)
    return scene


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nerf_synthetic_lego")
    ap.add_argument("--preset", default="default")
    ap.add_argument("-o", "--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after training, time the phases of STEPS steps on the final Gaussians")
    ap.add_argument("--json", type=Path, default=None, help="append the summary line to this file")
    args = ap.parse_args(argv)

    from splatworks.splat.trainer import preset, train

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        v = parse_value(value)
        overrides[key.replace("-", "_")] = tuple(v) if isinstance(v, list) else v
    config = preset(args.preset, **overrides)
    t = time.perf_counter()
    scene = load_lego(args.data)
    test = [c.name for c in scene.test_cameras]
    print(f"lego: {len(scene.train_cameras)} train / {len(test)} held out ({test[0]} ... {test[-1]})", flush=True)

    def report(ev):
        if ev.metrics and "loss" in ev.metrics and ev.step % 1000 == 0:
            m = ev.metrics
            print(f"  it {ev.step:6d}  loss {m['loss']:.4f}  psnr {m['psnr']:.2f}  N {m['num_gaussians']:7d}"
                  f"  {m['it_per_s']:.0f} it/s", flush=True)

    result = train(scene, args.out, config, progress=report, resume=False)
    m = result.metrics
    import torch

    summary = {"preset": args.preset, "overrides": overrides, "psnr": m.get("psnr"), "ssim": m.get("ssim"),
               "lpips": m.get("lpips"), "train_seconds": m["train_seconds"], "num_gaussians": m["num_gaussians"],
               "peak_gpu_gib": m["peak_gpu_memory_gib"], "gpu": m.get("gpu"), "iterations": config.iterations,
               "wall_seconds_total": time.perf_counter() - t, "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    tgt = TARGETS.get(args.preset)
    if tgt:
        summary["targets"] = tgt
        summary["meets"] = bool((m.get("psnr") or 0) >= tgt["psnr"] and m["train_seconds"] <= tgt["seconds"]
                                and m["peak_gpu_memory_gib"] <= tgt.get("gib", 1e9))
    print("SUMMARY " + json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(summary) + "\n")
    if args.profile:
        from profile_step import profile

        prof = profile(scene, result, config, args.profile)
        print("PROFILE " + json.dumps(prof), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"profile": prof, "preset": args.preset, "overrides": overrides}) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
