"""Train 3D Gaussians on a calibrated scene (3DGS: L1 + D-SSIM, Adam, SH raised over time, densification).

``train(scene, out_dir, config)`` writes, under ``out_dir``::

    config.json                       the resolved TrainConfig
    cameras.json                      3DGS-style camera list (id, img_name, width, height, position, rotation, fx, fy)
    point_cloud/iteration_N/          newest checkpoint only: point_cloud.ply, scene.splat, trainer_state.pt
    metrics.json                      held-out PSNR/SSIM per view and mean, Gaussians, seconds, peak GPU memory

The loop is written for speed on the GPU: images live on the device as uint8, the step issues no host syncs
(losses are read back only every ``log_every`` steps), gsplat renders unpacked (faster than packed for one
camera per step), L1 + D-SSIM is fused by torch.compile on CUDA, and Adam updates only the Gaussians visible in
the step's view (gsplat's fused SelectiveAdam) when ``visible_adam`` is on, and 3DGS-MCMC's per-step position
noise is fused the same way (``strategy.mcmc_noise``). Presets use 3DGS-MCMC with a
Gaussian budget (330k for `default`, 300k for `fast`; measured better than adaptive density control on lego; see
BENCHMARKS.md). Checkpoints are written on a background thread from a CPU snapshot and announced once complete.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from splatworks.config import from_dict, option, to_dict, to_json
from splatworks.errors import UserError
from splatworks.progress import Cancelled, ProgressFn, emit
from splatworks.scene.camera import Scene
from splatworks.splat import io as sio
from splatworks.splat.data import Views, load_views
from splatworks.splat.gaussians import init_from_scene
from splatworks.splat.metrics import LPIPS, photometric_loss, psnr, ssim
from splatworks.splat.render import DEFAULT_NEAR_PLANE, RenderOutput, render
from splatworks.splat.strategy import Densifier, make_densifier

log = logging.getLogger(__name__)

# An extra loss term: (iteration, index of the training view, render output, params) -> scalar tensor.
ExtraLoss = Callable[[int, int, RenderOutput, torch.nn.ParameterDict], torch.Tensor]
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Settings of one training run (3DGS defaults unless noted)."""

    iterations: int = option(30_000, "Training iterations (one image per iteration).")
    checkpoint_steps: tuple[int, ...] = option((10_000, 20_000, 30_000), "Iterations that write a checkpoint "
                                               "(those beyond --iterations are dropped; the last always writes).")
    strategy: str = option("default", "Densification: 'default' (3DGS adaptive density control) or 'mcmc' "
                           "(3DGS-MCMC with a Gaussian budget, --cap-max).", choices=("default", "mcmc", "none"))
    cap_max: int = option(1_000_000, "Gaussian budget for the mcmc strategy.")
    sh_degree: int = option(3, "Highest spherical-harmonics degree.")
    sh_degree_interval: int = option(1000, "Raise the SH degree by one every this many iterations.")
    ssim_weight: float = option(0.2, "Weight of D-SSIM in the loss (1 - w) L1 + w (1 - SSIM).")
    lr_means: float = option(1.6e-4, "Initial position learning rate (times the scene extent).")
    lr_means_final: float = option(1.6e-6, "Final position learning rate (times the scene extent).")
    lr_quats: float = option(1e-3, "Rotation learning rate.")
    lr_scales: float = option(5e-3, "Log-scale learning rate.")
    lr_opacities: float = option(5e-2, "Opacity-logit learning rate.")
    lr_sh0: float = option(2.5e-3, "DC colour learning rate.")
    lr_shN: float = option(2.5e-3 / 20, "Higher SH bands learning rate.")
    refine_start: int = option(500, "First densification step.")
    refine_stop: int = option(15_000, "Last densification step (mcmc: relocation stop).")
    refine_every: int = option(100, "Densify every this many steps.")
    reset_every: int = option(3000, "Reset opacities every this many steps (default strategy; 0 = never).")
    grow_grad2d: float = option(2e-4, "Screen-space gradient threshold for growing (default strategy).")
    absgrad: bool = option(False, "Use absolute 2D gradients for growing (AbsGS); raise --grow-grad2d with it.")
    prune_opa: float = option(5e-3, "Prune Gaussians less opaque than this.")
    init_num_random: int = option(100_000, "Random Gaussians when the scene has no SfM points.")
    init_opacity: float = option(0.1, "Initial opacity.")
    init_scale: float = option(1.0, "Initial scale, times the mean distance to the 3 nearest points.")
    opacity_reg: float = option(0.0, "L1 penalty on opacities (mcmc uses 0.01).")
    scale_reg: float = option(0.0, "L1 penalty on scales (mcmc uses 0.01).")
    near_plane: float = option(DEFAULT_NEAR_PLANE, "Near clipping plane in scene units (camera-space z, as the "
                               "positions): Gaussians whose centre is nearer to a camera are not drawn in it, in "
                               "training and evaluation alike (0.01 = gsplat's default). Nothing real is nearer "
                               "to a camera than the nearest scene point it sees: a splat nearer than that is "
                               "fog in that view that the other views cannot correct.")
    background: tuple[float, ...] | None = option(None, "Background RGB in [0, 1]; default: the scene's "
                                                  "(white for NeRF-synthetic RGBA images), else black.")
    hold_out_every: int = option(8, "Hold out every n-th image (natural name order) when the scene names no "
                                 "test views (0 = train on all).")
    max_resolution: int = option(0, "Longest image side used for training, in pixels (0 = as stored).")
    downscale: float = option(1.0, "Divide image sizes by this factor (1 = as stored).")
    device: str = option("auto", "Torch device: auto (cuda when available), cuda, cpu.")
    backend: str = option("auto", "Rasterizer: auto, gsplat (CUDA), torch (reference).",
                          choices=("auto", "gsplat", "torch"))
    coarse_iterations: int = option(0, "Train the first N iterations on images downscaled by --coarse-downscale "
                                    "(coarse-to-fine: cheap early steps while the Gaussians are placed).")
    coarse_downscale: float = option(2.0, "Image downscale factor of the coarse phase.")
    compile_loss: bool = option(True, "On CUDA, fuse L1 + SSIM (and the regularisers' gradients) with torch.compile; "
                                "compiled once before training starts, eager if compiling fails.")
    packed: bool = option(False, "gsplat packed mode (less memory with many cameras per step; slower for one).")
    visible_adam: bool = option(True, "Adam updates only the Gaussians visible in the step (gsplat, CUDA).")
    seed: int = option(0, "Random seed.")
    log_every: int = option(100, "Report loss and progress every this many steps.")
    eval_lpips: bool = option(True, "Add LPIPS to metrics.json when its weights are on this machine.")
    save_splat: bool = option(True, "Write scene.splat next to point_cloud.ply at each checkpoint.")


# 3DGS-MCMC with a budget beat adaptive density control on lego at equal time (BENCHMARKS.md, ## Training):
# the Gaussian count is fixed after ~2.5k steps, so every step costs the same and memory is bounded.
MCMC = {"strategy": "mcmc", "cap_max": 300_000, "init_opacity": 0.5, "init_scale": 0.1, "opacity_reg": 0.01,
        "scale_reg": 0.01}
PRESETS: dict[str, dict[str, Any]] = {
    # 330k: measured on lego (BENCHMARKS.md, ## Training): 37.46 dB in 140 s (300k: 37.38 dB, 350k: 37.50 dB in 153 s).
    "default": {**MCMC, "cap_max": 330_000, "refine_stop": 25_000},
    "fast": {**MCMC, "iterations": 7_000, "checkpoint_steps": (7_000,), "refine_stop": 5_500,
             "sh_degree_interval": 500},
    "adc": {},  # the original 3DGS recipe (adaptive density control, opacity resets), for comparison
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset (``default``: 30k iterations, checkpoints at 10k/20k/30k; ``fast``: a quick look)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return replace(TrainConfig(), **{**PRESETS[name], **overrides})


@dataclass
class TrainResult:
    """What ``train`` produced. ``metrics`` is the content of metrics.json."""

    out_dir: Path
    iteration: int
    checkpoint: Path | None
    num_gaussians: int
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None


# ---- small pieces ---------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def checkpoint_steps(config: TrainConfig) -> list[int]:
    """Sorted checkpoint iterations within the run, always including the last iteration."""
    steps = {s for s in config.checkpoint_steps if 0 < s <= config.iterations}
    steps.add(config.iterations)
    return sorted(steps)


def means_lr(config: TrainConfig, step: int, extent: float) -> float:
    """Exponential decay from lr_means to lr_means_final over the run (3DGS), scaled by the scene extent."""
    t = min(max(step / max(config.iterations, 1), 0.0), 1.0)
    return extent * math.exp(math.log(config.lr_means) * (1 - t) + math.log(config.lr_means_final) * t)


def make_optimizers(params: torch.nn.ParameterDict, config: TrainConfig, extent: float,
                    device: torch.device) -> dict[str, torch.optim.Optimizer]:
    lrs = {"means": config.lr_means * extent, "quats": config.lr_quats, "scales": config.lr_scales,
           "opacities": config.lr_opacities, "sh0": config.lr_sh0, "shN": config.lr_shN}
    selective = config.visible_adam and device.type == "cuda"
    if selective:
        from gsplat.optimizers import SelectiveAdam
    opts: dict[str, torch.optim.Optimizer] = {}
    for key, p in params.items():
        group = [{"params": [p], "lr": lrs[key], "name": key}]
        if selective:
            opts[key] = SelectiveAdam(group, eps=1e-15, betas=(0.9, 0.999))
        else:
            opts[key] = torch.optim.Adam(group, eps=1e-15, betas=(0.9, 0.999),
                                         fused=device.type == "cuda")
    return opts


@torch.no_grad()
def selective_adam_step(optimizers: dict[str, torch.optim.Optimizer], visible: torch.Tensor) -> None:
    """``SelectiveAdam.step(visible)`` then ``zero_grad`` for every tensor, without the per-call hooks of
    ``torch.optim`` (six optimisers per step; their Python wrappers cost more host time than the kernels).

    The same update as gsplat 1.5.3's SelectiveAdam: its fused kernel, on rows where ``visible`` (N,) is True.
    """
    from gsplat.cuda._wrapper import adam

    for opt in optimizers.values():
        group = opt.param_groups[0]
        param = group["params"][0]
        if param.grad is None:
            continue
        state = opt.state[param]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        adam(param, param.grad, state["exp_avg"], state["exp_avg_sq"], visible, group["lr"], beta1, beta2,
             group["eps"])
        param.grad = None


def cameras_json(scene: Scene) -> list[dict[str, Any]]:
    """3DGS's cameras.json: camera-to-world position and rotation (OpenCV axes), focal lengths in pixels."""
    out = []
    for i, cam in enumerate(scene.cameras):
        c2w = cam.camera_to_world
        out.append({"id": i, "img_name": Path(cam.name).stem, "width": cam.width, "height": cam.height,
                    "position": c2w[:3, 3].tolist(), "rotation": c2w[:3, :3].tolist(), "fx": cam.fx, "fy": cam.fy})
    return out


def resolve_background(config: TrainConfig, scene: Scene) -> tuple[float, float, float]:
    bg = config.background if config.background is not None else scene.background
    bg = tuple(float(x) for x in (bg if bg is not None else (0.0, 0.0, 0.0)))
    if len(bg) != 3 or not all(0 <= x <= 1 for x in bg):
        raise UserError(f"background must be three numbers in [0, 1], got {bg}")
    return bg  # type: ignore[return-value]


# ---- evaluation -----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(params: dict[str, torch.Tensor], views: Views, background: torch.Tensor, sh_degree: int,
             backend: str = "auto", lpips: LPIPS | None = None,
             near_plane: float = DEFAULT_NEAR_PLANE) -> dict[str, Any]:
    """Per-view and mean PSNR/SSIM (and LPIPS) of renders clamped to [0, 1] against the stored images
    (``near_plane``: the render's near clipping plane in scene units, the one training used)."""
    per_view: dict[str, dict[str, float]] = {}
    for i, name in enumerate(views.names):
        w, h = views.sizes[i]
        out = render(params, views.viewmats[i:i + 1], views.Ks[i:i + 1], w, h, sh_degree, background,
                     backend=backend, near_plane=near_plane)  # type: ignore[arg-type]
        pred, gt = out.colors.clamp(0, 1), views.target(i)
        row = {"psnr": float(psnr(pred, gt)[0]), "ssim": float(ssim(pred, gt)[0])}
        if lpips is not None:
            row["lpips"] = float(lpips(pred, gt)[0])
        per_view[name] = row
    keys = next(iter(per_view.values())).keys() if per_view else []
    mean = {k: float(np.mean([r[k] for r in per_view.values()])) for k in keys}
    return {"mean": mean, "per_view": per_view, "num_views": len(per_view)}


# ---- checkpoints ------------------------------------------------------------------------------------------
def _rng_state(order_gen: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
            else None, "numpy": np.random.get_state(), "python": random.getstate(), "order": order_gen.get_state()}


def _set_rng_state(state: dict[str, Any], order_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    order_gen.set_state(state["order"])


def _to_cpu(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists/tuples) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def snapshot_state(iteration: int, params: torch.nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer],
                   densifier: Densifier, order_gen: torch.Generator, order: list[int], config: TrainConfig,
                   elapsed: float) -> dict[str, Any]:
    """Everything a checkpoint holds, copied to the CPU (training may go on changing the originals)."""
    return _to_cpu({"iteration": iteration, "params": {k: v for k, v in params.items()},
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "densifier": densifier.state_dict(), "rng": _rng_state(order_gen), "order": list(order),
                    "config": to_dict(config), "elapsed": elapsed})


def write_snapshot(out_dir: Path, snapshot: dict[str, Any], save_splat: bool = True) -> Path:
    """Write ``point_cloud/iteration_N`` (point_cloud.ply, scene.splat, trainer_state.pt) atomically."""
    def write(folder: Path) -> None:
        sio.write_ply(folder / "point_cloud.ply", snapshot["params"])
        if save_splat:
            sio.write_splat(folder / "scene.splat", snapshot["params"])
        torch.save(snapshot, folder / STATE_FILE)

    return sio.write_checkpoint(out_dir, int(snapshot["iteration"]), write)


class CheckpointWriter:
    """Writes checkpoints on a background thread, one at a time, while training goes on.

    ``submit`` takes a CPU snapshot (the only part the loop waits for) and first waits for the previous write;
    ``finished()`` returns the folder of a write that completed since the last call (then the caller announces
    it: a checkpoint is reported only once its folder is complete); ``wait()`` blocks for the write in flight.
    Writing 300k Gaussians (.ply, .splat, trainer state) took 0.5-1 s per checkpoint inside the timed loop.
    """

    def __init__(self, out_dir: Path, save_splat: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out_dir, self.save_splat = out_dir, save_splat
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._future: Any = None

    def submit(self, snapshot: dict[str, Any]) -> Path | None:
        done = self.wait()
        self._future = self._pool.submit(write_snapshot, self.out_dir, snapshot, self.save_splat)
        return done

    def finished(self) -> Path | None:
        if self._future is not None and self._future.done():
            return self.wait()
        return None

    def wait(self) -> Path | None:
        """The folder of the write in flight once it is complete (re-raises its error), or None."""
        fut, self._future = self._future, None
        return fut.result() if fut is not None else None

    def close(self) -> Path | None:
        try:
            return self.wait()
        finally:
            self._pool.shutdown(wait=True)


def load_state(folder: Path, device: torch.device) -> dict[str, Any] | None:
    path = folder / STATE_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=False)


# ---- the loop ---------------------------------------------------------------------------------------------
def train(scene: Scene, out_dir: str | Path, config: TrainConfig | None = None, progress: ProgressFn | None = None,
          resume: bool = True, extra_losses: list[ExtraLoss] | None = None) -> TrainResult:
    """Train Gaussians on ``scene`` and write the results under ``out_dir`` (see the module docstring).

    Resumes from the newest trainer checkpoint in ``out_dir`` when ``resume`` (same quality as an uninterrupted
    run). ``progress`` receives ProgressEvent(stage="training") every ``log_every`` steps and after each
    checkpoint; raising ``Cancelled`` from it stops the run after the current step (no partial files).
    ``extra_losses`` are added to the photometric loss (depth supervision, regularisers).
    """
    config = config or preset("default")
    if not config.near_plane > 0:  # 0 or less would draw splats at or behind the camera centre (division by z)
        raise UserError(f"near_plane is a camera-space distance in scene units; use a value > 0 (got "
                        f"{config.near_plane}; 0.01 is gsplat's default)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    if not scene.test_names and config.hold_out_every > 0:
        scene.hold_out_every(config.hold_out_every)
    train_cams, test_cams = scene.train_cameras, scene.test_cameras
    if not train_cams:
        raise UserError("the scene has no training images (all are held out); lower --hold-out-every")
    background = resolve_background(config, scene)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    to_json(config, out_dir / "config.json")
    (out_dir / "cameras.json").write_text(json.dumps(cameras_json(scene), indent=1))

    emit(progress, "training", 0, config.iterations, "loading images")
    train_views = load_views(scene, train_cams, background, device, config.max_resolution, config.downscale)
    coarse_views = (train_views.downsampled(config.coarse_downscale)
                    if config.coarse_iterations > 0 and config.coarse_downscale > 1 else None)
    _, extent = scene.camera_extent()
    order_gen = torch.Generator().manual_seed(config.seed)

    start, resumed_from, elapsed_before = 0, None, 0.0
    state = None
    if resume:
        latest = sio.latest_checkpoint(out_dir)
        state = load_state(latest[1], device) if latest else None
    if state is not None:
        params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.contiguous()) for k, v in state["params"].items()})
        start = resumed_from = int(state["iteration"])
        elapsed_before = float(state.get("elapsed", 0.0))
    else:
        params = init_from_scene(scene, config.sh_degree, config.init_num_random, config.seed, config.init_opacity,
                                 config.init_scale, device)
    optimizers = make_optimizers(params, config, extent, device)
    densifier = make_densifier(config, extent, params, optimizers, white_background=min(background) >= 1.0)
    order: list[int] = []
    if state is not None:
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        densifier.load_state_dict(state["densifier"])
        _set_rng_state(state["rng"], order_gen)
        order = list(state["order"])
        log.info("resuming from iteration %d", start)

    ckpt_steps = checkpoint_steps(config)
    _warm_up(params, train_views, config, bg, densifier)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    t_log, step_log = t0, start
    last_ckpt: Path | None = None
    writer = CheckpointWriter(out_dir, config.save_splat)

    def announce(folder: Path | None) -> None:
        nonlocal last_ckpt
        if folder is not None:
            last_ckpt = folder
            emit(progress, "training", int(folder.name.rsplit("_", 1)[-1]), config.iterations,
                 f"checkpoint {folder.name}", checkpoint=str(folder), metrics={"num_gaussians": len(params["means"])})

    try:
        for step in range(start, config.iterations):
            if not order:  # a new pass over the training images, in random order (3DGS)
                order = torch.randperm(len(train_views), generator=order_gen).tolist()
            idx = order.pop()
            views = coarse_views if coarse_views is not None and step < config.coarse_iterations else train_views
            loss, out = _train_step(step, idx, params, optimizers, densifier, views, config, bg, extent,
                                    extra_losses)
            iteration = step + 1
            now = time.perf_counter()
            # Every log_every steps, and at least every 2 s so slow CPU steps still show progress (and a
            # cancel is seen promptly); reading the loss back is the only host sync this costs on a GPU.
            if iteration % config.log_every == 0 or iteration == config.iterations or now - t_log > 2.0:
                with torch.no_grad():
                    cur_psnr = float(psnr(out.colors.detach().clamp(0, 1), views.target(idx))[0])
                metrics = {"loss": float(loss), "psnr": cur_psnr, "num_gaussians": len(params["means"]),
                           "it_per_s": (iteration - step_log) / max(now - t_log, 1e-9)}
                t_log, step_log = now, iteration
                announce(writer.finished())
                emit(progress, "training", iteration, config.iterations, metrics=metrics)
            if iteration in ckpt_steps:
                elapsed = elapsed_before + time.perf_counter() - t0
                announce(writer.submit(snapshot_state(iteration, params, optimizers, densifier, order_gen, order,
                                                      config, elapsed)))
        announce(writer.close())  # the last checkpoint is complete before the clock stops
    except torch.OutOfMemoryError as exc:
        writer.close()
        raise UserError(
            f"the GPU ran out of memory with {len(params['means'])} Gaussians at "
            f"{train_views.sizes[0][0]}x{train_views.sizes[0][1]} pixels; lower the image size "
            "(--max-resolution or --downscale) or the Gaussian budget (--strategy mcmc --cap-max N, or a higher "
            "--grow-grad2d)") from exc
    except Cancelled:
        log.info("training cancelled at iteration %d", step + 1)
        announce(writer.close())  # a checkpoint already being written is finished, never left half-written
        raise
    except BaseException:
        writer.close()
        raise
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = elapsed_before + time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    emit(progress, "training", config.iterations, config.iterations, "evaluating held-out views")
    metrics: dict[str, Any] = {"iteration": config.iterations, "num_gaussians": len(params["means"]),
                               "train_seconds": train_seconds, "peak_gpu_memory_bytes": int(peak),
                               "peak_gpu_memory_gib": peak / 2 ** 30, "device": str(device),
                               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                               "strategy": config.strategy, "resumed_from": resumed_from,
                               "train_views": len(train_views), "background": list(background)}
    if test_cams:
        test_views = load_views(scene, test_cams, background, device, config.max_resolution, config.downscale)
        lp = LPIPS.load(device) if config.eval_lpips else None
        ev = evaluate(params, test_views, bg, config.sh_degree, config.backend, lp, config.near_plane)
        metrics.update({"test": ev, "psnr": ev["mean"].get("psnr"), "ssim": ev["mean"].get("ssim"),
                        "lpips": ev["mean"].get("lpips")})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    emit(progress, "training", config.iterations, config.iterations, "done", metrics={
        k: metrics.get(k) for k in ("psnr", "ssim", "num_gaussians", "train_seconds")})
    return TrainResult(out_dir=out_dir, iteration=config.iterations, checkpoint=last_ckpt,
                       num_gaussians=len(params["means"]), metrics=metrics, resumed_from=resumed_from)


def _train_step(step: int, idx: int, params: torch.nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer],
                densifier: Densifier, views: Views, config: TrainConfig, bg: torch.Tensor, extent: float,
                extra_losses: list[ExtraLoss] | None) -> tuple[torch.Tensor, RenderOutput]:
    """One iteration on view ``idx``; returns the (un-synced) loss and the render."""
    lr = means_lr(config, step, extent)
    optimizers["means"].param_groups[0]["lr"] = lr
    w, h = views.sizes[idx]
    sh_degree = min(step // max(config.sh_degree_interval, 1), config.sh_degree)
    # Extra losses that read the rendered depth (depth supervision) set ``needs_depth = True``, and
    # ``render_mode = "RGB+D2"`` when they also read E[z^2] (depth.losses' termination loss).
    mode = _render_mode(extra_losses) if extra_losses else "RGB"
    out = render(params, views.viewmats[idx:idx + 1], views.Ks[idx:idx + 1], w, h, sh_degree, bg, mode=mode,
                 backend=config.backend, packed=config.packed, absgrad=config.absgrad,
                 near_plane=config.near_plane)  # type: ignore[arg-type]
    # The regularisers' gradients are added after backward (same maths as loss_terms, one fused kernel on CUDA);
    # the loss reported is the photometric one plus the extra losses.
    loss = _LOSS["photometric"](out.colors, views.images[idx][None], config.ssim_weight)  # uint8 target
    for extra in extra_losses or ():
        loss = loss + extra(step + 1, idx, out, params)
    densifier.before_backward(step, out)
    loss.backward()
    add_regulariser_grads(params, config.opacity_reg, config.scale_reg)
    if config.visible_adam and bg.is_cuda:
        selective_adam_step(optimizers, out.info.visible(len(params["means"])))
    else:
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
    densifier.after_step(step, out, lr)
    return loss.detach(), out


def _render_mode(extra_losses: list[ExtraLoss]) -> str:
    """The render mode the extra losses read: "RGB+D2" > "RGB+D" (``needs_depth``) > "RGB"."""
    modes = {getattr(e, "render_mode", "RGB+D" if getattr(e, "needs_depth", False) else "RGB") for e in extra_losses}
    return "RGB+D2" if "RGB+D2" in modes else "RGB+D" if "RGB+D" in modes else "RGB"


def loss_terms(pred: torch.Tensor, gt: torch.Tensor, opacities: torch.Tensor, scales: torch.Tensor,
               ssim_weight: float, opacity_reg: float, scale_reg: float) -> torch.Tensor:
    """The training loss: (1 - w) L1 + w (1 - SSIM) + opacity_reg mean(sigmoid(o)) + scale_reg mean(exp(s))."""
    loss = photometric_loss(pred, gt, ssim_weight)
    if opacity_reg > 0:
        loss = loss + opacity_reg * torch.sigmoid(opacities).mean()
    if scale_reg > 0:
        loss = loss + scale_reg * torch.exp(scales).mean()
    return loss


def _regulariser_grads(opacity_grad: torch.Tensor, opacity_logits: torch.Tensor, scale_grad: torch.Tensor,
                       log_scales: torch.Tensor, opacity_reg: float, scale_reg: float) -> None:
    """Add d/dparams of ``opacity_reg mean(sigmoid(o)) + scale_reg mean(exp(s))`` to the gradients, in place."""
    sig = torch.sigmoid(opacity_logits)
    opacity_grad.add_(sig * (1 - sig) * (opacity_reg / opacity_logits.numel()))
    scale_grad.add_(torch.exp(log_scales) * (scale_reg / log_scales.numel()))


@torch.no_grad()
def add_regulariser_grads(params: torch.nn.ParameterDict, opacity_reg: float, scale_reg: float) -> None:
    """After ``backward``: the gradients of loss_terms' regularisers, so the step equals backward of loss_terms.

    Done outside autograd because it is a dozen tiny launches there and one fused kernel here; plain tensors are
    passed because torch.compile keeps a Parameter's size static (a recompile per Gaussian count).
    """
    if opacity_reg <= 0 and scale_reg <= 0:
        return
    o, s = params["opacities"], params["scales"]
    if o.grad is None or s.grad is None:
        return
    _LOSS["regularisers"](o.grad, o.detach(), s.grad, s.detach(), opacity_reg, scale_reg)


# L1 + D-SSIM and the regularisers' gradients as the loop calls them: eager, or compiled by _warm_up (CUDA only,
# before the clock starts; the image size is fixed per run and the Gaussian count is a dynamic size).
_LOSS: dict[str, Callable[..., Any]] = {"photometric": photometric_loss, "regularisers": _regulariser_grads}


def _warm_up(params: torch.nn.ParameterDict, views: Views, config: TrainConfig, bg: torch.Tensor,
             densifier: Densifier) -> None:
    """Compile gsplat's kernels, cuDNN plans, the fused loss and the fused MCMC noise before the clock starts.

    Runs on a detached copy of a few Gaussians: nothing of the model or the optimisers changes.
    """
    _LOSS.update(photometric=photometric_loss, regularisers=_regulariser_grads)
    if not bg.is_cuda:
        return
    small = {k: v.detach()[:1000].clone().requires_grad_(True) for k, v in params.items()}
    w, h = views.sizes[0]

    def once(n: int = 1000) -> None:
        part = {k: v[:n] for k, v in small.items()}
        out = render(part, views.viewmats[:1], views.Ks[:1], w, h, config.sh_degree, bg, backend=config.backend,
                     packed=config.packed, near_plane=config.near_plane)
        _LOSS["photometric"](out.colors, views.images[0][None], config.ssim_weight).backward()  # as in the loop
        fake = {"opacities": small["opacities"][:n].detach().clone(), "scales": small["scales"][:n].detach().clone()}
        for v in fake.values():
            v.grad = torch.zeros_like(v)
        add_regulariser_grads(fake, 0.01, 0.01)  # type: ignore[arg-type]
        for v in small.values():
            v.grad = None

    once()
    if config.compile_loss:
        try:
            _LOSS["photometric"] = torch.compile(photometric_loss, dynamic=False)
            _LOSS["regularisers"] = torch.compile(_regulariser_grads, dynamic=True)
            for n in (1000, 500, 1000):  # two counts: the regulariser kernel must not specialise on one
                once(n)
        except Exception as exc:  # no Triton / compiler on this machine: the eager maths is the same
            _LOSS.update(photometric=photometric_loss, regularisers=_regulariser_grads)
            log.warning("torch.compile of the loss failed (%s); using the eager loss", exc)
    densifier.warm_up(small)
    torch.cuda.synchronize()


def load_config(path: str | Path) -> TrainConfig:
    return from_dict(TrainConfig, json.loads(Path(path).read_text()))
