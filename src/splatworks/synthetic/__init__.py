"""Synthetic test scenes the project generates itself (known poses, depth and masks).

``make_static_scene`` renders a textured room corner from an orbit of cameras; ``make_dynamic_rig`` films the
same room with a fixed rig while two textured objects move (videos, frames, GT masks, depth, calibration.json).
"""

from splatworks.synthetic.scenes import DynamicRigTruth, look_at, make_dynamic_rig, make_static_scene

__all__ = ["DynamicRigTruth", "look_at", "make_dynamic_rig", "make_static_scene"]
