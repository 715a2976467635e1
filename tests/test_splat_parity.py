"""The torch reference rasterizer and gsplat agree on the same Gaussians and cameras (images and gradients).

Tolerances (float32; gsplat accumulates gradients with atomics in another order, and a Gaussian sitting exactly
on a cut-off (alpha = 1/255, T = 1e-4) may be in on one side and out on the other):
  images and alphas: max |diff| <= 5e-3 and mean |diff| <= 2e-5; expected depth: mean |diff| <= 1e-3 where alpha > 0.5;
  gradients of every parameter: ||g_ref - g_gsplat|| / ||g_gsplat|| <= 1e-2.
"""

from __future__ import annotations

import math

import pytest
import torch

from splatworks.splat.render import render


def random_scene(n: int, seed: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.0, 1.5, 1.5]),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.01),
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g) * 0.5,
        "shN": torch.randn(n, 15, 3, generator=g) * 0.1,
    }
    return {k: v.to(device).requires_grad_(True) for k, v in p.items()}


def look_at(eye: list[float], target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-to-camera (OpenCV) for a camera at ``eye`` looking at ``target`` (world up = -y)."""
    eye_t, tgt = torch.tensor(eye), torch.tensor(target)
    z = torch.nn.functional.normalize(tgt - eye_t, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, -1.0, 0.0]), z), dim=0)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ eye_t
    return T


CASES = [
    # (N Gaussians, camera eyes, width, height, sh_degree, principal point offset)
    (300, [[0.0, 0.0, -4.0]], 64, 48, 0, (0.0, 0.0)),
    (1500, [[0.5, -0.3, -3.5], [-2.0, 0.2, -3.0]], 96, 72, 3, (3.0, -2.0)),
    (4000, [[0.0, -1.0, -3.0]], 160, 120, 2, (-5.0, 4.0)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=[f"N{c[0]}-C{len(c[1])}-{c[2]}x{c[3]}-sh{c[4]}" for c in CASES])
def test_reference_matches_gsplat(case) -> None:
    n, eyes, w, h, deg, (dx, dy) = case
    dev = "cuda"
    f = 0.5 * w / math.tan(math.radians(25))
    Ks = torch.tensor([[f, 0, w / 2 + dx], [0, f, h / 2 + dy], [0, 0, 1]]).repeat(len(eyes), 1, 1).to(dev)
    viewmats = torch.stack([look_at(e) for e in eyes]).to(dev)
    bg = torch.tensor([1.0, 1.0, 1.0], device=dev)
    results = {}
    for backend in ("gsplat", "torch"):
        params = random_scene(n, seed=n, device=dev)
        out = render(params, viewmats, Ks, w, h, deg, bg, mode="RGB+D", backend=backend)
        weights = torch.linspace(0.5, 1.5, 3, device=dev)
        loss = (out.colors * weights).sum() + 0.3 * out.alphas.sum() + 0.01 * (out.depths * out.alphas).sum()
        loss.backward()
        results[backend] = (out, {k: v.grad.clone() for k, v in params.items()})
    (out_g, grads_g), (out_t, grads_t) = results["gsplat"], results["torch"]
    assert out_g.alphas.mean() > 0.2, "the test scene should cover the image"
    diff = (out_g.colors - out_t.colors).abs()
    adiff = (out_g.alphas - out_t.alphas).abs()
    mask = (out_g.alphas > 0.5) & (out_t.alphas > 0.5)
    ddiff = (out_g.depths - out_t.depths).abs()[mask]
    rel = {k: float((grads_t[k] - grads_g[k]).norm() / grads_g[k].norm().clamp_min(1e-12))
           for k in grads_g if k != "shN" or deg > 0}
    print(f"\n{case[:5]}: color max {diff.max():.2e} mean {diff.mean():.2e}; alpha max {adiff.max():.2e}; "
          f"depth mean {ddiff.mean():.2e}; grad rel err " + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()))
    assert diff.max() <= 5e-3 and diff.mean() <= 2e-5
    assert adiff.max() <= 5e-3 and adiff.mean() <= 2e-5
    assert ddiff.mean() <= 1e-3
    for k, v in rel.items():
        assert v <= 1e-2, f"gradient of {k} differs by {v:.2e} (relative L2)"
    # Both backends mark the same Gaussians as drawn (radii > 0), up to a handful at the footprint's edge.
    vis_g = out_g.info.visible(n)
    vis_t = out_t.info.visible(n)
    assert (vis_g != vis_t).sum() <= max(2, n // 500)


# ---- near clipping plane -----------------------------------------------------------------------------------
def _two_gaussians(device: str = "cpu") -> dict[str, torch.Tensor]:
    """An opaque red Gaussian at camera-space z = 0.3 (image centre) and an opaque green one at z = 2 (right half);
    the camera is the identity pose (world = camera frame, OpenCV axes)."""
    return {
        "means": torch.tensor([[0.0, 0.0, 0.3], [0.8, 0.0, 2.0]], device=device),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2, device=device),
        "scales": torch.log(torch.tensor([[0.03] * 3, [0.2] * 3], device=device)),
        "opacities": torch.full((2,), 6.0, device=device),                    # sigmoid(6) = 0.998
        "sh0": torch.tensor([[[1.7, -1.7, -1.7]], [[-1.7, 1.7, -1.7]]], device=device),  # red, green
        "shN": torch.zeros(2, 0, 3, device=device),
    }


@pytest.mark.parametrize("mode", ["RGB", "RGB+D2"])
def test_near_plane_culls_gaussians_nearer_than_it(mode: str) -> None:
    """torch backend: the z = 0.3 splat is drawn with the default near plane (0.01) and gone with 0.5, while the
    z = 2 splat is drawn either way."""
    w, h, f = 40, 30, 30.0
    K = torch.tensor([[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]])
    bg = torch.tensor([0.0, 0.0, 1.0])                                          # blue behind both
    near = render(_two_gaussians(), torch.eye(4)[None], K, w, h, 0, bg, mode=mode, backend="torch")
    culled = render(_two_gaussians(), torch.eye(4)[None], K, w, h, 0, bg, mode=mode, backend="torch", near_plane=0.5)
    centre = (0, h // 2, w // 2)
    far_px = (0, h // 2, w // 2 + int(f * 0.8 / 2.0))                         # where the z = 2 splat projects
    assert near.alphas[centre] > 0.9 and near.colors[centre][0] > 0.8           # the near red splat covers the centre
    assert culled.alphas[centre] < 1e-6 and torch.allclose(culled.colors[centre], bg)  # culled: background only
    assert culled.alphas[far_px] > 0.9 and culled.colors[far_px][1] > 0.8      # the far green splat is kept
    assert culled.info.visible(2).tolist() == [False, True]
    assert near.info.visible(2).tolist() == [True, True]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["RGB+D", "RGB+D2"])
def test_near_plane_parity_with_gsplat(mode: str) -> None:
    """gsplat and the torch reference cull the same Gaussians at near_plane = 0.5 (a camera inside the random scene's
    reach: about a sixth of the centres are nearer than 0.5) and agree on the rest, in both gsplat code paths."""
    n, w, h, dev, near_plane = 800, 64, 48, "cuda", 0.5
    f = 0.5 * w / math.tan(math.radians(25))
    Ks = torch.tensor([[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]], device=dev)
    viewmats = look_at([0.0, 0.0, -1.0])[None].to(dev)
    bg = torch.tensor([1.0, 1.0, 1.0], device=dev)
    results = {}
    for backend in ("gsplat", "torch"):
        params = random_scene(n, seed=11, device=dev)
        out = render(params, viewmats, Ks, w, h, 1, bg, mode=mode, backend=backend, near_plane=near_plane)
        (out.colors.sum() + 0.3 * out.alphas.sum()).backward()
        results[backend] = (out, {k: v.grad.clone() for k, v in params.items()})
    (out_g, grads_g), (out_t, grads_t) = results["gsplat"], results["torch"]
    z = (random_scene(n, seed=11, device=dev)["means"].detach() @ viewmats[0, :3, :3].T + viewmats[0, :3, 3])[:, 2]
    nearer = z < near_plane
    assert 0.1 * n < int(nearer.sum()) < 0.5 * n, "the scene must straddle the near plane"
    vis_g, vis_t = out_g.info.visible(n), out_t.info.visible(n)
    assert not vis_g[nearer].any() and not vis_t[nearer].any()
    assert (vis_g != vis_t).sum() <= max(2, n // 500)
    default = render(random_scene(n, seed=11, device=dev), viewmats, Ks, w, h, 1, bg, mode=mode, backend="gsplat")
    assert (default.alphas - out_g.alphas).abs().max() > 0.1, "the near plane must change the image"
    diff, adiff = (out_g.colors - out_t.colors).abs(), (out_g.alphas - out_t.alphas).abs()
    assert diff.max() <= 5e-3 and diff.mean() <= 2e-5
    assert adiff.max() <= 5e-3 and adiff.mean() <= 2e-5
    for k in grads_g:
        rel = float((grads_t[k] - grads_g[k]).norm() / grads_g[k].norm().clamp_min(1e-12))
        assert rel <= 1e-2, f"gradient of {k} differs by {rel:.2e} (relative L2)"
