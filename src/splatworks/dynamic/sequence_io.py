"""Files and frame data of the sequential 4D trainer (see ``dynamic/sequential.py`` for the method).

Output folder of ``train_sequence`` (``OUT``)::

    static.pt             frozen static layer: {"ids": (S,), "means": (S, 3), ...} raw parameters (gaussians.py)
    frames/000042.pt      per frame: the non-frozen Gaussians {"frame", "ids": (D,), raw parameters ...}
    metrics.jsonl         one JSON line per frame
    state.json            {"frames_done": [...], "frames_total": T}, for resume

A frame's Gaussians = ``static.pt`` rows + that frame's rows (ids are unique; ordered by id).
Shapes: N Gaussians, C cameras, H x W pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.dynamic.dataset import DynamicDataset
from splatworks.errors import UserError

PARAM_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")
STATIC_FILE = "static.pt"
FRAMES_DIR = "frames"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"


# ---- frame data -----------------------------------------------------------------------------------------------
@dataclass
class FrameViews:
    """The training views of one frame, on the training device.

    Attributes:
        names: C rig camera names.
        images: C tensors (H, W, 3) float32 in [0, 1].
        static: C tensors (H, W) bool, True = static (white mask pixel); all False where a camera has no mask.
        viewmats: (C, 4, 4) float32 world-to-camera, OpenCV axes.
        Ks: (C, 3, 3) float32 intrinsics in pixels.
        sizes: C (width, height).
    """

    names: list[str]
    images: list[torch.Tensor]
    static: list[torch.Tensor]
    viewmats: torch.Tensor
    Ks: torch.Tensor
    sizes: list[tuple[int, int]]


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_static_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool, True = static (mask >= 128). A missing mask means "unknown": all dynamic (unconstrained)."""
    from PIL import Image

    if not path.exists():
        return np.zeros(shape, dtype=bool)
    with Image.open(path) as im:
        m = np.asarray(im.convert("L"))
    if m.shape != shape:
        raise UserError(f"mask {path} is {m.shape[1]}x{m.shape[0]} but its image is {shape[1]}x{shape[0]}; "
                        "re-run `splatworks dynamic prepare`")
    return m >= 128


def load_frame(dataset: DynamicDataset, frame: int, cameras: list[str], device: torch.device) -> FrameViews:
    rig = {c.name: c for c in dataset.rig.cameras}
    images, static, sizes = [], [], []
    for name in cameras:
        path = dataset.image_path(name, frame)
        if not path.exists():
            raise UserError(f"frame {frame} of camera {name} is missing ({path}); re-run `splatworks dynamic "
                            "prepare` or drop the camera")
        img = load_image(path)
        cam = rig[name]
        if img.shape[:2] != (cam.height, cam.width):
            raise UserError(f"{path} is {img.shape[1]}x{img.shape[0]} but camera {name} is calibrated for "
                            f"{cam.width}x{cam.height}")
        images.append(torch.from_numpy(img).to(device))
        static.append(torch.from_numpy(load_static_mask(dataset.mask_path(name, frame), img.shape[:2])).to(device))
        sizes.append((cam.width, cam.height))
    viewmats = torch.tensor(np.stack([rig[n].world_to_camera for n in cameras]), dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([rig[n].K for n in cameras]), dtype=torch.float32, device=device)
    return FrameViews(cameras, images, static, viewmats, Ks, sizes)



# ---- files -----------------------------------------------------------------------------------------------------
def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _rows(params: dict[str, torch.Tensor], ids: torch.Tensor, rows: torch.Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {"ids": ids[rows].cpu()}
    out.update({k: params[k].detach()[rows].cpu() for k in PARAM_KEYS})
    return out


def frame_file(out_dir: str | Path, frame: int) -> Path:
    return Path(out_dir) / FRAMES_DIR / f"{frame:06d}.pt"


def load_frame_gaussians(out_dir: str | Path, frame: int, device: str | torch.device = "cpu"
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The Gaussians of one trained frame: raw parameters (see gaussians.py), ids (N,) and is_static (N,) bool.

    Rows are ordered by id. Raises UserError when the frame has not been trained.
    """
    out_dir = Path(out_dir)
    path = frame_file(out_dir, frame)
    if not path.exists():
        raise UserError(f"frame {frame} is not trained in {out_dir} (no {path.name}); run `splatworks dynamic "
                        "train` (it resumes) first")
    dyn = torch.load(path, map_location=device)
    parts = [dyn]
    static_path = out_dir / STATIC_FILE
    if static_path.exists():
        parts.insert(0, torch.load(static_path, map_location=device))
    ids = torch.cat([p["ids"] for p in parts]).to(device)
    is_static = torch.cat([torch.full((len(p["ids"]),), i == 0 and len(parts) == 2, dtype=torch.bool,
                                      device=ids.device) for i, p in enumerate(parts)])
    order = torch.argsort(ids)
    params = {k: torch.cat([p[k] for p in parts])[order].to(device) for k in PARAM_KEYS}
    return params, ids[order], is_static[order]


def trained_frames(out_dir: str | Path) -> list[int]:
    """Frames finished in ``out_dir``, ascending."""
    state = Path(out_dir) / STATE_FILE
    if not state.exists():
        return []
    return [int(f) for f in json.loads(state.read_text()).get("frames_done", [])]


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """The per-frame lines of ``metrics.jsonl`` (last line per frame wins)."""
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return []
    by_frame: dict[int, dict[str, Any]] = {}
    for text in path.read_text().splitlines():
        if text.strip():
            d = json.loads(text)
            by_frame[int(d["frame"])] = d
    return [by_frame[f] for f in sorted(by_frame)]
