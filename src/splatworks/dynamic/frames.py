"""Frame extraction from multi-view videos (one video, or one folder of frames, per fixed camera).

Decoding is streaming (PyAV): one frame at a time goes from the decoder to a PNG, so memory does not grow with
the length of a video. Output layout: ``images/<camera>/<frame:06d>.png``, RGB 8-bit, where ``frame`` is the
index of the frame in the source video (0-based), so frame numbers stay comparable with the source when a
range or a stride is used.

Glossary: T frames, H x W image size. Frames in memory are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from splatworks.errors import InputError, UserError
from splatworks.progress import ProgressFn, emit

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class CameraSource:
    """One camera's input: a video file or a folder of frame images (sorted by natural name order).

    Attributes:
        name: camera name, the file or folder stem (``cam01``).
        path: the video file or the frame folder.
        fps: frames per second (folders: taken from the videos of other cameras, or ``PrepareConfig.fps``).
        n_frames: number of frames (from the container header when it has one, else counted by decoding).
        width, height: size of the source frames in pixels.
    """

    name: str
    path: Path
    fps: float = 0.0
    n_frames: int = 0
    width: int = 0
    height: int = 0

    @property
    def is_video(self) -> bool:
        return self.path.is_file()


@dataclass
class FrameReport:
    """What extraction did: the common frame numbers, the output size, and the warnings it raised."""

    cameras: list[str]
    frames: list[int]
    fps: float
    width: int
    height: int
    source_size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)


def _natural_key(name: str) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def discover_cameras(videos_dir: str | Path) -> list[CameraSource]:
    """Find one input per camera in ``videos_dir``: video files (``cam00.mp4``) or frame folders (``cam00/``).

    Raises:
        InputError: the folder is missing, empty, mixes names, or holds a single camera.
    """
    root = Path(videos_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass a folder with one video (or one frame folder) per camera")
    sources: dict[str, CameraSource] = {}
    for entry in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            name = entry.stem
        elif entry.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entry.iterdir()):
            name = entry.name
        else:
            continue
        if name in sources:
            raise InputError(f"camera {name!r} appears twice in {root} ({sources[name].path.name} and "
                             f"{entry.name}); keep one video or one frame folder per camera")
        sources[name] = CameraSource(name=name, path=entry)
    if not sources:
        raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders found in {root}")
    if len(sources) < 2:
        only = next(iter(sources.values())).path.name
        raise InputError(f"only one camera found in {root} ({only}); a multi-view rig needs at least 2 "
                         "synchronized cameras (for a single video use the static pipeline: "
                         "`splatworks sfm` on its frames)")
    return list(sources.values())


def _frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: _natural_key(p.name))


def probe(source: CameraSource, default_fps: float = 30.0) -> CameraSource:
    """Fill in frame rate, frame count and size. Raises InputError (naming the file) when it cannot be read."""
    if not source.is_video:
        files = _frame_files(source.path)
        from PIL import Image

        try:
            with Image.open(files[0]) as im:
                source.width, source.height = im.size
        except Exception as exc:  # noqa: BLE001 - any decoder failure means the same to the user
            raise InputError(f"{files[0]}: cannot read image ({exc})") from exc
        source.n_frames, source.fps = len(files), source.fps or default_fps
        return source
    import av

    try:
        with av.open(str(source.path)) as container:
            if not container.streams.video:
                raise InputError(f"{source.path.name}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            source.fps = float(rate) if rate else 0.0
            source.width, source.height = stream.codec_context.width, stream.codec_context.height
            source.n_frames = int(stream.frames or 0)
            if source.n_frames <= 0 or source.width <= 0:
                # Some containers carry no frame count: count by decoding (streaming, nothing kept).
                count = 0
                for frame in container.decode(stream):
                    source.width, source.height = frame.width, frame.height
                    count += 1
                source.n_frames = count
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for a broken file
        raise InputError(f"{source.path.name}: cannot read video ({type(exc).__name__}: {exc})") from exc
    if source.n_frames <= 0:
        raise InputError(f"{source.path.name}: video has no decodable frames")
    return source


def probe_all(sources: list[CameraSource], default_fps: float = 30.0, fps_tolerance: float = 0.01
              ) -> tuple[list[CameraSource], list[str]]:
    """Probe every camera; check they agree on frame rate. Returns (sources, warnings).

    Raises:
        InputError: listing *every* unreadable file, or the frame rate of every camera when they disagree
        (videos at different rates cannot be synchronized frame by frame).
    """
    bad: list[str] = []
    for src in sources:
        try:
            probe(src, default_fps)
        except InputError as exc:
            bad.append(str(exc))
    if bad:
        raise InputError(f"{len(bad)} of {len(sources)} camera inputs cannot be read; fix or remove them:\n  "
                         + "\n  ".join(bad))
    video_fps = [s.fps for s in sources if s.is_video]
    for s in sources:  # frame folders take the videos' rate when there are videos
        if not s.is_video and video_fps:
            s.fps = video_fps[0]
    rates = [s.fps for s in sources]
    if max(rates) - min(rates) > fps_tolerance * max(rates):
        listing = ", ".join(f"{s.name}: {s.fps:g} fps" for s in sources)
        raise InputError(f"cameras have different frame rates ({listing}); frame i must be the same instant in "
                         "every video: re-encode them to one rate (e.g. `ffmpeg -i in.mp4 -r 30 out.mp4`)")
    warnings: list[str] = []
    counts = {s.name: s.n_frames for s in sources}
    if len(set(counts.values())) > 1:
        common = min(counts.values())
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items())
        warnings.append(f"cameras have different frame counts ({listing}); using the first {common} frames "
                        "of each (check that the videos start at the same instant)")
    sizes = {(s.width, s.height) for s in sources}
    if len(sizes) > 1:
        warnings.append(f"cameras have different frame sizes {sorted(sizes)}; each keeps its own intrinsics")
    return sources, warnings


def iter_frames(source: CameraSource, indices: list[int], size: tuple[int, int] | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb)`` for the wanted frame indices, decoding one frame at a time.

    Args:
        indices: ascending 0-based frame numbers in the source.
        size: (width, height) to resize to (area interpolation), or None to keep the source size.
    Yields:
        frame index and a (H, W, 3) uint8 RGB array.
    """
    import cv2

    wanted = set(indices)
    last = max(indices) if indices else -1

    def fit(rgb: np.ndarray) -> np.ndarray:
        if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
            rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
        return rgb

    if not source.is_video:
        files = _frame_files(source.path)
        for i in indices:
            bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{files[i]}: cannot read image")
            yield i, fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return
    import av

    try:
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i > last:
                    break
                if i in wanted:
                    yield i, fit(frame.to_ndarray(format="rgb24"))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{source.path.name}: decoding failed ({type(exc).__name__}: {exc})") from exc


def frame_indices(n_frames: int, start: int = 0, end: int | None = None, stride: int = 1) -> list[int]:
    """Frame numbers ``start, start+stride, ... < end`` within ``n_frames`` (end None or <= 0 = to the end)."""
    if stride < 1:
        raise UserError(f"frame stride must be >= 1, got {stride}")
    stop = n_frames if end is None or end <= 0 else min(end, n_frames)
    idx = list(range(max(0, start), stop, stride))
    if not idx:
        raise UserError(f"frame range start={start} end={end} stride={stride} selects no frames of the "
                        f"{n_frames} every camera has; lower --start-frame")
    return idx


def output_size(width: int, height: int, resize: float = 1.0, max_size: int = 0) -> tuple[int, int]:
    """Output (width, height) for a scale factor and/or a cap on the longest side (0 = no cap); even-sized."""
    scale = resize
    if max_size and max(width, height) * scale > max_size:
        scale = max_size / max(width, height)
    if math.isclose(scale, 1.0):
        return width, height
    return max(2, round(width * scale)), max(2, round(height * scale))


def extract_frames(sources: list[CameraSource], out_dir: str | Path, indices: list[int], *,
                   resize: float = 1.0, max_size: int = 0, png_compression: int = 1,
                   progress: ProgressFn | None = None, show_bar: bool = False) -> dict[str, tuple[int, int]]:
    """Write ``out_dir/<camera>/<frame:06d>.png`` for every camera and wanted frame (streaming).

    Returns:
        {camera: (width, height)} of the written frames.
    """
    import cv2

    out = Path(out_dir)
    total = len(sources) * len(indices)
    done = 0
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="frames", unit="frame")
    sizes: dict[str, tuple[int, int]] = {}
    try:
        for src in sources:
            size = output_size(src.width, src.height, resize, max_size)
            sizes[src.name] = size
            folder = out / src.name
            folder.mkdir(parents=True, exist_ok=True)
            got = 0
            for i, rgb in iter_frames(src, indices, size):
                tmp = folder / f".{i:06d}.tmp.png"
                if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_PNG_COMPRESSION, png_compression]):
                    raise UserError(f"cannot write {tmp} (disk full or not writable?)")
                tmp.replace(folder / f"{i:06d}.png")
                got += 1
                done += 1
                if bar is not None:
                    bar.update(1)
                emit(progress, "frames", done, total, f"{src.name} frame {i}")
            if got < len(indices):
                raise InputError(f"{src.path.name}: decoded only {got} of the {len(indices)} wanted frames "
                                 "(the file is truncated or its header overstates its length)")
    finally:
        if bar is not None:
            bar.close()
    return sizes
