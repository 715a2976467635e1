"""Scene representation (cameras, images, masks, sparse points) and its readers/writers."""

from splatworks.scene.camera import Camera, Scene, invert_rigid, natural_key

__all__ = ["Camera", "Scene", "invert_rigid", "natural_key"]
