"""``transforms.json`` <-> ``Scene``: the NeRF-synthetic/Blender and the instant-ngp/nerfstudio variants.

Both variants store per frame a ``transform_matrix``: a (4, 4) **camera-to-world with OpenGL/Blender axes**
(x right, y up, camera looking down -z). We convert at this boundary:
``world_to_camera = inverse(c2w_gl @ OPENGL_TO_OPENCV)`` (reading) and ``c2w_gl = camera_to_world @
OPENGL_TO_OPENCV`` (writing); the world frame itself is kept as the file has it.

Variants:

- **blender** (NeRF-synthetic): ``camera_angle_x`` (horizontal field of view, radians) and frames whose
  ``file_path`` usually has no extension (``"./train/r_0"``). Image sizes come from the image files; the
  principal point is the image centre (``W / 2, H / 2``) and ``fy = fx`` unless ``camera_angle_y`` is given.
  A dataset split as ``transforms_train.json`` + ``transforms_test.json`` is read as one scene whose test
  frames become ``Scene.test_names`` (``transforms_val.json`` is not read: it overlaps neither).
- **nerfstudio** (also instant-ngp): ``fl_x, fl_y, cx, cy, w, h`` and distortion ``k1 k2 (k3 k4) p1 p2`` with an
  optional ``camera_model`` (``OPENCV``, ``OPENCV_FISHEYE``, ``PINHOLE``, ...), given globally or per frame
  (per-frame values win); instant-ngp's ``is_fisheye`` means ``OPENCV_FISHEYE``. ``cx, cy`` are taken as
  COLMAP-style pixel coordinates (what colmap2nerf and nerfstudio's ``ns-process-data`` write), so they are
  copied unchanged. nerfstudio's OPENCV ``k3`` (r^6) is kept exactly as COLMAP's FULL_OPENCV. Writing uses only
  models nerfstudio knows where an equivalent exists (SIMPLE_RADIAL and RADIAL become OPENCV with zero terms,
  FULL_OPENCV without k4-k6 becomes OPENCV + k3), so those come back as the equivalent model.

Image names (``Camera.name``) are the file paths relative to the JSON file's folder, which becomes
``Scene.image_dir``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from splatworks.errors import InputError, UserError
from splatworks.scene.camera import DISTORTION_PARAMS, Camera, Scene, natural_key
from splatworks.scene.images import image_size

# Extensions tried, in order, when a Blender ``file_path`` has none.
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG", ".webp", ".exr")
_DIST_KEYS = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")
# camera_model names we read: nerfstudio's (first four), plus COLMAP names other tools write.
_NS_MODELS = ("OPENCV", "OPENCV_FISHEYE", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "FULL_OPENCV")


# ---- reading ----------------------------------------------------------------------------------------------------

def read_transforms(path: str | Path) -> Scene:
    """Read a ``transforms*.json`` file, or a folder holding ``transforms_train.json`` (+ test) or ``transforms.json``.

    Cameras come out in natural name order; a Blender split's test frames become ``Scene.test_names``.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "transforms_train.json").is_file():
            return _read_split(path)
        if (path / "transforms.json").is_file():
            path = path / "transforms.json"
        else:
            raise InputError(f"{path}: no transforms.json or transforms_train.json in this folder.")
    elif path.name in ("transforms_train.json", "transforms_test.json", "transforms_val.json"):
        return _read_split(path.parent)
    cams = _read_file(path)
    return _make_scene(cams, path.parent, [], {"source": "transforms", "variant": _variant(path), "path": str(path)})


def _read_split(folder: Path) -> Scene:
    train = _read_file(folder / "transforms_train.json")
    test = _read_file(folder / "transforms_test.json") if (folder / "transforms_test.json").is_file() else []
    names = {c.name for c in train}
    test = [c for c in test if c.name not in names]  # a frame listed in both is a training frame
    meta = {"source": "transforms", "variant": _variant(folder / "transforms_train.json"), "path": str(folder),
            "split": "transforms_train.json" + (" + transforms_test.json" if test else "")}
    return _make_scene(train + test, folder, [c.name for c in test], meta)


def _make_scene(cams: list[Camera], folder: Path, test_names: list[str], meta: dict[str, Any]) -> Scene:
    cams = sorted(cams, key=lambda c: natural_key(c.name))
    mask_dir = folder if any(c.mask_name for c in cams) else None  # mask_path is relative to the JSON's folder
    return Scene(cameras=cams, image_dir=folder, mask_dir=mask_dir, test_names=sorted(test_names, key=natural_key),
                 meta=meta)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); fix or regenerate the file.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise InputError(f"{path}: expected a JSON object with a 'frames' list (a transforms.json file).")
    return doc


def _variant(path: Path) -> str:
    doc = _load_json(path)
    has_fl = "fl_x" in doc or any("fl_x" in f for f in doc["frames"])
    return "nerfstudio" if has_fl else "blender"


def _read_file(path: Path) -> list[Camera]:
    doc = _load_json(path)
    folder = path.parent
    cams = []
    for i, frame in enumerate(doc["frames"]):
        where = f"{path.name}, frame {i}"
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise InputError(f"{where}: every frame needs 'file_path' and 'transform_matrix'.")
        name = _resolve_name(folder, str(frame["file_path"]), where)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        if c2w.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(c2w)):
            raise InputError(f"{where}: transform_matrix must be a finite 4x4 (or 3x4) matrix.")
        w2c = Camera.world_to_camera_from_opengl_c2w(c2w)
        merged = {**{k: v for k, v in doc.items() if k != "frames"}, **frame}  # per-frame values win
        fx, fy, cx, cy, width, height, model, dist = _intrinsics(merged, folder / name, where)
        cams.append(Camera(name=name, width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
                           world_to_camera=w2c, model=model, distortion=dist,
                           camera_id=int(frame.get("camera_id", 1)), mask_name=frame.get("mask_path")))
    if all("camera_id" in f for f in doc["frames"]):
        return cams
    return _assign_camera_ids(cams)


def _resolve_name(folder: Path, file_path: str, where: str) -> str:
    """Image name relative to ``folder``; Blender ``file_path``s without extension are matched to a file."""
    rel = os.path.normpath(file_path.replace("\\", "/"))
    if Path(rel).suffix.lower() in {e.lower() for e in _IMAGE_EXTS} or (folder / rel).is_file():
        return Path(rel).as_posix()
    for ext in _IMAGE_EXTS:
        if (folder / (rel + ext)).is_file():
            return Path(rel + ext).as_posix()
    # Not on disk (yet): keep Blender's habit of PNG so the name is still well defined; load_any checks files.
    return Path(rel + ".png").as_posix()


def _intrinsics(d: dict[str, Any], image: Path, where: str) -> tuple[float, float, float, float, int, int, str,
                                                                        tuple[float, ...]]:
    width, height = d.get("w"), d.get("h")
    if width is None or height is None:
        if not image.is_file():
            raise InputError(f"{where}: the file has no 'w'/'h' and the image {image} is missing, so the image "
                             "size is unknown; add the images or the 'w' and 'h' keys.")
        width, height = image_size(image)
    width, height = int(width), int(height)
    if "fl_x" in d or "fl_y" in d:
        fx = float(d.get("fl_x", d.get("fl_y")))
        fy = float(d.get("fl_y", fx))
    elif "camera_angle_x" in d:
        fx = 0.5 * width / math.tan(0.5 * float(d["camera_angle_x"]))
        fy = 0.5 * height / math.tan(0.5 * float(d["camera_angle_y"])) if "camera_angle_y" in d else fx
    else:
        raise InputError(f"{where}: no focal length: expected 'camera_angle_x' (Blender) or 'fl_x' (nerfstudio).")
    cx = float(d.get("cx", width / 2.0))
    cy = float(d.get("cy", height / 2.0))
    dist_values = {k: float(d.get(k, 0.0)) for k in _DIST_KEYS}
    requested = str(d.get("camera_model", "")).upper()
    if requested:
        if requested not in _NS_MODELS:
            raise InputError(f"{where}: camera_model {requested} is not supported; use one of "
                             f"{', '.join(_NS_MODELS)} (or undistort the images first).")
        model = requested
    elif d.get("is_fisheye"):  # instant-ngp's colmap2nerf marks OPENCV_FISHEYE this way
        model = "OPENCV_FISHEYE"
    else:
        model = "OPENCV" if any(dist_values[k] for k in ("k1", "k2", "p1", "p2")) else "PINHOLE"
    if model == "OPENCV" and dist_values["k3"]:
        # nerfstudio's OPENCV has a k3 r^6 term (and k4 r^8): COLMAP's FULL_OPENCV holds k3 exactly (k4 = 0).
        if dist_values["k4"]:
            raise InputError(f"{where}: OPENCV distortion with k4 (an r^8 term) cannot be represented; undistort "
                             "the images first.")
        model = "FULL_OPENCV"
        dist_values.update(k4=0.0, k5=0.0, k6=0.0)
    dist = tuple(dist_values[k] for k in DISTORTION_PARAMS[model])
    return fx, fy, cx, cy, width, height, model, dist


def _assign_camera_ids(cams: list[Camera]) -> list[Camera]:
    """Frames with identical intrinsics share a camera id (1, 2, ... in order of first appearance)."""
    ids: dict[tuple[Any, ...], int] = {}
    for cam in cams:
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, cam.model, cam.distortion)
        cam.camera_id = ids.setdefault(key, len(ids) + 1)
    return cams


# ---- writing ----------------------------------------------------------------------------------------------------

def write_transforms(scene: Scene, folder: str | Path, *, variant: str = "nerfstudio", split: bool | None = None
                     ) -> list[Path]:
    """Write ``scene`` as ``transforms.json`` into ``folder``; returns the files written.

    Args:
        variant: ``"nerfstudio"`` (intrinsics and distortion per camera, global when all frames share them) or
            ``"blender"`` (``camera_angle_x`` only: needs one pinhole camera with a centred principal point and
            square pixels, else ``UserError``; ``file_path`` written without extension, as NeRF-synthetic does).
        split: write ``transforms_train.json`` + ``transforms_test.json`` (test = ``Scene.test_names``) instead of
            one ``transforms.json``; default: split when the scene has test names.
    ``file_path`` is the image path relative to ``folder`` (images are not copied).
    """
    if variant not in ("nerfstudio", "blender"):
        raise UserError(f"unknown transforms.json variant {variant!r}; use 'nerfstudio' or 'blender'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    split = bool(scene.test_names) if split is None else split
    if split:
        held_out = set(scene.test_names)
        parts = {"transforms_train.json": [c for c in scene.cameras if c.name not in held_out],
                 "transforms_test.json": [c for c in scene.cameras if c.name in held_out]}
    else:
        parts = {"transforms.json": list(scene.cameras)}
    written = []
    for file_name, cams in parts.items():
        doc = _blender_doc(scene, cams, folder) if variant == "blender" else _nerfstudio_doc(scene, cams, folder)
        target = folder / file_name
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(target)
        written.append(target)
    return written


def _file_path(scene: Scene, cam: Camera, folder: Path, strip_ext: bool) -> str:
    image = scene.image_path(cam) if scene.image_dir is not None else Path(cam.name)
    rel = Path(os.path.relpath(Path(image).absolute(), folder.absolute())).as_posix() \
        if scene.image_dir is not None else cam.name
    if strip_ext:
        rel = rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel
        rel = rel if rel.startswith(("./", "../")) else "./" + rel
    return rel


def _frame_pose(cam: Camera) -> list[list[float]]:
    return cam.camera_to_world_opengl().tolist()


def _blender_doc(scene: Scene, cams: list[Camera], folder: Path) -> dict[str, Any]:
    ref = cams[0] if cams else (scene.cameras[0] if scene.cameras else None)
    for cam in cams:
        same = ref is not None and (cam.fx, cam.width, cam.height) == (ref.fx, ref.width, ref.height)
        if not cam.is_pinhole or not same or abs(cam.fx - cam.fy) > 1e-9 * cam.fx \
                or abs(cam.cx - cam.width / 2) > 1e-9 or abs(cam.cy - cam.height / 2) > 1e-9:
            raise UserError(f"camera {cam.name!r} cannot be written in the Blender variant (it stores one pinhole "
                            "camera with a centred principal point and square pixels); use variant='nerfstudio'.")
    doc: dict[str, Any] = {"camera_angle_x": ref.fov_x if ref else 0.0}
    doc["frames"] = [{"file_path": _file_path(scene, c, folder, strip_ext=True), "transform_matrix": _frame_pose(c)}
                     for c in cams]
    return doc


def _intrinsics_dict(cam: Camera) -> dict[str, Any]:
    """nerfstudio keys for ``cam``; COLMAP-only models are written as the nerfstudio model they equal."""
    model, dist = cam.model, dict(zip(DISTORTION_PARAMS[cam.model], cam.distortion))
    if model in ("SIMPLE_RADIAL", "RADIAL"):  # OPENCV with p1 = p2 = 0 (and k2 = 0) is the same lens
        model, dist = "OPENCV", {"k1": dist["k1"], "k2": dist.get("k2", 0.0), "p1": 0.0, "p2": 0.0}
    elif model == "FULL_OPENCV" and not any(dist[k] for k in ("k4", "k5", "k6")):
        model, dist = "OPENCV", {k: dist[k] for k in ("k1", "k2", "p1", "p2", "k3")}  # nerfstudio reads k3
    d: dict[str, Any] = {"camera_model": model, "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx, "cy": cam.cy,
                         "w": cam.width, "h": cam.height}
    d.update(dist)
    return d


def _nerfstudio_doc(scene: Scene, cams: list[Camera], folder: Path) -> dict[str, Any]:
    intr = [_intrinsics_dict(c) for c in cams]
    shared = all(d == intr[0] for d in intr) if intr else True
    doc: dict[str, Any] = dict(intr[0]) if (intr and shared) else {}
    frames = []
    for cam, d in zip(cams, intr):
        frame: dict[str, Any] = {"file_path": _file_path(scene, cam, folder, strip_ext=False),
                                 "transform_matrix": _frame_pose(cam)}
        if not shared:
            frame.update(d)
        if len({c.camera_id for c in cams}) > 1:
            frame["camera_id"] = cam.camera_id
        if cam.mask_name is not None and scene.mask_dir is not None:
            frame["mask_path"] = Path(os.path.relpath((scene.mask_dir / cam.mask_name).absolute(),
                                                      folder.absolute())).as_posix()
        frames.append(frame)
    doc["frames"] = frames
    return doc


__all__ = ["read_transforms", "write_transforms"]
