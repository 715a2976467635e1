"""Structure-from-motion with pycolmap: features, matching, mapping, pose check, undistortion, sparse depth.

``run_sfm(images_dir, work_dir, SfmConfig())`` is the entry point (pycolmap runs in a worker process);
``splatworks.sfm.quality`` compares poses with ground truth; ``splatworks.sfm.depth`` reads the sparse depth.
``run_known_poses(scene, work_dir)`` keeps a scene's exact poses and only triangulates points (``known_poses``).
"""

from splatworks.sfm.known_poses import KnownPosesConfig, run_known_poses
from splatworks.sfm.pipeline import PRESETS, SfmConfig, SfmResult, preset, run_sfm

__all__ = ["PRESETS", "KnownPosesConfig", "SfmConfig", "SfmResult", "preset", "run_known_poses", "run_sfm"]
