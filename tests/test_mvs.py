"""Plane-sweep MVS at known poses (``splatworks.sfm.mvs``) on a rendered textured room with exact depth.

One session fixture renders 8 views (160x120) and computes their depth maps once (~6 s on CPU); the other
tests reuse them. Budget: ~25 s in all on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from splatworks.errors import InputError
from splatworks.scene.camera import Scene
from splatworks.sfm.mvs import (DenseConfig, consistent_points, consistent_samples, dense_scene_points, depth_maps,
                                depth_range, select_sources, write_depth_samples)
from splatworks.synthetic.scenes import make_static_scene

CFG = DenseConfig(num_depths=64, max_points=0, scale=1.0)  # full size: the test images are tiny


@pytest.fixture(scope="session")
def room(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("mvs_room")
    scene = make_static_scene(out, n_views=8, width=160, height=120, seed=0)
    images = [np.array(PIL.Image.open(out / "images" / c.name).convert("RGB")) for c in scene.cameras]
    gt = np.stack([np.load(out / "depth" / (Path(c.name).stem + ".npy")) for c in scene.cameras])
    depth, conf = depth_maps(images, scene.cameras, CFG, "cpu", points=scene.points)
    return {"out": out, "scene": scene, "images": images, "gt": gt, "depth": depth, "conf": conf}


def surface_distance(points: np.ndarray, scene: Scene, gt: np.ndarray) -> np.ndarray:
    """(P,) distance along the viewing ray to the true surface, in the view where the point is closest to it."""
    best = np.full(len(points), np.inf)
    for cam, g in zip(scene.cameras, gt):
        uv, z = cam.project(points)
        j = np.floor(uv).astype(int)
        ok = (z > 0) & (j[:, 0] >= 0) & (j[:, 0] < cam.width) & (j[:, 1] >= 0) & (j[:, 1] < cam.height)
        err = np.full(len(points), np.inf)
        g_hit = g[j[ok, 1], j[ok, 0]]
        err[ok] = np.where(g_hit > 0, np.abs(z[ok] - g_hit), np.inf)
        best = np.minimum(best, err)
    return best


def test_depth_maps_match_ground_truth(room: dict) -> None:
    depth, conf, gt = room["depth"].numpy(), room["conf"].numpy(), room["gt"]
    assert depth.shape == gt.shape and depth.dtype == np.float32
    both = (depth > 0) & (gt > 0)
    rel = np.abs(depth[both] - gt[both]) / gt[both]
    assert np.median(rel) < 0.025, np.median(rel)
    # Most surface pixels get a depth (the room is textured everywhere).
    assert both.sum() / (gt > 0).sum() > 0.6
    assert (conf[depth > 0] >= CFG.min_ncc).all() and (conf[depth == 0] == 0).all()


def test_consistent_points_lie_on_the_surface(room: dict) -> None:
    scene = room["scene"]
    pts, cols, stats = consistent_points(room["depth"], room["images"], scene.cameras, CFG, return_stats=True)
    assert pts.shape == (stats.points, 3) and cols.shape == (stats.points, 3) and cols.dtype == np.uint8
    assert stats.points > 20_000 and 0.3 < stats.consistent_fraction < 1.0, stats
    radius = scene.camera_extent()[1]
    dist = surface_distance(pts, scene, room["gt"]) / radius
    assert (dist < 0.02).mean() > 0.9, (dist < 0.02).mean()
    # Colours come from the images: the mean colour of the points is that of the textured surfaces.
    mean_image = np.mean([im.reshape(-1, 3).mean(0) for im in room["images"]], axis=0)
    assert np.abs(cols.mean(0) - mean_image).max() < 30
    # Subsampling keeps at most max_points, a subset of the same points.
    few, _ = consistent_points(room["depth"], room["images"], scene.cameras, replace(CFG, max_points=500))
    assert len(few) == 500 and np.isin(few[:, 0], pts[:, 0]).all()


def test_a_wrong_pose_reduces_the_consistent_fraction(room: dict) -> None:
    """One camera yawed by 1.5 degrees: its depth no longer agrees with the others (the check can fail)."""
    scene = room["scene"]
    _, _, good = consistent_points(room["depth"], room["images"], scene.cameras, CFG, return_stats=True)
    a = np.radians(1.5)
    yaw = np.eye(4)
    yaw[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    cams = list(scene.cameras)
    cams[3] = replace(cams[3], world_to_camera=yaw @ cams[3].world_to_camera)
    depth, _ = depth_maps(room["images"], cams, CFG, "cpu", points=scene.points)
    _, _, bad = consistent_points(depth, room["images"], cams, CFG, return_stats=True)
    assert bad.consistent_fraction < good.consistent_fraction - 0.05, (good, bad)


def test_masks_and_held_out_views(room: dict, tmp_path: Path) -> None:
    """Masked-out pixels get no depth; the held-out camera is never loaded nor used; depth maps are written."""
    scene = Scene(cameras=room["scene"].cameras, points=room["scene"].points, test_names=[room["scene"].cameras[2].name])
    index = {c.name: i for i, c in enumerate(scene.cameras)}
    loaded: list[str] = []

    def load(cam):
        loaded.append(cam.name)
        return room["images"][index[cam.name]]

    def mask(cam):
        m = np.ones((cam.height, cam.width), bool)
        m[:, : cam.width // 2] = cam.name != scene.cameras[0].name  # left half of view 0 not used
        return m

    cfg = replace(CFG, scale=0.5, num_depths=32)
    pts, cols, report = dense_scene_points(scene, load, cfg, "cpu", load_mask=mask, depth_out=tmp_path / "d.npy")
    held = scene.cameras[2].name
    assert held not in loaded and held not in report["views"] and len(loaded) == 7
    depth = np.load(tmp_path / "d.npy")
    assert depth.shape == (7, 60, 80) and depth.dtype == np.float32
    assert (depth[0][:, :40] == 0).all() and (depth[0][:, 40:] > 0).mean() > 0.3
    assert report["count"] == len(pts) > 1000
    # The same points whatever the held-out image holds (it is never read).
    room_images = room["images"]
    room["images"] = [np.zeros_like(im) if i == 2 else im for i, im in enumerate(room_images)]
    try:
        again, _, _ = dense_scene_points(scene, load, cfg, "cpu", load_mask=mask)
    finally:
        room["images"] = room_images
    np.testing.assert_array_equal(again, pts)


def test_consistent_pixels_as_depth_samples(room: dict, tmp_path: Path) -> None:
    """``consistent_samples`` at half size: stored-image pixel coordinates, depths that match the ground truth
    there, errors within the gate; written as sparse SfM depth's files for every camera (none for the held-out
    one), read back by ``--depth sparse``'s loader in both layouts, weighted by DS-NeRF's formula."""
    from splatworks.depth.files import load_sparse_depth

    scene = Scene(cameras=room["scene"].cameras, points=room["scene"].points, test_names=[room["scene"].cameras[2].name])
    cams = scene.train_cameras
    cfg = replace(CFG, scale=0.5, num_depths=48)
    depth, _ = depth_maps([room["images"][i] for i in (0, 1, 3, 4, 5, 6, 7)], cams, cfg, "cpu", points=scene.points)
    samples = consistent_samples(depth, cams, cfg)
    gt = {c.name: g for c, g in zip(room["scene"].cameras, room["gt"])}
    for cam, s in zip(cams, samples):
        assert len(s["depths"]) > 200 and s["coords"].shape == (len(s["depths"]), 2)
        assert (s["errors"] <= cfg.reproj_px * 2 + 1e-4).all() and (s["agreeing"] >= cfg.min_consistent).all()
        j = np.floor(s["coords"]).astype(int)  # stored-size pixels: the ground truth is at the stored size
        assert j[:, 0].max() < cam.width and j[:, 1].max() < cam.height and j[:, 0].max() > cam.width * 0.8
        truth = gt[cam.name][j[:, 1], j[:, 0]]
        rel = np.abs(s["depths"] - truth) / truth
        assert np.median(rel) < 0.02 and (rel < 0.05).mean() > 0.85, (np.median(rel), (rel < 0.05).mean())
    # As many samples as consistent pixels (the fusion's count).
    _, _, stats = consistent_points(depth, [room["images"][i] for i in (0, 1, 3, 4, 5, 6, 7)], cams, cfg,
                                    return_stats=True)
    n = write_depth_samples(tmp_path, scene, samples)
    assert n == stats.consistent_pixels == sum(len(s["depths"]) for s in samples)
    names = [c.name for c in scene.cameras]
    for layout in ("sparse_depth.npz", "colmap_depth.npy"):
        got = load_sparse_depth(tmp_path / layout, names)
        assert len(got[scene.test_names[0]]["depths"]) == 0
        for cam, s in zip(cams, samples):
            np.testing.assert_allclose(got[cam.name]["depths"], s["depths"])
            np.testing.assert_allclose(got[cam.name]["coords"], s["coords"])
            w = got[cam.name]["weights"]
            assert ((w > 0) & (w <= 2)).all()
            # Smaller reprojection error, larger weight (DS-NeRF).
            order = np.argsort(s["errors"])
            assert w[order[0]] >= w[order[-1]]


def test_view_selection_depth_range_and_bad_input(room: dict) -> None:
    cams = room["scene"].cameras
    sources = select_sources(cams, 4)
    assert all(len(s) == 4 and i not in s for i, s in enumerate(sources))
    assert set(sources[0]) == {1, 2, 3, 4}  # views on an arc: the nearest are the neighbours on one side
    gt = room["gt"]
    for (near, far), g in zip(depth_range(cams, room["scene"].points), gt):
        assert near < g[g > 0].min() and far > g[g > 0].max()
    for (near, far), g in zip(depth_range(cams), gt):  # from the layout alone: still brackets the room
        assert near < np.percentile(g[g > 0], 1) and far > np.percentile(g[g > 0], 99)
    with pytest.raises(InputError, match="odd"):
        depth_maps(room["images"], cams, replace(CFG, window=6), "cpu")
    with pytest.raises(InputError, match="one image each"):
        depth_maps(room["images"][:3], cams, CFG, "cpu")
    with pytest.raises(InputError, match="do not match"):
        consistent_points(torch.zeros(8, 10, 10), room["images"], cams, CFG)


def test_rig_frame_dense_points_skip_the_held_out_camera(tmp_path: Path) -> None:
    """``dynamic.points.dense_rig_points`` (what ``dynamic prepare`` calls): the held-out camera's image is not
    even on disk, and the points of the other views lie on the rig's true surfaces."""
    from tiny_rig import make_tiny_dataset

    from splatworks.dynamic.points import dense_rig_points

    ds = make_tiny_dataset(tmp_path / "ds", n_frames=1, width=160, height=120, test_camera=2)
    ds.rig.test_names = list(ds.test_cameras)
    (ds.image_path(ds.test_cameras[0], 0)).unlink()
    # 4 training views on a 90-degree arc (the held-out one leaves a 45-degree gap): wide baselines, so a
    # smaller window and a stricter NCC than the defaults (measured: 90 % within 2 %, against 82 % with defaults).
    cfg = replace(CFG, num_depths=48, window=5, min_ncc=0.7)
    xyz, rgb, report = dense_rig_points(ds.rig, ds.root / "images", 0, cfg, "cpu", depth_out=tmp_path / "depth.npy")
    assert ds.test_cameras[0] not in " ".join(report["views"]) and len(report["views"]) == 4
    assert len(xyz) == len(rgb) == report["count"] > 1000
    assert np.load(tmp_path / "depth.npy").shape == (4, 120, 160)
    cams = [c for c in ds.rig.cameras if c.name not in ds.test_cameras]
    gt = np.stack([np.load(ds.root / "depth_gt" / c.name / "000000.npy") for c in cams])
    dist = surface_distance(xyz, Scene(cameras=cams), gt) / ds.rig.camera_extent()[1]
    assert (dist < 0.02).mean() > 0.85, (dist < 0.02).mean()
    assert (dist < 0.05).mean() > 0.95, (dist < 0.05).mean()


def test_cli_writes_a_point_cloud(room: dict, tmp_path: Path) -> None:
    from plyfile import PlyData

    from splatworks.cli import main

    scene_dir = room["out"] / "gt"  # scene.json of the rendered room (no held-out views)
    rc = main(["dense", str(scene_dir), "-o", str(tmp_path / "p.ply"), "--device", "cpu", "--scale", "0.5",
               "--num-depths", "32", "--depth-out", str(tmp_path / "d.npy")])
    assert rc == 0
    v = PlyData.read(str(tmp_path / "p.ply"))["vertex"].data
    pts = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    assert len(pts) > 2000 and np.load(tmp_path / "d.npy").shape == (8, 60, 80)
    dist = surface_distance(pts, room["scene"], room["gt"]) / room["scene"].camera_extent()[1]
    assert (dist < 0.03).mean() > 0.85
    assert (tmp_path / "p.config.json").exists()
