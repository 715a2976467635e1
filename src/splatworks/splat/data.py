"""Views for training and evaluation: images preloaded on the device as uint8, cameras as tensors.

Images are composited on the background (RGBA inputs) and quantised to 8 bits once at load time, as the
original 3DGS code does, so a training step reads one (H, W, 3) uint8 slice: no host-to-device copies and no
host syncs in the loop. Cameras: ``viewmats`` (V, 4, 4) world-to-camera OpenCV, ``Ks`` (V, 3, 3) in pixels of
the stored (possibly downscaled) images, pixel centres at +0.5.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splatworks.errors import InputError
from splatworks.scene.camera import Camera, Scene


def _load_rgb(path: Path, background: tuple[float, float, float]) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], RGBA composited on ``background``."""
    try:
        from splatworks.scene.images import load_image  # the project's loader (EXIF, 16-bit, RGBA)
    except ImportError:
        load_image = None
    if load_image is not None:
        return np.asarray(load_image(path, background=background), dtype=np.float32)
    from PIL import Image  # minimal fallback until scene.images lands

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB")
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    if arr.shape[-1] == 4:
        a = arr[..., 3:4]
        arr = arr[..., :3] * a + np.asarray(background, np.float32) * (1 - a)
    return arr


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return img
    import cv2

    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def scale_for(cam: Camera, max_resolution: int, downscale: float) -> float:
    """Image scale factor from a longest-side limit (0 = none) and a downscale divisor (1 = none)."""
    factor = 1.0 / max(downscale, 1.0)
    if max_resolution > 0:
        factor = min(factor, max_resolution / max(cam.width, cam.height))
    return min(factor, 1.0)


@dataclass
class Views:
    """V calibrated images on one device.

    Attributes:
        names: V image names.
        images: list of V (H_v, W_v, 3) uint8 tensors (one stacked (V, H, W, 3) tensor when all sizes agree).
        viewmats: (V, 4, 4) float32 world-to-camera. Ks: (V, 3, 3) float32.
        sizes: V (width, height) pairs.
    """

    names: list[str]
    images: torch.Tensor | list[torch.Tensor]
    viewmats: torch.Tensor
    Ks: torch.Tensor
    sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.names)

    def downsampled(self, factor: float) -> "Views":
        """The same views at 1/factor resolution (area-averaged images; intrinsics scaled like Camera.scaled)."""
        import torch.nn.functional as F

        imgs, sizes, Ks = [], [], self.Ks.clone()
        for i in range(len(self)):
            w, h = self.sizes[i]
            nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
            img = self.images[i].permute(2, 0, 1)[None].float()
            small = F.interpolate(img, size=(nh, nw), mode="area")[0].permute(1, 2, 0)
            imgs.append(small.round().clamp(0, 255).to(torch.uint8))
            sizes.append((nw, nh))
            Ks[i, 0] *= nw / w
            Ks[i, 1] *= nh / h
        stacked = torch.stack(imgs) if len(set(sizes)) == 1 and imgs else imgs
        return Views(names=list(self.names), images=stacked, viewmats=self.viewmats, Ks=Ks, sizes=sizes)

    def target(self, i: int) -> torch.Tensor:
        """(1, H, W, 3) float32 image i in [0, 1]."""
        return self.images[i][None].float().div_(255.0)


def load_views(scene: Scene, cameras: list[Camera], background: tuple[float, float, float],
               device: torch.device, max_resolution: int = 0, downscale: float = 1.0,
               workers: int = 8) -> Views:
    """Load ``cameras``' images (resized to the training resolution) onto ``device``."""
    cams = [c.scaled(scale_for(c, max_resolution, downscale)) if scale_for(c, max_resolution, downscale) < 1 else c
            for c in cameras]

    def one(pair: tuple[Camera, Camera]) -> torch.Tensor:
        orig, cam = pair
        path = scene.image_path(orig)
        if not path.exists():
            raise InputError(f"image {path} of camera {orig.name!r} is missing; fix the scene's image folder")
        img = _resize(_load_rgb(path, background), cam.width, cam.height)
        if img.shape[:2] != (cam.height, cam.width):
            raise InputError(f"{path}: image is {img.shape[1]}x{img.shape[0]} but its camera says "
                             f"{cam.width}x{cam.height}; fix the intrinsics or the image")
        return torch.from_numpy(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = [t.to(device) for t in pool.map(one, zip(cameras, cams))]
    sizes = [(c.width, c.height) for c in cams]
    stacked: torch.Tensor | list[torch.Tensor] = torch.stack(images) if len(set(sizes)) == 1 and images else images
    viewmats = torch.tensor(np.stack([c.world_to_camera for c in cams]) if cams else np.zeros((0, 4, 4)),
                            dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([c.K for c in cams]) if cams else np.zeros((0, 3, 3)), dtype=torch.float32,
                      device=device)
    return Views(names=[c.name for c in cams], images=stacked, viewmats=viewmats, Ks=Ks, sizes=sizes)
