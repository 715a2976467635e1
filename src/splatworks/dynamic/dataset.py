"""The prepared multi-view video dataset that every dynamic trainer reads.

Layout of a dataset folder (written by ``splatworks dynamic prepare``)::

    DATASET/
      dataset.json           this file's index: cameras, frames, held-out cameras, fps, provenance
      scene.json, points.npz the rig as a Scene: one Camera per rig camera (name "cam01"), sparse points (SfM's,
                             imported, or triangulated at the known poses: dataset.json meta "points")
      images/cam01/000042.png   RGB frames, by camera and frame number
      masks/cam01/000042.png    8-bit masks: 255 = static background, 0 = dynamic
      transforms.json, poses_bounds.npy, colmap_depth.npy   the rig in the usual exchange formats

Fixed cameras share one pose over time, so the rig's cameras are the cameras of every frame;
``scene_at(frame)`` returns a ``Scene`` whose cameras name that frame's images and masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from splatworks.scene.camera import Camera, Scene

DATASET_FILE = "dataset.json"
# Plane-sweep depth of the first frame's training views (`dynamic prepare`, sfm.mvs.write_depth_maps), relative to
# the dataset root; frame 0 of the sequential trainer carves free space with it.
DENSE_DEPTH_FILE = "calibration/dense_depth.npy"


@dataclass
class DynamicDataset:
    """A calibrated fixed rig and its frames.

    Attributes:
        root: dataset folder.
        rig: Scene with one Camera per rig camera (``name`` is the camera name, e.g. ``"cam01"``).
        frames: frame numbers present for every camera, ascending (the common length).
        test_cameras: names of held-out cameras (calibrated, never trained on).
        fps: frame rate of the source videos (frames per second).
        meta: provenance (source, calibration method and errors, mask method, timings).
    """

    root: Path
    rig: Scene
    frames: list[int]
    test_cameras: list[str] = field(default_factory=list)
    fps: float = 30.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.rig.cameras]

    @property
    def train_camera_names(self) -> list[str]:
        return [n for n in self.camera_names if n not in set(self.test_cameras)]

    def image_path(self, camera: str, frame: int) -> Path:
        return self.root / "images" / camera / f"{frame:06d}.png"

    def mask_path(self, camera: str, frame: int) -> Path:
        return self.root / "masks" / camera / f"{frame:06d}.png"

    def scene_at(self, frame: int) -> Scene:
        """The rig at one instant: cameras named ``camXX/NNNNNN.png`` with their masks; held-out cameras kept."""
        cams: list[Camera] = []
        for cam in self.rig.cameras:
            name = f"{cam.name}/{frame:06d}.png"
            mask = name if self.mask_path(cam.name, frame).exists() else None
            cams.append(replace(cam, name=name, mask_name=mask, frame=frame,
                                world_to_camera=cam.world_to_camera.copy()))
        test = [f"{c}/{frame:06d}.png" for c in self.test_cameras]
        return Scene(cameras=cams, image_dir=self.root / "images", mask_dir=self.root / "masks",
                     points=self.rig.points, point_colors=self.rig.point_colors, point_errors=self.rig.point_errors,
                     test_names=test, background=self.rig.background, meta=dict(self.rig.meta))

    def save(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.rig.save(self.root)
        doc = {"format": "splatworks.dynamic/1", "frames": self.frames, "test_cameras": self.test_cameras,
               "fps": self.fps, "meta": self.meta,
               "layout": {"images": "images/{camera}/{frame:06d}.png",
                          "masks": "masks/{camera}/{frame:06d}.png (255 = static, 0 = dynamic)"}}
        tmp = self.root / (DATASET_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.root / DATASET_FILE)
        return self.root / DATASET_FILE

    @classmethod
    def load(cls, root: str | Path) -> "DynamicDataset":
        root = Path(root)
        if not (root / DATASET_FILE).exists():
            raise FileNotFoundError(f"{root} is not a prepared dataset (no {DATASET_FILE}); "
                                    f"run `splatworks dynamic prepare VIDEOS_DIR -o {root}` first")
        doc = json.loads((root / DATASET_FILE).read_text())
        return cls(root=root, rig=Scene.load(root), frames=[int(f) for f in doc["frames"]],
                   test_cameras=list(doc.get("test_cameras", [])), fps=float(doc.get("fps", 30.0)),
                   meta=doc.get("meta", {}))
