"""4D export for the web viewer: a static layer written once plus, per frame, only the dynamic Gaussians.

Layout (every layer is an antimatter15 ``.splat``, 32 bytes per Gaussian, see ``splat/io.py``)::

    EXPORT/manifest.json
    EXPORT/static.splat              Gaussians that never change (the frozen static layer)
    EXPORT/frames/000000.splat       the Gaussians of frame 0 that are not in the static layer, ...

``manifest.json`` (read by the viewer's SequencePlayer, docs/viewer.md)::

    {"schema": "splatworks.4d/1", "format": "splat", "fps": 30.0, "frames": 150, "frames_ready": 150,
     "static": "static.splat", "frame_files": ["frames/000000.splat", ...], "frame_urls": (same list),
     "frame_pattern": "frames/{frame}.splat", "frame_digits": 6, "frame_numbers": [dataset frame numbers],
     "bytes": {"static": ..., "per_frame": [...], "per_frame_mean": ..., "per_frame_max": ...},
     "coordinates": "..."}

Paths are relative to the manifest. ``frames`` is the length of the sequence, ``frames_ready`` how many layers
exist now (an export of a run still training grows; the viewer polls until they are equal). Coordinates are the
dataset's world frame with OpenCV cameras; the viewer converts to three.js axes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from splatworks.errors import UserError
from splatworks.progress import ProgressFn, emit

MANIFEST = "manifest.json"


def frame_name(index: int) -> str:
    return f"frames/{index:06d}.splat"


def export_4d(train_dir: str | Path, out_dir: str | Path, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write the static layer, per-frame dynamic layers and ``manifest.json``; returns the manifest.

    The static layer is the frozen layer of training (``freeze_static``, the default). A run trained without it
    has no static layer: every frame then carries all of its Gaussians (the manifest's ``static`` is null).
    Layers already written for an earlier export of the same run are rewritten (cheap), so re-running an export
    while training goes on just appends the new frames.
    """
    from splatworks.dynamic import sequential as seq
    from splatworks.dynamic.render import SOURCE_FILE
    from splatworks.splat.io import write_splat

    train_dir, out = Path(train_dir), Path(out_dir)
    frames = seq.trained_frames(train_dir)
    if not frames:
        raise UserError(f"{train_dir} has no trained frames; run `splatworks dynamic train DATASET -o {train_dir}`")
    state = json.loads((train_dir / seq.STATE_FILE).read_text())
    source = json.loads((train_dir / SOURCE_FILE).read_text()) if (train_dir / SOURCE_FILE).exists() else {}
    (out / "frames").mkdir(parents=True, exist_ok=True)
    static_bytes = 0
    static_rel: str | None = None
    static_path = train_dir / seq.STATIC_FILE
    if static_path.exists():
        static = torch.load(static_path, map_location="cpu")
        if len(static["ids"]):
            write_splat(out / "static.splat", {k: static[k] for k in seq.PARAM_KEYS})
            static_bytes = (out / "static.splat").stat().st_size
            static_rel = "static.splat"
    per_frame: list[int] = []
    files: list[str] = []
    for i, f in enumerate(frames):
        dyn = torch.load(seq.frame_file(train_dir, f), map_location="cpu")
        rel = frame_name(i)
        write_splat(out / rel, {k: dyn[k] for k in seq.PARAM_KEYS})
        per_frame.append((out / rel).stat().st_size)
        files.append(rel)
        emit(progress, "export4d", i + 1, len(frames), f"frame {f}: {per_frame[-1] / 1e6:.2f} MB")
    total = int(state.get("frames_total", len(frames)))
    manifest = {
        "schema": "splatworks.4d/1",
        "format": "splat",
        "fps": float(source.get("fps", 30.0)),
        "frames": total,
        "frames_ready": len(frames),
        "static": static_rel,
        "frame_files": files,
        "frame_urls": files,
        "frame_pattern": "frames/{frame}.splat",
        "frame_digits": 6,
        "frame_numbers": frames,
        "bytes": {"static": static_bytes, "per_frame": per_frame,
                  "per_frame_mean": sum(per_frame) / len(per_frame), "per_frame_max": max(per_frame),
                  "total": static_bytes + sum(per_frame)},
        "coordinates": "world frame of the dataset; OpenCV cameras (x right, y down, z forward); .splat records",
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / MANIFEST)
    return manifest


def load_manifest(export_dir: str | Path) -> dict[str, Any]:
    path = Path(export_dir) / MANIFEST
    if not path.exists():
        raise UserError(f"{export_dir} has no {MANIFEST}; run `splatworks dynamic export TRAIN_DIR -o {export_dir}`")
    return json.loads(path.read_text())


def load_frame_layers(export_dir: str | Path, index: int) -> dict[str, torch.Tensor]:
    """Raw parameters of frame ``index`` as the viewer sees it: static layer + that frame's layer (.splat precision)."""
    from splatworks.splat.io import read_splat

    m = load_manifest(export_dir)
    parts = [read_splat(Path(export_dir) / m["frame_files"][index])]
    if m.get("static"):
        parts.insert(0, read_splat(Path(export_dir) / m["static"]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
