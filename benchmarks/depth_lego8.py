"""Benchmark workflow A (sparse SfM depth, ``--depth sparse``) on lego with only 8 training views (issue 8).

Protocol: lego's training images composited on white; held out as everywhere else (every 8th in natural order:
r_0, r_8, ..., r_96, 13 views); of the other 87, 8 evenly spread in index order are the whole training set.
Full SfM registers 0 of those 8 (no initial pair), so the sparse points come from triangulation at lego's exact
poses (``splatworks sfm --known-poses``: epipolar-guided SIFT matching, COLMAP's point triangulator, affine SIFT +
DSP features). Every arm starts from the same cloud with the same seed and budget; the only differences are the
depth loss and (where named) the SH degree. Phases, because pycolmap and gsplat do not travel to the device together:

    # CPU: writes a small carry-able folder (21 PNGs, scene.json, points, sparse_depth.npz, colmap_depth.npy);
    # reuses an already prepared folder (--force redoes it)
    python benchmarks/depth_lego8.py prepare --data ../shared/data/nerf_synthetic_lego -o .device/lego8b
    # GPU: "RGB+D2" rendering, gsplat against the torch reference (E[z], E[z^2], gradients)
    python benchmarks/depth_lego8.py check --scene .device/lego8b
    # GPU: the sweep (DEFAULT_SWEEP), held-out PSNR on the 13 views, a Markdown table, JSON to --out
    python benchmarks/depth_lego8.py train --scene .device/lego8b --out $OUT/depth_lego8.json --time-budget 300
    # CPU smoke test of the same path
    python benchmarks/depth_lego8.py train --scene .device/lego8b --out /tmp/d8.json --iterations 20 \\
        --max-resolution 50 --device cpu --init-points 3000 --cap-max 4000 --variants none,termination:2:0.2

Budget (``train``, the same for every arm): the trainer's ``fast`` recipe (3DGS-MCMC) shortened to 5,000
iterations (its relocation stop scaled with it), MCMC budget 200k Gaussians, starting from the 2k triangulated
points thickened to 50k (``--init thick``: 3DGS-MCMC grows 5 % per refine step, so 2k points reach only ~5k
Gaussians in 3,000 iterations), SH degree 1 (few views: view-dependent colour lets floaters hide; ``@sh3`` arms
measure degree 3). ``--variants`` lists the arms as ``KIND[:START:FINAL[:OUTLIER]][+rR][@shK]``: KIND ``none`` or a
``--depth-loss`` (``expected`` = L1 on the expected depth, ``termination`` = the ray-termination distribution's
squared relative distance to the target, ``both``), START/FINAL ``--depth-weight``/``--depth-weight-final``,
OUTLIER ``--depth-outlier``, ``+rR`` ``--depth-radius R``, ``@shK`` the SH degree. Gains are against the ``none`` arm
of the same SH degree. ``--time-budget`` skips arms that would start late, so one device call always ends with a
table. The first device runs (``--init points --iterations 3000 --sh-degree 3 --cap-max 300000 --weights
0.2:0.02,1:0.1:0.3``, and ``--init random --iterations 7000 ...``) are reproducible with those flags.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image  # noqa: F401  - before pycolmap (project pitfall)

# none vs the expected-depth L1 vs the termination loss at 3 weights (and spread to neighbours), then SH degree 3.
DEFAULT_SWEEP = ("none,expected:0.2:0.02,termination:0.5:0.05,termination:2:0.2,termination:8:0.8,"
                 "termination:2:0.2+r2,none@sh3,termination:2:0.2@sh3")
CARRIED = ("scene.json", "points.npz", "sparse_depth.npz", "colmap_depth.npy", "poses_bounds.npy")


def lego_views(data: Path):
    """lego (exact poses, white background) reduced to 8 evenly spread training views + the 13 held-out ones."""
    from splatworks.scene.camera import Scene
    from splatworks.scene.io import load_any

    scene = load_any(data)
    scene.background = (1.0, 1.0, 1.0)
    scene.hold_out_every(8)
    train = scene.train_cameras
    pick = [train[int(round(i))] for i in np.linspace(0, len(train) - 1, 8)]
    return Scene(cameras=pick + scene.test_cameras, image_dir=scene.image_dir, background=(1.0, 1.0, 1.0),
                 test_names=[c.name for c in scene.test_cameras],
                 meta={"source": f"lego, 8 evenly spread training views of {len(train)}", "data": str(data)})


def on_object_fraction(points: np.ndarray, data: Path) -> float:
    """Fraction of points that project inside lego's alpha silhouette (dilated 3 px) in all 100 training views:
    a point off the object's surface falls outside some silhouette (a quality check, lego has alpha)."""
    from splatworks.scene.io import load_any
    from splatworks.sfm.quality import fraction_inside_silhouettes

    return fraction_inside_silhouettes(points, load_any(data))


def prepare(data: Path, out: Path, work: Path | None) -> dict:
    from splatworks.scene.camera import Scene
    from splatworks.sfm.depth import read_sparse_depth
    from splatworks.sfm.known_poses import KnownPosesConfig, run_known_poses
    from splatworks.sfm.pipeline import SfmConfig

    scene = lego_views(data)
    work = work or out.with_name(out.name + "_work")
    t0 = time.time()
    # Affine-covariant SIFT + DSP: more true matches between views 30-60 degrees apart (measured: 91 % of the
    # points on the object with them, 77 % without, at similar point counts).
    result = run_known_poses(scene, work, SfmConfig(estimate_affine_shape=True, domain_size_pooling=True),
                             KnownPosesConfig())
    seconds = time.time() - t0
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    for cam in result.scene.cameras:
        (out / "images" / cam.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "images" / cam.name, out / "images" / cam.name)
    for name in CARRIED:
        shutil.copyfile(work / name, out / name)
    final = Scene.load(out)
    final.image_dir = out / "images"
    final.save(out)  # image_dir stored as "images", relative: the folder travels as a whole
    report = result.report
    views = read_sparse_depth(out / "sparse_depth.npz")
    summary = {
        "train_views": [c.name for c in final.train_cameras], "held_out": final.test_names,
        "num_points": report["num_points"], "mean_reprojection_error_px": report["mean_reprojection_error"],
        "mean_track_length": report["mean_track_length"], "pairs": report["pairs"],
        "depth_samples": {v.name: len(v) for v in views if v.name not in set(final.test_names)},
        "on_object_fraction": on_object_fraction(final.points, data), "seconds": round(seconds, 1),
        "folder_mb": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2 ** 20, 2),
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


# Multi-view-stereo sample sets (``dense`` phase): name -> (reprojection px, relative depth, views that must agree).
DENSE_SETS = {"mvs2": (1.0, 0.01, 2), "mvs1": (1.0, 0.01, 1)}


def dense_samples(scene_dir: Path, work: Path, data: Path | None = None,
                  sets: dict[str, tuple[float, float, int]] = DENSE_SETS) -> dict:
    """Depth samples from plane-sweep MVS at the exact poses (``splatworks dense --depth-samples``), one folder per
    consistency setting in ``sets`` (``SCENE/NAME/sparse_depth.npz`` + ``colmap_depth.npy``; training views only).
    The depth maps are computed once (``WORK/mvs_depth.npy``, reused when present) and filtered per setting; with
    lego's ``data`` folder, also the fraction of each set's fused points inside all 100 silhouettes."""
    import torch

    from splatworks.scene.camera import Scene
    from splatworks.scene.images import load_image
    from splatworks.sfm.mvs import DenseConfig, consistent_points, consistent_samples, dense_scene_points
    from splatworks.sfm.mvs import write_depth_samples

    scene = Scene.load(scene_dir)
    cams = scene.train_cameras
    maps = work / "mvs_depth.npy"
    t0 = time.time()
    if not maps.exists():
        dense_scene_points(scene, lambda cam: load_image(scene.image_path(cam), scene.background), DenseConfig(),
                           "auto", depth_out=maps)
    depth = torch.from_numpy(np.load(maps))
    report: dict = {"depth_maps_seconds": round(time.time() - t0, 1), "sets": {}}
    for name, (reproj, rel, agree) in sets.items():
        cfg = replace(DenseConfig(), reproj_px=reproj, rel_depth_tol=rel, min_consistent=agree, max_points=0)
        samples = consistent_samples(depth, cams, cfg)
        n = write_depth_samples(scene_dir / name, scene, samples)
        pts, _ = consistent_points(depth, [np.zeros((c.height, c.width, 3), np.uint8) for c in cams], cams, cfg)
        sub = pts[np.random.default_rng(0).choice(len(pts), min(len(pts), 20_000), replace=False)]
        report["sets"][name] = {"reproj_px": reproj, "rel_depth": rel, "min_consistent": agree, "samples": n,
                                "per_view": [len(s["depths"]) for s in samples],
                                "on_object_fraction": on_object_fraction(sub, data) if data and data.exists() else None}
        print(name, json.dumps(report["sets"][name]), flush=True)
    (scene_dir / "dense.json").write_text(json.dumps(report, indent=1))
    return report


@dataclass
class Arm:
    """One run of the sweep: a depth setting (``depth="none"`` or a sparse loss kind and schedule) and SH degree."""

    label: str
    depth: Any        # splatworks.depth.losses.DepthConfig
    sh_degree: int


def parse_variants(spec: str, sh_degree: int) -> list[Arm]:
    """``KIND[:START:FINAL[:OUTLIER]][+rR][@shK][~SET]`` comma-separated; KIND none|expected|termination|both. E.g.
    ``none,expected:0.2:0.02,termination:2:0.2,termination:2:0.2+r2,none@sh3,termination:2:0.2~mvs1``: ``+rR``
    sets ``--depth-radius R``, ``@shK`` overrides ``--sh-degree`` for that arm, ``~SET`` reads the depth samples
    from ``SCENE/SET/sparse_depth.npz`` (the ``dense`` phase's multi-view-stereo samples) instead of the
    triangulated points' ``SCENE/sparse_depth.npz``."""
    from splatworks.depth.losses import DepthConfig

    arms = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        body, _, sample_set = item.partition("~")
        body, _, sh = body.partition("@sh")
        body, _, radius = body.partition("+r")
        kind, *nums = body.split(":")
        if kind not in ("none", "expected", "termination", "both") or len(nums) not in (0, 2, 3):
            raise SystemExit(f"bad variant {item!r}: use KIND[:START:FINAL[:OUTLIER]][+rR][@shK][~SET], KIND none|"
                             "expected|termination|both")
        vals = [float(x) for x in nums]
        if kind == "none":
            cfg = DepthConfig(depth="none")
        else:
            w0, w1 = vals[:2] if vals else (DepthConfig().depth_weight, DepthConfig().depth_weight_final)
            cfg = DepthConfig(depth="sparse", depth_loss=kind, depth_weight=w0, depth_weight_final=w1,
                              depth_outlier=vals[2] if len(vals) == 3 else 0.0, depth_radius=int(radius or 0),
                              depth_file=f"{sample_set}/sparse_depth.npz" if sample_set else "")
        arms.append(Arm(label=item, depth=cfg, sh_degree=int(sh) if sh else sh_degree))
    if not arms or arms[0].depth.depth != "none":
        raise SystemExit("--variants must start with a 'none' arm (the gains are measured against it)")
    return arms


def initial_points(scene_dir: Path, init: str, n_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The starting cloud, identical for every arm: the triangulated points (``points``), none (``random``: the
    trainer's random points in the seen volume), or the triangulated points thickened to ``n_points``
    (``thick``: new points at Gaussian offsets of the local spacing, ``dynamic.points.expand_points``)."""
    from splatworks.dynamic.points import expand_points
    from splatworks.scene.camera import Scene

    scene = Scene.load(scene_dir)
    if init == "random":
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    if init == "thick":
        return expand_points(scene.points, scene.point_colors, n_points, seed=seed)
    return scene.points, scene.point_colors


def train_runs(scene_dir: Path, out_json: Path, work: Path, iterations: int, max_resolution: int, device: str,
               preset_name: str, arms: list[Arm], init: str = "thick", init_points: int = 50_000,
               cap_max: int = 200_000, time_budget: float = 0.0) -> dict:
    """Train every arm of ``arms`` from the same initial cloud, seed and budget (``preset_name`` shortened to
    ``iterations``, MCMC budget ``cap_max``); held-out PSNR on the 13 views. The depth samples always come from the
    triangulated points. Arms that would start after ``time_budget`` seconds (0 = no limit) are skipped, so a
    device call ends with a table even when the sweep is too long."""
    from splatworks.depth.losses import sparse_depth_loss_for
    from splatworks.scene.camera import Scene
    from splatworks.splat.trainer import PRESETS, pick_device, preset, train

    t_start = time.time()
    base = PRESETS[preset_name]
    refine_stop = min(int(base.get("refine_stop", 15_000)), int(iterations * 5500 / 7000))
    points, colors = initial_points(scene_dir, init, init_points)
    results: dict = {"scene": str(scene_dir), "iterations": iterations, "preset": preset_name,
                     "max_resolution": max_resolution, "refine_stop": refine_stop, "init": init,
                     "initial_points": len(points), "cap_max": cap_max, "arms": {}}
    for arm in arms:
        if time_budget and time.time() - t_start > time_budget:
            print(f"skipped {arm.label}: past the {time_budget:.0f} s budget", flush=True)
            continue
        config = preset(preset_name, iterations=iterations, checkpoint_steps=(iterations,), refine_stop=refine_stop,
                        max_resolution=max_resolution, device=device, eval_lpips=False, save_splat=False,
                        cap_max=cap_max, sh_degree=arm.sh_degree)
        scene = Scene.load(scene_dir)
        scene.points, scene.point_colors = points, colors
        depth_cfg = arm.depth
        if depth_cfg.depth_file:  # a sample set of this scene folder
            depth_cfg = replace(depth_cfg, depth_file=str(scene_dir / depth_cfg.depth_file))
        loss = sparse_depth_loss_for(scene, scene_dir, depth_cfg, iterations, pick_device(device))
        run_dir = work / ("run_" + "".join(c if c.isalnum() or c in "._-" else "_" for c in arm.label))
        if run_dir.exists():
            shutil.rmtree(run_dir)
        try:
            res = train(scene, run_dir, config, resume=False, extra_losses=[loss] if loss is not None else None)
        except Exception as exc:  # one broken arm must not cost the device call the others' numbers
            results.setdefault("errors", {})[arm.label] = repr(exc)
            print(f"{arm.label} FAILED: {exc!r}", flush=True)
            continue
        m = res.metrics
        results["arms"][arm.label] = {
            "psnr": m.get("psnr"), "ssim": m.get("ssim"), "train_seconds": m.get("train_seconds"),
            "num_gaussians": res.num_gaussians, "held_out_views": m.get("test", {}).get("num_views"),
            "sh_degree": arm.sh_degree, "depth_samples": getattr(loss, "num_samples", 0),
            "depth": None if loss is None else {"loss": arm.depth.depth_loss, "radius": arm.depth.depth_radius,
                                                "weight": arm.depth.depth_weight,
                                                "final": arm.depth.depth_weight_final,
                                                "outlier": arm.depth.depth_outlier,
                                                "samples": arm.depth.depth_file or "sparse_depth.npz"}}
        print(arm.label, json.dumps(results["arms"][arm.label]), flush=True)
    # Each arm's gain is against the no-depth arm of the same SH degree (the first 'none' arm otherwise).
    done = results["arms"]
    baselines = {a.sh_degree: a.label for a in reversed(arms) if a.depth.depth == "none" and a.label in done}
    first_none = arms[0].label
    if first_none not in done:
        print("the baseline arm did not run: no gains", flush=True)
    results["gain_db"] = {a.label: done[a.label]["psnr"] - done[baselines.get(a.sh_degree, first_none)]["psnr"]
                          for a in arms if a.label in done and a.depth.depth != "none" and first_none in done}
    results["wall_seconds"] = time.time() - t_start
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1))
    print(f"\n| lego, 8 training views, 13 held out ({iterations} its, {preset_name} recipe, {init} init "
          f"{len(points):,} points, cap {cap_max:,}, {max_resolution or 800} px) | SH | held-out PSNR dB | gain dB "
          "| SSIM | train s | Gaussians |")
    print("|---|---|---|---|---|---|---|")
    for arm in arms:
        if arm.label not in done:
            continue
        r, c = done[arm.label], arm.depth
        label = "no depth" if c.depth == "none" else \
            (f"`--depth sparse --depth-loss {c.depth_loss} --depth-weight {c.depth_weight:g} "
             f"--depth-weight-final {c.depth_weight_final:g}" + (f" --depth-outlier {c.depth_outlier:g}"
                                                                  if c.depth_outlier else "") +
             (f" --depth-radius {c.depth_radius}" if c.depth_radius else "") +
             (f" --depth-file {c.depth_file}" if c.depth_file else "") + "`")
        gain = f"{results['gain_db'][arm.label]:+.2f}" if arm.label in results["gain_db"] else "-"
        print(f"| {label} | {arm.sh_degree} | {r['psnr']:.2f} | {gain} | {r['ssim']:.4f} | {r['train_seconds']:.1f} "
              f"| {r['num_gaussians']:,} |")
    return results


def check_moments(scene_dir: Path, device: str) -> dict:
    """Render mode "RGB+D2" against "RGB+D" on the selected backend, and gsplat against the torch reference on the
    GPU: colours, E[z] and E[z^2] of one training view of the initial points (a device-side sanity check that the
    termination loss reads what the torch backend's tests verified)."""
    import torch

    from splatworks.scene.camera import Scene
    from splatworks.splat.gaussians import init_params
    from splatworks.splat.render import render
    from splatworks.splat.trainer import pick_device

    dev = pick_device(device)
    scene = Scene.load(scene_dir)
    cam = scene.train_cameras[0]
    s = 200 / max(cam.width, cam.height)  # small: the torch reference is tile-free Python
    params = init_params(scene.points, scene.point_colors / 255.0, 1, 0.5, 1.0, dev)
    with torch.no_grad():
        params["shN"].normal_(0, 0.1)
    viewmat = torch.as_tensor(cam.world_to_camera, dtype=torch.float32, device=dev)[None]
    K = torch.tensor([[cam.fx * s, 0, cam.cx * s], [0, cam.fy * s, cam.cy * s], [0, 0, 1]], device=dev)[None]
    w, h = round(cam.width * s), round(cam.height * s)
    report = {}
    backends = ("gsplat", "torch") if dev.type == "cuda" else ("torch",)
    outs = {}
    grads = {}
    for b in backends:
        with torch.no_grad():
            d1 = render(params, viewmat, K, w, h, 1, mode="RGB+D", backend=b)
        d2 = render(params, viewmat, K, w, h, 1, mode="RGB+D2", backend=b)
        # A loss that reads all three outputs: the gradients through E[z] and E[z^2] must agree across backends.
        ((d2.colors * 0.5).sum() + 0.01 * (d2.depths * d2.alphas).sum() + 0.001 * (d2.depths2 * d2.alphas).sum()
         ).backward()
        grads[b] = {k: v.grad.clone() for k, v in params.items() if v.grad is not None}
        for v in params.values():
            v.grad = None
        d2 = type(d2)(colors=d2.colors.detach(), alphas=d2.alphas.detach(), depths=d2.depths.detach(), info=d2.info,
                      depths2=d2.depths2.detach())
        cover = d2.alphas[0, ..., 0] > 0.5
        var = (d2.depths2 - d2.depths ** 2)[0, ..., 0][cover]
        report[b] = {"rgb_max_diff_vs_RGB+D": float((d1.colors - d2.colors).abs().max()),
                     "Ez_max_diff_vs_RGB+D": float((d1.depths - d2.depths)[0, ..., 0][cover].abs().max()),
                     "min_variance_Ez2_minus_Ez_sq": float(var.min()), "covered_pixels": int(cover.sum())}
        outs[b] = d2
    if len(outs) == 2:
        g, t = outs["gsplat"], outs["torch"]
        cover = (t.alphas[0, ..., 0] > 0.5) & (g.alphas[0, ..., 0] > 0.5)
        rel = lambda x, y: float(((x - y).abs() / y.abs().clamp_min(1e-6))[0, ..., 0][cover].median())  # noqa: E731
        report["gsplat_vs_torch"] = {"rgb_mean_abs_diff": float((g.colors - t.colors).abs().mean()),
                                     "Ez_median_rel_diff": rel(g.depths, t.depths),
                                     "Ez2_median_rel_diff": rel(g.depths2, t.depths2),
                                     "grad_rel_err": {k: float((grads["torch"][k] - grads["gsplat"][k]).norm()
                                                               / grads["gsplat"][k].norm().clamp_min(1e-12))
                                                      for k in grads["gsplat"]}}
    print("moments check", json.dumps(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("prepare", "dense", "train", "check"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" /
                    "nerf_synthetic_lego", help="prepare: the NeRF-synthetic lego folder")
    ap.add_argument("-o", "--output", type=Path, default=Path(".device/lego8b"), help="prepare: carry-able folder")
    ap.add_argument("--force", action="store_true", help="prepare: redo it even when OUTPUT is already prepared")
    ap.add_argument("--work", type=Path, default=None, help="prepare: SfM work folder (default: OUTPUT_work); "
                    "train: run folders (default: /tmp/depth_lego8_runs)")
    ap.add_argument("--scene", type=Path, default=Path(".device/lego8b"), help="train: the prepared folder")
    ap.add_argument("--out", type=Path, default=Path("bench_out/depth_lego8.json"), help="train: results JSON")
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--init", choices=("points", "random", "thick"), default="thick",
                    help="train: start from the triangulated points, random points in the seen volume, or the "
                    "triangulated points thickened to --init-points (default)")
    ap.add_argument("--init-points", type=int, default=50_000, help="train: size of the thickened start cloud")
    ap.add_argument("--cap-max", type=int, default=200_000, help="train: MCMC Gaussian budget")
    ap.add_argument("--sh-degree", type=int, default=1, help="train: SH degree of the arms without @shK (few views: "
                    "view-dependent colour lets floaters hide)")
    ap.add_argument("--max-resolution", type=int, default=0, help="longest image side (0 = 800, as stored)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variants", default=DEFAULT_SWEEP, help="train: the sweep, KIND[:START:FINAL[:OUTLIER]][+rR]"
                    "[@shK] comma-separated, KIND none|expected|termination|both, the first one 'none' (default: "
                    "%(default)s)")
    ap.add_argument("--weights", default=None, help="train, the first runs' form (replaces --variants): none plus "
                    "--depth-loss expected runs as START:FINAL[:OUTLIER], comma-separated")
    ap.add_argument("--time-budget", type=float, default=0.0, help="train: skip arms that would start after this "
                    "many seconds (0 = run all)")
    a = ap.parse_args(argv)
    if a.phase == "prepare":
        if not a.force and (a.output / "prepare.json").exists() and all((a.output / n).exists() for n in CARRIED):
            print(f"{a.output} is already prepared (prepare.json): reusing it; --force redoes it")
            print((a.output / "prepare.json").read_text())
            return 0
        prepare(a.data, a.output, a.work)
    elif a.phase == "dense":
        work = a.work or a.scene.with_name(a.scene.name + "_work")
        work.mkdir(parents=True, exist_ok=True)
        dense_samples(a.scene, work, a.data)
    elif a.phase == "check":
        check_moments(a.scene, a.device)
    else:
        spec = a.variants if a.weights is None else ",".join(["none"] + [f"expected:{w}" for w in a.weights.split(",")
                                                                          if w])
        train_runs(a.scene, a.out, a.work or Path("/tmp/depth_lego8_runs"), a.iterations, a.max_resolution, a.device,
                   a.preset, parse_variants(spec, a.sh_degree), a.init, a.init_points, a.cap_max, a.time_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
