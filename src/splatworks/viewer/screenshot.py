"""Screenshots of the viewer for docs: a result folder (or a synthetic splat scene) in real headless Chromium.

    python -m splatworks.viewer.screenshot RESULT_DIR --out docs/img/lego.png [--orbit 30] [--scene CAMERAS]
    python -m splatworks.viewer.screenshot --synthetic --out docs/img/viewer_synthetic.png

RESULT_DIR is a job folder or a trainer output folder (``point_cloud/iteration_N/scene.splat``; a ``scene.json``
next to it or in ``colmap/`` gives the start camera). It is imported into a throw-away service (the real app on
127.0.0.1), opened at ``/v/{pub_key}``, and captured once from the start camera and, with ``--orbit``, again
after orbiting that many degrees about the scene's up axis. Rendering is software (SwiftShader).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .testing import BrowserDriver, browser_missing, held_executor, serve, write_checkpoint


def synthetic_result(folder: Path, width: int, height: int, splats: int = 150_000, seed: int = 0) -> Path:
    """A splat scene of the synthetic room (``splatworks.synthetic``): one small Gaussian per surface sample,
    coloured as the renderer shades it, with the orbit cameras saved as ``scene.json``. Returns the folder."""
    import torch

    from ..scene.camera import Scene
    from ..splat.io import SH_C0
    from ..synthetic.scenes import build_world, orbit_cameras, sample_surface_points

    shapes = build_world(seed)
    cams = orbit_cameras(12, width, height, seed)
    pts, cols = sample_surface_points(shapes, cams, splats, np.random.default_rng(seed + 1))
    n = len(pts)
    # Splat radius ~ spacing of the samples seen from the cameras (about 1.5 px at the mean distance).
    dist = np.median(np.linalg.norm(pts - cams[0].center, axis=1))
    scale = 1.5 * dist / cams[0].fx
    t = torch.from_numpy
    params = {"means": t(pts.astype(np.float32)), "quats": t(np.tile(np.float32([1, 0, 0, 0]), (n, 1))),
              "scales": t(np.full((n, 3), np.log(scale), np.float32)), "opacities": t(np.full(n, 4.0, np.float32)),
              "sh0": t(((cols / 255.0 - 0.5) / SH_C0).astype(np.float32)[:, None, :]), "shN": torch.zeros(n, 0, 3)}
    write_checkpoint(folder / "gs_output", 1000, params)
    Scene(cameras=cams).save(folder / "colmap")
    return folder


def stage_result(result_dir: Path, scene_path: Path, folder: Path) -> Path:
    """A job-shaped copy of a trainer output (``point_cloud/iteration_N``) with the cameras of ``scene_path``
    (anything ``scene.io.load_any`` reads: scene.json, a transforms.json folder, a COLMAP model)."""
    import shutil

    from ..scene.io import load_any

    src = next((p for p in (result_dir / "point_cloud", result_dir / "gs_output" / "point_cloud") if p.is_dir()), None)
    if src is None:
        raise SystemExit(f"error: {result_dir} has no point_cloud/iteration_N folder (a trainer output or job folder)")
    shutil.copytree(src, folder / "gs_output" / "point_cloud")
    load_any(scene_path).save(folder / "colmap")
    return folder


def capture(result_dir: Path, out: Path, width: int, height: int, orbit: float = 0.0) -> list[Path]:
    """Screenshots of ``result_dir`` in the viewer: ``out`` from the start camera, ``out``-orbit.png after
    orbiting. Returns the files written."""
    from ..service.admin import import_job_dir
    from ..service.app import create_app
    from ..service.settings import ServiceSettings

    written = []
    with tempfile.TemporaryDirectory(prefix="viewer_shot_") as tmp:
        settings = ServiceSettings(data_dir=Path(tmp) / "data")
        _, pub_key = import_job_dir(settings, result_dir)
        with serve(create_app(settings, executor=held_executor())) as url, BrowserDriver(width, height) as b:
            b.goto(f"{url}/v/{pub_key}?quality=balanced")  # full resolution even on software WebGL
            b.wait("window.splatworks && window.splatworks.loadsCompleted >= 1", timeout=600)
            n = b.eval("window.splatworks.framesRendered")
            b.wait(f"window.splatworks.framesRendered > {n + 3}", timeout=300)
            time.sleep(1.0)
            out.parent.mkdir(parents=True, exist_ok=True)
            b.call("screenshot", path=str(out))
            written.append(out)
            if orbit:
                steps = max(1, int(abs(orbit) / 2))
                b.eval(f"window.splatworks.measureFps(0, {orbit / steps}, {steps})")
                time.sleep(1.5)
                b.eval("window.splatworks.measureFps(0.5, 0, 3)")  # a few still frames: Spark's sort settles
                orbit_out = out.with_name(out.stem + "-orbit" + out.suffix)
                b.call("screenshot", path=str(orbit_out))
                written.append(orbit_out)
    for path in written:  # docs images stay small: PNG palette quantisation
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splatworks.viewer.screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("result_dir", nargs="?", type=Path, help="job folder or trainer output folder")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic splat scene instead")
    parser.add_argument("--scene", type=Path, default=None,
                        help="cameras for the start view when RESULT_DIR has no scene.json (e.g. the lego data folder)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=500)
    parser.add_argument("--orbit", type=float, default=0.0, help="also capture after orbiting this many degrees")
    args = parser.parse_args(argv)
    reason = browser_missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if (args.result_dir is None) == (not args.synthetic):
        parser.error("give RESULT_DIR or --synthetic (one of them)")
    with tempfile.TemporaryDirectory(prefix="viewer_synth_") as tmp:
        if args.synthetic:
            src = synthetic_result(Path(tmp) / "synthetic", args.width, args.height)
        elif args.scene is not None:
            src = stage_result(args.result_dir, args.scene, Path(tmp) / "staged")
        else:
            src = args.result_dir
        for path in capture(src, args.out, args.width, args.height, args.orbit):
            print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
