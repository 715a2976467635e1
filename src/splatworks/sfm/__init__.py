"""Structure-from-motion with pycolmap: features, matching, mapping, pose check, undistortion, sparse depth.

``run_sfm(images_dir, work_dir, SfmConfig())`` is the entry point (pycolmap runs in a worker process);
``splatworks.sfm.quality`` compares poses with ground truth; ``splatworks.sfm.depth`` reads the sparse depth.
"""

from splatworks.sfm.pipeline import PRESETS, SfmConfig, SfmResult, preset, run_sfm

__all__ = ["PRESETS", "SfmConfig", "SfmResult", "preset", "run_sfm"]
