"""Where the time of a training step goes: CUDA-event timings of each phase on the trained Gaussians.

Phases: render forward (projection, SH, sort, rasterize), loss forward (L1 + SSIM), backward (rasterizer and
loss gradients), optimiser (Adam over 6 tensors), densification statistics update, and the Python/launch
overhead (wall time of an unsynchronised step minus GPU busy time is what Python costs).
"""

from __future__ import annotations

import time
from typing import Any

import torch


def profile(scene, result, config, steps: int = 300) -> dict[str, Any]:
    """Phase timings for packed and unpacked gsplat layouts, plus torch.profiler's top kernels (printed)."""
    out = {}
    for packed in (True, False):
        out["packed" if packed else "unpacked"] = _profile(scene, result, config, steps, packed,
                                                           table=(packed == config.packed))
    return out


def _profile(scene, result, config, steps: int, packed: bool, table: bool) -> dict[str, Any]:
    from splatworks.splat import io as sio
    from splatworks.splat.data import load_views
    from splatworks.splat.gaussians import params_from_tensors
    from splatworks.splat.metrics import photometric_loss
    from splatworks.splat.render import render
    from splatworks.splat.trainer import make_optimizers

    dev = torch.device("cuda")
    params = params_from_tensors(sio.read_ply(result.checkpoint / "point_cloud.ply"), dev)
    views = load_views(scene, scene.train_cameras, tuple(scene.background), dev)
    _, extent = scene.camera_extent()
    opts = make_optimizers(params, config, extent, dev)
    bg = torch.ones(3, device=dev)
    names = ["render_fwd", "loss_fwd", "backward", "optimizer", "densify_stats"]
    acc = {n: 0.0 for n in names}
    w, h = views.sizes[0]

    def step(i: int, ev: list | None):
        mark = (lambda k: ev[k].record()) if ev else (lambda k: None)
        mark(0)
        out = render(params, views.viewmats[i:i + 1], views.Ks[i:i + 1], w, h, config.sh_degree, bg,
                     packed=packed)
        out.info.means2d.retain_grad()
        mark(1)
        loss = photometric_loss(out.colors, views.target(i), config.ssim_weight)
        mark(2)
        loss.backward()
        mark(3)
        vis = out.info.visible(len(params["means"]))
        for o in opts.values():
            o.step(vis) if config.visible_adam else o.step()
            o.zero_grad(set_to_none=True)
        mark(4)
        # the per-step part of ADC: accumulate screen-space gradient norms of the visible Gaussians
        g = torch.zeros(len(params["means"]), device=dev)
        if out.info.gaussian_ids is not None:
            g.index_add_(0, out.info.gaussian_ids, out.info.means2d.grad.norm(dim=-1))
        else:
            sel = (out.info.radii > 0).all(dim=-1)
            g.index_add_(0, torch.where(sel)[1], out.info.means2d.grad[sel].norm(dim=-1))
        mark(5)

    for i in range(20):
        step(i % len(views), None)
    torch.cuda.synchronize()
    for i in range(steps):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
        step(i % len(views), ev)
        torch.cuda.synchronize()
        for k, n in enumerate(names):
            acc[n] += ev[k].elapsed_time(ev[k + 1])
    gpu_ms = {n: acc[n] / steps for n in names}
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i % len(views), None)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t) * 1000 / steps
    if table:
        from torch.profiler import ProfilerActivity, profile as tprofile

        with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(30):
                step(i % len(views), None)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
    return {"num_gaussians": len(params["means"]), "steps": steps, "gpu_ms_per_phase": gpu_ms,
            "gpu_ms_sum": sum(gpu_ms.values()), "wall_ms_per_step_unsynced": wall_ms,
            "it_per_s": 1000.0 / wall_ms}
