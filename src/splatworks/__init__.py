"""splatworks: photos and multi-view videos to 3D/4D Gaussian-splatting scenes, served to a browser."""

__version__ = "0.1.0"
