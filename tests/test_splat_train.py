"""CPU training with the torch reference rasterizer on a tiny synthetic scene: quality rises, checkpoints
rotate, a crashed run resumes to the same result, the hooks and progress events work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from splatworks.progress import Cancelled, ProgressEvent
from splatworks.scene.camera import Scene
from splatworks.splat import io as sio
from splatworks.splat.data import load_views
from splatworks.splat.gaussians import init_from_scene
from splatworks.splat.trainer import TrainConfig, evaluate, train


@pytest.fixture(autouse=True)
def one_thread():
    # The CI machine is small and shared: intra-op threads only fight each other on these tiny tensors.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


N_POINTS = 1500


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Scene:
    from splatworks.synthetic.scenes import make_static_scene

    scene = make_static_scene(tmp_path_factory.mktemp("synth"), n_views=16, width=48, height=36, seed=1)
    scene.hold_out_every(8)
    # a sparser, jittered SfM-like cloud: the trainer must do the work
    rng = np.random.default_rng(0)
    keep = rng.choice(len(scene.points), N_POINTS, replace=False)
    scene.points = scene.points[keep] + rng.normal(0, 0.01, size=(N_POINTS, 3))
    scene.point_colors = np.full((N_POINTS, 3), 128, dtype=np.uint8)  # grey: colour must be learned
    scene.point_errors = np.zeros(N_POINTS)
    return scene


def tiny_config(**kw) -> TrainConfig:
    # No densification on CPU without gsplat; learning rates raised for a 120-step run (3DGS's are for 30k).
    base = TrainConfig(iterations=120, checkpoint_steps=(60,), device="cpu", backend="torch", strategy="none",
                       sh_degree=1, sh_degree_interval=50, log_every=20, eval_lpips=False, lr_sh0=0.05,
                       lr_opacities=0.05, lr_scales=0.01)
    return replace(base, **kw)


def test_training_raises_held_out_psnr(tiny_scene: Scene, tmp_path: Path) -> None:
    cfg = tiny_config()
    bg = tuple(tiny_scene.background or (0.0, 0.0, 0.0))
    views = load_views(tiny_scene, tiny_scene.test_cameras, bg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    init = init_from_scene(tiny_scene, cfg.sh_degree, seed=cfg.seed)
    before = evaluate(init, views, torch.tensor(bg), cfg.sh_degree, "torch")["mean"]["psnr"]

    events: list[ProgressEvent] = []
    result = train(tiny_scene, tmp_path, cfg, progress=events.append)
    after = result.metrics["psnr"]
    print(f"held-out PSNR {before:.2f} -> {after:.2f} dB in {result.metrics['train_seconds']:.1f} s")
    assert after > before + 4.0 and after > 18.0
    # files a 3DGS user expects, and only the newest checkpoint
    assert [p.name for p in (tmp_path / "point_cloud").iterdir()] == ["iteration_120"]
    ckpt = tmp_path / "point_cloud" / "iteration_120"
    assert {p.name for p in ckpt.iterdir()} == {"point_cloud.ply", "scene.splat", "trainer_state.pt"}
    assert len(sio.read_ply(ckpt / "point_cloud.ply")["means"]) == N_POINTS
    assert (ckpt / "scene.splat").stat().st_size == N_POINTS * 32
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["test"]["per_view"]) == set(tiny_scene.test_names)
    assert metrics["num_gaussians"] == N_POINTS and metrics["train_seconds"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["iterations"] == 120
    cams = json.loads((tmp_path / "cameras.json").read_text())
    assert len(cams) == len(tiny_scene.cameras) and np.allclose(cams[0]["position"], tiny_scene.cameras[0].center)
    # progress: training steps with metrics, then checkpoints at 60 and 120
    steps = [e.step for e in events if "loss" in e.metrics]
    # Every log_every steps; the trainer also reports after 2 s without a report (a loaded CI machine can take that
    # long for 20 tiny steps), so extra steps may appear in between, in order.
    assert set(range(20, 121, 20)) <= set(steps) and steps == sorted(set(steps)) and steps[-1] == 120
    assert all(e.stage == "training" for e in events)
    assert [Path(e.checkpoint).name for e in events if e.checkpoint] == ["iteration_60", "iteration_120"]
    assert all(e.metrics["num_gaussians"] == N_POINTS and e.metrics["it_per_s"] > 0 for e in events if "loss" in e.metrics)


def test_resume_after_crash_gives_the_same_result(tiny_scene: Scene, tmp_path: Path) -> None:
    cfg = tiny_config(iterations=40, checkpoint_steps=(20,), log_every=10)
    full = train(tiny_scene, tmp_path / "full", cfg)

    def crash_at_30(ev: ProgressEvent) -> None:
        if ev.step == 30 and "loss" in ev.metrics:
            raise Cancelled()

    with pytest.raises(Cancelled):
        train(tiny_scene, tmp_path / "crashed", cfg, progress=crash_at_30)
    assert sio.latest_checkpoint(tmp_path / "crashed")[0] == 20
    resumed = train(tiny_scene, tmp_path / "crashed", cfg)
    assert resumed.resumed_from == 20
    a = sio.read_ply(full.checkpoint / "point_cloud.ply")
    b = sio.read_ply(resumed.checkpoint / "point_cloud.ply")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert resumed.metrics["psnr"] == pytest.approx(full.metrics["psnr"], abs=1e-3)
    # resume=False starts over (and the old checkpoint is replaced at the next checkpoint step)
    again = train(tiny_scene, tmp_path / "crashed", replace(cfg, iterations=20), resume=False)
    assert again.resumed_from is None and sio.latest_checkpoint(tmp_path / "crashed")[0] == 20


def test_extra_loss_hook_steers_training(tiny_scene: Scene, tmp_path: Path) -> None:
    calls = []

    def push_opacity_down(it, view, out, params):
        calls.append((it, view, tuple(out.colors.shape)))
        return 1.0 * torch.sigmoid(params["opacities"]).mean()

    cfg = tiny_config(iterations=30, checkpoint_steps=(), log_every=10)
    plain = train(tiny_scene, tmp_path / "plain", cfg)
    hooked = train(tiny_scene, tmp_path / "hooked", cfg, extra_losses=[push_opacity_down])
    assert [c[0] for c in calls] == list(range(1, 31))
    assert calls[0][2] == (1, 36, 48, 3) and all(0 <= c[1] < len(tiny_scene.train_cameras) for c in calls)
    op = lambda r: torch.sigmoid(sio.read_ply(r.checkpoint / "point_cloud.ply")["opacities"]).mean()  # noqa: E731
    assert op(hooked) < op(plain) - 0.02


def test_near_plane_reaches_every_render(tiny_scene: Scene, tmp_path: Path, monkeypatch) -> None:
    """TrainConfig.near_plane is what the training steps and the held-out evaluation render with (and is saved)."""
    from splatworks.errors import UserError
    from splatworks.splat import trainer

    seen: list[tuple[int, float | None]] = []
    real = trainer.render

    def spy(params, viewmats, *args, **kwargs):
        seen.append((viewmats.shape[0], kwargs.get("near_plane")))
        return real(params, viewmats, *args, **kwargs)

    monkeypatch.setattr(trainer, "render", spy)
    res = train(tiny_scene, tmp_path, tiny_config(iterations=3, checkpoint_steps=(), near_plane=0.2))
    assert len(seen) == 3 + res.metrics["test"]["num_views"] > 3      # 3 steps, then each held-out view
    assert {z for _, z in seen} == {0.2}
    assert trainer.load_config(tmp_path / "config.json").near_plane == 0.2
    with pytest.raises(UserError, match="near_plane"):
        train(tiny_scene, tmp_path / "zero", tiny_config(iterations=1, checkpoint_steps=(), near_plane=0.0))


def test_out_of_memory_says_what_to_lower(tiny_scene: Scene, tmp_path: Path, monkeypatch) -> None:
    from splatworks.errors import UserError
    from splatworks.splat import trainer

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "render", oom)
    with pytest.raises(UserError, match="--max-resolution.*--cap-max"):
        train(tiny_scene, tmp_path, tiny_config(iterations=5, checkpoint_steps=()))
    assert sio.latest_checkpoint(tmp_path) is None


def test_regulariser_gradients_added_after_backward_equal_autograd_of_the_full_loss() -> None:
    # The trainer backpropagates L1 + D-SSIM only and adds the opacity/scale regularisers' gradients afterwards
    # (one fused kernel on CUDA). The result must be the gradient of loss_terms, the loss as documented.
    import torch

    from splatworks.splat import trainer

    g = torch.Generator().manual_seed(1)
    n = 50
    pred = torch.rand(1, 12, 10, 3, generator=g)
    gt = torch.rand(1, 12, 10, 3, generator=g)
    opac = torch.randn(n, generator=g)
    scales = torch.randn(n, 3, generator=g) - 3

    def leaves():
        return [t.clone().requires_grad_(True) for t in (pred, opac, scales)]

    p1, o1, s1 = leaves()
    trainer.loss_terms(p1, gt, o1, s1, 0.2, 0.01, 0.05).backward()
    p2, o2, s2 = leaves()
    trainer._LOSS["photometric"](p2, gt, 0.2).backward()
    assert o2.grad is None or not o2.grad.abs().any()
    o2.grad, s2.grad = torch.zeros_like(o2), torch.zeros_like(s2)
    trainer.add_regulariser_grads({"opacities": o2, "scales": s2}, 0.01, 0.05)  # type: ignore[arg-type]
    assert torch.allclose(p1.grad, p2.grad)
    assert torch.allclose(o1.grad, o2.grad, rtol=1e-5, atol=1e-12) and o1.grad.abs().max() > 0
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-5, atol=1e-12) and s1.grad.abs().max() > 0
