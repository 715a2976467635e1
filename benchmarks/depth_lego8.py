"""Benchmark workflow A (sparse SfM depth) on lego with only 8 training views (issue 8).

Protocol: lego's 100 training images composited on white; held out as everywhere else (every 8th in natural
order: r_0, r_8, ..., r_96, 13 views); of the other 87, 8 evenly spread views are the whole training set.
Sparse depth comes from SfM on those 8 views (`splatworks.sfm.run_sfm`), aligned to the exact poses by a
similarity (Umeyama on the camera centres), so depths are in lego's units (depth scales with the similarity).
Training uses the exact poses, the SfM points as initialisation and the same budget with and without depth.

Two phases, because pycolmap and gsplat do not travel to the device together (64 MiB cap):

    python benchmarks/depth_lego8.py prepare --data ../shared/data/nerf_synthetic_lego -o .device/h8/lego8  # CPU
    python benchmarks/depth_lego8.py train -o .device/h8/lego8 [--iterations 7000]                       # GPU

`train` prints the held-out PSNR of both runs and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image  # noqa: F401  - before pycolmap (project pitfall)


def lego_scene(data: Path):
    from splatworks.scene.camera import Camera, Scene

    meta = json.loads((data / "transforms_train.json").read_text())
    cams = []
    for fr in meta["frames"]:
        name = Path(fr["file_path"]).name + ".png"
        f = 0.5 * 800 / np.tan(0.5 * meta["camera_angle_x"])
        cams.append(Camera(name=name, width=800, height=800, fx=f, fy=f, cx=400, cy=400,
                           world_to_camera=Camera.world_to_camera_from_opengl_c2w(np.array(fr["transform_matrix"]))))
    scene = Scene(cameras=cams, image_dir=data / "train", background=(1.0, 1.0, 1.0))
    return scene.hold_out_every(8)


def prepare(data: Path, out: Path) -> None:
    from splatworks.scene.camera import Scene
    from splatworks.sfm.depth import read_sparse_depth, write_sparse_depth
    from splatworks.sfm.pipeline import SfmConfig, run_sfm
    from splatworks.sfm.quality import umeyama

    scene = lego_scene(data)
    train = scene.train_cameras
    pick = [train[int(round(i))] for i in np.linspace(0, len(train) - 1, 8)]
    imgs = out / "images"
    imgs.mkdir(parents=True, exist_ok=True)
    for cam in pick + scene.test_cameras:
        rgba = PIL.Image.open(scene.image_path(cam)).convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        PIL.Image.alpha_composite(white, rgba).convert("RGB").save(imgs / cam.name)
    sfm_in = out / "sfm_images"
    sfm_in.mkdir(exist_ok=True)
    for cam in pick:
        shutil.copy(imgs / cam.name, sfm_in / cam.name)
    # The incremental mapper finds no initial pair among 8 views this far apart: global mapping, relaxed pairs.
    run_sfm(sfm_in, out / "sfm", SfmConfig(camera_mode="single", mapper="global", init_min_inliers=30,
                                            abs_pose_min_inliers=15, min_num_inliers=10))
    rec = Scene.load(out / "sfm")
    gt = {c.name: c for c in pick}
    names = [c.name for c in rec.cameras if c.name in gt]
    s, R, t = umeyama(np.array([rec.camera(n).center for n in names]), np.array([gt[n].center for n in names]))
    points = (s * (R @ rec.points.T)).T + t
    views = read_sparse_depth(out / "sfm" / "sparse_depth.npz")
    for v in views:
        v.depths = (v.depths * s).astype(np.float32)
        # SfM's undistorted image may differ in size from 800x800: map its pixels onto the exact camera's.
        sc = rec.camera(v.name)
        v.coords = ((v.coords - [sc.cx, sc.cy]) * [gt[v.name].fx / sc.fx, gt[v.name].fy / sc.fy]
                    + [gt[v.name].cx, gt[v.name].cy]).astype(np.float32)
    final = Scene(cameras=pick + scene.test_cameras, image_dir=Path("images"), points=points,
                  point_colors=rec.point_colors, point_errors=rec.point_errors,
                  test_names=[c.name for c in scene.test_cameras], background=(1.0, 1.0, 1.0),
                  meta={"source": "lego, 8 training views", "sfm_registered": len(names), "similarity_scale": s})
    final.image_dir = out / "images"
    final.save(out / "scene")
    write_sparse_depth(views, out / "scene" / "sparse_depth.npz")
    print(f"{len(names)}/8 views registered, {len(points)} points, "
          f"{sum(len(v) for v in views)} depth samples -> {out / 'scene'}")


def train(out: Path, iterations: int) -> None:
    from splatworks.cli import main as cli

    results = {}
    for name, extra in (("none", []), ("sparse", ["--depth", "sparse"])):
        run = out / f"run_{name}"
        code = cli(["train", str(out / "scene"), "-o", str(run), "--iterations", str(iterations),
                    "--checkpoint-steps", str(iterations), "--hold-out-every", "0", "--no-eval-lpips", *extra])
        m = json.loads((run / "metrics.json").read_text())
        results[name] = {"code": code, "psnr": m.get("psnr"), "ssim": m.get("ssim"),
                         "train_seconds": m.get("train_seconds"), "num_gaussians": m.get("num_gaussians")}
        print(name, results[name], flush=True)
    results["gain_db"] = results["sparse"]["psnr"] - results["none"]["psnr"]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"| lego, 8 views | no depth {results['none']['psnr']:.2f} dB | --depth sparse "
          f"{results['sparse']['psnr']:.2f} dB | gain {results['gain_db']:+.2f} dB |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("prepare", "train"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" /
                    "nerf_synthetic_lego")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=7000)
    a = ap.parse_args()
    prepare(a.data, a.out) if a.phase == "prepare" else train(a.out, a.iterations)
    sys.exit(0)
