"""Sequential 4D Gaussians (issue 7) on a tiny synthetic rig: static constraint, following motion, pruning,
gradient clipping, fixed-camera video, 4D export, temporal metrics.

Budget: one tiny rig (5 cameras, 64x48, 3 frames, 300 Gaussians) and three short runs that share it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from splatworks.dynamic import sequential as seq
from splatworks.dynamic.dataset import DynamicDataset
from tiny_rig import make_tiny_dataset

FRAMES = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> DynamicDataset:
    return make_tiny_dataset(tmp_path_factory.mktemp("rig"), n_frames=FRAMES, timeline=24)


def tiny(**kw) -> seq.SequentialConfig:
    base = dict(iterations_first_frame=100, iterations_per_frame=30, early_stop=False, converged_loss_ratio=0.0,
                device="cpu", backend="torch")
    return seq.preset("tiny", **{**base, **kw})


@pytest.fixture(scope="module")
def frame0_free(rig, tmp_path_factory) -> Path:
    """Frame 0 trained without a frozen layer (every Gaussian may move later)."""
    out = tmp_path_factory.mktemp("f0free")
    seq.train_sequence(rig, out, tiny(freeze_static=False, max_frames=1))
    return out


def _continue(frame0: Path, dest: Path, rig, cfg, progress=None) -> list[dict]:
    shutil.copytree(frame0, dest)
    return seq.train_sequence(rig, dest, cfg, progress=progress, resume=True)


CONSTRAINED_EVENTS: list = []


@pytest.fixture(scope="module")
def run_constrained(rig, frame0_free, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c") / "run"
    # Every Gaussian free to move (no frozen layer, no per-frame active set): the constraint alone holds the background.
    # frame_params 'all': on this 400-splat rig frame 0 puts 0-2 splats on each moving object, so only appearance
    # changes can show it following them (the motion-only default is tested on a blob below).
    _continue(frame0_free, out, rig, tiny(freeze_static=False, active_set="all", frame_params="all"),
              progress=CONSTRAINED_EVENTS.append)
    return out


def test_resumed_run_reports_each_finished_frame_once_in_order(rig, run_constrained):
    """Frame 0 came from a previous run; the resumed run reports frames 2..n of n, one event each."""
    steps = [(e.step, e.total) for e in CONSTRAINED_EVENTS if e.stage == "dynamic.train"]
    n = len(rig.frames)
    assert steps == [(k, n) for k in range(2, n + 1)]


@pytest.fixture(scope="module")
def run_free(rig, frame0_free, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("f") / "run"
    _continue(frame0_free, out, rig, tiny(freeze_static=False, active_set="all", frame_params="all",
                                          static_loss_weight=0.0))
    return out


@pytest.fixture(scope="module")
def run_frozen(rig, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frozen")
    # The defaults' speed path: frozen layer, per-frame active set, cropped views (60 steps: the active set moves
    # fewer splats per frame than 'all', so it needs a few more steps on this tiny budget; appearance free as above).
    seq.train_sequence(rig, out, tiny(iterations_per_frame=60, frame_params="all"))
    return out


@pytest.fixture(scope="module")
def run_frozen_all(rig, tmp_path_factory) -> Path:
    """run_frozen with freeze_frames 'all': every row that some frame's masks call dynamic stays trainable, so the
    per-frame active set is a strict subset of them on this rig."""
    out = tmp_path_factory.mktemp("frozen_all")
    seq.train_sequence(rig, out, tiny(iterations_per_frame=60, frame_params="all", freeze_frames="all"))
    return out


def _background_rows(rig, params) -> torch.Tensor:
    """Gaussians whose centres land on static pixels in every training view at every frame (GT masks)."""
    views = seq.load_frame(rig, rig.frames[0], rig.train_camera_names, torch.device("cpu"))
    union = seq.dynamic_union_masks(rig, rig.train_camera_names, rig.frames, dilation=2)
    return seq.frozen_rows(params["means"], views, union)


def test_static_constraint_keeps_background_still(rig, run_constrained, run_free):
    first, ids0, _ = seq.load_frame_gaussians(run_constrained, 0)
    background = _background_rows(rig, first)
    assert background.sum() > 50
    moved = {}
    for name, run in (("constrained", run_constrained), ("free", run_free)):
        last, ids, _ = seq.load_frame_gaussians(run, rig.frames[-1])
        assert torch.equal(ids, ids0)  # nothing pruned in this tiny scene: rows line up
        moved[name] = float(torch.linalg.vector_norm(last["means"] - first["means"], dim=-1)[background].mean())
    print("mean background displacement", moved)
    assert moved["free"] > 0
    assert moved["constrained"] < 0.5 * moved["free"]
    lines = seq.read_metrics(run_constrained)
    assert [l["frame"] for l in lines] == rig.frames
    assert all(l["iterations"] == 30 for l in lines[1:])


def _dynamic_psnr(params, views: seq.FrameViews, cfg) -> float:
    err, n = 0.0, 0
    for c in range(len(views.names)):
        rgb, _ = seq.render_view(params, views.viewmats[c], views.Ks[c], views.sizes[c], cfg.sh_degree,
                                 torch.zeros(3), "torch")
        dyn = ~views.static[c]
        err += float(((rgb.clamp(0, 1) - views.images[c]) ** 2)[dyn].sum())
        n += int(dyn.sum()) * 3
    return -10 * np.log10(err / n)


@torch.no_grad()
def test_moving_objects_are_followed(rig, run_constrained):
    cfg = seq.load_config(run_constrained)
    stale, _, _ = seq.load_frame_gaussians(run_constrained, rig.frames[0])
    scores = []
    for f in rig.frames:
        views = seq.load_frame(rig, f, rig.train_camera_names, torch.device("cpu"))
        trained, _, _ = seq.load_frame_gaussians(run_constrained, f)
        scores.append((_dynamic_psnr(trained, views, cfg), _dynamic_psnr(stale, views, cfg)))
    print("dynamic-region PSNR (trained, frame-0 model):", scores)
    last_trained, last_stale = scores[-1]
    assert last_trained > last_stale + 0.5          # the objects moved and the Gaussians went with them
    assert last_trained > scores[0][0] - 1.5        # error on the moving region stays low across frames


@torch.no_grad()
def test_dynamic_crop_renders_the_same_pixels_as_the_full_view(rig, run_frozen):
    """crop_to_dynamic renders a window of the view: the same pixels as the full render there, covering every
    dynamic pixel; a view with nothing moving gets no window (the full view). Compared on the Gaussians centred
    in the window: EWA's Jacobian is clamped to 1.3x the frustum, so a splat centred far outside a small window
    is shaped a little differently there than in the whole view."""
    params, _, _ = seq.load_frame_gaussians(run_frozen, rig.frames[1])
    views = seq.load_frame(rig, rig.frames[1], rig.train_camera_names, torch.device("cpu"))
    crops = seq.dynamic_crops(views.static, margin=3)
    checked = 0
    for c, crop in enumerate(crops):
        if crop is None:
            assert bool(views.static[c].all())
            continue
        dyn = ~views.static[c]
        rows, cols = torch.nonzero(dyn, as_tuple=True)
        assert crop.x0 <= int(cols.min()) and int(cols.max()) < crop.x1
        assert crop.y0 <= int(rows.min()) and int(rows.max()) < crop.y1
        assert crop.size[0] * crop.size[1] < dyn.numel()   # smaller than the view on this rig
        K, size, target, static = seq.crop_view(views, c, crop)
        col, row, inside = seq.project_centres(params["means"], views.viewmats[c], K, *size)
        centred = {k: v[inside] for k, v in params.items()}
        assert 0 < int(inside.sum()) < len(inside)
        full, _ = seq.render_view(centred, views.viewmats[c], views.Ks[c], views.sizes[c], 0, torch.zeros(3), "torch")
        part, _ = seq.render_view(centred, views.viewmats[c], K, size, 0, torch.zeros(3), "torch")
        torch.testing.assert_close(part, full[crop.y0:crop.y1, crop.x0:crop.x1], atol=2e-5, rtol=0)
        assert torch.equal(target, views.images[c][crop.y0:crop.y1, crop.x0:crop.x1])
        assert torch.equal(static, views.static[c][crop.y0:crop.y1, crop.x0:crop.x1])
        checked += 1
    assert checked >= 2


def test_frozen_cropped_run_follows_moving_objects_and_keeps_the_static_layer(rig, run_frozen):
    """The default speed path (frozen static layer, cropped views) still tracks the moving objects."""
    cfg = seq.load_config(run_frozen)
    assert cfg.freeze_static and cfg.crop_to_dynamic
    first, ids0, is_static0 = seq.load_frame_gaussians(run_frozen, rig.frames[0])
    last, ids, is_static = seq.load_frame_gaussians(run_frozen, rig.frames[-1])
    keep = torch.isin(ids0, ids[is_static])
    assert int(keep.sum()) > 0
    torch.testing.assert_close(last["means"][is_static], first["means"][keep], atol=0, rtol=0)  # frozen: bit-equal
    views = seq.load_frame(rig, rig.frames[-1], rig.train_camera_names, torch.device("cpu"))
    with torch.no_grad():
        trained, stale = _dynamic_psnr(last, views, cfg), _dynamic_psnr(first, views, cfg)
    print("frozen+cropped dynamic-region PSNR (trained, frame-0 model):", trained, stale)
    assert trained > stale + 0.5


def test_freezing_by_frame_0_keeps_the_later_path_still_and_still_follows(rig, run_frozen, run_frozen_all):
    """freeze_frames 'first' (the default): frame 0's masks alone decide the static layer, so it holds every row that
    'all' freezes plus the background along the objects' later path (bit-identical at every frame), and the moving
    objects are still followed by their own rows."""
    cfg = seq.load_config(run_frozen)
    assert cfg.freeze_frames == "first"
    first0, ids0, static_first = seq.load_frame_gaussians(run_frozen, rig.frames[0])
    all0, ids_all, static_all = seq.load_frame_gaussians(run_frozen_all, rig.frames[0])
    assert torch.equal(ids0, ids_all) and torch.equal(first0["means"], all0["means"])   # the same frame 0
    views = seq.load_frame(rig, rig.frames[0], rig.train_camera_names, torch.device("cpu"))
    expected = seq.frozen_rows_by_vote(first0["means"], views, rig, rig.frames[:1], cfg.freeze_dilation,
                                       cfg.freeze_quorum)
    assert torch.equal(static_first, expected)
    path_rows = static_first & ~static_all                 # background the objects cross after frame 0
    print("frozen rows: all", int(static_all.sum()), "first", int(static_first.sum()), "path", int(path_rows.sum()))
    assert not bool((static_all & ~static_first).any()) and int(path_rows.sum()) > 0
    last, ids_last, _ = seq.load_frame_gaussians(run_frozen, rig.frames[-1])
    assert torch.equal(ids_last, ids0)
    for key in seq.PARAM_KEYS:
        assert torch.equal(last[key][path_rows], first0[key][path_rows])
    views = seq.load_frame(rig, rig.frames[-1], rig.train_camera_names, torch.device("cpu"))
    with torch.no_grad():
        trained, stale = _dynamic_psnr(last, views, cfg), _dynamic_psnr(first0, views, cfg)
    print("dynamic-region PSNR (trained, frame-0 model):", trained, stale)
    assert trained > stale + 0.3                            # measured 15.96 against 15.38 dB


def test_active_set_optimises_only_what_moves_now_and_keeps_the_rest_bit_identical(rig, run_frozen_all):
    """active_set 'frame': at frame t only the Gaussians that the masks call dynamic at t-1 or t change; every other
    non-frozen row keeps frame t-1's values exactly (no background flicker, small export deltas). On the run that
    keeps the objects' whole path trainable (freeze_frames 'all'), where the active set is a strict subset."""
    run_frozen = run_frozen_all
    cfg = seq.load_config(run_frozen)
    assert cfg.active_set == "frame"
    lines = seq.read_metrics(run_frozen)
    for k in range(1, len(rig.frames)):
        prev, ids_p, st_p = seq.load_frame_gaussians(run_frozen, rig.frames[k - 1])
        cur, ids_c, st_c = seq.load_frame_gaussians(run_frozen, rig.frames[k])
        assert torch.equal(ids_p, ids_c)
        views = seq.load_frame(rig, rig.frames[k], rig.train_camera_names, torch.device("cpu"))
        moving = ~seq.frozen_rows_by_vote(prev["means"], views, rig, [rig.frames[k - 1], rig.frames[k]],
                                          cfg.freeze_dilation, cfg.freeze_quorum) & ~st_p
        changed = torch.zeros(len(ids_c), dtype=torch.bool)
        for key in seq.PARAM_KEYS:
            changed |= (cur[key] != prev[key]).reshape(len(ids_c), -1).any(dim=1)
        assert not bool((changed & ~moving).any())          # nothing outside the active set moved, bit for bit
        assert int(changed.sum()) == lines[k]["n_active"] == int(moving.sum())
        assert 0 < lines[k]["n_active"] < lines[k]["n_dynamic"]


def test_motion_frames_follow_a_moving_blob_and_keep_its_appearance(rig):
    """frame_params 'motion+opacity' (the default): a blob of splats rendered one step further along in every
    training view is followed by moving the splats, not by repainting them or fading them out."""
    cfg = tiny(iterations_per_frame=150)
    assert cfg.frame_params == "motion+opacity"
    g = torch.Generator().manual_seed(3)
    from splatworks.synthetic.scenes import moving_objects

    centre = torch.tensor(moving_objects(0, 0, 24)[1].center, dtype=torch.float32)   # where the rig films the box
    n = 80
    blob = {"means": centre + 0.15 * torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
            "scales": torch.full((n, 3), float(np.log(0.06))), "opacities": torch.full((n,), 2.0),
            "sh0": torch.rand(n, 1, 3, generator=g) * 2 - 1, "shN": torch.zeros(n, 0, 3)}
    shift = torch.tensor([0.12, -0.05, 0.04])
    views = seq.load_frame(rig, rig.frames[0], rig.train_camera_names, torch.device("cpu"))
    moved = {**blob, "means": blob["means"] + shift}
    with torch.no_grad():
        views.images = [seq.render_view(moved, views.viewmats[c], views.Ks[c], views.sizes[c], 0, torch.zeros(3),
                                        "torch")[0] for c in range(len(views.names))]
    views.static = [torch.zeros_like(st) for st in views.static]          # everything moves: no constraint here
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in blob.items()})
    seq.optimize_frame(params, views, cfg, iterations=150, radius=rig.rig.camera_extent()[1], lr_means=cfg.lr_means,
                       background=torch.zeros(3), rng=np.random.default_rng(0), anchor=blob["means"].clone(),
                       param_keys=seq.FRAME_PARAM_KEYS[cfg.frame_params])
    step = (params["means"].detach() - blob["means"]).mean(dim=0)
    print("blob moved", step.tolist(), "truth", shift.tolist())
    assert float(torch.nn.functional.cosine_similarity(step, shift, dim=0)) > 0.9
    assert 0.5 < float(step.norm() / shift.norm()) < 1.5
    for key in ("scales", "sh0"):
        assert torch.equal(params[key].detach(), blob[key])                 # appearance untouched, bit for bit
    opacity = torch.sigmoid(params["opacities"].detach()).mean() / torch.sigmoid(blob["opacities"]).mean()
    assert float(opacity) > 0.8                                            # followed, not faded


def test_anchor_previous_holds_a_followed_splat_where_first_drags_it_back(rig):
    """The static constraint's anchor (default 'previous'): a blob that followed its object to B by frame t-1 and now
    lands on static pixels that show it exactly (a mask that misses part of a person) stays at B; anchored to its
    frame-0 centre A it is dragged off B toward A, against the images (basketball: people not followed)."""
    cfg = tiny(iterations_per_frame=100)
    assert cfg.anchor == "previous"
    from splatworks.synthetic.scenes import moving_objects

    g = torch.Generator().manual_seed(4)
    centre = torch.tensor(moving_objects(0, 0, 24)[1].center, dtype=torch.float32)
    n = 40
    blob = {"means": centre + 0.1 * torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
            "scales": torch.full((n, 3), float(np.log(0.06))), "opacities": torch.full((n,), 2.0),
            "sh0": torch.rand(n, 1, 3, generator=g) * 2 - 1, "shN": torch.zeros(n, 0, 3)}
    travelled = torch.tensor([0.6, -0.25, 0.2])                  # from A (frame 0) to B (frame t-1)
    views = seq.load_frame(rig, rig.frames[0], rig.train_camera_names, torch.device("cpu"))
    with torch.no_grad():
        views.images = [seq.render_view(blob, views.viewmats[c], views.Ks[c], views.sizes[c], 0, torch.zeros(3),
                                        "torch")[0] for c in range(len(views.names))]
    views.static = [torch.ones_like(st) for st in views.static]
    moved = {}
    for name, anchor in (("previous", blob["means"].clone()), ("first", blob["means"] - travelled)):
        params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in blob.items()})
        seq.optimize_frame(params, views, cfg, iterations=100, radius=rig.rig.camera_extent()[1],
                           lr_means=cfg.lr_means, background=torch.zeros(3), rng=np.random.default_rng(0),
                           anchor=anchor, param_keys=seq.FRAME_PARAM_KEYS[cfg.frame_params])
        moved[name] = params["means"].detach() - blob["means"]
    back = {k: float((-d @ (travelled / travelled.norm())).mean()) for k, d in moved.items()}
    print("mean displacement back toward frame 0:", back)
    assert float(moved["previous"].norm(dim=1).max()) < 0.01        # at its anchor and fitting the images: held
    assert back["first"] > 0.1                      # dragged back by the far anchor (measured 0.39 of 0.68)


def test_motion_and_opacity_frames_fade_a_ghost(rig):
    """frame_params 'motion+opacity': a blob whose object has left (every training view shows the empty background)
    fades out instead of staying behind as a ghost; its colour and size stay frame 0's, bit for bit."""
    cfg = tiny(frame_params="motion+opacity")
    g = torch.Generator().manual_seed(4)
    from splatworks.synthetic.scenes import moving_objects

    centre = torch.tensor(moving_objects(0, 0, 24)[1].center, dtype=torch.float32)
    n = 60
    blob = {"means": centre + 0.1 * torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
            "scales": torch.full((n, 3), float(np.log(0.06))), "opacities": torch.full((n,), 2.0),
            "sh0": torch.full((n, 1, 3), 1.5), "shN": torch.zeros(n, 0, 3)}
    views = seq.load_frame(rig, rig.frames[0], rig.train_camera_names, torch.device("cpu"))
    views.images = [torch.zeros_like(im) for im in views.images]            # the object is gone
    views.static = [torch.zeros_like(st) for st in views.static]
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in blob.items()})
    seq.optimize_frame(params, views, cfg, iterations=150, radius=rig.rig.camera_extent()[1], lr_means=cfg.lr_means,
                       background=torch.zeros(3), rng=np.random.default_rng(0),
                       param_keys=seq.FRAME_PARAM_KEYS[cfg.frame_params])
    before, after = torch.sigmoid(blob["opacities"]).mean(), torch.sigmoid(params["opacities"].detach()).mean()
    print("ghost opacity", float(before), "->", float(after))
    assert float(after) < 0.5 * float(before)
    for key in ("scales", "sh0"):
        assert torch.equal(params[key].detach(), blob[key])


def test_footprint_windows_hold_every_optimised_splat():
    """A cropped window must hold the whole footprint (3 sigma) of every splat being optimised, so none can grow
    where the loss does not look; a splat reaching the camera plane takes the whole view."""
    K = torch.tensor([[50.0, 0.0, 40.0], [0.0, 50.0, 30.0], [0.0, 0.0, 1.0]])
    views = seq.FrameViews(names=["c"], viewmats=torch.eye(4)[None], Ks=K[None], sizes=[(80, 60)],
                           images=[torch.zeros(60, 80, 3)], static=[torch.ones(60, 80, dtype=torch.bool)])
    means = torch.tensor([[0.0, 0.0, 5.0], [0.5, 0.2, 4.0]])
    log_scales = torch.log(torch.tensor([[0.1, 0.05, 0.05], [0.02, 0.02, 0.02]]))
    (box,) = seq.footprint_boxes(means, log_scales, views)
    u, v = 50 * means[:, 0] / means[:, 2] + 40, 50 * means[:, 1] / means[:, 2] + 30
    r = 3 * 50 * torch.tensor([0.1, 0.02]) / means[:, 2]           # 3 sigma of the largest axis, in pixels
    assert box.x0 <= float((u - r).min()) and box.x1 >= float((u + r).max())
    assert box.y0 <= float((v - r).min()) and box.y1 >= float((v + r).max())
    assert box.size[0] < 80 and box.size[1] < 60                  # a real crop here
    (whole,) = seq.footprint_boxes(torch.tensor([[0.0, 0.0, 0.1]]), torch.log(torch.tensor([[0.2, 0.2, 0.2]])), views)
    assert (whole.x0, whole.y0, whole.x1, whole.y1) == (0, 0, 80, 60)
    (none,) = seq.footprint_boxes(torch.tensor([[0.0, 0.0, -5.0]]), torch.log(torch.tensor([[0.1, 0.1, 0.1]])), views)
    assert none is None                                            # behind the camera: not in this view
    grown = seq.union_boxes([seq.ViewCrop(10, 10, 20, 20)], [box], [(80, 60)], margin=2)[0]
    assert grown.x0 == max(0, min(10, box.x0) - 2) and grown.x1 == min(80, max(20, box.x1) + 2)


def test_views_per_step_batches_cropped_views_and_still_follows(rig, tmp_path):
    """Several cropped views in one rasterizer call per step: same-size windows inside each view, and the
    moving objects are still followed; iterations keep counting views."""
    views = seq.load_frame(rig, rig.frames[1], rig.train_camera_names, torch.device("cpu"))
    crops = seq.dynamic_crops(views.static, margin=3)
    wins = seq.same_size_windows(crops, views.sizes)
    assert len({w.size for w in wins}) == 1
    for crop, win, (w, h) in zip(crops, wins, views.sizes):
        assert 0 <= win.x0 and win.x1 <= w and 0 <= win.y0 and win.y1 <= h
        if crop is not None:  # the window holds the crop
            assert win.x0 <= crop.x0 and crop.x1 <= win.x1 and win.y0 <= crop.y0 and crop.y1 <= win.y1
    out = tmp_path / "run"
    seq.train_sequence(rig, out, tiny(views_per_step=3, iterations_per_frame=90, frame_params="all"))  # 30 steps
    lines = seq.read_metrics(out)
    assert all(l["iterations"] == 90 for l in lines[1:])
    first, _, _ = seq.load_frame_gaussians(out, rig.frames[0])
    last, _, _ = seq.load_frame_gaussians(out, rig.frames[-1])
    views = seq.load_frame(rig, rig.frames[-1], rig.train_camera_names, torch.device("cpu"))
    cfg = seq.load_config(out)
    with torch.no_grad():
        trained, stale = _dynamic_psnr(last, views, cfg), _dynamic_psnr(first, views, cfg)
    print("views_per_step=3 dynamic-region PSNR (trained, frame-0 model):", trained, stale)
    assert trained > stale + 0.3                            # measured 15.84 against 15.38 dB


def test_pruning_fires_on_planted_outliers(rig, frame0_free, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(frame0_free, out)
    path = seq.frame_file(out, rig.frames[0])
    rows = torch.load(path)
    centre, radius = rig.rig.camera_extent()
    n = len(rows["ids"])
    planted = {"large": [n, n + 1, n + 2], "far": [n + 3, n + 4]}
    extra = {k: v[:5].clone() for k, v in rows.items() if k != "frame"}
    extra["ids"] = torch.arange(n, n + 5)
    extra["scales"][:3] = float(np.log(3.0 * radius))                       # 3 radii > 2.0
    extra["means"][3:] = torch.tensor(centre, dtype=torch.float32) + torch.tensor([25.0 * radius, 0, 0])
    rows = {k: (torch.cat([v, extra[k]]) if k != "frame" else v) for k, v in rows.items()}
    torch.save(rows, path)
    with caplog.at_level("INFO", logger="splatworks.dynamic.sequential"):
        lines = seq.train_sequence(rig, out, tiny(freeze_static=False, max_frames=2, iterations_per_frame=3))
    assert lines[0]["pruned_too_large"] >= 3 and lines[0]["pruned_too_far"] >= 2
    assert "pruned" in caplog.text
    _, ids, _ = seq.load_frame_gaussians(out, rig.frames[1])
    assert not set(planted["large"] + planted["far"]) & set(ids.tolist())
    assert len(ids) >= n - 5  # the real Gaussians survive


def test_prune_rules_are_relative_to_scene_radius():
    params = {"means": torch.tensor([[0.0, 0, 0], [15.0, 0, 0], [0, 0, 0]]),
              "scales": torch.log(torch.tensor([[0.1] * 3, [0.1] * 3, [1.5] * 3]))}
    centre = torch.zeros(3)
    r1 = seq.prune_mask(params, centre, 1.0, 2.0, 20.0)
    assert r1.keep.tolist() == [True, True, True]
    # The same scene in half the units: a radius of 0.5 makes 15 > 20 * 0.5 and 1.5 > 2.0 * 0.5.
    r2 = seq.prune_mask(params, centre, 0.5, 2.0, 20.0)
    assert r2.keep.tolist() == [True, False, False] and (r2.too_large, r2.too_far) == (1, 1)


def test_gradient_clipping_bounds_the_update(rig):
    views = seq.load_frame(rig, rig.frames[1], rig.train_camera_names[:2], torch.device("cpu"))
    seen: list[float] = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        results = {}
        for clip in (1.0, 0.0):
            params = seq._init_first_frame(rig, rig.frames[0], tiny(), torch.device("cpu"))
            # A planted spike: an anchor far from every centre under a huge constraint weight.
            anchor = params["means"].detach() + 5.0
            seen.clear()
            cfg = tiny(static_loss_weight=1e4, grad_clip_norm=clip, grad_clip_mode="global")
            stats = seq.optimize_frame(params, replace(views, static=[torch.ones_like(s) for s in views.static]),
                                       cfg, iterations=3, radius=1.0, lr_means=1e-3, background=torch.zeros(3),
                                       rng=np.random.default_rng(0), anchor=anchor)
            results[clip] = (max(seen), stats)
    finally:
        handle.remove()
    clipped_norm, stats = results[1.0]
    assert stats.grad_norm_max > 1e3              # the spike was real ...
    assert clipped_norm <= 1.0 + 1e-4             # ... and the optimiser never saw more than the clip norm
    assert stats.clipped_steps == 3
    assert results[0.0][0] > 1e3                  # without clipping it would have


def test_per_gaussian_clipping_bounds_each_gaussian_and_spares_the_others():
    """One exploding Gaussian is clipped to the norm; the others keep their gradients exactly (a global factor
    would have shrunk them all)."""
    torch.manual_seed(0)
    params = {"means": torch.randn(6, 3), "scales": torch.randn(6, 3), "opacities": torch.randn(6)}
    grads = {k: torch.randn_like(v) * 0.01 for k, v in params.items()}
    grads["means"][2] = torch.tensor([3e4, -2e4, 1e4])          # the spike
    for k, v in params.items():
        v.grad = grads[k].clone()
    before = seq.clip_gradients(params, 1.0, per_gaussian=True)
    rows = torch.sqrt(sum(v.grad.reshape(6, -1).pow(2).sum(1) for v in params.values()))
    assert float(before) > 1e4
    assert torch.all(rows <= 1.0 + 1e-5) and abs(float(rows[2]) - 1.0) < 1e-5
    for k, v in params.items():
        keep = torch.arange(6) != 2
        assert torch.equal(v.grad[keep], grads[k][keep])
    # the global mode scales everyone by one factor
    for k, v in params.items():
        v.grad = grads[k].clone()
    seq.clip_gradients(params, 1.0, per_gaussian=False)
    assert float(params["scales"].grad.abs().max()) < 1e-5


def _dynamic_alpha(reader, frame, cam) -> torch.Tensor:
    from splatworks.splat.render import render

    dyn = torch.load(seq.frame_file(reader.dir, frame))
    vm = torch.tensor(cam.world_to_camera, dtype=torch.float32)[None]
    K = torch.tensor(cam.K, dtype=torch.float32)[None]
    out = render({k: dyn[k] for k in seq.PARAM_KEYS}, vm, K, cam.width, cam.height, 0, backend="torch")
    return out.alphas[0, ..., 0]


@torch.no_grad()
def test_fixed_camera_video_is_identical_where_nothing_moves(rig, run_frozen, tmp_path):
    from splatworks.dynamic.render import SequenceReader, read_video, render_frames, render_video

    cam = rig.rig.camera(rig.train_camera_names[0])
    frames = np.stack(list(render_frames(run_frozen, cam, rig.frames, device="cpu")))
    reader = SequenceReader(run_frozen)
    assert reader.static is not None and len(reader.static["ids"]) > 0
    touched = torch.stack([_dynamic_alpha(reader, f, cam) for f in rig.frames]).amax(0) > 1e-6
    still = ~touched.numpy()
    assert still.mean() > 0.3, "the test needs a good share of pixels no moving Gaussian reaches"
    diff = np.abs(frames - frames[:1]).max(axis=(0, 3))
    assert diff[still].max() == 0.0                 # bit-identical: no jitter where nothing moves
    assert diff[~still].max() > 0                   # and the moving part did change

    video = render_video(run_frozen, tmp_path / "cam0.mp4", camera=cam.name, fps=10)
    decoded = read_video(video.path).astype(np.float64)
    assert decoded.shape == (len(rig.frames), cam.height, cam.width, 3) and not video.side_by_side
    still_px = np.abs(decoded - decoded[:1]).mean(axis=3)[:, still]
    assert still_px.mean() < 1.0                    # codec noise only (under one 8-bit level on average)

    held = render_video(run_frozen, tmp_path / "held.mp4", camera=rig.test_cameras[0])
    assert held.side_by_side and read_video(held.path).shape[2] == 2 * cam.width
    # A given pose is a camera training did not use: it clips at its own near bound (novel_view_near); with that
    # off, a given pose equal to a training camera renders that camera's video.
    off = tmp_path / "run_off"
    shutil.copytree(run_frozen, off)
    seq.to_json(replace(seq.load_config(off), novel_view_near=0.0), off / "config.json")
    pose = render_video(off, tmp_path / "pose.mp4", camera=0, pose=cam.world_to_camera)
    assert np.abs(read_video(pose.path).astype(float) - decoded).mean() < 1.0  # a given pose = that camera


def test_export_4d_static_layer_once_and_dynamic_per_frame(rig, run_frozen, tmp_path):
    from splatworks.dynamic.export4d import export_4d, load_frame_layers

    m = export_4d(run_frozen, tmp_path / "exp")
    assert m["frames"] == m["frames_ready"] == len(rig.frames) and m["static"] == "static.splat"
    assert m["schema"] == "splatworks.4d/2" and m["encoding"] == "delta" and m["delta_format"] == "SWD3"
    lines = seq.read_metrics(run_frozen)
    static_n = len(torch.load(run_frozen / seq.STATIC_FILE)["ids"])
    assert m["bytes"]["static"] == 32 * static_n and m["dynamic_count"] == lines[0]["n_dynamic"]
    for i, line in enumerate(lines):
        size = (tmp_path / "exp" / m["frame_files"][i]).stat().st_size
        assert m["bytes"]["per_frame"][i] == size
        if i == 0:
            assert size == 32 * line["n_dynamic"]           # frame 0: the whole dynamic layer
        else:
            f, p, q = (m["records"][k][i] for k in ("full", "motion", "motion_rgba"))  # a delta's record kinds
            assert size == 20 + 36 * f + 20 * p + 24 * q and 0 < f + p + q <= line["n_active"] <= line["n_dynamic"]
        layers = load_frame_layers(tmp_path / "exp", i)
        full, _, _ = seq.load_frame_gaussians(run_frozen, line["frame"])
        drawn = layers["scales"].max(dim=1).values > -20   # rows of pruned Gaussians draw nothing (scale 0)
        assert int(drawn.sum()) == line["n_gaussians"]
        a = torch.sort(layers["means"][drawn][:, 0]).values
        b = torch.sort(full["means"][:, 0]).values
        assert torch.equal(a, b)                            # float32 positions: exact
    doc = json.loads((tmp_path / "exp" / "manifest.json").read_text())  # what the viewer reads (docs/viewer.md)
    assert doc["frame_urls"] == m["frame_files"] and doc["format"] == "splat"
    assert doc["frame_urls"] == ["frames/000000.splat"] + [f"frames/{i:06d}.swd" for i in range(1, doc["frames"])]
    old = export_4d(run_frozen, tmp_path / "full", encoding="full")  # the schema 1 layout stays available
    assert old["bytes"]["per_frame"] == [32 * line["n_dynamic"] for line in lines] and "encoding" not in old
    assert [old["frame_pattern"].replace("{frame}", f"{i:0{old['frame_digits']}d}") for i in range(old["frames"])] \
        == old["frame_urls"]


def test_temporal_metrics_on_known_videos():
    from splatworks.dynamic.metrics4d import background_flicker, frame_to_frame_change, psnr_drift

    rng = np.random.default_rng(0)
    truth = np.full((8, 6, 5, 3), 0.5)
    static = np.ones((6, 5), dtype=bool)
    noisy = truth + rng.normal(0, 0.02, truth.shape)
    assert background_flicker(truth, truth, static) == 0.0
    assert 0.012 < background_flicker(noisy, truth, static) < 0.025
    assert background_flicker(truth, noisy, static) < 0
    # a slow fade (0.01 per frame) has as much flicker as the noise but a quarter of its frame-to-frame change
    fade = truth + 0.01 * np.arange(8)[:, None, None, None]
    assert background_flicker(fade, truth, static) == pytest.approx(0.01 * np.arange(8).std())
    assert frame_to_frame_change(fade, truth, static) == pytest.approx(0.01)
    assert frame_to_frame_change(noisy, truth, static) == pytest.approx(0.02 * 2 / np.sqrt(np.pi), rel=0.25)
    assert frame_to_frame_change(truth, truth, static) == 0.0
    assert psnr_drift([30.0 - 0.01 * i for i in range(10)]) == pytest.approx(-0.01)


def test_flicker_split_by_distance_puts_a_halo_in_the_first_bands():
    """benchmarks/flicker_map.py: flicker planted in a 3-px ring around the moving pixels lands in the first bands,
    and the bands' contributions add up to metrics4d's flicker."""
    import importlib.util
    from pathlib import Path

    from splatworks.dynamic.metrics4d import background_flicker

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "flicker_map.py"
    spec = importlib.util.spec_from_file_location("flicker_map", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    truth = np.full((10, 64, 64, 3), 0.5, dtype=np.float32)
    static = np.ones((64, 64), dtype=bool)
    static[28:36, 28:36] = False                                     # moving at some frame
    ring = np.zeros_like(static)
    ring[25:39, 25:39] = True
    ring &= static                                                   # 1-3 px from the moving square
    rendered = truth.copy()
    rendered[:, ring] += rng.normal(0, 0.05, (10, int(ring.sum()), 3)).astype(np.float32)
    got = bench.flicker_by_distance(rendered, truth, static)
    assert got["flicker_levels"] == pytest.approx(255 * background_flicker(rendered, truth, static), abs=1e-3)
    assert sum(b["contribution_levels"] for b in got["bands"]) == pytest.approx(got["flicker_levels"], abs=0.01)
    def within(px: int) -> float:
        return sum(b["contribution_levels"] for b in got["bands"] if b["px"][1] <= px)

    assert within(4) > 0.9 * got["flicker_levels"] > 0              # the ring's corners are up to 3 sqrt(2) px out
    assert within(8) > 0.99 * got["flicker_levels"]
    assert sum(b["share"] for b in got["bands"]) == pytest.approx(1.0, abs=1e-3)


def test_evaluate_sequence_and_cli(rig, run_frozen, tmp_path):
    from splatworks.cli import main
    from splatworks.dynamic.metrics4d import evaluate_sequence

    res = evaluate_sequence(run_frozen, rig, device="cpu")
    lines = seq.read_metrics(run_frozen)
    assert res["camera"] == rig.test_cameras[0] and len(res["psnr"]) == len(rig.frames)
    assert res["psnr"] == pytest.approx([l["psnr"] for l in lines], abs=1e-3)  # same numbers as training logged
    assert np.isfinite(res["flicker"]) and np.isfinite(res["drift_db_per_frame"])
    assert np.isfinite(res["frame_to_frame_levels"])
    # Moving-pixel PSNR of the last frame, recomputed from its render and its mask.
    from splatworks.dynamic.render import render_frames

    cam, last = rig.rig.camera(res["camera"]), rig.frames[-1]
    rendered = next(iter(render_frames(run_frozen, cam, [last], device="cpu")))
    moving = ~seq.load_static_mask(rig.mask_path(res["camera"], last), (cam.height, cam.width))
    assert moving.any() and not moving.all()
    mse = float(((rendered - seq.load_image(rig.image_path(res["camera"], last))) ** 2)[moving].mean())
    assert res["psnr_dynamic"][-1] == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert main(["dynamic", "eval", str(run_frozen), "-o", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["psnr_mean"] == pytest.approx(res["psnr_mean"])
    assert main(["dynamic", "train", str(rig.root), "-o", str(tmp_path / "x"), "--print-config",
                 "--anchor", "previous", "--static-loss-weight", "3"]) == 0
    assert main(["dynamic", "train", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")]) == 2


@pytest.mark.gpu
def test_sequence_on_gsplat(rig, tmp_path):
    """The same daisy chain on CUDA with gsplat (densified frame 0 by the static trainer, frozen layer, export)."""
    from splatworks.dynamic.export4d import export_4d

    cfg = tiny(device="cuda", backend="gsplat", first_frame_trainer="splat", iterations_first_frame=300)
    lines = seq.train_sequence(rig, tmp_path / "run", cfg)
    assert [l["frame"] for l in lines] == rig.frames and all(np.isfinite(l["psnr"]) for l in lines)
    assert lines[-1]["psnr"] > lines[0]["psnr"] - 1.0
    m = export_4d(tmp_path / "run", tmp_path / "exp")
    assert m["frames_ready"] == len(rig.frames) and m["bytes"]["static"] > 0
    assert m["encoding"] == "delta" and m["bytes"]["per_frame"][0] == 32 * m["dynamic_count"]


# ---- frame 0's start: real points, a random fallback that covers the scene, the static trainer's recipe -----------
def test_first_frame_scene_keeps_held_out_views_and_thickens_sparse_points(rig):
    cfg = tiny(first_frame_min_points=3000)
    scene = seq.first_frame_scene(rig, rig.frames[0], cfg)
    assert scene.test_names == [f"{rig.test_cameras[0]}/000000.png"]
    assert all(c.mask_name is None for c in scene.cameras)  # frame 0 learns the people too
    sparse = rig.rig.points
    assert len(scene.points) == 3000 and np.array_equal(scene.points[: len(sparse)], sparse)
    from scipy.spatial import cKDTree

    from splatworks.splat.gaussians import knn_scale

    # New points lie around the given ones (a few neighbour spacings away), with those points' colours.
    dist, idx = cKDTree(sparse).query(scene.points[len(sparse):])
    assert np.percentile(dist, 95) < 4 * np.median(knn_scale(sparse))
    assert len(seq.first_frame_scene(rig, rig.frames[0], tiny(first_frame_min_points=0)).points) == len(sparse)


def test_random_fallback_fills_a_ball_reaching_past_the_cameras(rig):
    import dataclasses

    empty = dataclasses.replace(rig, rig=dataclasses.replace(rig.rig, points=np.zeros((0, 3)),
                                                             point_colors=np.zeros((0, 3), np.uint8),
                                                             point_errors=np.zeros(0)))
    scene = seq.first_frame_scene(empty, rig.frames[0], tiny(num_random_points=2000))
    pts, centers = scene.points, rig.rig.centers()
    mid = centers.mean(axis=0)
    reach = np.linalg.norm(centers - mid, axis=1).max()
    r = np.linalg.norm(pts - mid, axis=1)
    assert len(pts) == 2000 and r.max() <= 1.2 * reach + 1e-9
    assert (r > reach).mean() > 0.05  # beyond the cameras, where an inward rig's walls are
    lo, hi = centers.min(axis=0), centers.max(axis=0)
    assert ((pts < lo) | (pts > hi)).any(axis=1).mean() > 0.3  # not only the cameras' bounding box
    seen = np.zeros(len(pts), dtype=bool)
    for cam in scene.cameras:
        uv, z = cam.project(pts)
        seen |= (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    assert seen.all()


def test_first_frame_recipe_is_the_static_fast_preset_scaled():
    from splatworks.splat.trainer import PRESETS

    tc = seq.first_frame_train_config(seq.SequentialConfig(), torch.device("cpu"), None, radius=2.0)
    fast = PRESETS["fast"]
    assert (tc.strategy, tc.iterations, tc.refine_stop, tc.sh_degree_interval) == \
        ("mcmc", 7000, fast["refine_stop"], fast["sh_degree_interval"])
    assert (tc.cap_max, tc.init_opacity, tc.opacity_reg, tc.hold_out_every, tc.background) == \
        (200_000, fast["init_opacity"], fast["opacity_reg"], 0, None)
    short = seq.first_frame_train_config(seq.SequentialConfig(iterations_first_frame=1000, first_frame_cap_max=5000),
                                         torch.device("cpu"), (1.0, 1.0, 1.0), radius=2.0)
    assert (short.refine_stop, short.refine_start, short.cap_max, short.background) == (786, 100, 5000, (1.0, 1.0, 1.0))
    adc = seq.first_frame_train_config(seq.SequentialConfig(first_frame_recipe="adc"), torch.device("cpu"), None,
                                       radius=2.0)
    assert adc.strategy == "default" and adc.refine_stop == 3500
    # near_plane: 0 = the rasterizer's default (scene units); otherwise scene radii -> scene units, both recipes.
    assert tc.near_plane == adc.near_plane == 0.01
    for recipe in ("mcmc", "adc"):
        near = seq.first_frame_train_config(seq.SequentialConfig(first_frame_recipe=recipe, near_plane=0.1),
                                            torch.device("cpu"), None, radius=2.0)
        assert near.near_plane == pytest.approx(0.2)


# ---- the near clipping plane: one value, in scene radii, for training, evaluation and videos ----------------------
NEAR = 0.05  # scene radii
NEAR_RUN = dict(near_plane=NEAR, max_frames=2, iterations_first_frame=30, iterations_per_frame=10,
                converged_loss_ratio=1.1,  # the 'already converged?' test renders too
                novel_view_near=0.0)  # the held-out camera at the training's plane too (its own bound: below)
NEAR_CALLS: list[float | None] = []  # near_plane of every rasterizer call while run_near trained


@pytest.fixture(scope="module")
def run_near(rig, tmp_path_factory) -> Path:
    from splatworks.splat import render as render_mod

    out = tmp_path_factory.mktemp("near")
    real = render_mod.render

    def spy(*args, **kwargs):
        NEAR_CALLS.append(kwargs.get("near_plane"))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:  # sequential.py imports render at each call: the spy sees them all
        mp.setattr(render_mod, "render", spy)
        seq.train_sequence(rig, out, tiny(**NEAR_RUN))
    return out


def _plant_in_front(train_dir: Path, cam, z: float) -> None:
    """Add to the static layer an opaque white Gaussian on ``cam``'s optical axis at camera-space z = ``z`` (scene
    units), world = R^T (p_cam - t) with ``cam.world_to_camera`` = [R | t] (OpenCV axes)."""
    static = torch.load(train_dir / seq.STATIC_FILE)
    w2c = torch.tensor(cam.world_to_camera, dtype=torch.float32)
    world = w2c[:3, :3].T @ (torch.tensor([0.0, 0.0, z]) - w2c[:3, 3])
    dynamic_ids = torch.load(seq.frame_file(train_dir, seq.trained_frames(train_dir)[0]))["ids"]  # a new id, above all
    row = {"ids": torch.maximum(static["ids"].max(), dynamic_ids.max())[None] + 1, "means": world[None],
           "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]), "scales": torch.full((1, 3), float(np.log(0.3 * z))),
           "opacities": torch.tensor([8.0]), "sh0": torch.full((1, 1, 3), 1.7),
           "shN": torch.zeros_like(static["shN"][:1])}
    torch.save({k: torch.cat([static[k], row[k].to(static[k].dtype)]) for k in static}, train_dir / seq.STATIC_FILE)


@pytest.fixture(scope="module")
def planted_near(rig, run_near, tmp_path_factory) -> Path:
    """run_near with a splat planted in front of the held-out camera, between the default near plane (0.01) and
    the run's (0.05 R): what the held-out fog hypothesis says the fog is."""
    from splatworks.dynamic.render import SequenceReader

    out = tmp_path_factory.mktemp("planted") / "run"
    shutil.copytree(run_near, out)
    near = SequenceReader(run_near).near_plane
    assert 0.01 < 0.5 * near, "the planted splat must lie between the default and the run's near plane"
    _plant_in_front(out, rig.rig.camera(rig.test_cameras[0]), 0.5 * near)
    return out


@torch.no_grad()
def test_near_plane_reaches_training_evaluation_and_videos(rig, run_near, planted_near):
    from splatworks.dynamic.metrics4d import evaluate_sequence
    from splatworks.dynamic.render import SequenceReader, render_frames

    assert seq.load_config(run_near) == tiny(**NEAR_RUN)                # the stored config round-trips
    reader = SequenceReader(run_near)
    radius = rig.rig.camera_extent()[1]
    assert reader.scene_radius == pytest.approx(radius) and reader.near_plane == pytest.approx(NEAR * radius)
    # Training (frame 0, later frames, the converged test, the held-out evaluation) rendered with it every time.
    assert len(NEAR_CALLS) > 40 and NEAR_CALLS == pytest.approx([NEAR * radius] * len(NEAR_CALLS))
    ev = evaluate_sequence(run_near, rig, device="cpu")
    assert ev["psnr"] == pytest.approx([l["psnr"] for l in seq.read_metrics(run_near)], abs=1e-3)

    held, frames = rig.rig.camera(rig.test_cameras[0]), reader.frames
    centre = (0, held.height // 2, held.width // 2, 0)
    drawn = SequenceReader(planted_near).render(frames[0], held, near_plane=0.01)  # the default draws the plant
    assert drawn.alphas[centre] > 0.9
    # `dynamic render` / `dynamic eval` (render_frames) read the training's near plane: the plant is culled.
    before = np.stack(list(render_frames(run_near, held, frames, device="cpu")))
    after = np.stack(list(render_frames(planted_near, held, frames, device="cpu")))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)   # (one more row: float summation order only)
    assert evaluate_sequence(planted_near, rig, device="cpu")["psnr"] == pytest.approx(ev["psnr"], abs=1e-4)


def _basketball_bench():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamic_basketball.py"
    spec = importlib.util.spec_from_file_location("dynamic_basketball", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_basketball_near_plane_probe_sees_a_splat_in_front_of_the_held_out_camera(rig, run_near, planted_near):
    from splatworks.dynamic.metrics4d import evaluate_sequence

    bench = _basketball_bench()
    probe = bench.near_plane_probe(planted_near, rig)
    rows = probe["rows"]
    assert (probe["camera"], probe["frame"], len(rows)) == (rig.test_cameras[0], rig.frames[0], 6)
    assert rows[0]["near_plane"] == 0.01 and rows[0]["alpha_changed_fraction"] == 0.0
    # "auto": what the held-out camera's renders use (novel_view_near is off in this run: the training's plane).
    assert rows[1]["near_plane_radii"] == "auto" and rows[1]["near_plane"] == pytest.approx(probe["trained_near_plane"])
    assert rows[2]["near_plane"] == pytest.approx(probe["trained_near_plane"])   # 0.05 R: what training used
    assert rows[2]["psnr"] == pytest.approx(evaluate_sequence(run_near, rig, device="cpu")["psnr"][0], abs=1e-3)
    assert all(r["alpha_changed_fraction"] > 0.01 and r["psnr"] > rows[0]["psnr"] for r in rows[1:])
    assert "0.05 R" in bench.probe_line(probe)


def test_novel_view_near_bound():
    """``novel_view_near_plane``: a fraction of LLFF's near bound of the points in view, never below the floor."""
    from splatworks.scene.camera import Camera

    cam = Camera(name="c", width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0, world_to_camera=np.eye(4))
    rng = np.random.default_rng(0)
    z = rng.uniform(2.0, 5.0, 2000)
    pts = np.stack([rng.uniform(-0.5, 0.5, 2000) * z, rng.uniform(-0.4, 0.4, 2000) * z, z], 1)   # all in view
    behind = pts * [1, 1, -1]                                                                    # none in view
    bound = np.percentile(z, 0.1)
    assert seq.novel_view_near_plane(pts, cam, 0.8, 0.01) == pytest.approx(0.8 * bound)
    assert seq.novel_view_near_plane(np.concatenate([pts, behind]), cam, 0.8, 0.01) == pytest.approx(0.8 * bound)
    assert seq.novel_view_near_plane(pts, cam, 0.0, 0.01) == 0.01            # off
    assert seq.novel_view_near_plane(behind, cam, 0.8, 0.01) == 0.01         # nothing in view: the floor
    assert seq.novel_view_near_plane(pts, cam, 0.8, 3.0) == 3.0              # never below the training's plane


@torch.no_grad()
def test_novel_view_near_clips_the_held_out_camera_not_the_training_ones(rig, run_near, tmp_path):
    """A splat between the training's near plane and the held-out camera's own near bound (what the basketball
    held-out fog is: splats in mid-air just in front of that camera) is culled in the held-out camera's renders
    with ``novel_view_near`` on, drawn with it off; training cameras keep the training's plane."""
    from splatworks.dynamic.render import SequenceReader, render_frames

    out = tmp_path / "run"
    shutil.copytree(run_near, out)
    cfg = seq.load_config(out)
    seq.to_json(replace(cfg, novel_view_near=0.8), out / "config.json")
    held, train_cam = rig.rig.camera(rig.test_cameras[0]), rig.rig.camera(rig.train_camera_names[0])
    reader = SequenceReader(out)
    auto = reader.near_plane_for(held)
    assert auto == pytest.approx(seq.novel_view_near_plane(rig.rig.points, held, 0.8, reader.near_plane), rel=1e-3)
    assert auto > 2 * reader.near_plane and reader.near_plane_for(train_cam) == reader.near_plane
    frames = reader.frames
    before = np.stack(list(render_frames(out, held, frames, device="cpu")))
    _plant_in_front(out, held, 0.5 * auto)
    centre = (0, held.height // 2, held.width // 2, 0)
    assert SequenceReader(out).render(frames[0], held, near_plane=reader.near_plane).alphas[centre] > 0.9
    np.testing.assert_allclose(np.stack(list(render_frames(out, held, frames, device="cpu"))), before, rtol=0,
                               atol=1e-6)
    # The basketball benchmark's comparison scores the same models with it off, and leaves the config as it was.
    from splatworks.dynamic.metrics4d import evaluate_sequence

    on = evaluate_sequence(out, rig, device="cpu")
    off = _basketball_bench().evaluate_without_novel_near(out, rig)
    assert seq.load_config(out).novel_view_near == 0.8 and off["psnr_mean"] < on["psnr_mean"]  # the plant costs
    assert on["near_plane"] == pytest.approx(auto) and off["near_plane"] == pytest.approx(reader.near_plane)
    seq.to_json(cfg, out / "config.json")  # novel_view_near off: the plant shows
    assert np.abs(np.stack(list(render_frames(out, held, frames, device="cpu"))) - before).max() > 0.1
    assert evaluate_sequence(out, rig, device="cpu")["psnr_mean"] == pytest.approx(off["psnr_mean"])


def test_training_evaluates_the_held_out_camera_at_its_near_bound(rig, tmp_path):
    """Training keeps the frame-0 points and the training cameras with the model, and its per-frame held-out
    evaluation uses the same near plane as ``dynamic eval`` (the metrics agree)."""
    from splatworks.dynamic.metrics4d import evaluate_sequence
    from splatworks.dynamic.render import SequenceReader
    from splatworks.errors import UserError

    out = tmp_path / "run"
    seq.train_sequence(rig, out, tiny(max_frames=1, iterations_first_frame=20))
    source = json.loads((out / "source.json").read_text())
    assert source["train_cameras"] == list(rig.train_camera_names)
    np.testing.assert_allclose(np.load(out / seq.NEAR_POINTS_FILE), rig.rig.points.astype(np.float32))
    reader = SequenceReader(out)
    assert reader.config.novel_view_near == 0.8 and reader.near_plane_for(rig.rig.camera(rig.test_cameras[0])) > \
        reader.near_plane
    assert evaluate_sequence(out, rig, device="cpu")["psnr"] == pytest.approx(
        [l["psnr"] for l in seq.read_metrics(out)], abs=1e-3)
    with pytest.raises(UserError, match="novel_view_near"):
        seq.train_sequence(rig, tmp_path / "bad", tiny(novel_view_near=1.5, max_frames=1))


def test_near_plane_option_on_the_command_line_and_checked(rig, tmp_path, capsys):
    from splatworks.cli import main
    from splatworks.errors import UserError

    assert main(["dynamic", "train", str(rig.root), "-o", str(tmp_path / "x"), "--print-config",
                 "--near-plane", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["near_plane"] == 0.2
    with pytest.raises(UserError, match="near_plane"):
        seq.train_sequence(rig, tmp_path / "bad", tiny(near_plane=-1.0, max_frames=1))
    assert seq.near_plane_units(0.0, None) == 0.01 and seq.near_plane_units(0.1, 3.0) == pytest.approx(0.3)
    with pytest.raises(UserError, match="scene radius"):
        seq.near_plane_units(0.1, None)
