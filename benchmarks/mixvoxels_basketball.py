"""Benchmark the MixVoxels backend on the CMU Panoptic basketball capture (12 cameras, 150 frames, 640x360).

Trains with a preset on the training cameras, scores the held-out camera (PSNR, SSIM per frame, background
flicker, drift: the Gaussian backend's metric functions) and prints one JSON object with time, peak memory and
model size. Input: a prepared dataset (``--dataset``, from ``splatworks dynamic prepare``), or the raw capture
(``--data``, default ../shared/data/panoptic_basketball): frames decoded with OpenCV, the ground-truth
calibration.json as the rig, the release's masks inverted to our convention (255 = static; used only to pick the
static pixels that flicker is measured on), camera ``--test-camera`` held out (default: the first, cam01, as
``dynamic prepare`` does).

    .venv/bin/python benchmarks/mixvoxels_basketball.py -o /tmp/mv_bb                         # T preset, all
    .venv/bin/python benchmarks/mixvoxels_basketball.py -o /tmp/mv_cpu --frames 2 --scale 0.25 \\
        --preset tiny --iterations 50                                                         # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.scene.camera import Camera, Scene

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panoptic_basketball"


def dataset_from_capture(data: Path, out: Path, n_frames: int, scale: float, test_camera: str | None
                         ) -> DynamicDataset:
    """Write a DynamicDataset (images, masks, GT rig) from the raw capture; reused when already complete."""
    import cv2

    calib = json.loads((data / "calibration.json").read_text())
    n_total = int(calib["num_frames"])
    frames = list(range(min(n_frames, n_total) if n_frames > 0 else n_total))
    cams: list[Camera] = []
    for entry in calib["cameras"]:
        K = np.asarray(entry["K"], dtype=np.float64)
        cam = Camera(name=entry["name"], width=int(calib["width"]), height=int(calib["height"]), fx=K[0, 0],
                     fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], world_to_camera=np.asarray(entry["w2c"]))
        cams.append(cam.scaled(scale) if scale != 1.0 else cam)
    test = [test_camera or cams[0].name]
    root = out / "dataset"
    if (root / "dataset.json").exists():
        ds = DynamicDataset.load(root)
        if ds.frames == frames and ds.rig.cameras[0].width == cams[0].width:
            return ds
    for cam in cams:
        (root / "images" / cam.name).mkdir(parents=True, exist_ok=True)
        (root / "masks" / cam.name).mkdir(parents=True, exist_ok=True)
        cap = cv2.VideoCapture(str(data / "videos" / f"{cam.name}.mp4"))
        for f in frames:
            ok, bgr = cap.read()
            if not ok:
                raise SystemExit(f"{cam.name}.mp4 ends before frame {f}")
            if scale != 1.0:
                bgr = cv2.resize(bgr, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / "images" / cam.name / f"{f:06d}.png"), bgr)
            gt = data / "masks" / cam.name / f"{f:06d}.png"
            if gt.exists():  # release masks: True = dynamic; ours: 255 = static
                dyn = np.asarray(PIL.Image.open(gt).convert("L")) > 0
                m = np.where(dyn, 0, 255).astype(np.uint8)
                m = cv2.resize(m, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
                cv2.imwrite(str(root / "masks" / cam.name / f"{f:06d}.png"), m)
        cap.release()
    ds = DynamicDataset(root=root, rig=Scene(cameras=cams, meta={"source": str(data), "calibration": "ground truth"}),
                        frames=frames, test_cameras=test, fps=float(calib.get("fps", 30)),
                        meta={"source": str(data), "calibration": {"method": "import"}, "masks": "release, inverted"})
    ds.save()
    return ds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="work folder (dataset copy, model, results)")
    ap.add_argument("--dataset", type=Path, default=None, help="prepared dataset (else built from --data)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="raw capture folder (videos, calibration.json)")
    ap.add_argument("--frames", type=int, default=0, help="use the first N frames (0: all 150)")
    ap.add_argument("--scale", type=float, default=1.0, help="image scale when building from --data")
    ap.add_argument("--test-camera", default=None, help="held-out camera (default: the first)")
    ap.add_argument("--preset", default="T", help="MixVoxels preset: tiny, T, M, L")
    ap.add_argument("--iterations", type=int, default=0, help="override the preset's iterations")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other MixVoxelsConfig overrides")
    ap.add_argument("--no-resume", action="store_true", help="train from scratch even when a checkpoint exists")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from splatworks.voxels import preset
    from splatworks.voxels.config import MixVoxelsConfig
    from splatworks.voxels.evaluation import evaluate
    from splatworks.voxels.train import train_mixvoxels

    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.dataset is not None:
        ds = DynamicDataset.load(args.dataset)
        if args.frames > 0:
            ds.frames = ds.frames[:args.frames]
    else:
        ds = dataset_from_capture(args.data, args.output, args.frames, args.scale, args.test_camera)
    t_data = time.time() - t0
    overrides = {}
    fields = MixVoxelsConfig.__dataclass_fields__
    for kv in args.set:
        k, v = kv.split("=", 1)
        default = getattr(MixVoxelsConfig(), k)
        overrides[k] = type(default)(v) if not isinstance(default, bool) else v.lower() in ("1", "true", "yes")
        assert k in fields
    if args.iterations:
        overrides["iterations"] = args.iterations
    cfg = preset(args.preset, **overrides)
    res = train_mixvoxels(ds, args.output / "model", cfg, resume=not args.no_resume, show_progress_bar=True)
    t1 = time.time()
    import importlib.util

    has_av = importlib.util.find_spec("av") is not None  # PyAV writes the held-out video; absent on bare hosts
    if not has_av:
        logging.warning("PyAV is not installed: no held-out video is written (add it with wheelhouse.sh av)")
    metrics = evaluate(args.output / "model", ds, save_video=has_av)
    t_eval = time.time() - t1
    cam = metrics["camera"]
    report = {
        "benchmark": "mixvoxels_basketball", "preset": cfg.preset, "iterations": cfg.iterations,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cameras_train": len(ds.train_camera_names), "test_camera": cam, "frames": len(ds.frames),
        "resolution": [ds.rig.cameras[0].width, ds.rig.cameras[0].height],
        "train_seconds": round(res.train_seconds, 1), "data_seconds": round(t_data, 1),
        "eval_seconds": round(t_eval, 1), "peak_memory_gib": round(res.peak_memory_bytes / 2**30, 3),
        "model_mb": round(res.model_bytes / 1e6, 2),
        "psnr_mean": round(metrics["psnr_mean"], 3), "ssim_mean": round(metrics["ssim_mean"], 4),
        "psnr_static_mean": round(metrics["psnr_static_mean"], 3),
        "flicker_levels": round(metrics["flicker_levels"], 3),
        "drift_db_per_frame": round(metrics["drift_db_per_frame"], 5),
        "psnr_per_minute": round(metrics["psnr_mean"] / max(res.train_seconds / 60, 1e-6), 3),
        "dynamic_voxel_share": round(res.dynamic_voxel_share, 4),
        "dynamic_pixel_share": round(res.dynamic_pixel_share, 4),
        "video": str(args.output / "model" / f"render_{cam}.mp4") if has_av else None,
    }
    (args.output / "benchmark.json").write_text(json.dumps({**report, "psnr_per_frame": metrics["psnr"]}, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
