"""MixVoxels-style mixed static/dynamic voxel backend (ICCV 2023 "MixVoxels", our own PyTorch implementation).

Public API (heavy imports stay lazy so ``splatworks --help`` is quick)::

    from splatworks.voxels import MixVoxelsConfig, preset, train_mixvoxels, render_video, evaluate
"""

from __future__ import annotations

from typing import Any

from splatworks.voxels.config import PRESETS, MixVoxelsConfig, preset

__all__ = ["MixVoxelsConfig", "PRESETS", "preset", "train_mixvoxels", "render_video", "evaluate", "DepthTargets",
           "load_model", "MixVoxelsResult"]

_LAZY = {"train_mixvoxels": "splatworks.voxels.train", "load_model": "splatworks.voxels.train",
         "MixVoxelsResult": "splatworks.voxels.train", "render_video": "splatworks.voxels.evaluation",
         "evaluate": "splatworks.voxels.evaluation", "DepthTargets": "splatworks.voxels.data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
