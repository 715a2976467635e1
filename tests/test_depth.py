"""Depth supervision (issue 8): file formats round-trip; on tiny synthetic scenes with ground-truth depth, the
held-out depth error (median absolute relative error) drops with sparse SfM depth (workflow A, static trainer
through `splatworks train --depth sparse`) and with distilled static-model depth (workflow B, `splatworks depth
export` then sequential 4D training with --depth distill)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from splatworks.cli import main
from splatworks.depth.files import load_all_depth, load_sparse_depth, write_all_depth
from splatworks.depth.losses import (DepthConfig, SparseDepthLoss, median_abs_rel_error, sparse_depth_loss_for,
                                     termination_loss)
from splatworks.errors import InputError
from splatworks.scene.camera import Scene
from splatworks.sfm.depth import sparse_depth_from_scene_points, write_colmap_depth, write_sparse_depth


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one torch thread per module


def test_all_depth_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    maps = {"cam01": rng.uniform(1, 5, (6, 8)).astype(np.float32), "cam03": rng.uniform(1, 5, (4, 10)).astype(np.float32)}
    maps["cam01"][0, 0] = np.nan  # unknown -> 0
    path = write_all_depth(tmp_path / "all_depth.npy", maps, {"model": "m.ply"})
    arr = np.load(path)
    assert arr.shape == (2, 6, 10) and arr.dtype == np.float32 and arr[1, 4:].max() == 0  # zero-padded
    back = load_all_depth(path)
    assert list(back) == ["cam01", "cam03"] and back["cam03"].shape == (4, 10)
    assert back["cam01"][0, 0] == 0 and np.array_equal(back["cam01"][1:], maps["cam01"][1:])
    assert json.loads(path.with_suffix(".json").read_text())["units"] == "world"
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="re-export"):
        load_all_depth(path)


def _observations(scene: Scene, depth_dir: Path) -> dict:
    """Which GT points each view sees (depth test against the GT depth map), as SfM tracks would say."""
    obs = {}
    for cam in scene.cameras:
        gt = np.load(depth_dir / (Path(cam.name).stem + ".npy"))
        uv, z = cam.project(scene.points)
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (z > 0) & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
        idx = np.flatnonzero(inside)
        seen = idx[np.abs(gt[row[idx], col[idx]] - z[idx]) < 0.02 * z[idx]]
        obs[cam.name] = (seen, uv[seen])
    return obs


@pytest.fixture(scope="module")
def static_scene(tmp_path_factory) -> tuple[Path, Path]:
    """A textured room from 12 views (48x36) with sparse depth files; the scene folder has no SfM points, so
    training starts from random Gaussians and geometry is up to the losses."""
    from splatworks.synthetic import make_static_scene

    root = tmp_path_factory.mktemp("static")
    scene = make_static_scene(root, n_views=12, width=48, height=36, seed=0)
    scene.point_errors = np.random.default_rng(0).uniform(0.2, 1.0, len(scene.points))
    views = sparse_depth_from_scene_points(scene, _observations(scene, root / "depth"))
    folder = root / "scene"
    Scene(cameras=scene.cameras, image_dir=scene.image_dir).save(folder)
    write_sparse_depth(views, folder / "sparse_depth.npz")
    write_colmap_depth(views, folder / "colmap_depth.npy")
    # The same room with (subsampled) SfM-like points, for the static model of workflow B.
    pick = np.random.default_rng(1).choice(len(scene.points), 800, replace=False)
    Scene(cameras=scene.cameras, image_dir=scene.image_dir, points=scene.points[pick],
          point_colors=scene.point_colors[pick]).save(root / "scene_points")
    return folder, root / "depth"


def test_sparse_depth_files_agree(static_scene):
    folder, _ = static_scene
    scene = Scene.load(folder)
    names = [c.name for c in scene.cameras]
    from_npz = load_sparse_depth(folder / "sparse_depth.npz", names)
    from_npy = load_sparse_depth(folder / "colmap_depth.npy", names)  # LLFF order: sorted names
    assert set(from_npz) == set(from_npy) == set(names)
    for n in names:
        assert len(from_npz[n]["depths"]) > 20
        np.testing.assert_allclose(from_npz[n]["depths"], from_npy[n]["depths"])
        np.testing.assert_allclose(from_npz[n]["coords"], from_npy[n]["coords"])
        assert (from_npz[n]["weights"] > 0).all() and (from_npz[n]["weights"] <= 2).all()


def test_sparse_loss_never_sees_held_out_views(static_scene):
    folder, _ = static_scene
    scene = Scene.load(folder).hold_out_every(4)
    loss = sparse_depth_loss_for(scene, folder, DepthConfig(depth="sparse"), iterations=100)
    assert isinstance(loss, SparseDepthLoss) and len(loss.views) == len(scene.train_cameras)
    samples = load_sparse_depth(folder, [c.name for c in scene.cameras])
    assert loss.num_samples == sum(len(samples[c.name]["depths"]) for c in scene.train_cameras)
    assert loss.weight_at(0) == pytest.approx(0.2) and loss.weight_at(100) == pytest.approx(0.02)


def test_sparse_loss_outlier_cut_ignores_wrong_points():
    """--depth-outlier: a sample far from the rendered surface (a wrong match) stops pulling; the others still do."""
    from types import SimpleNamespace

    from splatworks.scene.camera import Camera

    cam = Camera(name="a.png", width=8, height=6, fx=8.0, fy=8.0, cx=4.0, cy=3.0)
    samples = {"a.png": {"coords": np.array([[2.5, 2.5], [5.5, 3.5]], np.float32),
                         "depths": np.array([2.2, 10.0], np.float32), "weights": np.ones(2, np.float32)}}
    depth = torch.full((1, 6, 8, 1), 2.0, requires_grad=True)
    out = SimpleNamespace(depths=depth, colors=torch.zeros(1, 6, 8, 3))
    plain = SparseDepthLoss([cam], samples, 1.0, 1.0, 10)(0, 0, out, None)
    assert plain.item() == pytest.approx((0.2 / 2.2 + 8.0 / 10.0) / 2, rel=1e-5)
    cut = SparseDepthLoss([cam], samples, 1.0, 1.0, 10, outlier=0.5)(0, 0, out, None)
    assert cut.item() == pytest.approx(0.2 / 2.2, rel=1e-5)
    cut.backward()
    assert depth.grad[0, 2, 2, 0] < 0 and depth.grad[0, 3, 5, 0] == 0  # pulled towards 2.2; the outlier: no pull
    assert DepthConfig().depth_outlier == 0.0  # off by default


def _held_out_depth_error(out_dir: Path, folder: Path, depth_dir: Path) -> float:
    from splatworks.depth.export import load_model, render_depths

    scene = Scene.load(folder).hold_out_every(4)
    params, _ = load_model(out_dir)
    maps = render_depths(params, scene.test_cameras, min_alpha=0.0)
    errs = [median_abs_rel_error(maps[c.name], np.load(depth_dir / (Path(c.name).stem + ".npy")))
            for c in scene.test_cameras]
    return float(np.mean(errs))


_TRAIN_ARGS = ["--iterations", "300", "--checkpoint-steps", "300", "--device", "cpu", "--backend", "torch",
               "--sh-degree", "0", "--init-num-random", "400", "--hold-out-every", "4", "--no-eval-lpips",
               "--no-save-splat", "--lr-means", "3e-3", "--lr-means-final", "3e-4", "--log-every", "1000"]
_DEPTH_RUNS = {"none": [],
               "sparse": ["--depth", "sparse", "--depth-weight", "3.0", "--depth-weight-final", "1.0"],
               "termination": ["--depth", "sparse", "--depth-loss", "termination", "--depth-weight", "3.0",
                               "--depth-weight-final", "1.0"]}


@pytest.fixture(scope="module")
def held_out_errors(static_scene, tmp_path_factory):
    """Held-out median abs rel depth error per run of _DEPTH_RUNS, trained once (the baseline serves two tests)."""
    folder, depth_dir = static_scene
    root, errors = tmp_path_factory.mktemp("depth_runs"), {}

    def error(name: str) -> float:
        if name not in errors:
            assert main(["train", str(folder), "-o", str(root / name), *_TRAIN_ARGS, *_DEPTH_RUNS[name]]) == 0
            errors[name] = _held_out_depth_error(root / name, folder, depth_dir)
            print("held-out median abs rel depth error", errors)
        return errors[name]
    return error


def test_sparse_depth_lowers_held_out_depth_error(held_out_errors):
    assert held_out_errors("sparse") < 0.7 * held_out_errors("none")


def test_termination_depth_lowers_held_out_depth_error(held_out_errors):
    """--depth-loss termination (the ray-termination distribution pulled to the SfM depth) through the CLI."""
    assert held_out_errors("termination") < 0.7 * held_out_errors("none")


def _tiny_gaussians(seed: int = 0) -> dict[str, torch.Tensor]:
    """Six overlapping Gaussians at depths 1.5-4 in front of a 12x10 camera at the origin (raw parameters)."""
    g = torch.Generator().manual_seed(seed)
    n = 6
    means = torch.cat([torch.rand(n, 2, generator=g) * 0.4 - 0.2, torch.linspace(1.5, 4.0, n)[:, None]], dim=1)
    return {"means": means, "quats": torch.randn(n, 4, generator=g), "scales": torch.log(torch.full((n, 3), 0.3)),
            "opacities": torch.linspace(-1.0, 1.0, n), "sh0": torch.rand(n, 1, 3, generator=g),
            "shN": torch.zeros(n, 0, 3)}


def test_termination_moments_match_brute_force_sum():
    """The rendered E[z], E[z^2] and the closed-form termination loss equal a per-pixel sum over the Gaussians."""
    from splatworks.splat import reference
    from splatworks.splat.render import render

    params = _tiny_gaussians()
    viewmat, K = torch.eye(4)[None], torch.tensor([[[10.0, 0, 6.0], [0, 10.0, 5.0], [0, 0, 1]]])
    out = render(params, viewmat, K, 12, 10, 0, mode="RGB+D2", backend="torch")
    plain = render(params, viewmat, K, 12, 10, 0, mode="RGB+D", backend="torch")
    torch.testing.assert_close(out.depths, plain.depths)  # the first moment is the same as in "RGB+D"
    proj = reference.project(params["means"], params["quats"], torch.exp(params["scales"]), viewmat, K, 12, 10,
                             opacities=torch.sigmoid(params["opacities"]))
    checked = 0
    for row, col in ((5, 6), (4, 5), (6, 7), (2, 3)):
        px, py = col + 0.5, row + 0.5
        terms = []  # (z, alpha) of the Gaussians drawn at this pixel, near to far
        for k in torch.argsort(proj.depths[0]).tolist():
            if (proj.radii[0, k] == 0).any():
                continue
            a, b, c = proj.conics[0, k].tolist()
            dx, dy = px - float(proj.means2d[0, k, 0]), py - float(proj.means2d[0, k, 1])
            power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = min(0.999, float(torch.sigmoid(params["opacities"][k])) * np.exp(-power))
            if alpha >= 1 / 255:
                terms.append((float(proj.depths[0, k]), alpha))
        trans, w, z = 1.0, [], []
        for zk, ak in terms:
            if trans * (1 - ak) <= 1e-4:
                break
            w.append(trans * ak)
            z.append(zk)
            trans *= 1 - ak
        w, z = np.array(w), np.array(z)
        if len(w) < 2:
            continue
        checked += 1
        assert float(out.alphas[0, row, col, 0]) == pytest.approx(w.sum(), rel=1e-5)
        assert float(out.depths[0, row, col, 0]) == pytest.approx((w * z).sum() / w.sum(), rel=1e-5)
        assert float(out.depths2[0, row, col, 0]) == pytest.approx((w * z * z).sum() / w.sum(), rel=1e-5)
        d = 2.0
        closed = termination_loss(out.depths[0, row, col, 0:1], out.depths2[0, row, col, 0:1], torch.tensor([d]))
        assert float(closed) == pytest.approx((w * (z - d) ** 2).sum() / d ** 2 / w.sum(), rel=1e-4)
    assert checked >= 3  # the pixels really have several Gaussians along them


def test_termination_loss_penalises_a_floater_the_expected_loss_misses():
    """A floater in front and a surface behind with the right mean depth: L1 on E[z] is 0, the termination loss is
    not, and its gradient pushes the floater's weight down; a single surface at d costs nothing in either."""
    from types import SimpleNamespace

    from splatworks.scene.camera import Camera

    cam = Camera(name="a.png", width=4, height=4, fx=4.0, fy=4.0, cx=2.0, cy=2.0)
    samples = {"a.png": {"coords": np.array([[2.0, 2.0]], np.float32), "depths": np.array([2.0], np.float32),
                         "weights": np.ones(1, np.float32)}}

    def loss_for(kind: str, z: list[float], a: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.tensor(a, requires_grad=True)
        zt = torch.tensor(z)
        mean, mean_sq = (w * zt).sum() / w.sum(), (w * zt * zt).sum() / w.sum()
        out = SimpleNamespace(colors=torch.zeros(1, 4, 4, 3), depths=mean.expand(1, 4, 4, 1),
                              depths2=mean_sq.expand(1, 4, 4, 1))
        loss = SparseDepthLoss([cam], samples, 1.0, 1.0, 10, kind=kind)(0, 0, out, None)
        loss.backward()
        return loss.detach(), w.grad

    floater = ([1.0, 2.0, 3.0], [0.3, 0.4, 0.3])  # floater at 1, surface at d = 2, more behind at 3: E[z] = 2 = d
    assert float(loss_for("expected", *floater)[0]) == pytest.approx(0.0, abs=1e-6)
    loss, grad = loss_for("termination", *floater)
    assert float(loss) == pytest.approx(0.15, rel=1e-5)  # (0.3 * 1 + 0.3 * 1) / 2^2 / 1.0
    assert float(loss_for("termination", [2.0], [0.7])[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_for("both", *floater)[0]) == pytest.approx(0.15, rel=1e-5)
    assert grad[0] > 0 and grad[2] > 0 and grad[1] < 0  # off-target weights pay; weight at d is rewarded
    with pytest.raises(Exception, match="depth-loss"):
        SparseDepthLoss([cam], samples, 1.0, 1.0, 10, kind="median")


def test_distilled_static_depth_lowers_dynamic_depth_error(static_scene, tmp_path):
    """Workflow B: a static model of the room (a walk-around capture in the rig's world frame), its depth exported
    for the rig's training cameras, then distilled on static pixels during sequential training."""
    from splatworks.depth.export import render_depths
    from splatworks.dynamic import sequential as seq
    from splatworks.dynamic.dataset import DynamicDataset
    from tiny_rig import make_tiny_dataset

    folder, _ = static_scene
    static_out = tmp_path / "static_model"
    assert main(["train", str(folder.parent / "scene_points"), "-o", str(static_out), "--iterations", "60",
                 "--checkpoint-steps", "60", "--device", "cpu", "--backend", "torch", "--sh-degree", "0",
                 "--hold-out-every", "0", "--no-eval-lpips", "--no-save-splat", "--log-every", "1000"]) == 0
    ds = make_tiny_dataset(tmp_path / "rig", n_frames=2, width=48, height=36, n_points=300)
    ds.rig.points = np.zeros((0, 3))  # random start: geometry comes from the losses
    ds.save()
    ds = DynamicDataset.load(ds.root)
    all_depth = tmp_path / "rig" / "all_depth.npy"
    assert main(["depth", "export", str(static_out), str(ds.root), "-o", str(all_depth), "--device", "cpu"]) == 0
    maps = load_all_depth(all_depth)
    print("static-model depth coverage", json.loads(all_depth.with_suffix(".json").read_text())["coverage"])
    assert list(maps) == ds.train_camera_names  # never the held-out camera
    errors = {}
    for name, kw in (("none", {}), ("distill", {"depth": "distill", "depth_file": str(all_depth),
                                                 "depth_weight": 2.0})):
        cfg = seq.preset("tiny", iterations_first_frame=100, iterations_per_frame=20, early_stop=False,
                         converged_loss_ratio=0.0, device="cpu", backend="torch", **kw)
        seq.train_sequence(ds, tmp_path / name, cfg)
        params, _, _ = seq.load_frame_gaussians(tmp_path / name, ds.frames[-1])
        cam = ds.rig.camera(ds.test_cameras[0])
        pred = render_depths(params, [cam], min_alpha=0.0)[cam.name]
        truth = np.load(ds.root / "depth_gt" / cam.name / f"{ds.frames[-1]:06d}.npy")
        static = seq.load_static_mask(ds.mask_path(cam.name, ds.frames[-1]), truth.shape)
        errors[name] = median_abs_rel_error(pred, truth, static)
    print("held-out static-pixel median abs rel depth error", errors)
    assert errors["distill"] < 0.7 * errors["none"]


@pytest.mark.gpu
def test_termination_moments_gsplat_match_torch_reference():
    """render(mode="RGB+D2") on gsplat (5 feature channels, sh_degree=None) equals the torch reference: E[z], E[z^2]
    and the gradients of a loss that reads them (tolerances as in test_splat_parity)."""
    import math

    from test_splat_parity import look_at, random_scene

    from splatworks.splat.render import render

    dev, w, h = "cuda", 96, 72
    f = 0.5 * w / math.tan(math.radians(25))
    Ks = torch.tensor([[[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]], device=dev)
    viewmats = look_at([0.5, -0.3, -3.5])[None].to(dev)
    results = {}
    for backend in ("gsplat", "torch"):
        params = random_scene(1500, seed=1, device=dev)
        out = render(params, viewmats, Ks, w, h, 2, torch.ones(3, device=dev), mode="RGB+D2", backend=backend)
        d = torch.full_like(out.depths, 3.5)
        loss = out.colors.sum() + (termination_loss(out.depths, out.depths2, d) * out.alphas).sum()
        loss.backward()
        results[backend] = (out, {k: v.grad.clone() for k, v in params.items()})
    (g, grads_g), (t, grads_t) = results["gsplat"], results["torch"]
    mask = (g.alphas > 0.5) & (t.alphas > 0.5)
    assert mask.float().mean() > 0.2
    assert (g.colors - t.colors).abs().mean() <= 2e-5
    assert (g.depths - t.depths).abs()[mask].mean() <= 1e-3
    assert (g.depths2 - t.depths2).abs()[mask].mean() <= 1e-2
    for k in grads_g:
        assert float((grads_t[k] - grads_g[k]).norm() / grads_g[k].norm().clamp_min(1e-12)) <= 1e-2, k


def test_depth_radius_spreads_a_sample_to_opaque_neighbours():
    """--depth-radius 1: the sample pulls the 3x3 pixels around it, except where the render is transparent."""
    from types import SimpleNamespace

    from splatworks.scene.camera import Camera

    cam = Camera(name="a.png", width=8, height=6, fx=8.0, fy=8.0, cx=4.0, cy=3.0)
    samples = {"a.png": {"coords": np.array([[3.5, 2.5]], np.float32), "depths": np.array([2.5], np.float32),
                         "weights": np.ones(1, np.float32)}}
    alphas = torch.ones(1, 6, 8, 1)
    alphas[0, :, 4] = 0.0  # column 4 (right of the sample) shows the background
    for kind in ("expected", "termination"):
        depth = torch.full((1, 6, 8, 1), 2.0, requires_grad=True)
        out = SimpleNamespace(depths=depth, depths2=depth * depth, colors=torch.zeros(1, 6, 8, 3), alphas=alphas)
        SparseDepthLoss([cam], samples, 1.0, 1.0, 10, kind=kind, radius=1)(0, 0, out, None).backward()
        pulled = depth.grad[0, ..., 0] < 0
        assert pulled[1:4, 2:4].all() and pulled.sum() == 6, kind  # 3x3 around (row 2, col 3) less column 4
        depth.grad = None
        out.depths2 = depth * depth
        SparseDepthLoss([cam], samples, 1.0, 1.0, 10, kind=kind)(0, 0, out, None).backward()
        assert (depth.grad[0, ..., 0] < 0).sum() == 1 and depth.grad[0, 2, 3, 0] < 0, kind


def test_distillation_on_a_cropped_render_reads_the_same_window_of_the_map():
    """A cropped render (sequential 4D's crop_to_dynamic) is compared with the same window of the static depth."""
    from splatworks.depth.losses import DepthDistillation

    g = torch.Generator().manual_seed(0)
    target = torch.rand(20, 30, generator=g) + 1.0
    target[:3] = 0.0                                     # unknown rows
    rendered = torch.rand(20, 30, generator=g) + 1.0
    static = torch.rand(20, 30, generator=g) > 0.3
    d = DepthDistillation([target], weight=1.0)
    win = (slice(2, 12), slice(5, 25))
    crop = d.loss(rendered[win], 0, static[win], win)
    ok = (target[win] > 0) & static[win]
    expected = ((rendered[win][ok] - target[win][ok]).abs() / target[win][ok]).mean()
    torch.testing.assert_close(crop, expected)
    assert not torch.isclose(crop, d.loss(rendered, 0, static))   # the whole view differs: the window matters
