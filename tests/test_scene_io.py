"""Scene readers/writers: every converter round trip, format detection, and the conventions at each boundary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatworks.errors import InputError, UserError
from splatworks.scene import Camera, Scene, load_any, save_as
from splatworks.scene.camera import DISTORTION_PARAMS, OPENGL_TO_OPENCV, invert_rigid
from splatworks.scene.colmap import read_colmap, write_colmap
from splatworks.scene.io import detect_format
from splatworks.scene.llff import c2w_from_llff, llff_from_c2w, read_llff, write_llff
from splatworks.scene.transforms import read_transforms, write_transforms

DIST = {"SIMPLE_RADIAL": (0.01,), "RADIAL": (0.02, -0.003), "OPENCV": (0.01, -0.02, 0.001, -0.002),
        "FULL_OPENCV": (0.01, -0.02, 0.001, -0.002, 0.003, -0.004, 0.0005, 0.0001),
        "OPENCV_FISHEYE": (0.05, -0.01, 0.002, -0.0003)}


def look_at_w2c(center: np.ndarray, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenCV world-to-camera for a camera at ``center`` looking at ``target`` (image up ~ world ``up``)."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = center
    return invert_rigid(c2w)


def make_scene(models=tuple(DISTORTION_PARAMS), n_points=40, seed=0, centred=False) -> Scene:
    """One camera per model (own camera_id, own intrinsics) around the origin, plus random sparse points."""
    rng = np.random.default_rng(seed)
    cams = []
    for i, model in enumerate(models):
        angle = 2 * math.pi * i / len(models)
        center = np.array([4 * math.cos(angle), 4 * math.sin(angle), 1.0 + 0.1 * i])
        w, h = 40 + 4 * i, 30 + 2 * i
        f = 35.0 + 1.7 * i
        single = model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") or centred
        cams.append(Camera(name=f"img{i + 8}.png", width=w, height=h, fx=f, fy=f if single else f * 1.01,
                           cx=w / 2 if centred else w / 2 + 0.37 * i, cy=h / 2 if centred else h / 2 - 0.21 * i,
                           world_to_camera=look_at_w2c(center), model=model, distortion=DIST.get(model, ()),
                           camera_id=i + 1))
    points = rng.uniform(-1, 1, size=(n_points, 3))
    colors = rng.integers(0, 256, size=(n_points, 3), dtype=np.uint8)
    errors = rng.uniform(0.1, 2.0, size=n_points)
    return Scene(cameras=cams, points=points, point_colors=colors, point_errors=errors)


def write_images(scene: Scene, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for cam in scene.cameras:
        (folder / cam.name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (cam.width, cam.height), (100, 150, 200)).save(folder / cam.name)


def assert_same_cameras(a: Scene, b: Scene, by_path: bool = False, atol: float = 1e-9) -> None:
    def key(s: Scene, c: Camera) -> str:
        return str((s.image_dir / c.name).resolve()) if by_path else c.name

    cams_b = {key(b, c): c for c in b.cameras}
    assert sorted(cams_b) == sorted(key(a, c) for c in a.cameras)
    for ca in a.cameras:
        cb = cams_b[key(a, ca)]
        assert (cb.width, cb.height, cb.model) == (ca.width, ca.height, ca.model), ca.name
        np.testing.assert_allclose([cb.fx, cb.fy, cb.cx, cb.cy], [ca.fx, ca.fy, ca.cx, ca.cy], atol=atol, rtol=0)
        np.testing.assert_allclose(cb.distortion, ca.distortion, atol=1e-12, rtol=0)
        np.testing.assert_allclose(cb.world_to_camera, ca.world_to_camera, atol=atol, rtol=0)


def assert_same_points(a: Scene, b: Scene) -> None:
    np.testing.assert_allclose(b.points, a.points, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(b.point_colors, a.point_colors)
    np.testing.assert_allclose(b.point_errors, a.point_errors, atol=1e-12, rtol=0)


# ---- COLMAP -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["bin", "txt"])
def test_colmap_round_trip_every_model(tmp_path, binary):
    scene = make_scene()
    scene.point_errors[3] = np.nan  # unknown error survives as COLMAP's -1 -> NaN
    write_colmap(scene, tmp_path / "model", binary=binary)
    ext = ".bin" if binary else ".txt"
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {f"cameras{ext}", f"images{ext}", f"points3D{ext}"}
    back = read_colmap(tmp_path / "model")
    assert [c.name for c in back.cameras] == [c.name for c in scene.cameras]  # img8 .. img14, natural order
    assert [c.camera_id for c in back.cameras] == [c.camera_id for c in scene.cameras]
    assert_same_cameras(scene, back)
    assert_same_points(scene, back)
    assert np.isnan(back.point_errors[3])


def test_colmap_shared_intrinsics_and_in_process(tmp_path):
    import pycolmap

    scene = make_scene(models=("OPENCV", "OPENCV"))
    scene.cameras[1].camera_id = 1  # same id, different intrinsics: the writer must split them
    write_colmap(scene, tmp_path / "m", isolate=False)
    rec = pycolmap.Reconstruction(str(tmp_path / "m"))
    assert rec.num_cameras() == 2 and rec.num_images() == 2
    back = read_colmap(tmp_path / "m", isolate=False)
    assert_same_cameras(scene, back)


def test_colmap_reads_pose_as_cam_from_world(tmp_path):
    """A model made directly with pycolmap: our world_to_camera is its cam_from_world, camera centre matches."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_RADIAL", width=64, height=48,
                                                    params=[50.0, 32.0, 24.0, 0.05], camera_id=3))
    w2c = look_at_w2c(np.array([1.0, -2.0, 0.5]))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="b.jpg", camera_id=3, image_id=7),
                                     pycolmap.Rigid3d(w2c[:3, :4]))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="unposed.jpg", camera_id=3, image_id=9))  # no pose
    (tmp_path / "m").mkdir()
    rec.write_text(str(tmp_path / "m"))
    scene = read_colmap(tmp_path / "m")
    (cam,) = scene.cameras
    assert (cam.model, cam.fx, cam.fy, cam.cx, cam.cy, cam.distortion) == ("SIMPLE_RADIAL", 50, 50, 32, 24, (0.05,))
    np.testing.assert_allclose(cam.center, [1.0, -2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(cam.world_to_camera, w2c, atol=1e-12)


def test_colmap_unsupported_model_and_damaged_files(tmp_path):
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="FOV", width=64, height=48,
                                                    params=[50.0, 50.0, 32.0, 24.0, 0.9], camera_id=1))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.jpg", camera_id=1, image_id=1),
                                     pycolmap.Rigid3d(np.eye(4)[:3]))
    (tmp_path / "fov").mkdir()
    rec.write_binary(str(tmp_path / "fov"))
    with pytest.raises(InputError, match="FOV is not supported.*undistort"):
        read_colmap(tmp_path / "fov")
    write_colmap(make_scene(), tmp_path / "cut")
    data = (tmp_path / "cut" / "images.bin").read_bytes()
    (tmp_path / "cut" / "images.bin").write_bytes(data[:30])
    with pytest.raises(InputError, match="COLMAP model"):
        read_colmap(tmp_path / "cut")
    with pytest.raises(InputError, match="not a COLMAP sparse model"):
        read_colmap(tmp_path)


# ---- transforms.json --------------------------------------------------------------------------------------------

def test_transforms_nerfstudio_round_trip(tmp_path):
    scene = make_scene(models=("OPENCV", "PINHOLE", "OPENCV_FISHEYE", "SIMPLE_PINHOLE", "FULL_OPENCV", "OPENCV"))
    scene.cameras[5].camera_id = 9
    scene.image_dir = tmp_path / "data" / "images"
    write_images(scene, scene.image_dir)
    (path,) = write_transforms(scene, tmp_path / "data")
    doc = json.loads(path.read_text())
    assert "fl_x" not in doc and all("fl_x" in f for f in doc["frames"])  # per-frame intrinsics here
    assert doc["frames"][0]["file_path"] == "images/img8.png"
    back = read_transforms(path)
    assert back.meta["variant"] == "nerfstudio"
    assert_same_cameras(scene, back, by_path=True)
    assert all(back.image_path(c).is_file() for c in back.cameras)


def test_transforms_colmap_only_models_written_as_nerfstudio_equivalents(tmp_path):
    scene = make_scene(models=("SIMPLE_RADIAL", "RADIAL", "FULL_OPENCV"))
    scene.cameras[2].distortion = (0.01, -0.02, 0.001, -0.002, 0.003, 0.0, 0.0, 0.0)  # k4 = k5 = k6 = 0
    scene.image_dir = tmp_path
    (path,) = write_transforms(scene, tmp_path)
    frames = json.loads(path.read_text())["frames"]
    assert [f["camera_model"] for f in frames] == ["OPENCV"] * 3  # nerfstudio knows no SIMPLE_RADIAL/RADIAL
    assert frames[2]["k3"] == 0.003
    back = read_transforms(path)
    b0, b1, b2 = back.cameras
    assert (b0.model, b0.distortion) == ("OPENCV", (0.01, 0.0, 0.0, 0.0))
    assert (b1.model, b1.distortion) == ("OPENCV", (0.02, -0.003, 0.0, 0.0))
    assert (b2.model, b2.distortion) == ("FULL_OPENCV", scene.cameras[2].distortion)  # k3 kept exactly
    np.testing.assert_allclose(b1.world_to_camera, scene.cameras[1].world_to_camera, atol=1e-12)


def test_transforms_nerfstudio_global_intrinsics(tmp_path):
    cam = make_scene(models=("OPENCV",)).cameras[0]
    w2cs = [look_at_w2c(np.array([3.0, 0.5 * i, 1.0])) for i in range(3)]
    scene = Scene(cameras=[Camera(**{**cam.to_dict(), "name": f"f{i}.jpg", "world_to_camera": w})
                           for i, w in enumerate(w2cs)], image_dir=tmp_path)
    (path,) = write_transforms(scene, tmp_path)
    doc = json.loads(path.read_text())
    assert doc["camera_model"] == "OPENCV" and doc["fl_x"] == cam.fx and doc["k1"] == cam.distortion[0]
    assert "fl_x" not in doc["frames"][0]
    back = read_transforms(tmp_path)
    assert_same_cameras(scene, back)
    # OpenGL on disk: the stored matrix is camera_to_world with y and z flipped.
    np.testing.assert_allclose(np.array(doc["frames"][1]["transform_matrix"]),
                               invert_rigid(w2cs[1]) @ OPENGL_TO_OPENCV, atol=1e-12)


def test_transforms_blender_split_round_trip(tmp_path):
    scene = make_scene(models=("PINHOLE",) * 5, centred=True)
    for cam in scene.cameras:  # Blender stores one camera: same size and focal length for all
        cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy = 40, 30, 37.5, 37.5, 20.0, 15.0
        cam.name = "train/" + cam.name
    scene.image_dir = tmp_path
    scene.test_names = ["train/img9.png", "train/img12.png"]
    write_images(scene, tmp_path)
    files = write_transforms(scene, tmp_path, variant="blender")
    assert [f.name for f in files] == ["transforms_train.json", "transforms_test.json"]
    doc = json.loads(files[1].read_text())
    assert doc["frames"][0]["file_path"] == "./train/img9" and "fl_x" not in doc  # no extension, as NeRF does
    back = read_transforms(tmp_path)
    assert back.meta["variant"] == "blender"
    assert sorted(back.test_names) == sorted(scene.test_names)
    assert_same_cameras(scene, back)
    with pytest.raises(UserError, match="Blender variant"):
        write_transforms(make_scene(models=("OPENCV",)), tmp_path / "x", variant="blender")


def test_blender_reader_places_camera_where_matrix_says(tmp_path):
    """A synthetic NeRF-synthetic frame: camera at c, looking at the origin, OpenGL axes in the file."""
    c = np.array([0.0, -4.0, 2.0])
    forward = -c / np.linalg.norm(c)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w_gl = np.eye(4)
    c2w_gl[:3, :3] = np.stack([right, up, -forward], axis=1)  # OpenGL: camera looks down its -z
    c2w_gl[:3, 3] = c
    doc = {"camera_angle_x": 0.6911112070083618,
           "frames": [{"file_path": "./train/r_0", "rotation": 0.012, "transform_matrix": c2w_gl.tolist()}]}
    (tmp_path / "train").mkdir()
    Image.new("RGBA", (80, 60)).save(tmp_path / "train" / "r_0.png")
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    scene = read_transforms(tmp_path / "transforms_train.json")
    (cam,) = scene.cameras
    assert cam.name == "train/r_0.png" and (cam.width, cam.height) == (80, 60)
    np.testing.assert_allclose(cam.center, c, atol=1e-12)
    view_dir = cam.R.T @ np.array([0.0, 0.0, 1.0])  # OpenCV +z in world coordinates
    np.testing.assert_allclose(view_dir, forward, atol=1e-12)
    np.testing.assert_allclose(cam.R.T @ np.array([0.0, -1.0, 0.0]), up, atol=1e-12)  # image up = world up
    uv, z = cam.project(np.zeros((1, 3)))
    np.testing.assert_allclose(uv[0], [40.0, 30.0], atol=1e-9)
    assert z[0] == pytest.approx(np.linalg.norm(c))
    assert cam.fx == pytest.approx(0.5 * 80 / math.tan(0.5 * 0.6911112070083618))
    assert scene.test_names == []


# ---- LLFF -------------------------------------------------------------------------------------------------------

def test_llff_axes_match_imgs2poses():
    """LLFF columns = [down, right, backwards]: for the identity OpenCV pose, [+y, +x, -z] of the world."""
    pose = llff_from_c2w(np.eye(4))
    np.testing.assert_array_equal(pose[:, 0], [0, 1, 0])
    np.testing.assert_array_equal(pose[:, 1], [1, 0, 0])
    np.testing.assert_array_equal(pose[:, 2], [0, 0, -1])
    w2c = look_at_w2c(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(c2w_from_llff(llff_from_c2w(invert_rigid(w2c))), invert_rigid(w2c), atol=1e-15)


def test_llff_round_trip_keeps_per_image_focal(tmp_path):
    scene = make_scene(models=("PINHOLE",) * 4, centred=True, n_points=300)
    scene.image_dir = tmp_path / "images"
    write_images(scene, scene.image_dir)
    target = write_llff(scene, tmp_path)
    arr = np.load(target)
    assert arr.shape == (4, 17)
    names = [c.name for c in scene.cameras]  # img8, img9, img10, img11
    lex = sorted(names)  # LLFF order: img10, img11, img8, img9
    assert lex[0] == "img10.png"
    for row, name in zip(arr, lex):
        cam = scene.camera(name)
        c2w = cam.camera_to_world
        expected = np.concatenate([c2w[:3, 1:2], c2w[:3, 0:1], -c2w[:3, 2:3], c2w[:3, 3:4],
                                   [[cam.height], [cam.width], [cam.fx]]], axis=1)
        np.testing.assert_allclose(row[:15].reshape(3, 5), expected, atol=1e-12)
        uv, z = cam.project(scene.points)
        seen = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        assert seen.sum() > 20
        np.testing.assert_allclose(row[15:], np.percentile(z[seen], [0.1, 99.9]), atol=1e-12)
    back = read_llff(tmp_path)
    assert len({c.fx for c in back.cameras}) == 4  # each image keeps its own focal length
    assert_same_cameras(scene, back)
    assert set(back.meta["llff_bounds"]) == set(names)


def test_llff_downscaled_image_folder_scales_focal(tmp_path):
    scene = make_scene(models=("PINHOLE",) * 3, centred=True)
    for cam in scene.cameras:
        cam.width, cam.height, cam.cx, cam.cy = 80, 60, 40.0, 30.0
    write_llff(scene, tmp_path)
    small = tmp_path / "images_4"
    small.mkdir()
    for cam in scene.cameras:
        Image.new("RGB", (20, 15)).save(small / cam.name)
    back = read_llff(tmp_path, image_dir=small)
    for cam in scene.cameras:
        b = back.camera(cam.name)
        assert (b.width, b.height, b.cx, b.cy) == (20, 15, 10.0, 7.5)
        assert b.fx == pytest.approx(cam.fx / 4) and b.fy == pytest.approx(cam.fx / 4)


def test_llff_visibility_and_lossy_warning(tmp_path):
    scene = make_scene(models=("PINHOLE", "PINHOLE"), n_points=10)
    vis = np.zeros((10, 2), dtype=bool)
    vis[:3, 0] = True
    vis[5:, 1] = True
    with pytest.warns(UserWarning, match="lose information"):
        write_llff(scene, tmp_path, visibility=vis)
    arr = np.load(tmp_path / "poses_bounds.npy")
    z0 = scene.cameras[0].project(scene.points[:3])[1]
    np.testing.assert_allclose(arr[0, 15:], np.percentile(z0, [0.1, 99.9]))  # rows: img8, img9
    back = read_llff(tmp_path, names=["img8.png", "img9.png"])
    np.testing.assert_allclose(back.camera("img8.png").fx, scene.cameras[0].fx)


def test_llff_count_mismatch(tmp_path):
    scene = make_scene(models=("PINHOLE",) * 3, centred=True)
    scene.image_dir = tmp_path / "images"
    write_images(scene, scene.image_dir)
    write_llff(scene, tmp_path)
    Image.new("RGB", (8, 8)).save(scene.image_dir / "extra.png")
    with pytest.raises(InputError, match="3 poses but .* 4 images"):
        read_llff(tmp_path)


# ---- load_any / save_as -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def posed_scene(tmp_path_factory) -> Scene:
    root = tmp_path_factory.mktemp("posed")
    scene = make_scene(models=("PINHOLE",) * 4, centred=True, n_points=200)
    scene.image_dir = root / "images"
    write_images(scene, scene.image_dir)
    return scene


@pytest.mark.parametrize("fmt,detected", [("scene", "scene"), ("colmap", "colmap"), ("colmap-text", "colmap"),
                                          ("transforms", "transforms"), ("llff", "llff")])
def test_save_as_then_load_any(tmp_path, posed_scene, fmt, detected):
    out = tmp_path / "out"
    if fmt == "llff":  # LLFF wants images/ beside poses_bounds.npy
        write_images(posed_scene, out / "images")
    save_as(posed_scene, out, fmt)
    assert detect_format(out)[0] == detected
    images = posed_scene.image_dir if fmt.startswith("colmap") else None
    back = load_any(out, images=images, background=(0.0, 0.0, 0.0))
    assert back.background == (0.0, 0.0, 0.0)
    assert_same_cameras(posed_scene, back, by_path=fmt == "transforms")
    assert all(back.image_path(c).is_file() for c in back.cameras)


def test_load_any_work_dir_finds_images(tmp_path, posed_scene):
    write_colmap(posed_scene, tmp_path / "work" / "sparse" / "0")
    write_images(posed_scene, tmp_path / "work" / "images")
    scene = load_any(tmp_path / "work")
    assert scene.image_dir == tmp_path / "work" / "images"
    assert_same_cameras(posed_scene, scene)
    # The model folder itself (images two levels up) and a file inside it work too.
    assert load_any(tmp_path / "work" / "sparse" / "0").image_dir == tmp_path / "work" / "images"
    assert load_any(tmp_path / "work" / "sparse" / "0" / "cameras.bin").image_dir == tmp_path / "work" / "images"


def test_load_any_errors(tmp_path, posed_scene):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="looked for: scene.json.*transforms.json.*poses_bounds.npy"):
        load_any(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        load_any(tmp_path / "nope")
    save_as(posed_scene, tmp_path / "m", "colmap")  # no images anywhere near it
    with pytest.raises(InputError, match="images"):
        load_any(tmp_path / "m")
    with pytest.raises(InputError, match="'img8.png' not found in .*wrong"):
        load_any(tmp_path / "m", images=tmp_path / "wrong")
    assert len(load_any(tmp_path / "m", check_images=False).cameras) == 4
    with pytest.raises(UserError, match="unknown scene format"):
        save_as(posed_scene, tmp_path / "x", "ply")


def test_worker_crash_becomes_input_error_and_worker_restarts(tmp_path):
    import os

    from splatworks.scene import colmap

    with pytest.raises(InputError, match="pycolmap crashed while reading x"):
        colmap._run(os.abort, isolate=True, what="reading x")  # a native crash in the worker
    write_colmap(make_scene(models=("PINHOLE",)), tmp_path / "m")  # the next call gets a fresh worker
    assert len(read_colmap(tmp_path / "m").cameras) == 1


@pytest.mark.data
def test_lego_blender_poses(shared_data):
    """Real NeRF-synthetic data: 100 cameras on a sphere of radius ~4.03, all looking at the origin."""
    scene = load_any(shared_data / "nerf_synthetic_lego")
    assert len(scene.cameras) == 100 and scene.background == (1.0, 1.0, 1.0)
    assert scene.cameras[:3] == [scene.camera(f"train/r_{i}.png") for i in range(3)]  # natural order
    cam = scene.cameras[0]
    assert (cam.width, cam.height) == (800, 800) and cam.fx == pytest.approx(1111.111, abs=1e-3)
    np.testing.assert_allclose(np.linalg.norm(scene.centers(), axis=1), 4.0311, atol=1e-3)
    uv = np.array([c.project(np.zeros((1, 3)))[0][0] for c in scene.cameras])
    assert np.abs(uv - 400.0).max() < 1.0  # the object at the origin is in the middle of every view


def test_cli_convert_and_info(tmp_path, posed_scene, capsys):
    from splatworks.cli import main

    posed_scene.save(tmp_path / "s")
    assert main(["scene", "convert", str(tmp_path / "s"), "-o", str(tmp_path / "t"), "--to", "transforms"]) == 0
    assert_same_cameras(posed_scene, load_any(tmp_path / "t"), by_path=True)
    assert main(["scene", "info", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "format:    transforms" in out and "cameras:   4" in out and "missing:   0" in out
    assert main(["scene", "info", str(tmp_path / "nothing")]) == 2  # a UserError: message, no traceback
    assert "does not exist" in capsys.readouterr().err


def test_colmap_rig_poses_are_composed(tmp_path):
    """pycolmap 4 stores rig images through frames: world_to_camera = sensor_from_rig @ rig_from_world."""
    import pycolmap
    from scipy.spatial.transform import Rotation

    rec = pycolmap.Reconstruction()
    for cid in (1, 2):
        rec.add_camera(pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 51, 32, 24], camera_id=cid))
    sensor_from_rig = np.eye(4)
    sensor_from_rig[:3, :3] = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    sensor_from_rig[:3, 3] = [0.5, 0.0, 0.1]
    rig_from_world = look_at_w2c(np.array([2.0, 1.0, 3.0]))
    rig = pycolmap.Rig(rig_id=1)
    rig.add_ref_sensor(rec.camera(1).sensor_id)
    rig.add_sensor(rec.camera(2).sensor_id, pycolmap.Rigid3d(sensor_from_rig[:3]))
    rec.add_rig(rig)
    frame = pycolmap.Frame(frame_id=1, rig_id=1)
    frame.rig_from_world = pycolmap.Rigid3d(rig_from_world[:3])
    images = [pycolmap.Image(name=f"cam{c}/000.png", camera_id=c, image_id=c, frame_id=1) for c in (1, 2)]
    for im in images:
        frame.add_data_id(im.data_id)
    rec.add_frame(frame)
    for im in images:
        rec.add_image(im)
    rec.register_frame(1)
    (tmp_path / "rig").mkdir()
    rec.write_binary(str(tmp_path / "rig"))
    scene = read_colmap(tmp_path / "rig")
    np.testing.assert_allclose(scene.camera("cam1/000.png").world_to_camera, rig_from_world, atol=1e-12)
    np.testing.assert_allclose(scene.camera("cam2/000.png").world_to_camera, sensor_from_rig @ rig_from_world,
                               atol=1e-12)
    assert scene.camera("cam2/000.png").fy == 51


def test_load_any_picks_largest_model_and_attaches_masks(tmp_path, posed_scene):
    work = tmp_path / "work"
    small = Scene(cameras=posed_scene.cameras[:1])
    write_colmap(small, work / "sparse" / "0")
    write_colmap(posed_scene, work / "sparse" / "1")
    write_images(posed_scene, work / "images")
    (work / "masks").mkdir()
    Image.new("L", (8, 8), 255).save(work / "masks" / "img9.png.png")  # COLMAP's mask naming
    with pytest.warns(UserWarning, match="2 COLMAP models; using the largest"):
        scene = load_any(work)
    assert len(scene.cameras) == 4 and scene.meta["colmap_models"] == {"0": 1, "1": 4}
    assert scene.mask_dir == work / "masks"
    assert scene.camera("img9.png").mask_name == "img9.png.png" and scene.camera("img8.png").mask_name is None
    assert len(load_any(work / "sparse" / "0").cameras) == 1  # a model folder named explicitly is respected


def test_damaged_transforms_and_poses_bounds(tmp_path):
    (tmp_path / "transforms.json").write_text('{"frames": [')
    with pytest.raises(InputError, match="not valid JSON"):
        load_any(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "a.png"}]}))
    with pytest.raises(InputError, match="frame 0: every frame needs 'file_path' and 'transform_matrix'"):
        load_any(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "a.png",
                                                                      "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(InputError, match="no 'w'/'h' and the image .*a.png is missing"):
        load_any(tmp_path)
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 15)))
    with pytest.raises(InputError, match=r"expected an \(N, 17\) array"):
        read_llff(tmp_path)
