"""Where a training step's time goes, and what each fusion buys (issue 3). GPU only.

Loads a trained checkpoint (the lego result of ``train_lego.py``: ``OUT/point_cloud/iteration_N``) and runs the
trainer's own step (``trainer._train_step``: gsplat render, loss, backward, SelectiveAdam over the visible
Gaussians, 3DGS-MCMC's position noise; no relocation, as after ``refine_stop``) in four variants:

    eager            eager loss (SSIM by two cuDNN convolutions), eager MCMC noise    (the code before fusion)
    compiled-conv    torch.compile'd loss with the convolution SSIM, eager noise       (the previous default)
    compiled-fused   compiled loss with SSIM as shifted-slice sums (inductor fuses it), eager noise
    all (default)    + the MCMC noise compiled into one kernel                         (the current default)

In all of them SelectiveAdam runs through ``trainer.selective_adam_step`` and the regularisers' gradients are
added after backward (``trainer.add_regulariser_grads``; compiled with the loss). A CUDA-graph replay of the
compiled loss (torch.compile mode="reduce-overhead") was measured slower (5.96 vs 5.38 ms per step: cudagraph
trees' input copies and bookkeeping cost as much host time as the launches they save) and was dropped.

For each: wall ms per step without synchronising (as the training loop runs), GPU ms per step (CUDA events around
a block of steps), and the loss kernels alone (forward + backward at the image size). Then torch.profiler's
top operators by self CPU time and by self CUDA time for the current default. Prints a Markdown table last.

    python benchmarks/step_costs.py --data ../shared/data/nerf_synthetic_lego --checkpoint bench_out/default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, required=True, help="train_lego.py output folder")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test of this script)")
    ap.add_argument("--max-resolution", type=int, default=0, help="longest image side (0 = as stored)")
    args = ap.parse_args(argv)

    from train_lego import load_lego

    from splatworks.splat import io as sio
    from splatworks.splat import metrics, strategy, trainer
    from splatworks.splat.data import load_views
    from splatworks.splat.gaussians import params_from_tensors

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Timer:  # CUDA events on the GPU, the host clock (after a sync) elsewhere
        def __init__(self) -> None:
            self.ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else None

        def start(self) -> None:
            sync() if self.ev is None else self.ev[0].record()
            self.t = time.perf_counter()

        def ms(self) -> float:
            if self.ev is None:
                return (time.perf_counter() - self.t) * 1000
            self.ev[1].record()
            torch.cuda.synchronize()
            return self.ev[0].elapsed_time(self.ev[1])
    scene = load_lego(args.data)
    latest = sio.latest_checkpoint(args.checkpoint)
    assert latest is not None, f"no checkpoint under {args.checkpoint}"
    base = params_from_tensors(sio.read_ply(latest[1] / "point_cloud.ply"), dev)
    config = trainer.preset("default", device=args.device)
    bg = torch.ones(3, device=dev)
    views = load_views(scene, scene.train_cameras, (1.0, 1.0, 1.0), dev, args.max_resolution)
    _, extent = scene.camera_extent()
    step0 = config.refine_stop + 1  # past relocation: every step costs the same
    conv_shifted = metrics._blur_shifted

    def setup(compiled_loss: bool, fused_ssim: bool, fused_noise: bool):
        params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().clone()) for k, v in base.items()})
        opts = trainer.make_optimizers(params, config, extent, dev)
        dens = strategy.make_densifier(config, extent, params, opts, white_background=True)
        torch._dynamo.reset()
        metrics._blur_shifted = conv_shifted if fused_ssim else (lambda x, s, g: metrics._blur_conv(x, s, g))
        cfg = trainer.replace(config, compile_loss=compiled_loss)
        trainer._warm_up(params, views, cfg, bg, dens)
        if not fused_noise:
            strategy._NOISE["fn"] = strategy.mcmc_noise
        return params, opts, dens, cfg

    def run(params, opts, dens, cfg, n: int, offset: int = 0) -> None:
        for i in range(n):
            trainer._train_step(step0 + offset + i, (offset + i) % len(views), params, opts, dens, views, cfg, bg,
                                extent, None)

    def loss_only(n: int = 100) -> float:
        pred = views.target(0).clone().requires_grad_(True)
        gt = views.images[1][None]  # uint8, as the training loop passes it

        def once() -> None:
            trainer._LOSS["photometric"](pred, gt, 0.2).backward()

        for _ in range(5):
            once()
        timer = Timer()
        timer.start()
        for _ in range(n):
            once()
        return timer.ms() / n

    variants = {"eager": (False, False, False), "compiled-conv": (True, False, False),
                "compiled-fused": (True, True, False), "all (default)": (True, True, True)}
    rows = {}
    for name, (cl, fs, fn) in variants.items():
        params, opts, dens, cfg = setup(cl, fs, fn)
        warm = min(30, args.steps)
        run(params, opts, dens, cfg, warm)
        sync()
        t = time.perf_counter()
        run(params, opts, dens, cfg, args.steps, warm)
        sync()
        wall = (time.perf_counter() - t) * 1000 / args.steps
        # GPU time: steps run one at a time with a sync before each, timed by CUDA events around the step.
        gpu, n_gpu = 0.0, min(100, args.steps)
        for i in range(n_gpu):
            timer = Timer()
            sync()
            timer.start()
            run(params, opts, dens, cfg, 1, warm + args.steps + i)
            gpu += timer.ms()
        loss_ms = loss_only(n=min(100, args.steps))
        rows[name] = {"wall_ms": wall, "it_per_s": 1000 / wall, "gpu_ms_synced": gpu / n_gpu,
                      "loss_fwd_bwd_ms": loss_ms, "num_gaussians": len(params["means"])}
        print(name, json.dumps(rows[name]), flush=True)
        if name == "all (default)":
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                run(params, opts, dens, cfg, min(30, args.steps), 500)
                sync()
            ka = prof.key_averages()
            print(ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=55))
            if cuda:
                print(ka.table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=55))
        del params, opts, dens
        if cuda:
            torch.cuda.empty_cache()

    print("\n| variant | Gaussians | wall ms/step | it/s | GPU ms/step (synced) | L1+SSIM fwd+bwd ms |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['num_gaussians']:,} | {r['wall_ms']:.2f} | {r['it_per_s']:.0f} | {r['gpu_ms_synced']:.2f} "
              f"| {r['loss_fwd_bwd_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
