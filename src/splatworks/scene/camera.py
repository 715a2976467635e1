"""The one internal representation of a captured scene: calibrated cameras, images, masks, sparse points.

Conventions (docs/conventions.md has the full page; every reader and writer converts at its boundary):

- Camera axes are **OpenCV**: x right, y down, z forward (the camera looks down +z).
- Poses are stored **world-to-camera**: ``x_cam = R @ x_world + t`` with ``world_to_camera = [[R, t], [0, 1]]``.
- Intrinsics are in pixels of the stored image size. Pixel centres follow COLMAP/gsplat: the centre of the
  top-left pixel is at (0.5, 0.5), so a centred principal point is ``(W / 2, H / 2)``.
- Depth is the camera-space z coordinate (not the ray length), in world units.
- Quaternions, where any appear, are ``wxyz``.

Glossary of shapes: N cameras, P sparse points, H x W image size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# COLMAP camera models and the names of their parameters after (f|fx, fy, cx, cy).
DISTORTION_PARAMS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": (),
    "PINHOLE": (),
    "SIMPLE_RADIAL": ("k1",),
    "RADIAL": ("k1", "k2"),
    "OPENCV": ("k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
}

# OpenGL/Blender camera axes (x right, y up, looking down -z) -> OpenCV axes: flip y and z.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Camera:
    """One calibrated view of the scene.

    Attributes:
        name: unique image name, relative to ``Scene.image_dir`` (e.g. ``"r_0.png"`` or ``"cam01/000042.png"``).
        width, height: image size in pixels that the intrinsics refer to.
        fx, fy, cx, cy: pinhole intrinsics in pixels (principal point with pixel centres at +0.5).
        world_to_camera: (4, 4) float64, OpenCV axes.
        model: COLMAP camera model name; ``PINHOLE`` for undistorted images.
        distortion: model parameters after the pinhole ones, in COLMAP order (see ``DISTORTION_PARAMS``).
        camera_id: intrinsics group; images taken by the same physical camera share it.
        mask_name: optional mask image name relative to ``Scene.mask_dir`` (white = static, black = dynamic).
        frame: time index for multi-view video (None for static captures).
    """

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    model: str = "PINHOLE"
    distortion: tuple[float, ...] = ()
    camera_id: int = 1
    mask_name: str | None = None
    frame: int | None = None

    def __post_init__(self) -> None:
        self.world_to_camera = np.asarray(self.world_to_camera, dtype=np.float64).reshape(4, 4)
        self.distortion = tuple(float(d) for d in self.distortion)
        if self.model not in DISTORTION_PARAMS:
            raise ValueError(f"unknown camera model {self.model!r}; use one of {sorted(DISTORTION_PARAMS)}")
        expected = len(DISTORTION_PARAMS[self.model])
        if len(self.distortion) != expected:
            raise ValueError(f"camera {self.name!r}: model {self.model} takes {expected} distortion "
                             f"parameters, got {len(self.distortion)}")
        if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"camera {self.name!r}: size and focal length must be positive")

    # ---- intrinsics -------------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 pinhole intrinsics matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians."""
        return 2.0 * math.atan(self.width / (2.0 * self.fx))

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return 2.0 * math.atan(self.height / (2.0 * self.fy))

    @property
    def is_pinhole(self) -> bool:
        return self.model in ("PINHOLE", "SIMPLE_PINHOLE") or not any(self.distortion)

    def scaled(self, factor: float) -> "Camera":
        """The same camera for an image resized by ``factor`` (e.g. 0.5 halves width and height)."""
        width, height = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy, world_to_camera=self.world_to_camera.copy())

    # ---- extrinsics -------------------------------------------------------------------------------------
    @property
    def R(self) -> np.ndarray:
        """(3, 3) world-to-camera rotation."""
        return self.world_to_camera[:3, :3]

    @property
    def t(self) -> np.ndarray:
        """(3,) world-to-camera translation."""
        return self.world_to_camera[:3, 3]

    @property
    def camera_to_world(self) -> np.ndarray:
        """(4, 4) camera-to-world, OpenCV axes."""
        return invert_rigid(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return -self.R.T @ self.t

    def camera_to_world_opengl(self) -> np.ndarray:
        """(4, 4) camera-to-world with OpenGL/Blender axes (as in ``transforms.json``)."""
        return self.camera_to_world @ OPENGL_TO_OPENCV

    @staticmethod
    def world_to_camera_from_opengl_c2w(c2w_opengl: np.ndarray) -> np.ndarray:
        """Convert an OpenGL camera-to-world (4, 4) or (3, 4) to our OpenCV world-to-camera (4, 4)."""
        c2w = np.eye(4)
        c2w[:3, :4] = np.asarray(c2w_opengl, dtype=np.float64)[:3, :4]
        return invert_rigid(c2w @ OPENGL_TO_OPENCV)

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (P, 3) world points with the pinhole model (distortion ignored).

        Returns:
            uv: (P, 2) pixel coordinates (pixel centres at +0.5).
            depth: (P,) camera-space z in world units (<= 0 means behind the camera).
        """
        pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        cam = pts @ self.R.T + self.t
        z = cam[:, 2]
        safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
        uv = np.stack([self.fx * cam[:, 0] / safe + self.cx, self.fy * cam[:, 1] / safe + self.cy], axis=1)
        return uv, z

    # ---- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "width": self.width, "height": self.height,
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "world_to_camera": self.world_to_camera.tolist(), "model": self.model,
            "distortion": list(self.distortion), "camera_id": self.camera_id,
            "mask_name": self.mask_name, "frame": self.frame,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Camera":
        return cls(name=d["name"], width=int(d["width"]), height=int(d["height"]), fx=float(d["fx"]),
                   fy=float(d["fy"]), cx=float(d["cx"]), cy=float(d["cy"]),
                   world_to_camera=np.array(d["world_to_camera"], dtype=np.float64),
                   model=d.get("model", "PINHOLE"), distortion=tuple(d.get("distortion", ())),
                   camera_id=int(d.get("camera_id", 1)), mask_name=d.get("mask_name"), frame=d.get("frame"))


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Invert a (4, 4) rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


SCENE_FILE = "scene.json"
POINTS_FILE = "points.npz"


@dataclass
class Scene:
    """Cameras plus where their images live, optional masks and sparse points.

    Attributes:
        cameras: N cameras, in a stable order (sorted by name unless a reader says otherwise).
        image_dir: folder that ``Camera.name`` is relative to.
        mask_dir: folder that ``Camera.mask_name`` is relative to (white = static, black = dynamic).
        points: (P, 3) float64 sparse world points (may be empty).
        point_colors: (P, 3) uint8 RGB.
        point_errors: (P,) float64 mean reprojection error in pixels (NaN when unknown).
        test_names: names of held-out images (evaluation only, never trained on).
        background: RGB in [0, 1] that RGBA images are composited on (None: images have no alpha).
        meta: free-form provenance (source format, SfM statistics, ...), JSON-serialisable.
    """

    cameras: list[Camera]
    image_dir: Path | None = None
    mask_dir: Path | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    point_colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    point_errors: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    test_names: list[str] = field(default_factory=list)
    background: tuple[float, float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        n = len(self.points)
        self.point_colors = np.asarray(self.point_colors, dtype=np.uint8).reshape(-1, 3)
        if len(self.point_colors) != n:
            self.point_colors = np.full((n, 3), 128, dtype=np.uint8)
        self.point_errors = np.asarray(self.point_errors, dtype=np.float64).reshape(-1)
        if len(self.point_errors) != n:
            self.point_errors = np.full((n,), np.nan)
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError("camera names must be unique")
        if self.image_dir is not None:
            self.image_dir = Path(self.image_dir)
        if self.mask_dir is not None:
            self.mask_dir = Path(self.mask_dir)

    # ---- views ------------------------------------------------------------------------------------------
    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera named {name!r}")

    @property
    def train_cameras(self) -> list[Camera]:
        held_out = set(self.test_names)
        return [c for c in self.cameras if c.name not in held_out]

    @property
    def test_cameras(self) -> list[Camera]:
        held_out = set(self.test_names)
        return [c for c in self.cameras if c.name in held_out]

    def hold_out_every(self, n: int = 8) -> "Scene":
        """Mark every n-th image (natural order of names, starting with the first) as held out."""
        ordered = sorted((c.name for c in self.cameras), key=natural_key)
        self.test_names = ordered[::n] if n > 0 else []
        return self

    def image_path(self, cam: Camera) -> Path:
        if self.image_dir is None:
            raise ValueError("scene has no image_dir")
        return self.image_dir / cam.name

    def mask_path(self, cam: Camera) -> Path | None:
        if self.mask_dir is None or cam.mask_name is None:
            return None
        return self.mask_dir / cam.mask_name

    def centers(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates."""
        return np.array([c.center for c in self.cameras]).reshape(-1, 3)

    def camera_extent(self) -> tuple[np.ndarray, float]:
        """Centre and radius of the camera centres (3DGS's ``cameras_extent``: 1.1 x max distance to mean)."""
        centers = self.centers()
        mid = centers.mean(axis=0)
        radius = float(np.linalg.norm(centers - mid, axis=1).max()) * 1.1 if len(centers) else 1.0
        return mid, max(radius, 1e-6)

    # ---- serialisation ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``scene.json`` (+ ``points.npz``) into ``folder``; image/mask dirs stored relative when possible."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)

        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            try:
                return str(Path(p).resolve().relative_to(folder.resolve()))
            except ValueError:
                return str(Path(p).resolve())

        doc = {
            "format": "splatworks.scene/1",
            "conventions": "OpenCV axes, world_to_camera, pixel centres at +0.5, depth = camera z",
            "image_dir": rel(self.image_dir), "mask_dir": rel(self.mask_dir),
            "test_names": list(self.test_names),
            "background": list(self.background) if self.background is not None else None,
            "meta": self.meta,
            "cameras": [c.to_dict() for c in self.cameras],
        }
        tmp = folder / (SCENE_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(folder / SCENE_FILE)
        tmp_pts = folder / ("points.tmp.npz")
        np.savez(tmp_pts, points=self.points, colors=self.point_colors, errors=self.point_errors)
        tmp_pts.replace(folder / POINTS_FILE)
        return folder / SCENE_FILE

    @classmethod
    def load(cls, path: str | Path) -> "Scene":
        """Read a scene written by ``save`` (``path`` is the folder or the ``scene.json`` file)."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        doc = json.loads((folder / SCENE_FILE).read_text())

        def resolve(p: str | None) -> Path | None:
            return None if p is None else (folder / p if not Path(p).is_absolute() else Path(p))

        pts = np.zeros((0, 3))
        cols = np.zeros((0, 3), dtype=np.uint8)
        errs = np.zeros((0,))
        if (folder / POINTS_FILE).exists():
            with np.load(folder / POINTS_FILE) as z:
                pts, cols, errs = z["points"], z["colors"], z["errors"]
        bg = doc.get("background")
        return cls(cameras=[Camera.from_dict(c) for c in doc["cameras"]], image_dir=resolve(doc.get("image_dir")),
                   mask_dir=resolve(doc.get("mask_dir")), points=pts, point_colors=cols, point_errors=errs,
                   test_names=list(doc.get("test_names", [])), background=tuple(bg) if bg else None,
                   meta=doc.get("meta", {}))


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``r_2`` before ``r_10``."""
    import re

    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]
