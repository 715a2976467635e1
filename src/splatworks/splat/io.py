"""Files of trained Gaussians: the 3DGS ``.ply``, antimatter15's ``.splat``, and atomic checkpoints.

3DGS ``.ply`` (binary little-endian, one ``vertex`` element, all float32, pre-activation values):
``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`` where the normals are zero,
``f_dc`` is the DC SH coefficient (RGB), ``f_rest`` the higher bands in **channel-major** order
(``f_rest[c * (K - 1) + k] = shN[k, c]``), opacity is a logit, scales are logs, rot is wxyz.

``.splat`` (no header, 32 bytes per splat, little-endian), sorted by ``prod(scale) * opacity`` descending:
float32 x, y, z | float32 linear scale x, y, z | uint8 R, G, B, A | uint8 quaternion w, x, y, z
with ``RGB = trunc(255 clip(0.5 + SH_C0 f_dc, 0, 1))``, ``A = trunc(255 sigmoid(opacity))`` and
``q = trunc(clip(q / |q| * 128 + 128, 0, 255))``.

Checkpoints: ``OUT/point_cloud/iteration_N/`` holds ``point_cloud.ply``, ``scene.splat`` and the trainer state;
a new one is written under a temporary name, renamed into place, and only then is the previous one deleted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from splatworks.errors import InputError

SH_C0 = 0.28209479177387814
SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
ITERATION_RE = re.compile(r"^iteration_(\d+)$")
POINT_CLOUD_DIR = "point_cloud"


# ---- 3DGS .ply ------------------------------------------------------------------------------------------
def ply_property_names(num_rest: int) -> list[str]:
    """Property order of the 3DGS .ply for ``num_rest`` = 3 (K - 1) higher-band coefficients."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _to_numpy(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().float().cpu().numpy() for k, v in params.items()}


def params_to_rows(params: dict[str, torch.Tensor]) -> np.ndarray:
    """(N, 17 + 3(K-1)) float32 rows in .ply property order."""
    p = _to_numpy(params)
    n = len(p["means"])
    rest = p["shN"].reshape(n, -1, 3).transpose(0, 2, 1).reshape(n, -1)  # channel-major
    return np.concatenate([p["means"], np.zeros((n, 3), np.float32), p["sh0"].reshape(n, 3), rest,
                           p["opacities"].reshape(n, 1), p["scales"], p["quats"]], axis=1).astype(np.float32)


def write_ply(path: str | Path, params: dict[str, torch.Tensor]) -> Path:
    """Write the Gaussians as a 3DGS .ply (atomically: temp file, then rename)."""
    path = Path(path)
    rows = params_to_rows(params)
    names = ply_property_names(rows.shape[1] - 17)
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(rows)}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    tmp.replace(path)
    return path


def read_ply(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a 3DGS .ply into raw parameters (means, quats, scales, opacities, sh0, shN); SH degree from f_rest."""
    from plyfile import PlyData

    path = Path(path)
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as exc:  # plyfile raises several types for broken files
        raise InputError(f"{path}: not a readable .ply file ({exc})") from exc
    names = [p.name for p in vertex.properties]
    required = ply_property_names(0)
    missing = [n for n in required if n not in names and not n.startswith("n")]
    if missing:
        raise InputError(f"{path}: not a 3DGS Gaussian .ply, it lacks {missing}")
    col = lambda name: np.asarray(vertex[name], dtype=np.float32)  # noqa: E731
    rest_names = sorted((n for n in names if n.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
    n = len(col("x"))
    if len(rest_names) % 3:
        raise InputError(f"{path}: {len(rest_names)} f_rest properties is not a multiple of 3")
    k1 = len(rest_names) // 3
    rest = (np.stack([col(r) for r in rest_names], axis=1) if rest_names else np.zeros((n, 0), np.float32))
    t = torch.from_numpy
    return {
        "means": t(np.stack([col("x"), col("y"), col("z")], axis=1)),
        "quats": t(np.stack([col(f"rot_{i}") for i in range(4)], axis=1)),
        "scales": t(np.stack([col(f"scale_{i}") for i in range(3)], axis=1)),
        "opacities": t(col("opacity")),
        "sh0": t(np.stack([col(f"f_dc_{i}") for i in range(3)], axis=1)[:, None, :]),
        "shN": t(np.ascontiguousarray(rest.reshape(n, 3, k1).transpose(0, 2, 1))),
    }


# ---- antimatter15 .splat ---------------------------------------------------------------------------------
def splat_order(scales_log: np.ndarray, opacity_logit: np.ndarray) -> np.ndarray:
    """Indices sorted by ``exp(sum log-scales) * sigmoid(opacity)``, largest first (antimatter15's converter)."""
    key = np.exp(scales_log.astype(np.float64).sum(axis=1)) / (1 + np.exp(-opacity_logit.astype(np.float64)))
    return np.argsort(-key, kind="stable")


def params_to_splat(params: dict[str, torch.Tensor]) -> np.ndarray:
    """Structured array (N,) of ``SPLAT_DTYPE`` records in file order."""
    p = _to_numpy(params)
    n = len(p["means"])
    order = splat_order(p["scales"], p["opacities"])
    out = np.zeros(n, dtype=SPLAT_DTYPE)
    out["position"] = p["means"][order]
    out["scale"] = np.exp(p["scales"][order].astype(np.float64)).astype(np.float32)
    rgb = 0.5 + SH_C0 * p["sh0"].reshape(n, 3)[order].astype(np.float64)
    alpha = 1.0 / (1.0 + np.exp(-p["opacities"][order].astype(np.float64)))
    out["rgba"] = (np.concatenate([rgb, alpha[:, None]], axis=1) * 255).clip(0, 255).astype(np.uint8)
    q = p["quats"][order].astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    out["rot"] = (q * 128 + 128).clip(0, 255).astype(np.uint8)
    return out


def write_splat(path: str | Path, params: dict[str, torch.Tensor]) -> Path:
    """Write antimatter15's .splat (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(params_to_splat(params).tobytes())
    tmp.replace(path)
    return path


def read_splat(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .splat back into raw parameters (degree-0 SH; colours/opacity/rotation as quantised in the file)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise InputError(f"{path}: size {len(data)} is not a multiple of 32 bytes; not a .splat file")
    rec = np.frombuffer(data, dtype=SPLAT_DTYPE)
    n = len(rec)
    # Decode 8-bit values to the middle of their bucket so that writing them again gives the same bytes.
    rgba = (rec["rgba"].astype(np.float64) + 0.5) / 255.0
    alpha = np.where(rec["rgba"][:, 3] == 255, 0.5, rgba[:, 3])
    logit = np.where(rec["rgba"][:, 3] == 255, 40.0, np.log(alpha / (1 - alpha)))  # sigmoid(40) == 1.0
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {
        "means": t(rec["position"]),
        "quats": t((rec["rot"].astype(np.float64) - 128.0) / 128.0),
        "scales": t(np.log(np.maximum(rec["scale"].astype(np.float64), 1e-12))),
        "opacities": t(logit),
        "sh0": t(((rgba[:, :3] - 0.5) / SH_C0)[:, None, :]),
        "shN": torch.zeros(n, 0, 3),
    }


def read_gaussians(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .ply or .splat by its extension."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path)
    if suffix == ".splat":
        return read_splat(path)
    raise InputError(f"{path}: unknown Gaussian file type {suffix!r}; use .ply or .splat")


def write_gaussians(path: str | Path, params: dict[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return write_ply(path, params)
    if suffix == ".splat":
        return write_splat(path, params)
    raise InputError(f"{path}: unknown output type {suffix!r}; use .ply or .splat")


# ---- checkpoints -----------------------------------------------------------------------------------------
def iteration_folders(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete ``point_cloud/iteration_N`` folders, sorted by N (temporary folders are ignored)."""
    root = Path(out_dir) / POINT_CLOUD_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = ITERATION_RE.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> tuple[int, Path] | None:
    """(iteration, folder) of the newest complete checkpoint under ``out_dir``, or None."""
    found = iteration_folders(out_dir)
    return found[-1] if found else None


def write_checkpoint(out_dir: str | Path, iteration: int, write: Callable[[Path], None],
                     keep_previous: bool = False) -> Path:
    """Write ``point_cloud/iteration_N`` atomically and then delete the older iteration folders.

    ``write(folder)`` fills a temporary folder; if it raises, the temporary folder is removed and every existing
    checkpoint is left untouched. Only after the rename has made the new folder visible are older ones deleted.
    """
    root = Path(out_dir) / POINT_CLOUD_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iteration_{iteration}"
    tmp = root / f".iteration_{iteration}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same iteration written again (a resumed run): swap, then drop the old copy
        stale = root / f".iteration_{iteration}.old"
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        tmp.rename(final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        tmp.rename(final)
    if not keep_previous:
        for it, folder in iteration_folders(out_dir):
            if it != iteration:
                shutil.rmtree(folder, ignore_errors=True)
    return final
