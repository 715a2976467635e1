"""Benchmark the MixVoxels backend on the CMU Panoptic basketball capture (12 cameras, 150 frames, 640x360).

Trains with a preset on the training cameras, scores the held-out camera with the Gaussian backend's metric
functions (PSNR, SSIM per frame, static-pixel PSNR, background flicker, drift: ``splat.metrics`` and
``dynamic.metrics4d``) and writes one JSON report with per-phase times, peak memory and model size.

Input: a prepared dataset (``--dataset``, from ``splatworks dynamic prepare``), or the raw capture (``--data``,
default ../shared/data/panoptic_basketball): frames decoded with OpenCV (bit-identical to PyAV's decode of these
videos), the ground-truth calibration.json as the rig, camera ``--test-camera`` held out (default: the first,
cam01, as ``dynamic prepare --test-cameras first`` does in ``dynamic_basketball.py``). Static pixels of the
held-out camera (flicker, static PSNR) come from ``--masks ours`` (default): ``dynamic prepare``'s own background
masks with its default settings, made for the held-out camera only, i.e. the pixels the Gaussian benchmark
scores; ``--masks release`` uses the capture's masks (inverted to our 255 = static) for every camera instead.

``--time-budget-min M`` caps the training loop at M minutes (checkpoint kept; evaluation and the held-out video
still run; the report says whether the cap cut the run). ``--report PATH`` rewrites the report after every phase,
so a run killed late still leaves what it measured.

    .venv/bin/python benchmarks/mixvoxels_basketball.py -o /tmp/mv_bb --time-budget-min 6       # T preset, all
    .venv/bin/python benchmarks/mixvoxels_basketball.py -o /tmp/mv_cpu --frames 2 --scale 0.25 \\
        --preset tiny --iterations 50                                                           # CPU smoke run
    .venv/bin/python benchmarks/mixvoxels_basketball.py --profile-iteration --preset T           # cost estimate
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.scene.camera import Camera, Scene

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panoptic_basketball"
log = logging.getLogger("mixvoxels_basketball")


def capture_rig(data: Path, scale: float) -> tuple[list[Camera], dict[str, Any]]:
    """The capture's ground-truth cameras (OpenCV axes, w2c) at ``scale``, and the calibration file's header."""
    calib = json.loads((data / "calibration.json").read_text())
    cams: list[Camera] = []
    for entry in calib["cameras"]:
        K = np.asarray(entry["K"], dtype=np.float64)
        cam = Camera(name=entry["name"], width=int(calib["width"]), height=int(calib["height"]), fx=K[0, 0],
                     fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], world_to_camera=np.asarray(entry["w2c"]))
        cams.append(cam.scaled(scale) if scale != 1.0 else cam)
    return cams, calib


def dataset_from_capture(data: Path, out: Path, n_frames: int, scale: float, test_camera: str | None,
                         masks: str = "ours") -> DynamicDataset:
    """Write a DynamicDataset (images, masks, GT rig) from the raw capture; reused when already complete."""
    import cv2

    cams, calib = capture_rig(data, scale)
    n_total = int(calib["num_frames"])
    frames = list(range(min(n_frames, n_total) if n_frames > 0 else n_total))
    test = [test_camera or cams[0].name]
    root = out / "dataset"
    if (root / "dataset.json").exists():
        ds = DynamicDataset.load(root)
        if ds.frames == frames and ds.rig.cameras[0].width == cams[0].width and ds.test_cameras == test \
                and ds.meta.get("masks_mode") == masks:
            return ds
    for cam in cams:
        (root / "images" / cam.name).mkdir(parents=True, exist_ok=True)
        cap = cv2.VideoCapture(str(data / "videos" / f"{cam.name}.mp4"))
        for f in frames:
            ok, bgr = cap.read()
            if not ok:
                raise SystemExit(f"{cam.name}.mp4 ends before frame {f}")
            if scale != 1.0:
                bgr = cv2.resize(bgr, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
            # low PNG compression: 1,800 frames are written and read once, speed matters more than size
            cv2.imwrite(str(root / "images" / cam.name / f"{f:06d}.png"), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        cap.release()
        if masks == "release":
            write_release_masks(data, root, cam, frames)
    mask_report: dict[str, Any] = {"method": "release, inverted"}
    if masks == "ours":
        # prepare's own masks (default settings), held-out camera only: the Gaussian benchmark's static pixels
        try:
            from splatworks.dynamic.prepare import PrepareConfig, make_masks

            _, mask_report = make_masks(root, test, frames, PrepareConfig().masks, need_background=False)
        except Exception as exc:  # a one-shot device run: score with the release masks rather than not at all
            log.exception("prepare's masks failed; the held-out camera is scored with the release masks")
            write_release_masks(data, root, next(c for c in cams if c.name == test[0]), frames)
            masks = f"release (fallback: {type(exc).__name__}: {exc})"
    ds = DynamicDataset(root=root, rig=Scene(cameras=cams, meta={"source": str(data), "calibration": "ground truth"}),
                        frames=frames, test_cameras=test, fps=float(calib.get("fps", 30)),
                        meta={"source": str(data), "calibration": {"method": "import"}, "masks": mask_report,
                              "masks_mode": masks})
    ds.save()
    return ds


def write_release_masks(data: Path, root: Path, cam: Camera, frames: list[int]) -> None:
    """The capture's masks of ``cam`` (True = dynamic) as ours (255 = static), resized (nearest) to ``cam``."""
    import cv2

    (root / "masks" / cam.name).mkdir(parents=True, exist_ok=True)
    for f in frames:
        gt = data / "masks" / cam.name / f"{f:06d}.png"
        if gt.exists():
            dyn = np.asarray(PIL.Image.open(gt).convert("L")) > 0
            m = cv2.resize(np.where(dyn, 0, 255).astype(np.uint8), (cam.width, cam.height),
                           interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(root / "masks" / cam.name / f"{f:06d}.png"), m)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> MixVoxelsConfig overrides, typed like the field's default."""
    from splatworks.voxels.config import MixVoxelsConfig

    base = MixVoxelsConfig()
    out: dict[str, Any] = {}
    for kv in items:
        k, _, v = kv.partition("=")
        if k not in MixVoxelsConfig.__dataclass_fields__:
            raise SystemExit(f"--set {kv}: MixVoxelsConfig has no setting {k!r}")
        default = getattr(base, k)
        if isinstance(default, bool):
            out[k] = v.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            out[k] = tuple(int(x) for x in v.split(",") if x)
        else:
            out[k] = type(default)(v)
    return out


def profile_iteration(cfg, n_rays_image: int, steps: int = 3) -> dict[str, Any]:
    """Time training iterations of ``cfg`` at its final grid resolution on a synthetic dome rig (no data needed).

    Returns seconds per iteration (median of ``steps`` after one warm-up), the samples that reach the fields per
    iteration, and the torch operator count per iteration (launch overhead on a GPU grows with it)."""
    import torch

    from splatworks.voxels.render import render_rays
    from splatworks.voxels.space import SceneSpace
    from splatworks.voxels.train import MixVoxelsModel, _make_optimizer

    torch.manual_seed(0)
    dev = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    space = SceneSpace(kind="box", center=np.zeros(3), radius=1.0, near=0.1, far=6.0)
    model = MixVoxelsModel(cfg, space, 150, dev)
    model.field.upsample(cfg.grid_res)
    with torch.no_grad():  # a scene whose occupancy keeps ~1/3 of the box, like a trained dome after skipping
        model.field.static_density.planes.mul_(3.0)
        model.field.variance.fill_(-3.0)  # ~5% of samples above the dynamic threshold after the split
        model.field.variance[..., :cfg.variance_res // 2] = -5.0
    model.split_active = True
    model.update_occupancy()
    optim = _make_optimizer(model, cfg)
    gen = torch.Generator(device="cpu").manual_seed(0)
    times, n_eval = [], []
    n_ops = 0
    for step in range(steps + 1):
        d = torch.nn.functional.normalize(torch.randn(cfg.batch_rays, 3, generator=gen), dim=-1).to(dev)
        o = -3.0 * d + 0.3 * torch.randn(cfg.batch_rays, 3, generator=gen).to(dev)
        target = torch.rand(cfg.batch_rays, 3, generator=gen).to(dev)
        t_ray = torch.rand(cfg.batch_rays, generator=gen).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if step == 1 else None
        if prof is not None:
            prof.__enter__()
        r = render_rays(model.field, space, model.occupancy, o, d, t_ray, model.options(True))
        loss = ((r["rgb"] - target) ** 2).mean() + ((r["variance"] - 0.05) ** 2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if prof is not None:
            prof.__exit__(None, None, None)
            n_ops = sum(e.count for e in prof.key_averages())
        if step:
            times.append(time.perf_counter() - t0)
            n_eval.append(int(r["n_evaluated"]))
    return {"device": str(dev), "seconds_per_iteration": float(np.median(times)),
            "samples_per_iteration": int(np.median(n_eval)), "samples_before_skipping": cfg.batch_rays *
            cfg.samples_per_ray, "torch_ops_per_iteration": n_ops, "grid_res": cfg.grid_res,
            "batch_rays": cfg.batch_rays, "image_rays": n_rays_image}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=None, help="work folder (dataset copy, model, results)")
    ap.add_argument("--dataset", type=Path, default=None, help="prepared dataset (else built from --data)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="raw capture folder (videos, calibration.json)")
    ap.add_argument("--frames", type=int, default=0, help="use the first N frames (0: all 150)")
    ap.add_argument("--scale", type=float, default=1.0, help="image scale when building from --data")
    ap.add_argument("--test-camera", default=None, help="held-out camera (default: the first)")
    ap.add_argument("--masks", default="ours", choices=("ours", "release"),
                    help="static pixels of the held-out camera: prepare's background masks (as the Gaussian "
                         "benchmark) or the capture's release masks")
    ap.add_argument("--preset", default="T", help="MixVoxels preset: tiny, T, M, L")
    ap.add_argument("--iterations", type=int, default=0, help="override the preset's iterations")
    ap.add_argument("--time-budget-min", type=float, default=None,
                    help="stop training after this many minutes of the training loop (default: the config's, off)")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="other MixVoxelsConfig overrides (repeatable)")
    ap.add_argument("--no-resume", action="store_true", help="train from scratch even when a checkpoint exists")
    ap.add_argument("--no-video", action="store_true", help="skip writing the held-out video")
    ap.add_argument("--report", type=Path, default=None, help="also write the report here (after every phase)")
    ap.add_argument("--profile-iteration", action="store_true",
                    help="only time training iterations of the preset at its final grid size (synthetic rays)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from splatworks.voxels import preset

    overrides = parse_overrides(args.set)
    if args.iterations:
        overrides["iterations"] = args.iterations
    if args.time_budget_min is not None:
        overrides["time_budget_min"] = args.time_budget_min
    cfg = preset(args.preset, **overrides)
    if args.profile_iteration:
        out = profile_iteration(cfg, 640 * 360)
        print(json.dumps(out))
        return 0
    if args.output is None:
        ap.error("-o/--output is required")

    from splatworks.voxels.evaluation import evaluate
    from splatworks.voxels.train import train_mixvoxels

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    report: dict[str, Any] = {
        "benchmark": "mixvoxels_basketball", "preset": cfg.preset, "iterations_planned": cfg.iterations,
        "time_budget_min": cfg.time_budget_min, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "status": "started", "seconds": {}}

    def save() -> None:
        text = json.dumps(report, indent=1)
        (args.output / "benchmark.json").write_text(text)
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(text)

    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.dataset is not None:
        ds = DynamicDataset.load(args.dataset)
        if args.frames > 0:
            ds.frames = ds.frames[:args.frames]
    else:
        ds = dataset_from_capture(args.data, args.output, args.frames, args.scale, args.test_camera, args.masks)
    report["seconds"]["dataset"] = round(time.perf_counter() - t0, 1)
    report.update({"cameras_train": len(ds.train_camera_names), "test_camera": ds.test_cameras[0],
                   "frames": len(ds.frames), "resolution": [ds.rig.cameras[0].width, ds.rig.cameras[0].height],
                   "masks": ds.meta.get("masks_mode", "dataset"), "status": "training"})
    save()

    res = train_mixvoxels(ds, args.output / "model", cfg, resume=not args.no_resume, show_progress_bar=True)
    report["seconds"].update({"load_frames": round(res.load_seconds, 1), "training": round(res.train_seconds, 1)})
    report.update({
        "iterations": res.iterations, "stopped_by_budget": res.stopped_by_budget,
        "train_minutes": round(res.train_seconds / 60, 2),
        "peak_memory_train_gib": round(res.peak_memory_bytes / 2**30, 3),
        "model_bytes": res.model_bytes, "model_mb": round(res.model_bytes / 1e6, 2),
        "checkpoint_mb": round((args.output / "model" / "checkpoint.pt").stat().st_size / 1e6, 2),
        "final_train_psnr": round(res.final_psnr_train, 3), "dynamic_voxel_share": round(res.dynamic_voxel_share, 4),
        "occupied_share": round(res.occupied_share, 4), "dynamic_pixel_share": round(res.dynamic_pixel_share, 4),
        "status": "evaluating"})
    save()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    metrics = evaluate(args.output / "model", ds, save_video=not args.no_video)
    report["seconds"].update({k: round(v, 1) for k, v in metrics["seconds"].items()})
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    report.update({
        "peak_memory_eval_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "psnr_mean": round(metrics["psnr_mean"], 3), "ssim_mean": round(metrics["ssim_mean"], 4),
        "psnr_static_mean": round(metrics["psnr_static_mean"], 3),
        "flicker_levels": round(metrics["flicker_levels"], 3),
        "drift_db_per_frame": round(metrics["drift_db_per_frame"], 5),
        "static_pixel_fraction": round(metrics["static_pixel_fraction"], 4),
        "psnr_per_train_minute": round(metrics["psnr_mean"] / max(res.train_seconds / 60, 1e-6), 3),
        "video": metrics["video"], "status": "done", "psnr_per_frame": [round(p, 3) for p in metrics["psnr"]],
        "ssim_per_frame": [round(s, 4) for s in metrics["ssim"]]})
    save()
    print(json.dumps({k: v for k, v in report.items() if not k.endswith("_per_frame")}))
    return 0


if __name__ == "__main__":  # make_masks and evaluation may spawn workers elsewhere: keep the guard
    sys.exit(main())
