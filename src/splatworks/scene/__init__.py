"""Scene representation (cameras, images, masks, sparse points) and its readers/writers.

Readers convert into the conventions of ``camera.py`` (OpenCV axes, world-to-camera); writers convert out.
``load_any`` / ``save_as`` pick the format; ``images`` is the one place image files are read.
"""

from splatworks.scene.camera import Camera, Scene, invert_rigid, natural_key
from splatworks.scene.colmap import read_colmap, scene_from_reconstruction, write_colmap
from splatworks.scene.images import (ImageInfo, ImageLimits, load_image, prepare_images, probe_image,
                                     validate_image_folder)
from splatworks.scene.io import detect_format, load_any, save_as
from splatworks.scene.llff import read_llff, write_llff
from splatworks.scene.transforms import read_transforms, write_transforms

__all__ = ["Camera", "ImageInfo", "ImageLimits", "Scene", "detect_format", "invert_rigid", "load_any",
           "load_image", "natural_key", "prepare_images", "probe_image", "read_colmap", "read_llff",
           "read_transforms", "save_as", "scene_from_reconstruction", "validate_image_folder", "write_colmap",
           "write_llff", "write_transforms"]
