"""Image metrics and the photometric loss: PSNR, SSIM (Gaussian window 11, sigma 1.5, as in 3DGS), L1 + D-SSIM.

Images are (C, H, W, 3) or (H, W, 3) float tensors in [0, 1] (channels last, as ``render`` returns them).
SSIM uses a separable Gaussian window over the five statistics stacked in one tensor (x, y, x^2, y^2, xy): two
1-D convolutions when eager, shifted-slice sums that fuse into a few kernels under torch.compile.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _nchw(img: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) or (C, H, W, 3) -> (C, 3, H, W)."""
    if img.dim() == 3:
        img = img[None]
    return img.permute(0, 3, 1, 2)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (C,) (or a scalar for one (H, W, 3) image); peak = 1."""
    dims = tuple(range(1, pred.dim())) if pred.dim() == 4 else tuple(range(pred.dim()))
    mse = ((pred - target) ** 2).mean(dim=dims)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _window_weights(size: int, sigma: float) -> list[float]:
    """The normalised 1-D Gaussian window as Python floats."""
    g = [math.exp(-((k - (size - 1) / 2) ** 2) / (2 * sigma ** 2)) for k in range(size)]
    return [v / sum(g) for v in g]


@functools.lru_cache(maxsize=8)
def _window_1d(size: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _blur(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, Ch, H, W) with zero padding ('same' size, as 3DGS's conv2d SSIM).

    Eager: two single-filter convolutions (channels folded into the batch). Under torch.compile: the same sums
    written as shifted slices, which inductor fuses with the SSIM arithmetic around them into a few kernels
    (a convolution would stay an opaque cuDNN call; measured in BENCHMARKS.md, ## Training).
    """
    if torch.compiler.is_compiling():
        return _blur_shifted(x, size, sigma)
    return _blur_conv(x, size, sigma)


def _blur_conv(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """The blur as two 1-D convolutions (fast eager on CPU and GPU)."""
    g = _window_1d(size, sigma, str(x.device), x.dtype).view(1, 1, 1, size)
    b, ch, h, w = x.shape
    x = F.conv2d(x.reshape(b * ch, 1, h, w), g, padding=(0, size // 2))
    # The vertical pass as a horizontal one on the transpose: cuDNN's (size x 1) kernels are several times
    # slower than its (1 x size) ones on large images (measured on H100, see BENCHMARKS.md).
    x = F.conv2d(x.transpose(-1, -2).contiguous(), g, padding=(0, size // 2))
    return x.transpose(-1, -2).reshape(b, ch, h, w)


def _blur_shifted(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """The same blur as weighted sums of shifted slices (the weights are Python constants in a compiled graph)."""
    weights = _window_weights(size, sigma)
    pad = size // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, 0, 0))
    rows = sum(wk * xp[..., k:k + w] for k, wk in enumerate(weights))
    rp = F.pad(rows, (0, 0, pad, pad))
    return sum(wk * rp[..., k:k + h, :] for k, wk in enumerate(weights))  # type: ignore[return-value]


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM, (C, 3, H, W), for channels-last inputs (C, H, W, 3) or (H, W, 3)."""
    x, y = _nchw(pred), _nchw(target)
    ch = x.shape[1]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window, sigma)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(ch, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    return ((2 * mu_xy + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image, (C,) (or a scalar for one (H, W, 3) image)."""
    m = ssim_map(pred, target).mean(dim=(1, 2, 3))
    return m[0] if pred.dim() == 3 else m


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """3DGS's loss ``(1 - lambda) L1 + lambda (1 - SSIM)`` averaged over the batch, a scalar.

    ``target`` is float in [0, 1], or uint8 in [0, 255] (converted here, so a compiled loss fuses the conversion).
    """
    if target.dtype == torch.uint8:
        target = target.float() / 255.0
    l1 = (pred - target).abs().mean()
    if ssim_weight <= 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim_map(pred, target).mean())


class LPIPS:
    """LPIPS (VGG or AlexNet) when the ``lpips`` package and its weights are already on this machine; never
    downloads. ``LPIPS.load()`` returns None when they are not."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @classmethod
    def load(cls, device: str | torch.device = "cpu", net: str = "vgg") -> "LPIPS | None":
        try:
            import lpips  # type: ignore[import-not-found]
        except Exception:
            return None
        # The backbone's ImageNet weights come from torchvision's cache; refuse to trigger a download.
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        names = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
        if not (hub / names.get(net, "")).exists():
            return None
        try:
            model = lpips.LPIPS(net=net, verbose=False).to(device).eval()
        except Exception:
            return None
        return cls(model)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(C,) LPIPS per image for channels-last inputs in [0, 1]."""
        return self.model(_nchw(pred) * 2 - 1, _nchw(target) * 2 - 1, normalize=False).flatten()


def mse_to_psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))
