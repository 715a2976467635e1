"""The viewer's start camera: one of the training cameras, converted to three.js conventions.

Conventions at this boundary (docs/conventions.md):

- splatworks: OpenCV camera axes (x right, y down, z forward), poses stored ``world_to_camera``.
- three.js / Spark: OpenGL camera axes (x right, y up, the camera looks down -z); an object's pose is its
  camera-to-world matrix, given as ``position`` + ``quaternion`` (three.js order **x, y, z, w**).

The conversion: ``c2w_gl = inverse(world_to_camera) @ diag(1, -1, -1, 1)`` (flip the camera's y and z axes);
``position = c2w_gl[:3, 3]`` and ``quaternion = quat(c2w_gl[:3, :3])``. World coordinates are not changed: the
splat files keep our world frame and the mesh is added to the three.js scene untransformed, so the same world
point is seen at the same pixel as in the training image (vertical fov kept, principal point assumed centred).

"Upright": three.js orbits about ``camera.up``. A capture's world frame has no fixed up axis (SfM picks an
arbitrary one), so ``up`` is estimated from the cameras: people hold cameras upright, so the mean of the
cameras' image-up directions (their -y axes in world coordinates) points up. OrbitControls then keeps that
direction vertical on screen.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..scene.camera import OPENGL_TO_OPENCV, Camera, Scene


def scene_up(cameras: list[Camera]) -> np.ndarray:
    """(3,) unit world direction that is "up" in the images: the normalised mean of the cameras' -y axes."""
    ups = np.array([-c.R[1, :] for c in cameras])  # row 1 of R = camera y axis in world coordinates
    up = ups.mean(axis=0)
    norm = np.linalg.norm(up)
    if norm < 1e-6:  # cameras disagree completely (e.g. half upside-down): fall back to the first one
        up, norm = ups[0], np.linalg.norm(ups[0])
    return up / norm


def _forward(cam: Camera) -> np.ndarray:
    """(3,) unit viewing direction (camera +z) in world coordinates."""
    return cam.R[2, :].copy()


def _look_at_point(cameras: list[Camera], scene: Scene) -> np.ndarray | None:
    """(3,) world point the capture looks at: the point nearest to all optical axes (least squares).

    Object-centric captures (turntable, orbit) meet near the object; for forward-facing captures the axes are
    near-parallel, the system is ill-conditioned, and the sparse points' median is used instead.
    """
    A, b = np.zeros((3, 3)), np.zeros(3)
    for cam in cameras:
        d = _forward(cam)
        P = np.eye(3) - np.outer(d, d)  # projector onto the plane orthogonal to the axis
        A += P
        b += P @ cam.center
    eig = np.linalg.eigvalsh(A)
    if len(cameras) >= 2 and eig[0] > 0.05 * eig[-1]:
        return np.linalg.solve(A, b)
    if len(scene.points):
        return np.median(scene.points, axis=0)
    return None


def viewer_start_camera(scene: Scene, index: int | None = None) -> dict[str, Any]:
    """A start camera for the web viewer, taken from a training camera of ``scene``.

    Args:
        scene: the job's scene (cameras with OpenCV ``world_to_camera``).
        index: index into ``scene.train_cameras`` (all cameras when none are marked for training); by default
            ``typical_camera_index``: a camera at the median elevation, nearest the mean viewing direction.

    Returns:
        JSON-ready dict (lengths in world units, angles in degrees):
        ``name``: the training image it comes from; ``position`` [x, y, z]: camera centre;
        ``quaternion`` [x, y, z, w]: three.js camera orientation (OpenGL axes, camera looks down -z);
        ``target`` [x, y, z]: orbit centre on the viewing axis; ``up`` [x, y, z]: unit scene-up direction;
        ``fov``: vertical field of view; ``aspect``: width / height of the training image;
        ``near``, ``far``: clip distances; ``width``, ``height``: training image size in pixels;
        ``convention``: a reminder of the axes.
    """
    cameras = scene.train_cameras or scene.cameras
    if not cameras:
        raise ValueError("scene has no cameras: the viewer's start camera is taken from a training camera")
    forwards = np.array([_forward(c) for c in cameras])
    up = scene_up(cameras)
    if index is None:
        index = typical_camera_index(forwards, up)
    cam = cameras[index]
    c2w_gl = cam.camera_to_world @ OPENGL_TO_OPENCV
    position, forward = cam.center, forwards[index]

    # Orbit target on this camera's own viewing axis, at the depth of what the capture looks at, so the first
    # frame shows exactly the training view.
    _, radius = scene.camera_extent()
    point = _look_at_point(cameras, scene)
    depth = float(np.dot(point - position, forward)) if point is not None else 0.0
    if not np.isfinite(depth) or depth <= 1e-3 * radius:
        depth = radius
    target = position + forward * depth
    scene_span = max(depth, radius)

    return {
        "name": cam.name,
        "position": position.tolist(),
        "quaternion": rotation_to_quaternion_xyzw(c2w_gl[:3, :3]).tolist(),
        "target": target.tolist(),
        "up": up.tolist(),
        "fov": math.degrees(cam.fov_y),
        "aspect": cam.width / cam.height,
        "near": 0.01 * depth,
        "far": 100.0 * scene_span,
        "width": cam.width,
        "height": cam.height,
        "convention": "three.js: OpenGL camera axes (x right, y up, looks down -z), quaternion xyzw, world frame "
                      "of the splat files",
    }


def typical_camera_index(forwards: np.ndarray, up: np.ndarray, tolerance_deg: float = 5.0) -> int:
    """Index of a representative view among (N, 3) unit viewing directions: among the cameras within
    ``tolerance_deg`` of the median elevation (angle below the horizon), the one nearest the mean direction.

    The mean direction alone picks the top-down view of a hemispherical capture (NeRF-synthetic, turntables):
    looking straight down the up axis shows the object from its least familiar side, and orbiting about up is
    degenerate there.
    """
    elevation = np.degrees(np.arcsin(np.clip(-(forwards @ up), -1.0, 1.0)))
    gap = np.abs(elevation - np.median(elevation))
    candidates = np.flatnonzero(gap <= max(tolerance_deg, gap.min() + 1e-9))
    mean_dir = forwards.mean(axis=0)
    if np.linalg.norm(mean_dir) < 1e-6:
        return int(candidates[0])
    return int(candidates[np.argmax(forwards[candidates] @ mean_dir)])


def rotation_to_quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion [x, y, z, w] (three.js order) of a (3, 3) rotation matrix; w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    # Shepperd's method: pivot on the largest of the four candidate squares for numerical stability.
    trace = np.trace(R)
    cands = [trace, R[0, 0], R[1, 1], R[2, 2]]
    k = int(np.argmax(cands))
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], 0.0))
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 - R[0, 0] + R[1, 1] - R[2, 2], 0.0))
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 - R[0, 0] - R[1, 1] + R[2, 2], 0.0))
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    quat = np.array(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def quaternion_xyzw_to_rotation(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion [x, y, z, w]."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
