"""Training of the MixVoxels backend: ``train_mixvoxels(dataset, out_dir, config)``.

Output folder::

    OUT/
      config.json        the resolved MixVoxelsConfig
      rig/scene.json     the rig cameras at the training resolution (render and eval read them)
      checkpoint.pt      model, optimiser, occupancy grid, scene space, iteration (atomic writes; resume reads it)
      result.json        timings, memory, model size, final losses, static/dynamic statistics

The loop (per iteration): draw a ray batch biased to dynamic pixels, render it with the mixed voxels, minimise
colour MSE + variance loss (rendered voxel variance vs pixel temporal std) + regularisers + optional depth loss;
upsample the grids on a coarse-to-fine ladder, refresh the occupancy grid now and then.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatworks.config import from_dict, to_json
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit
from splatworks.scene.camera import Scene
from splatworks.voxels.config import MixVoxelsConfig, validate
from splatworks.voxels.data import DepthTargets, load_ray_data
from splatworks.voxels.field import MixVoxelField
from splatworks.voxels.render import RenderOptions, compute_occupancy, render_rays
from splatworks.voxels.space import SceneSpace, make_space

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BACKEND = "mixvoxels"
FORMAT = "splatworks.mixvoxels/2"  # bump when the field's parameters change meaning or shape
# Settings that decide tensor shapes or the data: a checkpoint made with others cannot be resumed.
_SHAPE_KEYS = ("density_components", "appearance_components", "feature_dim", "hidden_dim", "dynamic_components",
               "time_dim", "time_frequencies", "variance_res", "grid_res_start", "scale", "max_frames")


@dataclass
class MixVoxelsResult:
    """What a training run produced (also written to ``result.json``)."""

    out_dir: str
    iterations: int              # iterations reached (fewer than planned when the time budget cut the run)
    train_seconds: float         # wall time of the training loop (this run; data loading excluded)
    peak_memory_bytes: int       # peak CUDA memory allocated (CPU: peak resident set size)
    model_bytes: int
    final_loss: float
    final_psnr_train: float
    dynamic_voxel_share: float
    occupied_share: float
    dynamic_pixel_share: float
    resumed_from: int
    iterations_planned: int = 0
    load_seconds: float = 0.0    # reading and uploading the training frames
    stopped_by_budget: bool = False
    time_budget_min: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for but CUDA is not available; use --mixvoxels.device cpu")
    return torch.device(name)


def upsample_schedule(cfg: MixVoxelsConfig) -> list[tuple[int, int]]:
    """(iteration, resolution) steps from grid_res_start to grid_res, geometric in resolution.

    The loop fires a step once its training progress (iteration / iterations, or the elapsed share of the time
    budget when that is ahead) reaches the step's iteration / iterations."""
    if cfg.grid_res <= cfg.grid_res_start:
        return []
    n = 3
    its = list(cfg.upsample_at) or [int(cfg.iterations * f) for f in np.linspace(0.1, 0.4, n)]
    n = len(its)
    ress = [round(cfg.grid_res_start * (cfg.grid_res / cfg.grid_res_start) ** ((k + 1) / n)) for k in range(n)]
    return list(zip(its, ress))


def train_frames(dataset: DynamicDataset, cfg: MixVoxelsConfig) -> list[int]:
    frames = list(dataset.frames)
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    if not frames:
        raise UserError(f"{dataset.root}: the dataset has no frames")
    return frames


def background_color(cfg: MixVoxelsConfig, device: torch.device) -> torch.nn.Parameter:
    init = {"black": 0.0, "white": 1.0, "learned": 0.5}[cfg.background]
    return torch.nn.Parameter(torch.full((3,), init, device=device), requires_grad=cfg.background == "learned")


class MixVoxelsModel:
    """A trained (or training) model: field, background, space, occupancy and the rig it was trained on."""

    def __init__(self, cfg: MixVoxelsConfig, space: SceneSpace, n_frames: int, device: torch.device) -> None:
        self.cfg, self.space, self.n_frames, self.device = cfg, space, n_frames, device
        self.field = MixVoxelField(cfg, n_frames).to(device)
        self.background = background_color(cfg, device)
        self.occupancy: torch.Tensor | None = None
        self.split_active = False

    def options(self, train: bool) -> RenderOptions:
        return RenderOptions(samples_per_ray=self.cfg.samples_per_ray, dynamic_threshold=self.cfg.dynamic_threshold,
                             split_active=self.split_active, background=self.background.clamp(0, 1),
                             stratified=train)

    def render(self, rays_o: torch.Tensor, rays_d: torch.Tensor, times: torch.Tensor, train: bool = False
               ) -> dict[str, torch.Tensor]:
        return render_rays(self.field, self.space, self.occupancy, rays_o, rays_d, times, self.options(train))

    @torch.no_grad()
    def render_image(self, cam, time: float) -> dict[str, torch.Tensor]:
        """Full image of ``cam`` at normalised time: rgb (H, W, 3), depth (H, W), dynamic_share (H, W)."""
        from splatworks.voxels.space import camera_rays

        o, d = camera_rays(cam, device=self.device)
        out: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "dynamic_share": []}
        for s in range(0, len(o), self.cfg.eval_chunk):
            r = self.render(o[s:s + self.cfg.eval_chunk], d[s:s + self.cfg.eval_chunk],
                            torch.full((len(o[s:s + self.cfg.eval_chunk]),), time, device=self.device))
            for k in out:
                out[k].append(r[k])
        h, w = cam.height, cam.width
        return {"rgb": torch.cat(out["rgb"]).view(h, w, 3).clamp(0, 1), "depth": torch.cat(out["depth"]).view(h, w),
                "dynamic_share": torch.cat(out["dynamic_share"]).view(h, w)}

    def update_occupancy(self) -> None:
        self.occupancy = compute_occupancy(self.field, self.cfg.occupancy_res, self.n_frames,
                                           self.cfg.dynamic_threshold, self.split_active,
                                           self.cfg.occupancy_threshold)

    @torch.no_grad()
    def dynamic_voxels(self, res: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres (N, 3) in world coordinates of occupied voxels marked dynamic, and of all occupied voxels'
        count as a (1,) tensor, on a ``res``^3 lattice (default: the occupancy resolution)."""
        res = res or self.cfg.occupancy_res
        lin = (torch.arange(res, device=self.device, dtype=torch.float32) + 0.5) / res * 2.0 - 1.0
        g = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
        occ = torch.ones(len(g), dtype=torch.bool, device=self.device)
        if self.occupancy is not None:
            from splatworks.voxels.render import occupancy_lookup
            occ = occupancy_lookup(self.occupancy, g)
        dyn = (self.field.voxel_variance(g) > self.cfg.dynamic_threshold) & occ
        return self.to_world(g[dyn]), occ.sum().view(1)

    def to_world(self, x: torch.Tensor) -> torch.Tensor:
        """Grid coordinates (N, 3) -> world (inverse of ``SceneSpace.normalize``)."""
        y = x.double()
        if self.space.kind == "contract":
            y = y * 2.0
            n = y.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            y = torch.where(n <= 1.0, y, y / n / (2.0 - n).clamp_min(1e-6))
        return y * self.space.radius + torch.as_tensor(self.space.center, device=y.device)

    def model_bytes(self) -> int:
        n = sum(p.numel() * p.element_size() for p in self.field.parameters())
        return int(n + (self.occupancy.numel() // 8 if self.occupancy is not None else 0))

    # ---- persistence ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"backend": BACKEND, "format": FORMAT, "field": self.field.state_dict(),
                "background": self.background.detach().cpu(),
                "occupancy": None if self.occupancy is None else self.occupancy.cpu(),
                "split_active": self.split_active, "grid_res": self.field.static_density.res,
                "space": self.space.to_dict(), "n_frames": self.n_frames}

    @classmethod
    def from_state(cls, cfg: MixVoxelsConfig, state: dict[str, Any], device: torch.device) -> "MixVoxelsModel":
        if state.get("format") != FORMAT:
            raise UserError(f"this MixVoxels checkpoint has format {state.get('format')!r}, this version reads "
                            f"{FORMAT!r}; train the model again (or use the splatworks version that wrote it)")
        model = cls(cfg, SceneSpace.from_dict(state["space"]), int(state["n_frames"]), device)
        if state["grid_res"] != model.field.static_density.res:
            model.field.upsample(int(state["grid_res"]))
        model.field.load_state_dict(state["field"])
        model.background.data.copy_(state["background"].to(device))
        model.occupancy = None if state["occupancy"] is None else state["occupancy"].to(device)
        model.split_active = bool(state["split_active"])
        return model


def load_model(out_dir: str | Path, device: str = "auto") -> tuple[MixVoxelsModel, Scene, dict[str, Any]]:
    """The trained model of ``out_dir``, its rig (training resolution) and the checkpoint's extra info."""
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if not ckpt_path.exists():
        raise UserError(f"{out} holds no MixVoxels model ({CHECKPOINT} missing); train one with "
                        f"`splatworks dynamic train DATASET --model mixvoxels -o {out}`")
    cfg = from_dict(MixVoxelsConfig, json.loads((out / "config.json").read_text()))
    dev = resolve_device(device if device != "auto" else cfg.device)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = MixVoxelsModel.from_state(cfg, ckpt["model"], dev)
    model.field.eval()
    return model, Scene.load(out / "rig"), ckpt


def _save_checkpoint(path: Path, model: MixVoxelsModel, optim: torch.optim.Optimizer, iteration: int,
                     frames: list[int], gen: torch.Generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state(), "optimizer": optim.state_dict(), "iteration": iteration, "frames": frames,
                "rng": gen.get_state(), "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def _make_optimizer(model: MixVoxelsModel, cfg: MixVoxelsConfig) -> torch.optim.Optimizer:
    groups = model.field.param_groups(cfg)
    if cfg.background == "learned":
        groups[1]["params"].append(model.background)
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def _check_resumable(out: Path, cfg: MixVoxelsConfig) -> None:
    saved = from_dict(MixVoxelsConfig, json.loads((out / "config.json").read_text()))
    diff = [k for k in _SHAPE_KEYS if getattr(saved, k) != getattr(cfg, k)]
    if diff:
        raise UserError(f"{out} holds a checkpoint trained with other {', '.join(diff)}; resume with the same "
                        f"settings, or choose a new output folder (or pass resume=False / --no-resume to restart)")


def train_mixvoxels(dataset: DynamicDataset, out_dir: str | Path, config: MixVoxelsConfig | None = None,
                    progress: ProgressFn | None = None, resume: bool = True,
                    depth: DepthTargets | None = None, show_progress_bar: bool = False) -> MixVoxelsResult:
    """Train a MixVoxels model on ``dataset``'s training cameras; checkpoints in ``out_dir``.

    Args:
        depth: optional per-pixel depth targets (camera z); used when ``config.depth_weight > 0``.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (same shape settings required).
    """
    cfg = config or MixVoxelsConfig()
    validate(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    resuming = resume and ckpt_path.exists()
    if resuming:
        _check_resumable(out, cfg)
    elif ckpt_path.exists():
        log.info("not resuming: %s is overwritten at the first checkpoint", ckpt_path)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    frames = train_frames(dataset, cfg)
    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def load_progress(i: int, n: int) -> None:
        emit(progress, "mixvoxels.load", i, n, f"reading frames {i}/{n}")

    data = load_ray_data(dataset, frames, cfg.scale, cfg.pixel_std_threshold, cfg.use_masks, device,
                         depth if cfg.depth_weight > 0 else None, load_progress)
    load_seconds = time.perf_counter() - t_start
    start_it = 0
    if resuming:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model = MixVoxelsModel.from_state(cfg, ckpt["model"], device)
        optim = _make_optimizer(model, cfg)
        optim.load_state_dict(ckpt["optimizer"])
        start_it = int(ckpt["iteration"])
        gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        to_json(cfg, out / "config.json")  # the settings of the latest run (shape settings are unchanged)
        log.info("resuming %s from iteration %d", out, start_it)
    else:
        rig_cams = [dataset.rig.camera(n) for n in dataset.train_camera_names]
        space = make_space(rig_cams, cfg.scene_type, cfg.bound_scale, cfg.near,
                           dataset.rig.points if len(dataset.rig.points) else None)
        model = MixVoxelsModel(cfg, space, len(frames), device)
        optim = _make_optimizer(model, cfg)
        to_json(cfg, out / "config.json")
        rig = Scene(cameras=[c.scaled(cfg.scale) if cfg.scale != 1.0 else c for c in dataset.rig.cameras],
                    test_names=list(dataset.test_cameras), meta={"dataset": str(dataset.root), "frames": frames,
                                                                 "fps": dataset.fps})
        rig.save(out / "rig")
    log.info("MixVoxels: %s space (centre %s, radius %.3g), %d cameras x %d frames at %dx%d, %.1f%% dynamic pixels",
             model.space.kind, np.round(model.space.center, 3).tolist(), model.space.radius, data.shape[0],
             data.shape[1], data.shape[3], data.shape[2], 100 * data.meta["dynamic_pixel_share"])

    schedule = upsample_schedule(cfg)
    bar = None
    if show_progress_bar:
        try:
            from tqdm import tqdm
        except ImportError:  # bare GPU hosts: log lines instead
            log.warning("tqdm is not installed: progress goes to the log every checkpoint")
        else:
            bar = tqdm(total=cfg.iterations, initial=start_it, desc="mixvoxels", unit="it")
    loss_val, psnr_val = float("nan"), float("nan")
    it = start_it
    budget_s = 60.0 * cfg.time_budget_min
    stopped_by_budget = False
    t_loop = time.perf_counter()
    for it in range(start_it + 1, cfg.iterations + 1):
        elapsed = time.perf_counter() - t_loop
        # progress in [0, 1]: iterations, or the spent share of the time budget when that runs ahead
        frac = max(it / cfg.iterations, elapsed / budget_s if budget_s > 0 else 0.0)
        due = [res for up_it, res in schedule if frac >= up_it / cfg.iterations]
        if due and max(due) > model.field.static_density.res:
            model.field.upsample(max(due))
            optim = _make_optimizer(model, cfg)
        if not model.split_active and it > cfg.split_after:
            model.split_active = True
            model.update_occupancy()
        frac = min(frac, 1.0)
        for g in optim.param_groups:
            g["lr"] = g["base_lr"] * cfg.lr_decay ** frac

        batch = data.sample(cfg.batch_rays, cfg.dynamic_ray_fraction, gen)
        rays_o, rays_d = data.rays(batch["cam"], batch["col"], batch["row"])
        r = model.render(rays_o, rays_d, batch["time"], train=True)
        mse = ((r["rgb"] - batch["rgb"]) ** 2).mean()
        loss = mse
        # the variance field learns once the first geometry has formed (foggy weights would smear it)
        if it > cfg.split_after // 2:
            loss = loss + cfg.variance_weight * ((r["variance"] - batch["std"]) ** 2).mean()
        if len(r["variance_samples"]):
            loss = loss + cfg.variance_sparsity * r["variance_samples"].mean()
        if cfg.tv_weight > 0:
            loss = loss + cfg.tv_weight * (model.field.static_density.tv_loss() + model.field.dynamic_grid.tv_loss())
        if cfg.l1_weight > 0:
            loss = loss + cfg.l1_weight * model.field.static_density.planes.abs().mean()
        if cfg.depth_weight > 0 and "depth" in batch:
            w = batch["depth_weight"]
            if w.sum() > 0:
                err = ((r["depth"] - batch["depth"]) / model.space.radius) ** 2
                loss = loss + cfg.depth_weight * (w * err).sum() / w.sum().clamp_min(1e-6)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        loss_val, psnr_val = float(loss.detach()), -10.0 * math.log10(max(mse.item(), 1e-10))

        if it % cfg.occupancy_every == 0 and it < cfg.iterations:
            model.update_occupancy()
        if bar is not None:
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix(loss=f"{loss_val:.4f}", psnr=f"{psnr_val:.2f}")
        metrics = {"loss": loss_val, "psnr": psnr_val}
        emit(progress, "training", it, cfg.iterations, f"iteration {it}", metrics=metrics)
        stopped_by_budget = budget_s > 0 and time.perf_counter() - t_loop >= budget_s and it < cfg.iterations
        if stopped_by_budget:
            log.warning("time budget of %.2f min reached at iteration %d/%d: stopping with a checkpoint",
                        cfg.time_budget_min, it, cfg.iterations)
            if model.occupancy is None:  # cut before the first update: renders would sample empty space too
                model.update_occupancy()
        if it % cfg.checkpoint_every == 0 or it == cfg.iterations or stopped_by_budget:
            _save_checkpoint(ckpt_path, model, optim, it, frames, gen)
            log.info("iteration %d/%d: loss %.5f, train PSNR %.2f dB, %.0f s", it, cfg.iterations, loss_val,
                     psnr_val, time.perf_counter() - t_loop)
            emit(progress, "training", it, cfg.iterations, f"checkpoint at iteration {it}", metrics=metrics,
                 checkpoint=str(ckpt_path))
        if stopped_by_budget:
            break
    train_seconds = time.perf_counter() - t_loop
    if bar is not None:
        bar.close()
    if it == start_it and start_it >= cfg.iterations:
        log.info("%s is already trained to %d iterations", out, start_it)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _cpu_peak_bytes()
    dyn, n_occ = model.dynamic_voxels()
    occ_share = float(n_occ) / cfg.occupancy_res ** 3
    result = MixVoxelsResult(out_dir=str(out), iterations=max(it, start_it), train_seconds=train_seconds,
                             peak_memory_bytes=int(peak), model_bytes=model.model_bytes(), final_loss=loss_val,
                             final_psnr_train=psnr_val, dynamic_voxel_share=len(dyn) / max(float(n_occ), 1.0),
                             occupied_share=occ_share, dynamic_pixel_share=data.meta["dynamic_pixel_share"],
                             resumed_from=start_it, iterations_planned=cfg.iterations,
                             load_seconds=load_seconds, stopped_by_budget=stopped_by_budget,
                             time_budget_min=cfg.time_budget_min)
    (out / "result.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def _cpu_peak_bytes() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:  # pragma: no cover - non-POSIX
        return 0
