"""Benchmark dense points at known poses (``splatworks.sfm.mvs``) on frame 0 of the Panoptic basketball rig.

Two steps, so the device needs neither PyAV nor pycolmap:

    .venv/bin/python benchmarks/mvs_basketball.py prepare -o .device/mvs_bb          # CPU: frames, masks, sparse
    .venv/bin/python benchmarks/mvs_basketball.py run --folder .device/mvs_bb --device cuda --out OUT.json

``prepare`` decodes frame 0 of the 12 videos to ``images/camXX/000000.png``, copies ``calibration.json`` and the
release's frame-0 masks (True = DYNAMIC there) and triangulates the sparse points at the known poses on the 11
training views (``dynamic.points.triangulate_rig``; cam01 is held out, as ``dynamic prepare`` does).
``run`` computes the dense points of the 11 training views and scores them:
- points, wall time (depth maps / fusion), valid and consistent pixel fractions;
- fraction of points that project inside the static region (release mask False) of >= 2 training views;
- cam01 (held out, used ONLY here for evaluation): coverage = fraction of its pixels hit by a projected point
  (also with a 2-pixel dilation, and at half resolution), and the photometric agreement of the points' colours
  with cam01's pixels (median |difference| on 0..255, fraction < 20);
- the same numbers for the sparse triangulated points, for comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import PIL.Image  # noqa: F401  - before pycolmap (see the project's known pitfalls)
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panoptic_basketball"
HELD_OUT = "cam01"


def _rig(folder: Path):
    """The 12-camera rig of ``calibration.json`` (K, w2c at 640x360), cam01 held out; no cv2/pycolmap needed."""
    from splatworks.scene.camera import Camera, Scene

    doc = json.loads((folder / "calibration.json").read_text())
    cams = [Camera(name=c["name"], width=int(doc["width"]), height=int(doc["height"]), fx=c["K"][0][0],
                   fy=c["K"][1][1], cx=c["K"][0][2], cy=c["K"][1][2], world_to_camera=np.asarray(c["w2c"]))
            for c in sorted(doc["cameras"], key=lambda c: c["name"])]
    return Scene(cameras=cams, test_names=[HELD_OUT])


def prepare(data: Path, out: Path) -> None:
    import av

    from splatworks.dynamic import points as pt

    names = sorted(p.stem for p in (data / "videos").glob("cam*.mp4"))
    for n in names:
        p = out / "images" / n / "000000.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(data / "videos" / f"{n}.mp4")) as c:
            PIL.Image.fromarray(next(c.decode(video=0)).to_ndarray(format="rgb24")).save(p)
        (out / "masks" / n).mkdir(parents=True, exist_ok=True)
        shutil.copy(data / "masks" / n / "000000.png", out / "masks" / n / "000000.png")
    shutil.copy(data / "calibration.json", out / "calibration.json")
    rig = _rig(out)
    t = time.perf_counter()
    xyz, rgb, _, report = pt.triangulate_rig(rig, out / "images", 0, out / "triangulation", num_threads=2)
    np.savez(out / "sparse.npz", points=xyz, colors=rgb)
    shutil.rmtree(out / "triangulation", ignore_errors=True)
    print(f"{len(names)} cameras; {len(xyz)} sparse points in {time.perf_counter() - t:.1f} s -> {out}")


def _score(P: np.ndarray, colors: np.ndarray, rig, folder: Path) -> dict:
    def static(cam) -> np.ndarray:
        return ~(np.array(PIL.Image.open(folder / "masks" / cam.name / "000000.png").convert("L")) > 127)

    count = np.zeros(len(P), int)
    for cam in rig.train_cameras:
        uv, z = cam.project(P)
        j = np.floor(uv).astype(int)
        ok = (z > 0) & (j[:, 0] >= 0) & (j[:, 0] < cam.width) & (j[:, 1] >= 0) & (j[:, 1] < cam.height)
        hit = np.zeros(len(P), bool)
        hit[ok] = static(cam)[j[ok, 1], j[ok, 0]]
        count += hit
    test = rig.camera(HELD_OUT)
    uv, z = test.project(P)
    j = np.floor(uv).astype(int)
    ok = (z > 0) & (j[:, 0] >= 0) & (j[:, 0] < test.width) & (j[:, 1] >= 0) & (j[:, 1] < test.height)
    hit = np.zeros((test.height, test.width), np.uint8)
    hit[j[ok, 1], j[ok, 0]] = 1
    padded = np.pad(hit, 2)
    dilated = np.zeros(hit.shape, bool)
    for dy in range(5):  # 5x5 dilation without OpenCV (the device may lack it)
        for dx in range(5):
            dilated |= padded[dy : dy + hit.shape[0], dx : dx + hit.shape[1]] > 0
    half = np.zeros((test.height // 2, test.width // 2), bool)
    jj = j[ok] // 2
    jj = jj[(jj[:, 0] < half.shape[1]) & (jj[:, 1] < half.shape[0])]
    half[jj[:, 1], jj[:, 0]] = True
    img = np.array(PIL.Image.open(folder / "images" / HELD_OUT / "000000.png").convert("RGB")).astype(float)
    diff = np.abs(img[j[ok, 1], j[ok, 0]] - colors[ok].astype(float)).mean(1) if ok.any() else np.zeros(0)
    return {"points": int(len(P)), "static_in_2_training_views": round(float((count >= 2).mean()), 4),
            "cam01_coverage": round(float(hit.mean()), 4), "cam01_coverage_dilate2": round(float(dilated.mean()), 4),
            "cam01_coverage_half_res": round(float(half.mean()), 4), "cam01_points_in_view": int(ok.sum()),
            "cam01_colour_diff_median": round(float(np.median(diff)), 1) if len(diff) else None,
            "cam01_colour_diff_below_20": round(float((diff < 20).mean()), 4) if len(diff) else None}


def run(folder: Path, device: str, overrides: dict, out: Path | None, ply: Path | None) -> dict:
    from splatworks.config import to_dict
    from splatworks.sfm.mvs import DenseConfig, dense_scene_points

    def dense_rig_points(rig, image_dir, frame, cfg, device, depth_out=None):  # as dynamic.points', PIL-only
        from dataclasses import replace

        cams = [replace(c, name=f"{c.name}/{frame:06d}.png") for c in rig.cameras]
        scene = replace(rig, cameras=cams, test_names=[f"{n}/{frame:06d}.png" for n in rig.test_names])

        def load(cam):
            return np.array(PIL.Image.open(Path(image_dir) / cam.name).convert("RGB"))

        return dense_scene_points(scene, load, cfg, device, depth_out=depth_out)

    rig = _rig(folder)
    with np.load(folder / "sparse.npz") as z:
        rig.points, rig.point_colors = z["points"], z["colors"]
    cfg = DenseConfig(**overrides)
    if device == "cuda":  # warm-up (CUDA context, kernels) so the timing is the steady state
        dense_rig_points(rig, folder / "images", 0, DenseConfig(**{**overrides, "num_depths": 8}), device)
    t = time.perf_counter()
    xyz, rgb, report = dense_rig_points(rig, folder / "images", 0, cfg, device,
                                        depth_out=folder / "dense_depth.npy")
    wall = time.perf_counter() - t
    assert HELD_OUT not in " ".join(report["views"])
    result = {"config": to_dict(cfg), "device": report["device"], "wall_s": round(wall, 2),
              "seconds": report["seconds"], "valid_fraction": report["valid_fraction"],
              "consistent_fraction": report["consistent_fraction"],
              "dense": _score(xyz, rgb, rig, folder), "sparse": _score(rig.points, rig.point_colors, rig, folder)}
    if device == "cuda":
        import torch

        result["gpu_peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result, indent=1))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    if ply is not None:
        from splatworks.sfm.mvs import write_points_ply

        write_points_ply(ply, xyz, rgb)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("-o", "--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--folder", type=Path, required=True)
    r.add_argument("--device", default="cpu")
    r.add_argument("--out", type=Path)
    r.add_argument("--ply", type=Path, help="also write the dense points as .ply")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="DenseConfig overrides, e.g. scale=0.5")
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(a.data, a.out)
        return 0
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    run(a.folder, a.device, overrides, a.out, a.ply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
