"""One entry point for every scene format a user brings: ``load_any`` detects it; ``save_as`` writes one.

Detection order for ``load_any(path)`` (the first match wins):

1. ``scene.json`` (splatworks' own format): the folder holding it, or the file itself.
2. A COLMAP sparse model folder (``cameras``/``images``/``points3D`` as ``.bin`` or ``.txt``).
3. A work folder with ``sparse/0/`` (or ``sparse/``) holding a COLMAP model; images from ``images/``. When
   COLMAP split the reconstruction into ``sparse/0``, ``sparse/1``, ... the model with most images is used
   (with a warning), unless ``path`` names one model folder itself. Masks in ``masks/`` beside ``images/`` (COLMAP's ``<name>.png`` naming) are attached.
4. ``transforms_train.json`` (+ ``transforms_test.json``): NeRF-synthetic/Blender split.
5. ``transforms.json``: nerfstudio / instant-ngp (or Blender without a split).
6. ``poses_bounds.npy`` with ``images/``: LLFF.

The image folder is then checked: a few ``Scene.image_path(cam)`` must exist, or ``InputError`` says which file
is missing and how to point at the right folder (``images=...``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from splatworks.errors import InputError, UserError
from splatworks.scene.camera import SCENE_FILE, Scene

FORMATS = ("colmap", "colmap-text", "transforms", "transforms-blender", "llff", "scene")
_LOOKED_FOR = ("scene.json", "a COLMAP model (cameras/images/points3D .bin or .txt)",
               "sparse/0/ or sparse/ with a COLMAP model (+ images/)", "transforms_train.json (+ transforms_test.json)",
               "transforms.json", "poses_bounds.npy (+ images/)")


def detect_format(path: str | Path) -> tuple[str, Path]:
    """``(format, location)`` for ``path``; format is one of scene, colmap, transforms, llff.

    ``location`` is what the reader takes: the folder with scene.json, the COLMAP model folder, the transforms
    file or folder, or the poses_bounds.npy file.
    """
    from splatworks.scene.colmap import is_colmap_model

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    if path.is_file():
        name = path.name
        if name == SCENE_FILE:
            return "scene", path.parent
        if name.startswith("transforms") and name.endswith(".json"):
            return "transforms", path
        if name == "poses_bounds.npy":
            return "llff", path
        if is_colmap_model(path.parent):
            return "colmap", path.parent
        raise UserError(f"{path}: unknown scene file; give one of: {', '.join(_LOOKED_FOR)} (or its folder).")
    if (path / SCENE_FILE).is_file():
        return "scene", path
    if is_colmap_model(path):
        return "colmap", path
    for sub in (path / "sparse" / "0", path / "sparse"):
        if is_colmap_model(sub):
            return "colmap", sub
    if (path / "transforms_train.json").is_file():
        return "transforms", path
    if (path / "transforms.json").is_file():
        return "transforms", path / "transforms.json"
    if (path / "poses_bounds.npy").is_file():
        return "llff", path / "poses_bounds.npy"
    raise UserError(f"no scene found in {path}; looked for: " + "; ".join(_LOOKED_FOR) + ". Point at the folder "
                    "that holds one of these, or run 'splatworks sfm' on a folder of photos first.")


def _colmap_image_dir(model: Path) -> Path | None:
    """``images/`` beside a COLMAP model: work/images for work/sparse/0, work/sparse, or the model itself."""
    for candidate in (model.parent.parent / "images", model.parent / "images", model / "images"):
        if candidate.is_dir():
            return candidate
    return None


def _read_largest_colmap(model: Path, image_dir: Path | None, pick_largest: bool) -> Scene:
    """Read ``model``; with ``pick_largest`` and several ``sparse/N`` models, the one with most images instead."""
    from splatworks.scene.colmap import is_colmap_model, read_colmap

    siblings = [model]
    if pick_largest and model.parent.name == "sparse" and model.name.isdigit():
        siblings = sorted((p for p in model.parent.iterdir() if p.name.isdigit() and is_colmap_model(p)),
                          key=lambda p: int(p.name))
    scenes = [read_colmap(p, image_dir=image_dir) for p in siblings]
    best = max(scenes, key=lambda s: len(s.cameras))  # ties: the lowest N, as COLMAP numbers them
    if len(scenes) > 1:
        best.meta["colmap_models"] = {p.name: len(s.cameras) for p, s in zip(siblings, scenes)}
        warnings.warn(f"{model.parent} holds {len(scenes)} COLMAP models; using the largest, "
                      f"{best.meta['colmap_path']} ({len(best.cameras)} images)")
    return best


def _attach_colmap_masks(scene: Scene) -> None:
    """COLMAP-style masks beside ``images/``: ``masks/<image name>.png`` (or the same name); 0 = ignore."""
    if scene.image_dir is None or not (scene.image_dir.parent / "masks").is_dir():
        return
    mask_dir = scene.image_dir.parent / "masks"
    found = 0
    for cam in scene.cameras:
        for name in (cam.name + ".png", cam.name):
            if (mask_dir / name).is_file():
                cam.mask_name, found = name, found + 1
                break
    if found:
        scene.mask_dir = mask_dir


def load_any(path: str | Path, *, images: Path | str | None = None,
             background: tuple[float, float, float] | None = None, check_images: bool = True) -> Scene:
    """Load a scene from any supported format (see the module docstring for the detection order).

    Args:
        path: a folder or file of one of the formats.
        images: image folder to use instead of the detected one (``Camera.name`` is relative to it).
        background: RGB in [0, 1] for compositing RGBA images (stored in ``Scene.background``); default: kept
            from the file, or white for Blender scenes (NeRF-synthetic is evaluated on white).
        check_images: verify that a few images exist (turn off to convert poses without the photos).
    """
    fmt, where = detect_format(path)
    if fmt == "scene":
        scene = Scene.load(where)
    elif fmt == "colmap":
        # Only when we chose sparse/0 ourselves: a model folder the user named is the one they want.
        chosen_by_us = Path(path).is_dir() and Path(path).resolve() != where.resolve()
        scene = _read_largest_colmap(where, Path(images) if images else _colmap_image_dir(where), chosen_by_us)
        _attach_colmap_masks(scene)
    elif fmt == "transforms":
        from splatworks.scene.transforms import read_transforms

        scene = read_transforms(where)
        if scene.meta.get("variant") == "blender" and scene.background is None:
            scene.background = (1.0, 1.0, 1.0)
    else:
        from splatworks.scene.llff import read_llff

        scene = read_llff(where, image_dir=images)
    if images is not None:
        scene.image_dir = Path(images)
    if background is not None:
        scene.background = tuple(float(c) for c in background)  # type: ignore[assignment]
    scene.meta.setdefault("loaded_from", str(Path(path)))
    if check_images:
        check_image_paths(scene)
    return scene


def check_image_paths(scene: Scene, samples: int = 5) -> None:
    """Raise ``InputError`` unless the first, last and a few middle cameras' images exist."""
    if not scene.cameras:
        raise InputError("the scene has no cameras.")
    if scene.image_dir is None:
        raise InputError("the scene does not say where its images are; pass the image folder (images=...).")
    n = len(scene.cameras)
    picks = sorted({round(i * (n - 1) / max(samples - 1, 1)) for i in range(samples)})
    missing = [scene.cameras[i].name for i in picks if not scene.image_path(scene.cameras[i]).is_file()]
    if missing:
        raise InputError(f"image {missing[0]!r} not found in {scene.image_dir} ({len(missing)} of {len(picks)} "
                         "checked are missing); pass the folder that holds the images (images=... / --images).")


def save_as(scene: Scene, folder: str | Path, fmt: str) -> Path:
    """Write ``scene`` into ``folder`` as ``fmt`` and return the main file/folder written.

    Formats: ``colmap`` (binary, into ``folder/sparse/0``), ``colmap-text`` (text, same place), ``transforms``
    (nerfstudio variant), ``transforms-blender``, ``llff`` (``folder/poses_bounds.npy``), ``scene`` (scene.json).
    Images are not copied; transforms/scene files refer to them by relative path.
    """
    folder = Path(folder)
    if fmt in ("colmap", "colmap-text"):
        from splatworks.scene.colmap import write_colmap

        return write_colmap(scene, folder / "sparse" / "0", binary=(fmt == "colmap"))
    if fmt in ("transforms", "transforms-blender"):
        from splatworks.scene.transforms import write_transforms

        return write_transforms(scene, folder, variant="blender" if fmt == "transforms-blender" else "nerfstudio")[0]
    if fmt == "llff":
        from splatworks.scene.llff import write_llff

        return write_llff(scene, folder)
    if fmt == "scene":
        return scene.save(folder)
    raise UserError(f"unknown scene format {fmt!r}; use one of {', '.join(FORMATS)}.")


__all__ = ["FORMATS", "check_image_paths", "detect_format", "load_any", "save_as"]
