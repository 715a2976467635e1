"""The web viewer and upload page (static files; the npm install step provides Spark and three.js).

The service mounts ``STATIC_DIR`` at ``/static``, serves ``viewer_page_html()`` at ``GET /v/{pub_key}`` and
``upload_page_html()`` at ``GET /``. ``viewer_start_camera(scene)`` gives the ``start_camera`` of ``/info``.
Third-party modules land in ``STATIC_DIR / "vendor"`` through ``python -m splatworks.viewer.build``.
"""

from __future__ import annotations

from pathlib import Path

from .camera import viewer_start_camera

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"

__all__ = ["STATIC_DIR", "VENDOR_DIR", "upload_page_html", "viewer_page_html", "viewer_start_camera"]


def viewer_page_html() -> str:
    """HTML of the viewer page; it reads its job key from the URL path ``/v/{pub_key}``."""
    return (STATIC_DIR / "viewer.html").read_text(encoding="utf-8")


def upload_page_html() -> str:
    """HTML of the upload page served at ``/``."""
    return (STATIC_DIR / "upload.html").read_text(encoding="utf-8")
