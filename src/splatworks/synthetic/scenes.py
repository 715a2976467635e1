"""Synthetic scenes with exact ground truth: a textured room corner seen from an orbit, or by a fixed video rig.

World: z up; floor ``z = 0``; two walls ``x = -L`` and ``y = -L`` (the room corner); a few textured boxes and
a sphere near the origin. Cameras sit on an arc in the open quadrant, looking at the centre (OpenCV axes,
world_to_camera, pixel centres at +0.5). Everything is deterministic for a seed.

Outputs of ``make_static_scene(out)``::

    out/images/view_000.png   RGB (or RGBA with a transparent background when rgba=True)
    out/depth/view_000.npy    float32 (H, W) camera-space z, 0 where nothing is hit
    out/gt/scene.json, points.npz   ground-truth Scene (image_dir -> out/images), sparse points on visible surfaces

Outputs of ``make_dynamic_rig(out)``::

    out/videos/cam00.mp4              H.264 (yuv444p, crf 4: near-lossless), all cameras in sync
    out/frames/cam00/000000.png       the same frames losslessly
    out/masks_gt/cam00/000000.png     8-bit, 255 = static background, 0 = moving object
    out/depth/cam00/000000.npy        float32 camera-space z
    out/calibration.json              {width, height, fps, num_frames, convention, cameras[name, video, masks, K, w2c]}
    out/gt/scene.json, points.npz     the rig: one Camera per rig camera named cam00...
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Camera, Scene
from splatworks.synthetic.render import Box, Plane, Shape, Sphere, camera_rays, cast, make_texture, render, shade

ROOM_HALF = 2.5          # walls at x = -L and y = -L
WALL_HEIGHT = 2.6
TARGET = np.array([0.0, 0.0, 0.45])  # cameras look here
SKY = np.array([0.62, 0.72, 0.85])


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """(4, 4) world_to_camera (OpenCV axes) of a camera at ``center`` looking at ``target`` with world ``up``."""
    f = target - center
    f = f / np.linalg.norm(f)
    r = np.cross(f, up)
    r = r / np.linalg.norm(r)
    down = np.cross(f, r)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([r, down, f])
    w2c[:3, 3] = -w2c[:3, :3] @ center
    return w2c


def build_world(seed: int, with_room: bool = True) -> list[Shape]:
    """Static shapes of the scene for ``seed``: floor and walls (when ``with_room``), boxes and a sphere."""
    rng = np.random.default_rng(seed)
    L, far = ROOM_HALF, 6.0
    shapes: list[Shape] = []
    if with_room:
        shapes += [
            Plane(2, 0.0, np.array([-L, -L, 0]), np.array([far, far, 0]), make_texture(rng, [0.0, 0.0, 0.0])),
            Plane(0, -L, np.array([0, -L, 0]), np.array([0, far, WALL_HEIGHT]), make_texture(rng, [0.0, 3.0, 0.0])),
            Plane(1, -L, np.array([-L, 0, 0]), np.array([far, 0, WALL_HEIGHT]), make_texture(rng, [7.0, 0.0, 0.0])),
        ]
    else:
        # A textured pedestal stands in for the floor so the object has a ground; the rest is background.
        shapes.append(Box(np.array([0.0, 0.0, -0.1]), np.array([1.3, 1.3, 0.1]), 0.0, make_texture(rng)))
    layout = [(-0.9, -0.6, 0.45), (0.5, -0.9, 0.3), (-0.5, 0.7, 0.35), (0.8, 0.5, 0.25)]
    for k, (x, y, h) in enumerate(layout):
        jitter = rng.uniform(-0.15, 0.15, size=2)
        half = np.array([rng.uniform(0.22, 0.4), rng.uniform(0.22, 0.4), h])
        shapes.append(Box(np.array([x + jitter[0], y + jitter[1], h]), half, float(rng.uniform(0, math.pi)),
                          make_texture(rng, offset=rng.uniform(-50, 50, 3))))
    shapes.append(Sphere(np.array([0.1, 0.0, 0.35]), 0.35, make_texture(rng, offset=rng.uniform(-50, 50, 3))))
    return shapes


def orbit_cameras(n: int, width: int, height: int, seed: int, prefix: str = "view_", digits: int = 3, suffix: str = ".png",
                  arc_degrees: float = 110.0, radius: float = 4.0) -> list[Camera]:
    """``n`` cameras on an arc (centred on the open quadrant's diagonal) looking at the centre.

    Heights and the look-at point vary a little so that views are not all coplanar.
    """
    rng = np.random.default_rng(seed + 1)
    focal = 0.9 * width  # about 58 degrees horizontal field of view
    mid = math.radians(45.0)
    half = math.radians(arc_degrees) / 2
    cams: list[Camera] = []
    for i in range(n):
        a = mid - half + (2 * half) * (i / max(1, n - 1))
        h = 1.8 + 0.6 * math.sin(2.3 * i + seed)
        center = np.array([radius * math.cos(a), radius * math.sin(a), h])
        target = TARGET + rng.uniform(-0.1, 0.1, 3)
        name = f"{prefix}{i:0{digits}d}" + suffix
        cams.append(Camera(name=name,
                           width=width, height=height, fx=focal, fy=focal, cx=width / 2, cy=height / 2,
                           world_to_camera=look_at(center, target)))
    return cams


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample_surface_points(shapes: list[Shape], cams: list[Camera], count: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """GT sparse points: rays through random pixel centres of the views, hit on ``shapes``, with their colours.

    Returns points (P, 3) float64 world and colours (P, 3) uint8 (shaded texture, as in the images).
    """
    per_view = max(1, count // max(1, len(cams)))
    pts, cols = [], []
    for cam in cams:
        o, d = camera_rays(cam)
        pick = rng.choice(len(o), size=min(4 * per_view, len(o)), replace=False)
        t, n, idx = cast(shapes, o[pick], d[pick])
        hit = np.flatnonzero(np.isfinite(t))[:per_view]
        p = o[pick][hit] + t[hit, None] * d[pick][hit]
        pts.append(p)
        cols.append(_to_uint8(shade(shapes, p, n[hit], idx[hit])))
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    return np.concatenate(pts), np.concatenate(cols)


def make_static_scene(out_dir: str | Path, n_views: int = 24, width: int = 160, height: int = 120, seed: int = 0,
                      rgba: bool = False, progress: ProgressFn | None = None) -> Scene:
    """Render a textured room corner (or, with ``rgba``, the objects alone on a transparent background).

    Returns the ground-truth Scene (also saved to ``out_dir/gt``); see the module docstring for the layout.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    shapes = build_world(seed, with_room=not rgba)
    cams = orbit_cameras(n_views, width, height, seed)
    for i, cam in enumerate(cams):
        r = render(shapes, cam, sky=np.zeros(3) if rgba else SKY)
        if rgba:
            straight = r.rgb / np.maximum(r.alpha, 1e-6)[..., None]  # un-premultiply: PNG alpha is straight
            img = np.concatenate([_to_uint8(straight), _to_uint8(r.alpha)[..., None]], axis=2)
            PIL.Image.fromarray(img, "RGBA").save(out / "images" / cam.name)
        else:
            PIL.Image.fromarray(_to_uint8(r.rgb), "RGB").save(out / "images" / cam.name)
        np.save(out / "depth" / (Path(cam.name).stem + ".npy"), r.depth)
        emit(progress, "synth.render", i + 1, n_views, f"rendered {cam.name}")
    rng = np.random.default_rng(seed + 2)
    points, colors = sample_surface_points(shapes, cams, 3000, rng)
    scene = Scene(cameras=cams, image_dir=out / "images", points=points, point_colors=colors,
                  point_errors=np.zeros(len(points)), background=(1.0, 1.0, 1.0) if rgba else None,
                  meta={"source": "splatworks.synthetic.static", "seed": seed, "rgba": rgba,
                        "depth_dir": str((out / "depth").resolve()), "world_up": [0, 0, 1]})
    scene.save(out / "gt")
    return scene


# ---- dynamic rig ------------------------------------------------------------------------------------------
@dataclass
class DynamicRigTruth:
    """What ``make_dynamic_rig`` wrote, with the ground truth.

    Attributes:
        root: output folder.
        rig: GT Scene, one Camera per rig camera (``cam00`` ...), static sparse points.
        videos: camera name -> video path.
        frames_dir, masks_dir, depth_dir: folders with ``{camera}/{frame:06d}.png|npy``.
        calibration: path of ``calibration.json``.
        n_frames, fps: clip length and frame rate.
        object_paths: (n_objects, n_frames, 3) world centres of the moving objects per frame.
    """

    root: Path
    rig: Scene
    videos: dict[str, Path]
    frames_dir: Path
    masks_dir: Path
    depth_dir: Path
    calibration: Path
    n_frames: int
    fps: float
    object_paths: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3)))

    def frame_path(self, camera: str, frame: int) -> Path:
        return self.frames_dir / camera / f"{frame:06d}.png"

    def mask_path(self, camera: str, frame: int) -> Path:
        return self.masks_dir / camera / f"{frame:06d}.png"

    def depth_path(self, camera: str, frame: int) -> Path:
        return self.depth_dir / camera / f"{frame:06d}.npy"


def moving_objects(seed: int, frame: int, n_frames: int) -> list[Shape]:
    """The moving shapes at ``frame``: a sphere circling the centre and a box sliding along a line."""
    rng = np.random.default_rng(seed + 7)
    tex_a = make_texture(rng, offset=rng.uniform(-50, 50, 3))
    tex_b = make_texture(rng, offset=rng.uniform(-50, 50, 3))
    s = frame / max(1, n_frames - 1)
    angle = 2 * math.pi * 0.5 * s
    sphere = Sphere(np.array([1.1 * math.cos(angle), 1.1 * math.sin(angle), 0.9]), 0.28, tex_a, dynamic=True)
    box = Box(np.array([-0.2 + 1.0 * s, 1.3 - 0.8 * s, 0.3]), np.array([0.22, 0.22, 0.22]), 0.6 + s, tex_b,
              dynamic=True)
    return [sphere, box]


def make_dynamic_rig(out_dir: str | Path, n_cameras: int = 5, n_frames: int = 6, width: int = 160, height: int = 120,
                     seed: int = 0, write_videos: bool = True, fps: int = 10,
                     progress: ProgressFn | None = None) -> DynamicRigTruth:
    """A fixed rig of ``n_cameras`` on an arc filming the static room plus two moving textured objects."""
    out = Path(out_dir)
    static = build_world(seed)
    cams = orbit_cameras(n_cameras, width, height, seed, prefix="cam", digits=2, suffix="",
                         arc_degrees=90.0)
    frames_dir, masks_dir, depth_dir = out / "frames", out / "masks_gt", out / "depth"
    for cam in cams:
        for d in (frames_dir, masks_dir, depth_dir):
            (d / cam.name).mkdir(parents=True, exist_ok=True)
    paths = np.zeros((2, n_frames, 3))
    for f in range(n_frames):
        movers = moving_objects(seed, f, n_frames)
        for k, m in enumerate(movers):
            paths[k, f] = m.center
        shapes = static + movers
        for cam in cams:
            r = render(shapes, cam, sky=SKY)
            PIL.Image.fromarray(_to_uint8(r.rgb), "RGB").save(frames_dir / cam.name / f"{f:06d}.png")
            mask = np.where(r.dynamic, 0, 255).astype(np.uint8)
            PIL.Image.fromarray(mask, "L").save(masks_dir / cam.name / f"{f:06d}.png")
            np.save(depth_dir / cam.name / f"{f:06d}.npy", r.depth)
        emit(progress, "synth.render", f + 1, n_frames, f"rendered frame {f}")

    videos: dict[str, Path] = {}
    if write_videos:
        (out / "videos").mkdir(parents=True, exist_ok=True)
        for cam in cams:
            videos[cam.name] = encode_video([frames_dir / cam.name / f"{f:06d}.png" for f in range(n_frames)],
                                            out / "videos" / f"{cam.name}.mp4", fps)

    rng = np.random.default_rng(seed + 2)
    points, colors = sample_surface_points(static, cams, 2000, rng)
    rig = Scene(cameras=cams, image_dir=frames_dir, mask_dir=masks_dir, points=points, point_colors=colors,
                point_errors=np.zeros(len(points)),
                meta={"source": "splatworks.synthetic.dynamic", "seed": seed, "fps": fps, "num_frames": n_frames,
                      "frame_layout": "{camera}/{frame:06d}.png", "world_up": [0, 0, 1]})
    rig.save(out / "gt")
    calib = {
        "source": f"splatworks synthetic dynamic rig (seed {seed})",
        "width": width, "height": height, "fps": fps, "num_frames": n_frames,
        "convention": "OpenCV pinhole: K is 3x3 intrinsics in pixels; w2c is the 4x4 world-to-camera matrix "
                      "(x right, y down, z forward)",
        "cameras": [{"name": c.name, "video": f"videos/{c.name}.mp4", "masks": f"masks_gt/{c.name}",
                     "K": c.K.tolist(), "w2c": c.world_to_camera.tolist()} for c in cams],
    }
    (out / "calibration.json").write_text(json.dumps(calib, indent=1))
    return DynamicRigTruth(root=out, rig=rig, videos=videos, frames_dir=frames_dir, masks_dir=masks_dir,
                           depth_dir=depth_dir, calibration=out / "calibration.json", n_frames=n_frames,
                           fps=float(fps), object_paths=paths)


def encode_video(frame_paths: list[Path], path: Path, fps: int, crf: int = 4) -> Path:
    """Encode PNG frames as H.264 (libx264, yuv444p so colour detail survives at small sizes)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        first = np.asarray(PIL.Image.open(frame_paths[0]).convert("RGB"))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for p in frame_paths:
            frame = av.VideoFrame.from_ndarray(np.asarray(PIL.Image.open(p).convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
