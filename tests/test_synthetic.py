"""Synthetic scenes: geometry, depth, masks, videos and determinism checked against the analytic ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from splatworks.scene.camera import Scene
from splatworks.synthetic import make_dynamic_rig, make_static_scene

W, H = 96, 72


@pytest.fixture(scope="session")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("static")
    make_static_scene(out, n_views=6, width=W, height=H, seed=3)
    return out


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("rig")
    return make_dynamic_rig(out, n_cameras=3, n_frames=4, width=W, height=H, seed=1, fps=10)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def _backproject(cam, depth: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    z = depth[ys, xs].astype(np.float64)
    pc = np.stack([(xs + 0.5 - cam.cx) / cam.fx * z, (ys + 0.5 - cam.cy) / cam.fy * z, z], axis=1)
    c2w = cam.camera_to_world
    return pc @ c2w[:3, :3].T + c2w[:3, 3]


def test_static_layout_and_gt_scene(static_dir: Path) -> None:
    gt = Scene.load(static_dir / "gt")
    assert [c.name for c in gt.cameras] == [f"view_{i:03d}.png" for i in range(6)]
    assert gt.image_dir.resolve() == (static_dir / "images").resolve()
    for cam in gt.cameras:
        img = PIL.Image.open(gt.image_path(cam))
        assert img.size == (W, H) and img.mode == "RGB"
        depth = np.load(static_dir / "depth" / (Path(cam.name).stem + ".npy"))
        assert depth.shape == (H, W) and depth.dtype == np.float32
        assert (depth > 0).mean() > 0.95  # the room fills the view
        # Camera looks at the scene centre: it projects near the image centre, in front of the camera.
        uv, z = cam.project(np.array([[0.0, 0.0, 0.45]]))
        assert z[0] > 0 and abs(uv[0, 0] - W / 2) < 0.1 * W and abs(uv[0, 1] - H / 2) < 0.1 * H
    assert len(gt.points) >= 1000


def test_depth_reprojects_across_views_with_matching_colours(static_dir: Path) -> None:
    gt = Scene.load(static_dir / "gt")
    a, b = gt.cameras[1], gt.cameras[3]
    depth_a = np.load(static_dir / "depth" / "view_001.npy")
    depth_b = np.load(static_dir / "depth" / "view_003.npy")
    img_a, img_b = _rgb(gt.image_path(a)), _rgb(gt.image_path(b))
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(2, H - 2, 3000), rng.integers(2, W - 2, 3000)
    world = _backproject(a, depth_a, xs, ys)
    uv, z = b.project(world)
    xb, yb = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (xb >= 2) & (xb < W - 2) & (yb >= 2) & (yb < H - 2) & (z > 0)
    xs, ys, xb, yb, z = xs[inside], ys[inside], xb[inside], yb[inside], z[inside]
    visible = np.abs(depth_b[yb, xb] - z) < 0.02 * z  # not occluded in view b
    assert visible.sum() > 500
    diff = np.abs(img_a[ys, xs] - img_b[yb, xb])[visible].mean(axis=1)
    # Nearest-pixel resampling of a textured image: most pixels agree closely, a few sit on texture edges.
    assert np.median(diff) < 0.04, np.median(diff)
    # A wrong pose (swapped cameras) would not agree: guard that the check has teeth.
    uv_wrong, _ = gt.cameras[5].project(world[inside][visible])
    xw = np.clip(np.floor(uv_wrong[:, 0]).astype(int), 0, W - 1)
    yw = np.clip(np.floor(uv_wrong[:, 1]).astype(int), 0, H - 1)
    wrong = np.abs(img_a[ys[visible], xs[visible]] - img_b[yw, xw]).mean(axis=1)
    assert np.median(wrong) > 3 * np.median(diff)


def test_gt_points_lie_on_rendered_surfaces(static_dir: Path) -> None:
    gt = Scene.load(static_dir / "gt")
    cam = gt.cameras[2]
    depth = np.load(static_dir / "depth" / "view_002.npy")
    img = _rgb(gt.image_path(cam))
    uv, z = cam.project(gt.points)
    x, y = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H) & (z > 0)
    x, y, z, cols = x[inside], y[inside], z[inside], gt.point_colors[inside] / 255.0
    on_surface = np.abs(depth[y, x] - z) < 0.03 * z
    assert on_surface.mean() > 0.6  # the rest is occluded in this view
    err = np.abs(img[y, x] - cols)[on_surface].mean(axis=1)
    assert np.median(err) < 0.06


def test_rgba_has_transparent_background(tmp_path: Path) -> None:
    make_static_scene(tmp_path, n_views=2, width=W, height=H, seed=0, rgba=True)
    rgba = np.asarray(PIL.Image.open(tmp_path / "images" / "view_000.png"))
    depth = np.load(tmp_path / "depth" / "view_000.npy")
    assert rgba.shape == (H, W, 4)
    alpha = rgba[..., 3]
    assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2
    # Transparent exactly where no surface is hit (pixel-centre ray), opaque where one is (up to edge pixels).
    assert ((alpha == 0) & (depth > 0)).mean() < 0.02 and ((alpha == 255) & (depth == 0)).mean() < 0.02
    assert Scene.load(tmp_path / "gt").background == (1.0, 1.0, 1.0)


def test_determinism(tmp_path: Path) -> None:
    kw = dict(n_views=2, width=48, height=36)
    make_static_scene(tmp_path / "a", seed=5, **kw)
    make_static_scene(tmp_path / "b", seed=5, **kw)
    make_static_scene(tmp_path / "c", seed=6, **kw)
    for sub in ("images/view_000.png", "images/view_001.png", "depth/view_001.npy", "gt/points.npz"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes(), sub
    assert (tmp_path / "a" / "images/view_000.png").read_bytes() != (tmp_path / "c" / "images/view_000.png").read_bytes()


def test_dynamic_masks_match_moving_objects(rig) -> None:
    from splatworks.synthetic.scenes import moving_objects

    assert [c.name for c in rig.rig.cameras] == ["cam00", "cam01", "cam02"]
    seen_dynamic = 0
    for cam in rig.rig.cameras:
        for f in range(rig.n_frames):
            mask = np.asarray(PIL.Image.open(rig.mask_path(cam.name, f)))
            depth = np.load(rig.depth_path(cam.name, f))
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            dyn = mask == 0
            seen_dynamic += dyn.sum()
            # Every dynamic pixel lies inside the projected bounding disc of a moving object ...
            ys, xs = np.mgrid[0:H, 0:W]
            allowed = np.zeros((H, W), dtype=bool)
            for k, obj in enumerate(moving_objects(1, f, rig.n_frames)):
                centre = rig.object_paths[k, f]
                assert np.allclose(centre, obj.center)
                radius = obj.radius if hasattr(obj, "radius") else float(np.linalg.norm(obj.half))
                uv, z = cam.project(centre[None])
                r_px = cam.fx * radius / max(z[0] - radius, 1e-3) + 1.5
                allowed |= (xs + 0.5 - uv[0, 0]) ** 2 + (ys + 0.5 - uv[0, 1]) ** 2 <= r_px ** 2
                # ... and the pixel at the sphere's centre is dynamic unless something static is in front of it.
                if hasattr(obj, "radius"):
                    x, y = int(uv[0, 0]), int(uv[0, 1])
                    if 0 <= x < W and 0 <= y < H and depth[y, x] > z[0] - 1.5 * radius:
                        assert dyn[y, x], (cam.name, f)
            assert not (dyn & ~allowed).any(), (cam.name, f)
    assert seen_dynamic > 50
    # Objects move: the masks change over time.
    m0 = np.asarray(PIL.Image.open(rig.mask_path("cam01", 0)))
    m3 = np.asarray(PIL.Image.open(rig.mask_path("cam01", 3)))
    assert (m0 != m3).sum() > 20


def test_videos_decode_to_frames(rig) -> None:
    import av

    for cam in rig.rig.cameras:
        with av.open(str(rig.videos[cam.name])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == rig.n_frames
        for f, decoded in enumerate(frames):
            png = np.asarray(PIL.Image.open(rig.frame_path(cam.name, f)).convert("RGB"))
            mse = np.mean((decoded.astype(np.float64) - png) ** 2)
            psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
            assert psnr > 35.0, (cam.name, f, psnr)


def test_calibration_json_matches_rig(rig) -> None:
    doc = json.loads(rig.calibration.read_text())
    assert {"width", "height", "fps", "num_frames", "convention", "cameras"} <= set(doc)
    assert (doc["width"], doc["height"], doc["num_frames"], doc["fps"]) == (W, H, 4, 10)
    gt = Scene.load(rig.root / "gt")
    for entry, cam in zip(doc["cameras"], gt.cameras):
        assert entry["name"] == cam.name
        assert (rig.root / entry["video"]).is_file() and (rig.root / entry["masks"]).is_dir()
        np.testing.assert_allclose(entry["K"], cam.K)
        np.testing.assert_allclose(entry["w2c"], cam.world_to_camera)


def test_cli_writes_scene(tmp_path: Path) -> None:
    from splatworks.cli import main

    assert main(["synth", "static", "-o", str(tmp_path / "s"), "--views", "2", "--width", "48", "--height", "36"]) == 0
    assert len(Scene.load(tmp_path / "s" / "gt").cameras) == 2
    assert main(["synth", "dynamic", "-o", str(tmp_path / "d"), "--cameras", "2", "--frames", "2",
                 "--width", "48", "--height", "36", "--no-videos"]) == 0
    assert (tmp_path / "d" / "masks_gt" / "cam01" / "000001.png").is_file()
    assert not (tmp_path / "d" / "videos").exists()
    assert main(["synth", "static", "-o", str(tmp_path / "x"), "--views", "0"]) == 2
