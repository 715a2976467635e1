"""`splatworks dynamic prepare` on the synthetic rig: real mp4 files, real pycolmap, real masks and checks.

The rig (5 cameras on an arc, 6 frames, 160x120, two moving textured objects) is rendered once per session;
one full SfM prepare is shared by the tests that inspect its output. Other tests use the GT calibration import
(no SfM) on small variants of the videos.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from splatworks.dynamic import masks as mk
from splatworks.dynamic.dataset import DynamicDataset
from splatworks.dynamic.prepare import PrepareConfig, prepare
from splatworks.errors import InputError, UserError
from splatworks.scene.camera import Camera
from splatworks.scene.llff import c2w_from_llff

N_CAMERAS, N_FRAMES, FPS = 5, 6, 10


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory):
    from splatworks.synthetic.scenes import make_dynamic_rig

    return make_dynamic_rig(tmp_path_factory.mktemp("rig"), n_cameras=N_CAMERAS, n_frames=N_FRAMES, fps=FPS)


def _import_config(rig, **kw) -> PrepareConfig:
    """Fast settings: GT calibration import, so only frames and masks are under test (no triangulated points
    unless ``triangulate`` is given)."""
    cfg = PrepareConfig(**{"triangulate": "off", **kw})
    cfg.calibration = replace(cfg.calibration, method="import", file=rig.calibration)
    return cfg


@pytest.fixture(scope="session")
def prepared(rig, tmp_path_factory: pytest.TempPathFactory) -> DynamicDataset:
    """Full pipeline with pycolmap calibration (several frames per camera, masked), scored against the GT file."""
    cfg = PrepareConfig()
    cfg.calibration = replace(cfg.calibration, method="sfm", images="frames", num_frames=N_FRAMES, file=rig.calibration)
    return prepare(rig.root / "videos", tmp_path_factory.mktemp("prepared") / "ds", cfg)


def _read(path: Path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


def _subset_videos(rig, dst: Path, cameras: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for c in cameras:
        shutil.copy(rig.videos[c], dst / f"{c}.mp4")
    return dst


# ---- the full SfM prepare -----------------------------------------------------------------------------------------
def test_frames_extracted_match_source(prepared: DynamicDataset, rig) -> None:
    assert prepared.frames == list(range(N_FRAMES))
    assert prepared.camera_names == [f"cam{i:02d}" for i in range(N_CAMERAS)]
    assert prepared.fps == pytest.approx(FPS)
    for cam in prepared.camera_names:
        assert sorted(p.name for p in (prepared.root / "images" / cam).glob("*.png")) == \
            [f"{f:06d}.png" for f in range(N_FRAMES)]
        for f in (0, N_FRAMES - 1):
            got = _read(prepared.image_path(cam, f)).astype(np.float64)
            want = np.asarray(PIL.Image.open(rig.frame_path(cam, f)).convert("RGB"), dtype=np.float64)
            assert got.shape == want.shape == (120, 160, 3)
            psnr = 10 * np.log10(255.0 ** 2 / np.mean((got - want) ** 2))
            assert psnr > 30, f"{cam} frame {f}: decoded frame differs from the rendered one ({psnr:.1f} dB)"


def test_sfm_calibration_registers_all_cameras_close_to_truth(prepared: DynamicDataset) -> None:
    cal = prepared.meta["calibration"]
    assert cal["method"] == "sfm"
    assert cal["registered"] == N_CAMERAS and len(prepared.rig.cameras) == N_CAMERAS
    err = cal["errors_vs_file"]
    assert err["cameras_compared"] == N_CAMERAS
    # 160x120 images, ~250 points: errors of a degree or two and a few % of the rig radius are what SfM reaches.
    assert err["rotation_error_deg_mean"] < 3.0, err
    assert err["centre_error_rel_radius_mean"] < 0.05, err
    assert err["focal_error_rel_mean"] < 0.08, err
    assert len(prepared.rig.points) > 50
    # Fixed cameras: the several frames per camera must agree on one pose.
    assert cal["pose_spread_deg_max"] < 1.0


def test_masks_match_ground_truth(prepared: DynamicDataset, rig) -> None:
    tp = fp = fn = 0
    for cam in prepared.camera_names:
        for f in prepared.frames:
            m = _read(prepared.mask_path(cam, f))
            assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
            s = mk.mask_scores(m == 0, _read(rig.mask_path(cam, f)) == 0)
            tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    iou, precision, recall = mk.iou_precision_recall(tp, fp, fn)
    assert tp > 0, "no dynamic pixel found at all"
    assert iou > 0.6, f"dynamic-region IoU {iou:.3f} (precision {precision:.3f}, recall {recall:.3f})"
    previews = sorted(p.name for p in (prepared.root / "previews").glob("*.png"))
    assert previews == [f"{c}.png" for c in prepared.camera_names]


def test_held_out_camera_is_calibrated_but_not_trained(prepared: DynamicDataset) -> None:
    ds = DynamicDataset.load(prepared.root)
    assert ds.test_cameras == ["cam00"]
    assert "cam00" in ds.camera_names and "cam00" not in ds.train_camera_names
    cam0 = ds.rig.camera("cam00")
    assert np.isfinite(cam0.world_to_camera).all() and not np.allclose(cam0.world_to_camera, np.eye(4))
    scene = ds.scene_at(3)
    assert [c.name for c in scene.test_cameras] == ["cam00/000003.png"]
    assert all(not c.name.startswith("cam00/") for c in scene.train_cameras)
    doc = json.loads((ds.root / "transforms.json").read_text())
    splits = {(e["camera"], e["split"]) for e in doc["frames"]}
    assert ("cam00", "test") in splits and ("cam00", "train") not in splits and ("cam01", "train") in splits


def test_exchange_files_agree_with_the_rig(prepared: DynamicDataset) -> None:
    rig = prepared.rig
    doc = json.loads((prepared.root / "transforms.json").read_text())
    assert len(doc["frames"]) == N_CAMERAS * N_FRAMES
    entry = next(e for e in doc["frames"] if e["camera"] == "cam02" and e["frame"] == 4)
    assert (prepared.root / entry["file_path"]).is_file() and (prepared.root / entry["mask_path"]).is_file()
    assert entry["time"] == pytest.approx(4 / (N_FRAMES - 1))
    np.testing.assert_allclose(np.array(entry["transform_matrix"]), rig.camera("cam02").camera_to_world_opengl(),
                               atol=1e-9)
    pb = np.load(prepared.root / "poses_bounds.npy")
    assert pb.shape == (N_CAMERAS, 17)
    for row, cam in zip(pb, rig.cameras):
        np.testing.assert_allclose(c2w_from_llff(row[:15].reshape(3, 5)), cam.camera_to_world, atol=1e-9)
        assert 0 < row[15] < row[16]
    depth = np.load(prepared.root / "colmap_depth.npy", allow_pickle=True)
    assert len(depth) == N_CAMERAS
    for view, cam in zip(depth, rig.cameras):
        assert len(view["depth"]) > 10 and (view["depth"] > 0).all()
        # Each sample's pixel is where its depth's point projects (within SfM noise).
        uv, z = cam.project(rig.points)
        nearest = np.abs(z[None, :] - view["depth"][:, None]).argmin(axis=1)
        assert np.median(np.linalg.norm(uv[nearest] - view["coord"], axis=1)) < 2.0
    meta = prepared.meta
    assert set(meta["timings_s"]) >= {"frames", "masks", "calibration", "total"}
    assert json.loads((prepared.root / "prepare_config.json").read_text())["calibration"]["images"] == "frames"


# ---- input checks and options (GT import, no SfM) -----------------------------------------------------------------
def test_frame_folders_with_range_stride_and_resize(rig, tmp_path: Path) -> None:
    cfg = _import_config(rig, start_frame=1, end_frame=6, stride=2, resize=0.5, test_cameras="cam03")
    cfg.masks = replace(cfg.masks, method="none")
    ds = prepare(rig.frames_dir, tmp_path / "ds", cfg)
    assert ds.frames == [1, 3, 5] and ds.test_cameras == ["cam03"]
    img = _read(ds.image_path("cam01", 3))
    assert img.shape == (60, 80, 3)
    want = np.asarray(PIL.Image.open(rig.frame_path("cam01", 3)).convert("RGB").resize((80, 60), PIL.Image.BOX))
    assert np.abs(img.astype(int) - want.astype(int)).mean() < 4
    gt = rig.rig.camera("cam01")
    cam = ds.rig.camera("cam01")
    assert (cam.width, cam.height) == (80, 60)
    assert cam.fx == pytest.approx(gt.fx / 2) and cam.cx == pytest.approx(gt.cx / 2)
    np.testing.assert_allclose(cam.world_to_camera, gt.world_to_camera, atol=1e-12)
    assert not (ds.root / "masks").exists()


def test_mismatched_frame_counts_are_trimmed_with_a_warning(rig, tmp_path: Path, caplog) -> None:
    from splatworks.synthetic.scenes import encode_video

    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam02", "cam03"])
    encode_video([rig.frame_path("cam01", f) for f in range(4)], videos / "cam01.mp4", FPS)
    cfg = _import_config(rig)
    with caplog.at_level("WARNING"):
        ds = prepare(videos, tmp_path / "ds", cfg)
    assert ds.frames == [0, 1, 2, 3]
    assert any("different frame counts" in w and "cam01: 4" in w for w in ds.meta["warnings"])
    assert "different frame counts" in caplog.text
    assert not (ds.root / "images" / "cam00" / "000004.png").exists()


def test_mismatched_frame_rates_are_refused(rig, tmp_path: Path) -> None:
    from splatworks.synthetic.scenes import encode_video

    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam02"])
    encode_video([rig.frame_path("cam01", f) for f in range(N_FRAMES)], videos / "cam01.mp4", 25)
    with pytest.raises(InputError, match="different frame rates") as exc:
        prepare(videos, tmp_path / "ds", _import_config(rig))
    assert "cam01: 25 fps" in str(exc.value) and "cam00: 10 fps" in str(exc.value)


def test_every_corrupt_video_is_named(rig, tmp_path: Path) -> None:
    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam01", "cam02"])
    (videos / "cam03.mp4").write_bytes(b"this is not a video" * 100)
    data = rig.videos["cam04"].read_bytes()
    (videos / "cam04.mp4").write_bytes(data[: len(data) // 3])  # truncated: its index (moov) is lost
    with pytest.raises(InputError) as exc:
        prepare(videos, tmp_path / "ds", _import_config(rig))
    msg = str(exc.value)
    assert "cam03.mp4" in msg and "cam04.mp4" in msg and "cam00" not in msg
    assert not (tmp_path / "ds").exists()


def test_single_camera_is_refused(rig, tmp_path: Path) -> None:
    videos = _subset_videos(rig, tmp_path / "videos", ["cam02"])
    with pytest.raises(InputError, match="only one camera"):
        prepare(videos, tmp_path / "ds", _import_config(rig))


def test_existing_dataset_is_kept_and_cli_runs(rig, tmp_path: Path, capsys) -> None:
    from splatworks.cli import main

    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam01", "cam02"])
    out = tmp_path / "ds"
    args = ["dynamic", "prepare", str(videos), "-o", str(out), "--end-frame", "3", "--calibration.method", "import",
            "--calibration.file", str(rig.calibration), "--masks.preview-frames", "0", "--triangulate", "off"]
    assert main(args) == 0
    assert "3 cameras x 3 frames" in capsys.readouterr().out
    before = (out / "dataset.json").read_text()
    assert main(args + ["--end-frame", "2"]) == 2  # refused: would replace the dataset
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "dataset.json").read_text() == before
    assert main(args + ["--end-frame", "2", "--overwrite"]) == 0
    assert DynamicDataset.load(out).frames == [0, 1]
    assert sorted(p.name for p in (out / "images" / "cam01").iterdir()) == ["000000.png", "000001.png"]


def test_sam2_segmenter_without_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--masks.segmenter-checkpoint"):
        mk.make_segmenter(mk.MaskConfig(method="sam2"))
    with pytest.raises(UserError, match="not found"):
        mk.make_segmenter(mk.MaskConfig(method="sam2", segmenter_checkpoint=tmp_path / "missing.pt"))
    fake = tmp_path / "sam2.1_hiera_tiny.pt"
    fake.write_bytes(b"x")
    try:
        import sam2  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install"):
            mk.make_segmenter(mk.MaskConfig(method="sam2", segmenter_checkpoint=fake))


def test_segmenter_interface_is_pluggable(rig) -> None:
    """A custom Segmenter (here: thresholding the GT depth change) plugs into the same per-frame loop."""
    seg = mk.BackgroundSegmenter(mk.MaskConfig())
    assert isinstance(seg, mk.Segmenter)
    frames = [np.asarray(PIL.Image.open(rig.frame_path("cam01", f)).convert("RGB")) for f in range(N_FRAMES)]
    seg.fit("cam01", frames)
    bg = seg.models["cam01"]
    assert bg.median.shape == (120, 160, 3) and bg.sigma.shape == (120, 160)
    dyn = seg.segment("cam01", frames[2])
    truth = _read(rig.mask_path("cam01", 2)) == 0
    s = mk.mask_scores(dyn, truth)
    assert mk.iou_precision_recall(s["tp"], s["fp"], s["fn"])[0] > 0.5
    # The clean-up removes isolated speckle and fills holes.
    speckle = np.zeros((60, 80), bool)
    speckle[5, 5] = True
    speckle[20:40, 20:40] = True
    speckle[28:32, 28:32] = False
    cleaned = mk.clean_dynamic(speckle, mk.MaskConfig(min_area=0.01))
    assert not cleaned[5, 5] and cleaned[30, 30] and cleaned[25, 25]


def test_camera_import_refuses_unknown_cameras(rig, tmp_path: Path) -> None:
    from splatworks.dynamic.calibration import import_calibration

    with pytest.raises(InputError, match="camXX"):
        import_calibration(rig.calibration, ["cam00", "camXX"], {"cam00": (160, 120), "camXX": (160, 120)})
    scene = import_calibration(rig.calibration, ["cam00"], {"cam00": (320, 240)})
    cam: Camera = scene.cameras[0]
    assert cam.fx == pytest.approx(2 * rig.rig.camera("cam00").fx)


def test_failed_sfm_falls_back_to_the_calibration_file_or_explains(rig, tmp_path: Path) -> None:
    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam01", "cam02"])
    cfg = PrepareConfig(end_frame=2)
    cfg.masks = replace(cfg.masks, method="none")
    # An impossible initial-pair requirement makes SfM find no model.
    cfg.calibration = replace(cfg.calibration, images="frame0", min_inliers=100000)
    with pytest.raises(UserError, match="--calibration.method import"):
        prepare(videos, tmp_path / "ds1", cfg)
    cfg.calibration = replace(cfg.calibration, file=rig.calibration)
    ds = prepare(videos, tmp_path / "ds2", cfg)
    cal = ds.meta["calibration"]
    assert cal["method"] == "import" and cal["fallback_from"] == "sfm" and "error" in cal["sfm_attempt"]
    assert any("SfM calibration incomplete" in w for w in ds.meta["warnings"])
    assert ds.meta["points"]["source"] == "triangulated" and len(ds.rig.points) > 0  # the fallback gets points too
    np.testing.assert_allclose(ds.rig.camera("cam01").world_to_camera, rig.rig.camera("cam01").world_to_camera)


def test_hysteresis_grows_strong_detections_and_shadows_are_recognised() -> None:
    bg = mk.BackgroundModel(median=np.full((40, 60, 3), 120.0, np.float32), sigma=np.full((40, 60), 1.0, np.float32))
    frame = np.full((40, 60, 3), 120, np.uint8)
    frame[10:20, 10:20] = 160   # strong (diff 40)
    frame[10:20, 20:30] = 132   # weak (diff 12), touching the strong block
    frame[30:36, 45:55] = 132   # weak, isolated
    cfg = mk.MaskConfig(blur=0, threshold=3.0, min_difference=18.0, hysteresis=0.6)
    dyn = mk.difference_map(frame, bg, cfg)
    assert dyn[15, 15] and dyn[15, 25] and not dyn[33, 50] and not dyn[5, 5]
    assert not mk.difference_map(frame, bg, replace(cfg, hysteresis=1.0))[15, 25]
    shade = np.full((4, 4, 3), 120.0, np.float32)
    frame_f = np.concatenate([shade * 0.7, np.stack([shade[..., 0] * 0.7, shade[..., 1], shade[..., 2] * 0.5], -1)])
    shadow = mk.shadow_map(frame_f, np.concatenate([shade, shade]), max_angle_deg=3.0)
    assert shadow[:4].all() and not shadow[4:].any()


# ---- initial points for an imported calibration (issue 7: frame 0 starts from real 3D points) ----------------------
def _depth_error(ds: DynamicDataset, rig, points: np.ndarray) -> tuple[float, int]:
    """Median |z - z_gt| / z_gt of ``points`` in the training cameras at frame 0 (GT depth of the synthetic rig)."""
    errs = []
    for name in ds.train_camera_names:
        cam = ds.rig.camera(name)
        gt = np.load(rig.depth_dir / name / "000000.npy")
        uv, z = cam.project(points)
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        d = gt[uv[ok, 1].astype(int), uv[ok, 0].astype(int)]
        good = np.isfinite(d) & (d > 0)
        errs.append(np.abs(z[ok][good] - d[good]) / d[good])
    e = np.concatenate(errs)
    return float(np.median(e)), len(e)


def test_imported_calibration_gets_triangulated_points_without_the_held_out_view(rig, tmp_path: Path) -> None:
    cfg = _import_config(rig, end_frame=2, triangulate="auto")
    cfg.masks = replace(cfg.masks, preview_frames=0)
    ds = DynamicDataset.load(prepare(rig.root / "videos", tmp_path / "ds", cfg).root)
    report = ds.meta["points"]
    assert report["source"] == "triangulated" and report["count"] == len(ds.rig.points) >= 50, report
    assert report["triangulated_views"] == N_CAMERAS - 1  # cam00 is held out: it leaks nothing into the points
    err, n = _depth_error(ds, rig, ds.rig.points)
    assert n > 100 and err < 0.03, f"median relative depth error {err:.3f} over {n} observations"
    assert ds.rig.point_colors.std() > 5  # colours of the images, not a constant


def test_point_file_or_calibration_points_are_imported(rig, tmp_path: Path) -> None:
    from splatworks.dynamic.points import read_points_file, write_points_npz

    videos = _subset_videos(rig, tmp_path / "videos", ["cam00", "cam01", "cam02"])
    pts = rig.rig.points[:200]
    cols = rig.rig.point_colors[:200]
    cfg = _import_config(rig, end_frame=1, points=write_points_npz(tmp_path / "p.npz", pts, cols))
    cfg.masks = replace(cfg.masks, method="none")
    ds = DynamicDataset.load(prepare(videos, tmp_path / "ds1", cfg).root)
    np.testing.assert_allclose(ds.rig.points, pts)
    np.testing.assert_array_equal(ds.rig.point_colors, cols)
    assert ds.meta["points"]["source"] == "file"
    # The same points inside the calibration file ("points": {"xyz", "rgb"}), e.g. what a studio exports.
    doc = json.loads(Path(rig.calibration).read_text())
    doc["points"] = {"xyz": pts.tolist(), "rgb": cols.tolist()}
    (tmp_path / "calib.json").write_text(json.dumps(doc))
    cfg = replace(cfg, points=None, triangulate="on")
    cfg.calibration = replace(cfg.calibration, file=tmp_path / "calib.json")
    ds = DynamicDataset.load(prepare(videos, tmp_path / "ds2", cfg).root)
    np.testing.assert_allclose(ds.rig.points, pts)
    assert ds.meta["points"]["source"] == "calibration"
    xyz, rgb = read_points_file(tmp_path / "calib.json")
    np.testing.assert_allclose(xyz, pts)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read points"):
        read_points_file(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="not found"):
        prepare(videos, tmp_path / "ds3", replace(cfg, points=tmp_path / "missing.ply"))
