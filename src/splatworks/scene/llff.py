"""LLFF ``poses_bounds.npy`` <-> ``Scene``, exactly as LLFF's ``imgs2poses.py`` writes it.

File layout: an (N, 17) float64 array, one row per image. Row ``i`` = a (3, 5) matrix flattened row-major
(15 values), then ``near, far``:

    [ R_llff | t | [H, W, f]^T ]      R_llff, t: camera-to-world rotation and camera centre (world units)

LLFF axes: the columns of ``R_llff`` are the camera's [down, right, backwards] directions in world coordinates
(LLFF's comment: "[-u, r, -t]"). From our OpenCV camera-to-world ``c2w`` (columns right, down, forward):
``R_llff = [c2w[:, 1], c2w[:, 0], -c2w[:, 2]]``, and back again by the inverse permutation.

Bounds: ``near, far`` = the 0.1th and 99.9th percentiles (``np.percentile(z, 0.1)``, ``(z, 99.9)``) of the
camera-space depths of the sparse points that image sees.

Image order: rows follow the image names sorted **lexicographically** (LLFF: ``np.argsort(names)`` on write and
``sorted(os.listdir(images))`` on read, so ``img10`` comes before ``img9``). The ``Scene`` itself keeps natural
name order; only the rows of the file use LLFF's order.

Intrinsics: LLFF keeps only H, W and one focal length f per image (principal point at the image centre,
fx = fy = f). Reading keeps each image's own f (never averaged); when the images on disk are smaller than H x W
(e.g. ``images_4``), f is scaled by the size ratio as LLFF's loader does. Writing stores ``fx`` and warns when a
camera has fx != fy, an off-centre principal point, or lens distortion, which the format cannot hold.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from splatworks.errors import InputError
from splatworks.scene.camera import Camera, Scene, invert_rigid, natural_key
from splatworks.scene.images import image_size

POSES_BOUNDS = "poses_bounds.npy"
# The extensions LLFF's loader picks up, plus their obvious relatives.
LLFF_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
NEAR_PERCENTILE, FAR_PERCENTILE = 0.1, 99.9


def llff_image_names(image_dir: str | Path) -> list[str]:
    """Image files in ``image_dir`` in LLFF order (plain lexicographic sort)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"LLFF image folder {image_dir} does not exist; LLFF data keeps its photos in 'images/' "
                         "next to poses_bounds.npy.")
    return sorted(p.name for p in image_dir.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LLFF_IMAGE_EXTS)


def c2w_from_llff(pose: np.ndarray) -> np.ndarray:
    """(3, 5) or (3, 4) LLFF pose -> (4, 4) OpenCV camera-to-world."""
    pose = np.asarray(pose, dtype=np.float64)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = pose[:, 1], pose[:, 0], -pose[:, 2]
    c2w[:3, 3] = pose[:, 3]
    return c2w


def llff_from_c2w(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world -> (3, 4) LLFF [down, right, backwards | centre]."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return np.stack([c2w[:3, 1], c2w[:3, 0], -c2w[:3, 2], c2w[:3, 3]], axis=1)


def read_llff(path: str | Path, image_dir: str | Path | None = None, names: list[str] | None = None) -> Scene:
    """Read ``poses_bounds.npy`` (the file, or the folder holding it) into a ``Scene``.

    Args:
        image_dir: folder of the images (default ``images/`` beside the file).
        names: image names in the file's row order; default: the files of ``image_dir`` in LLFF order.
    Per-image bounds land in ``Scene.meta["llff_bounds"]`` as ``{name: [near, far]}``.
    """
    path = Path(path)
    file = path / POSES_BOUNDS if path.is_dir() else path
    folder = file.parent
    image_dir = Path(image_dir) if image_dir is not None else folder / "images"
    try:
        arr = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{file} does not exist.") from None
    except ValueError as e:
        raise InputError(f"{file} is not a numpy .npy array ({e}); regenerate it with LLFF's imgs2poses.") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.all(np.isfinite(arr)):
        raise InputError(f"{file}: expected an (N, 17) array of finite numbers (15 pose values + near, far per "
                         f"image), got shape {arr.shape}.")
    checked_sizes = names is None or image_dir.is_dir()
    if names is None:
        names = llff_image_names(image_dir)
    if len(names) != len(arr):
        raise InputError(f"{file} has {len(arr)} poses but {image_dir} has {len(names)} images; LLFF pairs them "
                         "in sorted name order, so the folder must hold exactly the posed images.")
    cams, bounds = [], {}
    for name, row in zip(names, arr):
        pose = row[:15].reshape(3, 5)
        height, width, focal = (float(v) for v in pose[:, 4])
        w_img, h_img = int(round(width)), int(round(height))
        if checked_sizes and (image_dir / name).is_file():
            w_img, h_img = image_size(image_dir / name)
        sx, sy = w_img / width, h_img / height  # downscaled image folders (images_4) keep full-size hwf
        cams.append(Camera(name=name, width=w_img, height=h_img, fx=focal * sx, fy=focal * sy, cx=w_img / 2.0,
                           cy=h_img / 2.0, world_to_camera=invert_rigid(c2w_from_llff(pose))))
        bounds[name] = [float(row[15]), float(row[16])]
    ids: dict[tuple[float, ...], int] = {}
    for cam in cams:  # images with the same intrinsics share a camera id
        cam.camera_id = ids.setdefault((cam.width, cam.height, cam.fx, cam.fy), len(ids) + 1)
    cams.sort(key=lambda c: natural_key(c.name))
    return Scene(cameras=cams, image_dir=image_dir, meta={"source": "llff", "path": str(file),
                                                          "llff_bounds": bounds})


def points_in_view(cam: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P,) camera z of ``points`` (P, 3) world and (P,) bool: in front of ``cam`` and projecting inside its image."""
    uv, z = cam.project(points)
    return z, (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)


def view_near_bound(cam: Camera, points: np.ndarray) -> float | None:
    """LLFF's near bound of one camera from the points in its view (``NEAR_PERCENTILE`` of their camera z); None
    when no point is in view. ``depth_bounds`` does the same for every camera of a scene."""
    if not len(points):
        return None
    z, seen = points_in_view(cam, np.asarray(points, dtype=np.float64))
    return float(np.percentile(z[seen], NEAR_PERCENTILE)) if seen.any() else None


def depth_bounds(scene: Scene, visibility: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) near/far per camera (scene order): LLFF's percentiles of the visible sparse points' depths.

    Args:
        visibility: (P, N) bool, point p observed by camera n (from SfM tracks). Without it a point counts as
            seen when it projects inside the image in front of the camera.
    A camera that sees no point gets the widest bounds of the others (or (0.1 r, 10 r) around the camera
    extent r when there are no points at all), with a warning.
    """
    n = len(scene.cameras)
    out = np.full((n, 2), np.nan)
    pts = scene.points
    for i, cam in enumerate(scene.cameras):
        if not len(pts):
            break
        z, seen = points_in_view(cam, pts)
        if visibility is not None:
            seen = np.asarray(visibility, dtype=bool)[:, i] & (z > 0)
        if seen.any():
            out[i] = np.percentile(z[seen], NEAR_PERCENTILE), np.percentile(z[seen], FAR_PERCENTILE)
    missing = ~np.isfinite(out[:, 0])
    if missing.any():
        if (~missing).any():
            out[missing] = np.nanmin(out[:, 0]), np.nanmax(out[:, 1])
        else:
            _, radius = scene.camera_extent()
            radius = max(radius, 1.0)
            out[missing] = 0.1 * radius, 10.0 * radius
        warnings.warn(f"{int(missing.sum())} camera(s) see no sparse point; their LLFF near/far bounds are guessed")
    return out


def write_llff(scene: Scene, folder: str | Path, visibility: np.ndarray | None = None) -> Path:
    """Write ``scene`` as ``folder/poses_bounds.npy`` (rows in LLFF's lexicographic name order).

    Stores H, W and ``fx`` per image; warns for fx != fy, an off-centre principal point or distortion (lost).
    The images are not copied: LLFF expects them in ``folder/images`` with the same names.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bounds = depth_bounds(scene, visibility)
    order = sorted(range(len(scene.cameras)), key=lambda i: scene.cameras[i].name)
    lossy = []
    rows = []
    for i in order:
        cam = scene.cameras[i]
        if cam.fx != cam.fy or abs(cam.cx - cam.width / 2) > 1e-6 or abs(cam.cy - cam.height / 2) > 1e-6 \
                or not cam.is_pinhole:
            lossy.append(cam.name)
        pose = np.concatenate([llff_from_c2w(cam.camera_to_world), [[cam.height], [cam.width], [cam.fx]]], axis=1)
        rows.append(np.concatenate([pose.ravel(), bounds[i]]))
    if lossy:
        warnings.warn(f"LLFF stores one focal length and a centred principal point without distortion: "
                      f"{len(lossy)} camera(s) lose information (e.g. {lossy[0]!r}); fx was stored")
    target = folder / POSES_BOUNDS
    tmp = folder / (POSES_BOUNDS + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.array(rows, dtype=np.float64).reshape(-1, 17))
    os.replace(tmp, target)
    return target


__all__ = ["POSES_BOUNDS", "c2w_from_llff", "depth_bounds", "llff_from_c2w", "llff_image_names", "read_llff",
           "write_llff"]
