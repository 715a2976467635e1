"""Densification policies behind one small interface, backed by gsplat's strategies.

- ``default``: 3DGS adaptive density control (clone / split by screen-space gradient, prune faint and huge
  Gaussians) with the periodic opacity reset of 3DGS. gsplat 1.5.3's ``DefaultStrategy`` never resets
  opacities (its condition ``step % reset_every == 0 & step > 0`` is always false), so the reset is done here,
  at the 3DGS steps (every ``reset_every``, and at ``refine_start`` when the background is white).
- ``mcmc``: 3DGS-MCMC (Kheradmand et al. 2024): dead Gaussians are relocated, the count grows 5% per refine
  step up to ``cap_max``, and position noise scaled by the position learning rate explores the scene. The
  relocation and growth are gsplat's (``gsplat.strategy.ops``); the per-step noise is ours, the same maths as
  gsplat's ``inject_noise_to_position`` fused by torch.compile on CUDA (it runs every step, and eager it is a
  dozen small kernel launches), and without gsplat's ``torch.cuda.empty_cache()`` after each refine step (it
  returns memory the next step allocates again).
- ``none``: keep the initial Gaussians (also the fallback when gsplat is not installed, e.g. CPU-only CI).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from splatworks.splat.render import RenderOutput
    from splatworks.splat.trainer import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Densifier:
    """Calls a gsplat strategy at the right moments of a training step.

    ``before_backward(step, out)`` runs before ``loss.backward()`` (keeps the 2D means' gradient),
    ``after_step(step, out, means_lr)`` after the optimisers stepped (grows, prunes, relocates in place).
    Steps are 0-based.
    """

    kind: str
    strategy: Any
    state: dict[str, Any]
    params: torch.nn.ParameterDict
    optimizers: dict[str, torch.optim.Optimizer]
    reset_steps_from: int = 0
    reset_every: int = 0
    reset_value: float = 0.01
    refine_stop: int = 0
    reset_at_start: int = -1

    def before_backward(self, step: int, out: "RenderOutput") -> None:
        if self.kind == "default" and step < self.refine_stop:
            self.strategy.step_pre_backward(self.params, self.optimizers, self.state, step, out.info.raw)

    def after_step(self, step: int, out: "RenderOutput", means_lr: float) -> None:
        if self.kind == "default":
            if step >= self.refine_stop:
                return
            self.strategy.step_post_backward(self.params, self.optimizers, self.state, step, out.info.raw,
                                             packed=out.info.packed)
            it = step + 1  # 3DGS counts iterations from 1
            if (self.reset_every > 0 and it % self.reset_every == 0) or it == self.reset_at_start:
                from gsplat.strategy.ops import reset_opa

                reset_opa(self.params, self.optimizers, self.state, value=self.reset_value)
        elif self.kind == "mcmc":
            self._mcmc_step(step, means_lr)

    def _mcmc_step(self, step: int, means_lr: float) -> None:
        """gsplat's MCMCStrategy.step_post_backward (1.5.3), with the noise fused and no empty_cache."""
        from gsplat.strategy.ops import relocate, sample_add

        st, p = self.strategy, self.params
        binoms = self.state["binoms"] = self.state["binoms"].to(p["means"].device)
        if st.refine_start_iter < step < st.refine_stop_iter and step % st.refine_every == 0:
            with torch.no_grad():
                dead = torch.sigmoid(p["opacities"].flatten()) <= st.min_opacity
                if bool(dead.any()):
                    relocate(p, self.optimizers, {}, mask=dead, binoms=binoms, min_opacity=st.min_opacity)
                n = len(p["means"])
                n_new = max(0, min(st.cap_max, int(1.05 * n)) - n)
                if n_new > 0:
                    sample_add(p, self.optimizers, {}, n=n_new, binoms=binoms, min_opacity=st.min_opacity)
        with torch.no_grad():
            # Plain tensors, not Parameters: torch.compile keeps a Parameter's size static (a recompile per count).
            means = p["means"].detach()
            unit = torch.randn_like(means)
            noise = _NOISE["fn"](means, p["quats"].detach(), p["scales"].detach(), p["opacities"].detach(), unit)
            means.add_(noise, alpha=means_lr * st.noise_lr)

    def warm_up(self, small: dict[str, torch.Tensor]) -> None:
        """Compile the fused per-step noise on a few detached Gaussians (N marked dynamic: no recompiles later)."""
        _NOISE["fn"] = mcmc_noise
        if self.kind != "mcmc" or not small["means"].is_cuda:
            return
        try:
            fn = torch.compile(mcmc_noise, dynamic=True)
            with torch.no_grad():
                args = [small[k].detach().clone() for k in ("means", "quats", "scales", "opacities")]
                for n in (len(args[0]), len(args[0]) // 2):  # two counts: the graph must not specialise on one
                    fn(*[a[:n] for a in args], torch.randn_like(args[0][:n]))
            _NOISE["fn"] = fn
        except Exception as exc:  # no Triton / compiler here: the eager noise is the same maths
            log.warning("torch.compile of the MCMC noise failed (%s); using the eager version", exc)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": {k: v for k, v in self.state.items()}}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("kind") != self.kind:
            raise ValueError(f"checkpoint used densification {d.get('kind')!r}, this run {self.kind!r}")
        self.state.update(d["state"])


def mcmc_noise(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor, opacity_logits: torch.Tensor,
               unit_noise: torch.Tensor) -> torch.Tensor:
    """3DGS-MCMC's position noise before its learning-rate factor, (N, 3) in scene units.

    ``Sigma_i (z_i * s(1 - o_i))`` with Sigma_i = R diag(scale^2) R^T each Gaussian's covariance, z_i standard
    normal ``unit_noise`` (N, 3), o_i its opacity and s(x) = 1 / (1 + exp(-100 (x - 0.995))): only nearly
    transparent Gaussians move much. quats (N, 4) wxyz, any norm; log_scales (N, 3); opacity_logits (N,).
    """
    # Written element by element (no batched 3x3 matmuls): pointwise maths that inductor fuses into one kernel;
    # a (N, 3, 3) bmm runs as two slow gemv launches (0.6 ms per step at 300k Gaussians on an H100).
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    r = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    gate = 1 / (1 + torch.exp(-100 * ((1 - torch.sigmoid(opacity_logits.flatten())) - 0.995)))
    v = [unit_noise[:, j] * gate for j in range(3)]
    var = torch.exp(2 * log_scales)
    local = [(r[0][i] * v[0] + r[1][i] * v[1] + r[2][i] * v[2]) * var[:, i] for i in range(3)]  # diag(s^2) R^T v
    return torch.stack([r[k][0] * local[0] + r[k][1] * local[1] + r[k][2] * local[2] for k in range(3)], dim=-1)


# The noise function the MCMC step calls: eager, or compiled by Densifier.warm_up (CUDA).
_NOISE: dict[str, Any] = {"fn": mcmc_noise}


def make_densifier(config: "TrainConfig", extent: float, params: torch.nn.ParameterDict,
                   optimizers: dict[str, torch.optim.Optimizer], white_background: bool = False) -> Densifier:
    kind = config.strategy
    if kind != "none":
        try:
            from gsplat.strategy import DefaultStrategy, MCMCStrategy
        except ImportError:
            log.warning("gsplat is not installed: training without densification (install splatworks[gpu])")
            kind = "none"
    if kind == "default":
        strategy = DefaultStrategy(prune_opa=config.prune_opa, grow_grad2d=config.grow_grad2d,
                                   refine_start_iter=config.refine_start, refine_stop_iter=config.refine_stop,
                                   refine_every=config.refine_every, reset_every=10 ** 9, absgrad=config.absgrad,
                                   key_for_gradient="means2d")
        return Densifier("default", strategy, strategy.initialize_state(scene_scale=extent), params, optimizers,
                         reset_every=config.reset_every, reset_value=config.prune_opa * 2.0,
                         refine_stop=config.refine_stop, reset_at_start=config.refine_start if white_background else -1)
    if kind == "mcmc":
        strategy = MCMCStrategy(cap_max=config.cap_max, refine_start_iter=config.refine_start,
                                refine_stop_iter=config.refine_stop, refine_every=config.refine_every,
                                min_opacity=config.prune_opa)
        return Densifier("mcmc", strategy, strategy.initialize_state(), params, optimizers,
                         refine_stop=config.refine_stop)
    return Densifier("none", None, {}, params, optimizers)
