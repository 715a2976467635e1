"""A tiny prepared DynamicDataset from the synthetic rig, for the sequential-4D and depth tests.

The rig of ``splatworks.synthetic`` is filmed at a few instants of a longer timeline, so objects move a little
between consecutive frames (as in a 30 fps video) and a daisy-chain trainer can follow them. Frames, masks and
ground-truth depth are written in the layout of ``splatworks.dynamic.dataset`` (depth in ``depth_gt/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.scene.camera import Scene
from splatworks.synthetic.render import render
from splatworks.synthetic.scenes import SKY, build_world, moving_objects, orbit_cameras, sample_surface_points


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_tiny_dataset(root: str | Path, n_frames: int = 4, timeline: int = 24, n_cameras: int = 5, width: int = 64,
                      height: int = 48, n_points: int = 300, test_camera: int = 2, seed: int = 0,
                      static_frames: int = 0) -> DynamicDataset:
    """Frames 0..n_frames-1 of a ``timeline``-frame clip; camera ``test_camera`` held out.

    ``static_frames`` > 0 repeats frame 0 that many times first (nothing moves in those frames).
    """
    root = Path(root)
    static = build_world(seed)
    cams = orbit_cameras(n_cameras, width, height, seed, prefix="cam", digits=2, suffix="", arc_degrees=90.0)
    times = [0] * static_frames + list(range(n_frames))
    for f, t in enumerate(times):
        shapes = static + moving_objects(seed, t, timeline)
        for cam in cams:
            r = render(shapes, cam, sky=SKY)
            for sub in ("images", "masks", "depth_gt"):
                (root / sub / cam.name).mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(_u8(r.rgb), "RGB").save(root / "images" / cam.name / f"{f:06d}.png")
            PIL.Image.fromarray(np.where(r.dynamic, 0, 255).astype(np.uint8), "L").save(
                root / "masks" / cam.name / f"{f:06d}.png")
            np.save(root / "depth_gt" / cam.name / f"{f:06d}.npy", r.depth.astype(np.float32))
    pts, cols = sample_surface_points(static, cams, 4 * n_points, np.random.default_rng(seed + 2))
    pick = np.random.default_rng(seed).choice(len(pts), min(n_points, len(pts)), replace=False)
    rig = Scene(cameras=cams, points=pts[pick], point_colors=cols[pick], point_errors=np.zeros(len(pick)))
    ds = DynamicDataset(root=root, rig=rig, frames=list(range(len(times))), test_cameras=[cams[test_camera].name],
                        fps=10.0, meta={"source": "tests/tiny_rig.py", "timeline": timeline})
    ds.save()
    return ds
