"""Fixed-camera videos of a trained 4D sequence: a training camera, a held-out camera, or any given pose.

The camera never moves and the static layer never changes, so background pixels come out identical from frame
to frame (no jitter). For a camera with ground-truth frames (training or held-out), ``side_by_side`` puts the
rendering on the left and the ground truth on the right. Every render here uses the training's background, SH
degree and near clipping plane (``SequentialConfig.near_plane``, in scene radii, times the scene radius recorded
in ``source.json``), so what is scored and shown is what training optimised. Videos are H.264 mp4 written with
PyAV (yuv420p, so browsers play them; odd sizes are padded by one pixel).

Shapes: H x W pixels; frames are (H, W, 3) float32 in [0, 1] until encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import torch

from splatworks.errors import UserError
from splatworks.scene.camera import Camera

if TYPE_CHECKING:
    from splatworks.splat.render import RenderOutput

SOURCE_FILE = "source.json"


class SequenceReader:
    """Reads the Gaussians of each trained frame of ``train_dir``, loading the static layer once."""

    def __init__(self, train_dir: str | Path, device: str | torch.device = "cpu") -> None:
        from splatworks.dynamic import sequential as seq

        self.dir = Path(train_dir)
        if not (self.dir / "config.json").exists():
            raise UserError(f"{self.dir} is not a `splatworks dynamic train` output (no config.json)")
        self.config = seq.load_config(self.dir)
        self.device = torch.device(device)
        self.frames = seq.trained_frames(self.dir)
        self._static: dict[str, torch.Tensor] | None = None  # loaded on first use (near planes need none of it)
        src = self.dir / SOURCE_FILE
        self.source = json.loads(src.read_text()) if src.exists() else {}
        self._near_points: np.ndarray | None = None

    @property
    def static(self) -> dict[str, torch.Tensor] | None:
        """The frozen static layer (``static.pt``), None when training froze none."""
        from splatworks.dynamic import sequential as seq

        path = self.dir / seq.STATIC_FILE
        if self._static is None and path.exists():
            self._static = torch.load(path, map_location=self.device)
        return self._static

    @property
    def background(self) -> torch.Tensor:
        return torch.tensor(self.source.get("background", [0.0, 0.0, 0.0]), dtype=torch.float32,
                            device=self.device)

    @property
    def scene_radius(self) -> float | None:
        """The scene radius training used (scene units; 3DGS's camera extent of the rig), as source.json records
        it; None when the folder has no source.json."""
        r = self.source.get("scene_radius")
        return float(r) if r is not None else None

    @property
    def near_plane(self) -> float:
        """The near clipping plane training rendered with: camera-space z in scene units (``near_plane_units`` of
        the config's ``near_plane``, in scene radii, and the recorded scene radius)."""
        from splatworks.dynamic import sequential as seq

        return seq.near_plane_units(self.config.near_plane, self.scene_radius)

    def near_plane_for(self, cam: Camera) -> float:
        """The near plane (scene units) a render from ``cam`` uses: the training's for a training camera; for any
        other camera (held-out, a given pose) ``config.novel_view_near`` x its near bound from the frame-0 points
        (``sequential.novel_view_near_plane``), at least the training's. Folders written before the points were
        kept (no near_points.npy or no training-camera list in source.json) use the training's."""
        from splatworks.dynamic import sequential as seq

        trained = self.source.get("train_cameras")
        path = self.dir / seq.NEAR_POINTS_FILE
        if trained is None or cam.name in trained or not path.exists():
            return self.near_plane
        if self._near_points is None:
            self._near_points = np.load(path)
        return seq.novel_view_near_plane(self._near_points, cam, self.config.novel_view_near, self.near_plane)

    @torch.no_grad()
    def render(self, frame: int, cam: Camera, backend: str | None = None,
               near_plane: float | None = None) -> RenderOutput:
        """``frame`` seen by ``cam`` (its world_to_camera, OpenCV axes, and K) as training rendered it (background,
        SH degree; near plane ``near_plane_for(cam)``); ``near_plane`` (scene units) and ``backend`` override them.
        Returns the rasterizer's output for C = 1 view: colours (1, H, W, 3), not clamped, and alphas (1, H, W, 1)."""
        from splatworks.dynamic.sequential import render_view_output

        viewmat = torch.tensor(cam.world_to_camera, dtype=torch.float32, device=self.device)
        K = torch.tensor(cam.K, dtype=torch.float32, device=self.device)
        return render_view_output(self.gaussians(frame), viewmat, K, (cam.width, cam.height), self.config.sh_degree,
                                  self.background, backend or self.config.backend,
                                  near_plane=self.near_plane_for(cam) if near_plane is None else near_plane)

    def gaussians(self, frame: int) -> dict[str, torch.Tensor]:
        """Raw parameters (see splat/gaussians.py) of ``frame``: the static layer plus the frame's own rows."""
        from splatworks.dynamic import sequential as seq

        path = seq.frame_file(self.dir, frame)
        if not path.exists():
            raise UserError(f"frame {frame} is not trained in {self.dir}; trained: "
                            f"{self.frames[:3]}...{self.frames[-1:] if self.frames else ''}")
        dyn = torch.load(path, map_location=self.device)
        if self.static is None:
            return {k: dyn[k] for k in seq.PARAM_KEYS}
        return {k: torch.cat([self.static[k], dyn[k]]) for k in seq.PARAM_KEYS}


def resolve_camera(cameras: list[Camera], camera: str | int) -> Camera:
    """A rig camera by name (``cam03``) or by index in the rig's order."""
    if isinstance(camera, int) or (isinstance(camera, str) and camera.isdigit()):
        i = int(camera)
        if not 0 <= i < len(cameras):
            raise UserError(f"camera index {i} is out of range: the rig has {len(cameras)} cameras (0.."
                            f"{len(cameras) - 1})")
        return cameras[i]
    for cam in cameras:
        if cam.name == camera:
            return cam
    raise UserError(f"no camera {camera!r}; the rig has {[c.name for c in cameras]}")


def camera_with_pose(base: Camera, world_to_camera: np.ndarray) -> Camera:
    """``base``'s intrinsics at another pose ((4, 4) world-to-camera, OpenCV axes)."""
    w2c = np.asarray(world_to_camera, dtype=np.float64)
    if w2c.shape == (3, 4):
        w2c = np.vstack([w2c, [0, 0, 0, 1]])
    if w2c.shape != (4, 4):
        raise UserError(f"a pose is a 4x4 (or 3x4) world-to-camera matrix; got shape {w2c.shape}")
    return replace(base, name=base.name + "_pose", world_to_camera=w2c)


@torch.no_grad()
def render_frames(train_dir: str | Path, cam: Camera, frames: Iterable[int], device: str = "auto",
                  backend: str | None = None, near_plane: float | None = None) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) float32 renderings in [0, 1] of ``cam`` for each of ``frames`` (``SequenceReader.render``:
    the training's background and SH degree; near plane ``near_plane`` in scene units, default ``near_plane_for``)."""
    from splatworks.dynamic.sequential import resolve_device

    reader = SequenceReader(train_dir, resolve_device(device))
    for f in frames:
        yield reader.render(f, cam, backend, near_plane=near_plane).colors[0].clamp(0, 1).cpu().numpy()


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 16) -> int:
    """Encode (H, W, 3) uint8 frames as H.264 (yuv420p); returns the number of frames written."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    n = 0
    with av.open(str(tmp), "w") as container:
        stream = None
        for img in frames:
            h, w = img.shape[:2]
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sizes
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = img.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise UserError("no frames to write")
    tmp.replace(path)
    return n


def read_video(path: str | Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a video (for checks and tests)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@dataclass
class VideoResult:
    path: Path
    frames: int
    camera: str
    side_by_side: bool


def render_video(train_dir: str | Path, out_path: str | Path, camera: str | int = 0, fps: float | None = None,
                 pose: np.ndarray | None = None, side_by_side: bool | None = None, dataset_root: str | Path | None = None,
                 frames: list[int] | None = None, device: str = "auto", crf: int = 16, progress=None) -> VideoResult:
    """Render a fixed-camera video of the trained frames of ``train_dir`` to ``out_path`` (mp4).

    Args:
        camera: rig camera name or index (the held-out camera included); with ``pose``, its intrinsics are used.
        pose: optional (4, 4) world-to-camera (OpenCV axes) replacing the camera's pose.
        side_by_side: rendering | ground truth; default: on for held-out cameras (never with ``pose``).
        dataset_root: the dataset trained on (default: the one recorded in ``train_dir/source.json``).
    """
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.dynamic.sequential import load_image
    from splatworks.progress import emit

    reader = SequenceReader(train_dir)
    root = dataset_root or reader.source.get("dataset")
    if not root:
        raise UserError(f"{train_dir} does not record its dataset; pass dataset_root (--dataset)")
    dataset = DynamicDataset.load(root)
    cam = resolve_camera(dataset.rig.cameras, camera)
    if pose is not None:
        cam = camera_with_pose(cam, pose)
        side_by_side = False
    elif side_by_side is None:
        side_by_side = cam.name in dataset.test_cameras
    frames = frames if frames is not None else reader.frames
    if not frames:
        raise UserError(f"no trained frames in {train_dir}; run `splatworks dynamic train` first")
    fps = fps or dataset.fps

    def video() -> Iterator[np.ndarray]:
        for i, (f, img) in enumerate(zip(frames, render_frames(train_dir, cam, frames, device))):
            if side_by_side:
                img = np.concatenate([img, load_image(dataset.image_path(cam.name, f))], axis=1)
            emit(progress, "dynamic.render", i + 1, len(frames), f"frame {f}")
            yield to_uint8(img)

    n = write_mp4(video(), out_path, fps, crf)
    return VideoResult(Path(out_path), n, cam.name, bool(side_by_side))
