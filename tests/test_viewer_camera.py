"""The viewer's start camera: OpenCV world_to_camera -> three.js pose, scene up, orbit target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splatworks.scene.camera import Camera, Scene
from splatworks.viewer.camera import quaternion_xyzw_to_rotation, rotation_to_quaternion_xyzw, viewer_start_camera
from splatworks.viewer.testing import look_at_world_to_camera, project_threejs, ring_scene


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_quaternion_round_trip_covers_every_pivot_branch() -> None:
    rng = np.random.default_rng(0)
    rots = [_random_rotation(rng) for _ in range(200)]
    # 180-degree turns about each axis hit the branches where the trace is not the largest candidate.
    rots += [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for R in rots:
        q = rotation_to_quaternion_xyzw(R)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_xyzw_to_rotation(q), R, atol=1e-9)


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 1.0, 0.3)])
def test_start_camera_shows_the_training_view_upright(up: tuple[float, float, float]) -> None:
    scene = ring_scene(n=7, width_px=400, height_px=300, up=up)
    start = viewer_start_camera(scene)
    cam = scene.camera(start["name"])
    np.testing.assert_allclose(start["position"], cam.center, atol=1e-9)
    # Every camera of the ring looks at the origin, so the orbit target is the origin.
    np.testing.assert_allclose(start["target"], np.zeros(3), atol=1e-6)
    np.testing.assert_allclose(start["up"], np.asarray(up) / np.linalg.norm(up), atol=1e-9)
    assert start["fov"] == pytest.approx(math.degrees(cam.fov_y))
    assert start["aspect"] == pytest.approx(400 / 300)
    assert 0 < start["near"] < np.linalg.norm(cam.center) < start["far"]
    # Same pixels as the training camera, for points all over the frustum.
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1.0, 1.0, size=(50, 3))
    uv_ours, depth = cam.project(pts)
    assert (depth > 0).all()
    np.testing.assert_allclose(project_threejs(start, pts, 400, 300), uv_ours, atol=1e-6)
    # Upright: the scene's up direction points up on screen (smaller row) from the target.
    top = np.asarray(start["target"]) + 0.5 * np.asarray(start["up"])
    uv = project_threejs(start, np.stack([np.asarray(start["target"]), top]), 400, 300)
    assert uv[1, 1] < uv[0, 1] - 10 and abs(uv[1, 0] - uv[0, 0]) < 1e-6


def test_start_camera_is_nearest_to_mean_view_direction_and_skips_held_out() -> None:
    # Five cameras on an arc; the middle one looks along the mean direction.
    cams = []
    for i, phi in enumerate(np.radians([-60, -30, 0, 30, 60])):
        center = 5 * np.array([math.sin(phi), -math.cos(phi), 0.0])
        cams.append(Camera(f"c{i}.png", 64, 48, 50, 50, 32, 24,
                           world_to_camera=look_at_world_to_camera(center, np.zeros(3), np.array([0, 0, 1.0]))))
    scene = Scene(cameras=cams)
    assert viewer_start_camera(scene)["name"] == "c2.png"
    scene.test_names = ["c2.png"]
    assert viewer_start_camera(scene)["name"] in {"c1.png", "c3.png"}
    assert viewer_start_camera(scene, index=0)["name"] == "c0.png"


def test_hemisphere_capture_starts_at_a_typical_elevation_not_the_top() -> None:
    # Cameras on the upper hemisphere (as NeRF-synthetic): the mean direction points straight down, but the
    # start view should be one of the typical, obliquely looking cameras.
    rng = np.random.default_rng(3)
    cams = []
    for i in range(40):
        elev, azim = (np.radians(88.0), 0.0) if i == 0 else (rng.uniform(0.1, 1.3), rng.uniform(0, 2 * np.pi))
        center = 4 * np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
        up_hint = np.array([0, 0, 1.0]) if i else np.array([1.0, 0, 0])
        cams.append(Camera(f"h{i}.png", 64, 48, 50, 50, 32, 24,
                           world_to_camera=look_at_world_to_camera(center, np.zeros(3), up_hint)))
    scene = Scene(cameras=cams)
    start = viewer_start_camera(scene)
    elevations = [np.degrees(np.arcsin(c.center[2] / 4)) for c in cams]
    chosen = elevations[int(start["name"][1:-4])]
    # (5 degrees about the estimated up, which is not exactly +z: the top camera is rolled)
    assert abs(chosen - np.median(elevations)) <= 8.0 and chosen < 70
    np.testing.assert_allclose(start["target"], np.zeros(3), atol=1e-6)


def test_forward_facing_capture_targets_the_sparse_points() -> None:
    # Parallel cameras (a forward-facing capture): optical axes never meet, so the target depth comes from the
    # sparse points' median, 6 units in front.
    cams = [Camera(f"f{i}.png", 64, 48, 50, 50, 32, 24,
                   world_to_camera=look_at_world_to_camera(np.array([x, 0, 0.0]), np.array([x, 0, 10.0]),
                                                           np.array([0, -1.0, 0])))
            for i, x in enumerate([-0.2, -0.1, 0.0, 0.1, 0.2])]
    pts = np.random.default_rng(2).normal([0, 0, 6.0], 0.3, size=(500, 3))
    start = viewer_start_camera(Scene(cameras=cams, points=pts))
    assert start["target"][2] == pytest.approx(6.0, abs=0.1)
    np.testing.assert_allclose(start["target"][:2], start["position"][:2], atol=1e-9)  # on the viewing axis
    np.testing.assert_allclose(start["up"], [0, -1, 0], atol=1e-9)


def test_scene_without_cameras_is_refused() -> None:
    with pytest.raises(ValueError, match="no cameras"):
        viewer_start_camera(Scene(cameras=[]))
