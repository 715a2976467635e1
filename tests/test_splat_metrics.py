"""Metrics against independent formulas, and the reference rasterizer against hand-computed splats."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from splatworks.splat.gaussians import SH_C0
from splatworks.splat.metrics import photometric_loss, psnr, ssim, ssim_map
from splatworks.splat.render import render


def ssim_2d_window(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """3DGS's SSIM: an 11x11 Gaussian window (sigma 1.5) as one 2-D grouped convolution, zero padding."""
    g = torch.exp(-(torch.arange(11.0) - 5) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)
    X, Y = x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2)
    mu1, mu2 = F.conv2d(X, w, padding=5, groups=3), F.conv2d(Y, w, padding=5, groups=3)
    s1 = F.conv2d(X * X, w, padding=5, groups=3) - mu1 ** 2
    s2 = F.conv2d(Y * Y, w, padding=5, groups=3) - mu2 ** 2
    s12 = F.conv2d(X * Y, w, padding=5, groups=3) - mu1 * mu2
    return ((2 * mu1 * mu2 + 1e-4) * (2 * s12 + 9e-4)) / ((mu1 ** 2 + mu2 ** 2 + 1e-4) * (s1 + s2 + 9e-4))


def test_ssim_and_psnr_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 37, 53, 3, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ssim_map(x, y), ssim_2d_window(x, y), atol=2e-5, rtol=0)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert ssim(x, y).shape == (2,) and (ssim(x, y) < 0.95).all()
    assert torch.allclose(psnr(torch.zeros(1, 4, 4, 3), torch.full((1, 4, 4, 3), 0.1)), torch.tensor([20.0]))
    loss = photometric_loss(x, y, 0.2)
    expect = 0.8 * (x - y).abs().mean() + 0.2 * (1 - ssim_2d_window(x, y).mean())
    assert abs(float(loss) - float(expect)) < 1e-5


def one_gaussian(opacity: float, rgb: tuple[float, float, float], sigma: float, depth: float = 4.0):
    logit = math.log(opacity / (1 - opacity))
    return {
        "means": torch.tensor([[0.0, 0.0, depth]]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        "scales": torch.full((1, 3), math.log(sigma)),
        "opacities": torch.tensor([logit]),
        "sh0": ((torch.tensor(rgb) - 0.5) / SH_C0).view(1, 1, 3),
        "shN": torch.zeros(1, 0, 3),
    }


def test_reference_draws_a_gaussian_as_the_equations_say() -> None:
    w = h = 32
    f = 40.0
    K = torch.tensor([[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]])
    sigma_world, depth = 0.2, 4.0
    p = one_gaussian(0.8, (0.9, 0.2, 0.1), sigma_world, depth)
    out = render(p, torch.eye(4)[None], K, w, h, 0, torch.tensor([0.0, 0.0, 1.0]), mode="RGB+D", backend="torch")
    # EWA: screen variance = (f sigma / z)^2 + 0.3 (low-pass)
    var = (f * sigma_world / depth) ** 2 + 0.3
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    a = 0.8 * torch.exp(-0.5 * ((xs - 16) ** 2 + (ys - 16) ** 2) / var)
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    torch.testing.assert_close(out.alphas[0, ..., 0], a, atol=1e-5, rtol=1e-5)
    expect = a[..., None] * torch.tensor([0.9, 0.2, 0.1]) + (1 - a[..., None]) * torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(out.colors[0], expect, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out.depths[0][a > 0], torch.tensor(depth))
    # Two Gaussians on the axis: front-to-back compositing, and the transmittance cut-off at 1e-4.
    both = {k: torch.cat([one_gaussian(0.999, (1, 1, 1), 0.5, 4.0)[k], one_gaussian(0.99, (0, 1, 0), 0.5, 5.0)[k]])
            for k in p}
    K2 = torch.tensor([[[f, 0, 16.5], [0, f, 16.5], [0, 0, 1]]])  # both centred on pixel (16, 16)'s centre
    out2 = render(both, torch.eye(4)[None], K2, w, h, 0, None, backend="torch")
    # centre: alpha1 = 0.999, then T = 0.001 * (1 - 0.99) = 1e-5 <= 1e-4, so the green one is skipped
    torch.testing.assert_close(out2.colors[0, 16, 16], torch.full((3,), 0.999), atol=1e-6, rtol=0)
    # one pixel right: both count, C = a1 * white + (1 - a1) * a2 * green
    d2 = 1.0
    a1 = 0.999 * math.exp(-0.5 * d2 / ((f * 0.5 / 4) ** 2 + 0.3))
    a2 = 0.99 * math.exp(-0.5 * d2 / ((f * 0.5 / 5) ** 2 + 0.3))
    assert (1 - a1) * (1 - a2) > 1e-4
    expect2 = torch.tensor([a1, a1 + (1 - a1) * a2, a1])
    torch.testing.assert_close(out2.colors[0, 16, 17], expect2, atol=1e-5, rtol=0)


def test_shifted_slice_blur_equals_the_convolution_blur() -> None:
    # The compiled loss blurs with shifted-slice sums; evaluation and CPU training with convolutions. Both must be
    # the same zero-padded separable Gaussian filter, borders included (odd sizes, smaller than the window too).
    from splatworks.splat import metrics

    for shape in [(1, 15, 37, 41), (2, 3, 5, 9)]:
        x = torch.rand(*shape, dtype=torch.float64)
        conv = metrics._blur_conv(x, 11, 1.5)
        shifted = metrics._blur_shifted(x, 11, 1.5)
        assert torch.allclose(conv, shifted, atol=1e-12), (shape, (conv - shifted).abs().max())
    # and it is a blur: a constant image stays constant away from the zero-padded border
    flat = metrics._blur_shifted(torch.ones(1, 1, 30, 30, dtype=torch.float64), 11, 1.5)
    assert torch.allclose(flat[..., 5:-5, 5:-5], torch.ones(1, 1, 20, 20, dtype=torch.float64))
    assert flat[0, 0, 0, 0] < 0.6


def test_mcmc_noise_is_the_covariance_times_gated_normal_noise() -> None:
    # 3DGS-MCMC's position noise: Sigma_i (z_i * s(1 - o_i)), Sigma_i = R diag(scale^2) R^T, written out in float64
    # with an independent quaternion-to-matrix formula (rows of the rotation as in the 3DGS code).
    import numpy as np

    from splatworks.splat.strategy import mcmc_noise

    g = torch.Generator().manual_seed(3)
    n = 64
    means = torch.randn(n, 3, generator=g)
    quats = torch.randn(n, 4, generator=g)
    log_scales = torch.randn(n, 3, generator=g) * 0.5 - 2
    logits = torch.cat([torch.full((n // 2,), -8.0), torch.full((n - n // 2,), 4.0)])  # transparent / opaque
    z = torch.randn(n, 3, generator=g)
    got = mcmc_noise(means, quats, log_scales, logits, z).double().numpy()
    for i in range(n):
        w, x, y, zq = (quats[i] / quats[i].norm()).double().tolist()
        rot = np.array([[1 - 2 * (y * y + zq * zq), 2 * (x * y - w * zq), 2 * (x * zq + w * y)],
                        [2 * (x * y + w * zq), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - w * x)],
                        [2 * (x * zq - w * y), 2 * (y * zq + w * x), 1 - 2 * (x * x + y * y)]])
        cov = rot @ np.diag(np.exp(2 * log_scales[i].double().numpy())) @ rot.T
        opacity = 1 / (1 + math.exp(-float(logits[i])))
        gate = 1 / (1 + math.exp(-100 * ((1 - opacity) - 0.995)))
        want = cov @ (z[i].double().numpy() * gate)
        assert np.allclose(got[i], want, rtol=1e-4, atol=1e-9), (i, got[i], want)
    # opaque Gaussians barely move, transparent ones move by about their size
    assert np.abs(got[n // 2:]).max() < 1e-12
    assert np.abs(got[: n // 2]).max() > 1e-4
