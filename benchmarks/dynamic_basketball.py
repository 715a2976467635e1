"""Benchmark sequential 4D Gaussians on CMU Panoptic basketball (issue 7), on the GPU device.

Steps: `dynamic prepare` with the ground-truth calibration imported (so calibration is not under test), the first
camera held out; `dynamic train` (default settings unless overridden); per-frame held-out PSNR/SSIM, background
flicker and drift (`dynamic eval`); the held-out camera's side-by-side video; the 4D export and its size per frame;
a near-plane probe (``near_plane_probe``: frame 0's held-out render at a few near clipping planes).

    python benchmarks/dynamic_basketball.py --data ../shared/data/panoptic_basketball -o /tmp/bb \
        [--frames 150] [--time-budget 0] [--set iterations_first_frame=7000 ...] [--points FILE]

``--time-budget S`` stops training after S seconds (frames finished so far are kept and scored: a shortened
run). Writes OUT/summary.json (everything below), OUT/heldout.mp4, OUT/export/manifest.json; prints a Markdown
row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import PIL.Image  # noqa: F401  - before pycolmap (project pitfall)

from splatworks.dynamic import sequential as seq
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.progress import Cancelled


def parse_sets(items: list[str]) -> dict:
    types = {f.name: f.type for f in fields(seq.SequentialConfig)}
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        t = types[k]
        out[k] = (v.lower() in ("1", "true", "yes")) if t in (bool, "bool") else \
            int(v) if t in (int, "int") else float(v) if t in (float, "float") else v
    return out


# Near planes of the probe, in scene radii (the first row is the rasterizer's default, 0.01 scene units).
PROBE_NEAR_PLANES = (0.05, 0.1, 0.2, 0.3)


def near_plane_probe(train_dir: Path, ds: DynamicDataset) -> dict:
    """Frame 0 of the held-out camera rendered at several near clipping planes (5 renders, the training's frame-0
    Gaussians and background): PSNR against its ground-truth image, and the fraction of pixels whose alpha moved
    by more than 0.1 from the default near plane's render.

    Tests the held-out "fog" hypothesis: if grey fog on the held-out view is splats just in front of that camera
    (which no training view can tell from the wall behind), culling them raises its PSNR and clears alpha there.
    The "auto" row is what the held-out camera's renders use by default (``SequenceReader.near_plane_for``:
    ``novel_view_near`` x its near bound from the frame-0 points).
    """
    import torch

    from splatworks.dynamic.render import SequenceReader
    from splatworks.splat.metrics import psnr
    from splatworks.splat.render import DEFAULT_NEAR_PLANE

    reader = SequenceReader(train_dir, seq.resolve_device("auto"))
    cam, frame = ds.rig.camera(ds.test_cameras[0]), reader.frames[0]
    truth = torch.from_numpy(seq.load_image(ds.image_path(cam.name, frame))).to(reader.device)
    radius = reader.scene_radius
    planes = [(None, DEFAULT_NEAR_PLANE), ("auto", reader.near_plane_for(cam))] + \
        [(r, r * radius) for r in PROBE_NEAR_PLANES]
    rows, base_alpha = [], None
    for radii, z in planes:
        out = reader.render(frame, cam, near_plane=z)
        alpha = out.alphas[0, ..., 0]
        base_alpha = alpha if base_alpha is None else base_alpha
        rows.append({"near_plane_radii": radii, "near_plane": z,
                     "psnr": float(psnr(out.colors[0].clamp(0, 1), truth)),
                     "alpha_changed_fraction": float(((alpha - base_alpha).abs() > 0.1).float().mean())})
    return {"camera": cam.name, "frame": frame, "scene_radius": radius, "trained_near_plane": reader.near_plane,
            "rows": rows}


def evaluate_without_novel_near(train_dir: Path, ds: DynamicDataset) -> dict:
    """``evaluate_sequence`` of the same models with ``novel_view_near`` off (the held-out camera clipped at the
    training's near plane), for the with/without comparison."""
    from splatworks.dynamic.metrics4d import evaluate_sequence
    from splatworks.dynamic.render import SequenceReader

    return evaluate_sequence(train_dir, ds, near_plane=SequenceReader(train_dir, "cpu").near_plane)


def probe_line(probe: dict) -> str:
    """One line: held-out PSNR and the share of pixels whose alpha changed, per near plane."""
    def name(r: dict) -> str:
        radii = r["near_plane_radii"]
        return "default" if radii is None else f"novel-view near ({r['near_plane']:.3f})" if radii == "auto" else \
            format(radii, "g") + " R"

    cells = [f"{name(r)}: {r['psnr']:.2f} dB, {100 * r['alpha_changed_fraction']:.1f} % alpha changed"
             for r in probe["rows"]]
    return f"near-plane probe ({probe['camera']}, frame {probe['frame']}): " + " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="panoptic_basketball folder (videos/, calibration.json)")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=150, help="frames to prepare and train (from the start)")
    ap.add_argument("--time-budget", type=float, default=0.0, help="stop training after this many seconds (0 = no)")
    ap.add_argument("--resize", type=float, default=1.0, help="frame scale for prepare (1 = 640x360)")
    ap.add_argument("--set", nargs="*", default=[], help="SequentialConfig overrides, e.g. iterations_per_frame=2000")
    ap.add_argument("--points", type=Path, default=None, help="import this point cloud in prepare (.ply, .npz, or a "
                    "calibration .json with 'points') instead of triangulating frame 0")
    ap.add_argument("--triangulate", default="auto", choices=("auto", "on", "off"),
                    help="prepare's triangulation at the known poses ('off': random initial points)")
    ap.add_argument("--dense", default="auto", choices=("auto", "on", "off"),
                    help="prepare's dense points at the known poses (plane-sweep MVS of frame 0's training views)")
    ap.add_argument("--prepare-only", action="store_true", help="prepare OUT/dataset and stop (runs that share it "
                    "link to it)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    summary: dict = {"frames_requested": args.frames, "time_budget_s": args.time_budget, "overrides": args.set}
    ds_root = args.out / "dataset"
    if not (ds_root / "dataset.json").exists():
        from splatworks.dynamic.prepare import PrepareConfig, prepare
        from splatworks.config import from_dict, to_dict

        d = to_dict(PrepareConfig())
        d.update({"end_frame": args.frames, "resize": args.resize, "test_cameras": "first",
                  "points": str(args.points) if args.points else None, "triangulate": args.triangulate,
                  "dense": args.dense})
        d["calibration"].update({"method": "import", "file": str(args.data / "calibration.json")})
        t0 = time.perf_counter()
        prepare(args.data / "videos", ds_root, from_dict(PrepareConfig, d))
        summary["prepare_s"] = time.perf_counter() - t0
    if args.prepare_only:
        print(f"prepared {ds_root} in {summary.get('prepare_s', 0.0):.1f} s", flush=True)
        return 0
    ds = DynamicDataset.load(ds_root)
    summary.update({"cameras": len(ds.camera_names), "held_out": ds.test_cameras, "frames_prepared": len(ds.frames),
                    "points": int(len(ds.rig.points)), "points_report": ds.meta.get("points")})

    cfg = seq.SequentialConfig(**parse_sets(args.set))
    train_dir = args.out / "train"
    t0 = time.perf_counter()

    def progress(ev) -> None:
        if ev.stage == "dynamic.train":
            print(ev.message, flush=True)
            if args.time_budget and time.perf_counter() - t0 > args.time_budget:
                raise Cancelled("time budget")

    try:
        seq.train_sequence(ds, train_dir, cfg, progress=progress)
        summary["stopped_by_budget"] = False
    except Cancelled:
        summary["stopped_by_budget"] = True
    summary["train_wall_s"] = time.perf_counter() - t0
    lines = seq.read_metrics(train_dir)
    from splatworks.pipeline.dynamic import training_summary

    summary["training"] = training_summary(lines)  # the same summary the service's dynamic job writes
    later = [l["seconds"] for l in lines[1:]]
    summary.update({"frames_trained": len(lines), "frame0_s": lines[0]["seconds"] if lines else None,
                    "per_frame_s_mean": sum(later) / len(later) if later else None,
                    "per_frame_s_max": max(later) if later else None,
                    "per_frame_wall_s_mean": (sum(l["frame_wall_s"] for l in lines[1:]) / len(later)) if later
                    else None,
                    "iterations_mean": sum(l["iterations"] for l in lines[1:]) / max(1, len(later)),
                    "gaussians_last": lines[-1]["n_gaussians"] if lines else None,
                    "dynamic_gaussians_last": lines[-1]["n_dynamic"] if lines else None,
                    "pruned_total": sum(l["pruned_too_large"] + l["pruned_too_far"] for l in lines)})

    from splatworks.dynamic.export4d import export_4d
    from splatworks.dynamic.metrics4d import evaluate_sequence
    from splatworks.dynamic.render import render_video

    ev = evaluate_sequence(train_dir, ds)
    summary["eval"] = ev
    render_video(train_dir, args.out / "heldout.mp4", camera=ds.test_cameras[0])
    m = export_4d(train_dir, args.out / "export")
    summary["export_bytes"] = m["bytes"]
    try:  # a diagnostic: its failure must not cost the run's summary
        summary["near_plane_probe"] = near_plane_probe(train_dir, ds)
        print(probe_line(summary["near_plane_probe"]), flush=True)
    except Exception as exc:
        summary["near_plane_probe"] = {"error": repr(exc)}
        print(f"near-plane probe failed: {exc!r}", flush=True)
    if seq.load_config(train_dir).novel_view_near > 0:  # the same models, held-out camera at the training's plane
        try:
            off = evaluate_without_novel_near(train_dir, ds)
            summary["eval_without_novel_near"] = {k: v for k, v in off.items() if k.endswith("_mean") or k in (
                "flicker_levels", "drift_db_per_frame")}
            print(f"without novel_view_near: PSNR {off['psnr_mean']:.2f} dB | static PSNR {off['psnr_static_mean']:.2f}"
                  f" dB | moving-pixel PSNR {off['psnr_dynamic_mean']:.2f} dB | flicker {off['flicker_levels']:+.2f}/255"
                  f" | drift {off['drift_db_per_frame']:+.4f} dB/frame", flush=True)
        except Exception as exc:
            summary["eval_without_novel_near"] = {"error": repr(exc)}
    summary["total_s"] = time.perf_counter() - t_start
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"| {summary['frames_trained']} frames | frame 0 {summary['frame0_s']:.1f} s | "
          f"{summary['per_frame_s_mean'] or 0:.2f} s/frame ({summary['per_frame_wall_s_mean'] or 0:.2f} s wall) | PSNR {ev['psnr_mean']:.2f} dB | SSIM {ev['ssim_mean']:.3f} | "
          f"static PSNR {ev['psnr_static_mean']:.2f} dB | moving-pixel PSNR {ev['psnr_dynamic_mean']:.2f} dB | "
          f"train loss {lines[-1].get('loss_final', float('nan')):.4f} | flicker {ev['flicker_levels']:+.2f}/255 "
          f"(frame to frame {ev['frame_to_frame_levels']:+.2f}) | "
          f"drift {ev['drift_db_per_frame']:+.4f} dB/frame | {m['bytes']['per_frame_mean'] / 1e6:.2f} MB/frame "
          f"(static {m['bytes']['static'] / 1e6:.1f} MB) |")
    return 0


if __name__ == "__main__":  # prepare's triangulation spawns a pycolmap worker: this guard is required
    sys.exit(main())
