"""The one place images enter splatworks: probing, loading, validating and normalising user photos.

Everything that reads a user image (SfM, the trainers, the upload service) goes through this module, so the
rules live in one place:

- Files are identified by their **content**, not their extension, and decoded completely so that truncated or
  corrupt files are caught up front (``probe_image``), not halfway through a training run. JPEGs are also
  decoded by FFmpeg with strict checks (``ImageLimits.strict_jpeg``): libjpeg only warns about damaged data.
- Images that declare more than ``ImageLimits.max_pixels`` pixels are refused **before** decoding
  (decompression bombs: a few-KB PNG can declare 20000 x 20000 pixels).
- EXIF orientation (tag 0x0112) is applied, so arrays and sizes are as the photo is meant to be seen.
- Grayscale / palette / CMYK become RGB; 16-bit PNG/TIFF keep their precision (scaled by 1/65535, not clipped
  to 8 bits); alpha is composited on a background colour with straight (non-premultiplied) alpha:
  ``rgb * a + background * (1 - a)``.
- HEIC/HEIF is read through ``pillow-heif`` (registered on import when installed).
- The user's folder is never modified: ``prepare_images`` writes normalised copies elsewhere.

Shapes: H x W image size; arrays are (H, W, 3) float32 RGB in [0, 1] once loaded.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from splatworks.config import option
from splatworks.errors import InputError

try:  # HEIC/HEIF from phones; optional so a minimal install still runs.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except Exception:  # pragma: no cover - depends on the environment
    HEIF_SUPPORTED = False

# Pillow format names we accept. MPO is what Pillow calls many phone JPEGs (JPEG + embedded extra frames).
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "HEIF", "AVIF")
JPEG_FORMATS = ("JPEG", "MPO")
ORIENTATION_TAG = 0x0112  # EXIF Orientation
_HEIF_SUFFIXES = (".heic", ".heif", ".hif")
# Pillow warns between its MAX_IMAGE_PIXELS and twice that; our own ImageLimits.max_pixels check decides instead
# (Pillow still raises above twice). A process-wide filter: catch_warnings() is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_MiB = 1 << 20


@dataclass
class ImageLimits:
    """What the system accepts from a user (the service may tighten these per user)."""

    max_pixels: int = option(100_000_000, "Largest image accepted, in pixels (width x height); larger files are "
                                          "refused before decoding (decompression-bomb guard; Pillow itself "
                                          "refuses more than ~179 MP whatever this says).")
    max_file_bytes: int = option(200 * _MiB, "Largest image file accepted, in bytes.")
    max_count: int = option(5000, "Most images accepted in one folder.")
    min_count: int = option(3, "Fewest images a reconstruction needs (at least 3 overlapping photos).")
    strict_jpeg: bool = option(True, "Also decode JPEGs with FFmpeg's strict error checks, which catch damaged "
                                     "data (zero-filled blocks, an end marker mid-image) that Pillow silently "
                                     "fills with grey; roughly doubles the time to check a JPEG.")


@dataclass
class ImageInfo:
    """What ``probe_image`` found out about one file.

    Attributes:
        path: the file that was probed (for ``prepare_images``: the written copy).
        width, height: size in pixels **after** EXIF orientation (what ``load_image`` returns).
        mode: Pillow mode of the file as stored (``"RGB"``, ``"RGBA"``, ``"L"``, ``"I;16"``, ...).
        format: Pillow format name identified from the content (``"JPEG"``, ``"PNG"``, ``"HEIF"``, ...).
        bits: bits per channel (8 or 16; 32 for integer/float TIFFs).
        has_alpha: the file has an alpha channel (or palette transparency).
        exif_rotated: the EXIF orientation tag asks for a rotation or flip (orientation 2-8).
        source: for ``prepare_images`` output, the original file it was made from (else None).
    """

    path: Path
    width: int
    height: int
    mode: str
    format: str
    bits: int
    has_alpha: bool
    exif_rotated: bool
    source: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation."""
        return self.width, self.height


# ---- probing ----------------------------------------------------------------------------------------------------

def probe_image(path: str | Path, limits: ImageLimits | None = None) -> ImageInfo:
    """Identify ``path`` by content and decode it fully; raise ``InputError`` (file + cause + fix) if unusable."""
    path = Path(path)
    limits = limits or ImageLimits()
    with _opened(path, limits) as im:
        _decode_check(path, im)
        if limits.strict_jpeg and im.format in JPEG_FORMATS:
            _strict_jpeg_check(path)
        return _describe(path, im)


class _opened:
    """Context manager: ``Image.open`` with our limits checked and Pillow's errors turned into InputErrors."""

    def __init__(self, path: Path, limits: ImageLimits) -> None:
        self.path, self.limits, self.im = path, limits, None

    def __enter__(self) -> Image.Image:
        path, limits = self.path, self.limits
        if not path.is_file():
            raise InputError(f"{path.name}: not found or not a regular file ({path}).")
        nbytes = path.stat().st_size
        if nbytes == 0:
            raise InputError(f"{path.name}: the file is empty (0 bytes); copy it again from the camera or phone.")
        if nbytes > limits.max_file_bytes:
            raise InputError(f"{path.name}: the file is {nbytes / _MiB:.0f} MiB, more than the limit of "
                             f"{limits.max_file_bytes / _MiB:.0f} MiB; save it as a smaller JPEG.")
        try:
            self.im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise InputError(f"{path.name}: refused as a possible decompression bomb ({e}); images must have "
                             f"at most {limits.max_pixels:,} pixels: downscale it.") from None
        except UnidentifiedImageError:
            if path.suffix.lower() in _HEIF_SUFFIXES and not HEIF_SUPPORTED:
                raise InputError(f"{path.name}: HEIC/HEIF images need the 'pillow-heif' package, which is not "
                                 "installed; install it or convert the photo to JPEG or PNG.") from None
            raise InputError(f"{path.name}: not an image in a supported format (content not recognised); use "
                             f"JPEG, PNG, WEBP, TIFF or HEIC, or remove the file from the folder.") from None
        except (OSError, SyntaxError, ValueError, struct.error) as e:
            raise InputError(f"{path.name}: corrupt image header ({e}); re-export or re-copy the file.") from None
        im = self.im
        if im.format not in SUPPORTED_FORMATS:
            im.close()
            raise InputError(f"{path.name}: {im.format} images are not supported; convert it to JPEG or PNG.")
        w, h = im.size
        if w <= 0 or h <= 0:
            im.close()
            raise InputError(f"{path.name}: the image declares an empty size {w}x{h}; the file is damaged.")
        if w * h > limits.max_pixels:
            im.close()
            raise InputError(f"{path.name}: declares {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the limit "
                             f"of {limits.max_pixels / 1e6:.0f} MP (possible decompression bomb); downscale it.")
        return im

    def __exit__(self, *exc: Any) -> None:
        if self.im is not None:
            self.im.close()


def _describe(path: Path, im: Image.Image, full: bool = True) -> ImageInfo:
    orientation = _orientation(im, full)
    w, h = im.size
    if orientation in (5, 6, 7, 8):  # these orientations swap width and height
        w, h = h, w
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    return ImageInfo(path=path, width=w, height=h, mode=im.mode, format=str(im.format), bits=_bits(path, im),
                     has_alpha=has_alpha, exif_rotated=orientation in range(2, 9))


def image_size(path: str | Path, limits: ImageLimits | None = None) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only (fast; no decoding, no corruption check)."""
    path = Path(path)
    with _opened(path, limits or ImageLimits()) as im:
        info = _describe(path, im, full=False)
    return info.width, info.height


def _orientation(im: Image.Image, full: bool = True) -> int:
    """EXIF orientation 1-8. ``full=False`` reads only metadata before the pixels (PNG may put eXIf after them,
    and Pillow would decode the whole image to find it)."""
    try:
        if not full and im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = exif.get(ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a broken EXIF block should not make a good photo unusable
        return 1


def _bits(path: Path, im: Image.Image) -> int:
    if im.format == "PNG":
        with open(path, "rb") as f:
            header = f.read(26)
        if len(header) == 26 and header[12:16] == b"IHDR":
            return int(header[24])  # IHDR bit depth (1, 2, 4, 8 or 16)
    if im.format == "TIFF":
        bps = getattr(im, "tag_v2", {}).get(258)
        if bps:
            return int(bps[0] if isinstance(bps, (tuple, list)) else bps)
    if im.mode.startswith("I;16"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    return 8


def _needs_cv2(path: Path, im: Image.Image) -> bool:
    # Pillow reduces 16-bit RGB(A) PNG/TIFF to 8 bits on load; OpenCV keeps all 16.
    return im.format in ("PNG", "TIFF") and _bits(path, im) == 16


def _decode_check(path: Path, im: Image.Image) -> None:
    """Decode every pixel so a truncated or corrupt file fails here, with a message that says what to do."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow globally; we still want to know
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images may pass the check")
    try:
        im.load()
    except Exception as e:
        cause = "the file is truncated (incomplete copy or download)" if "truncated" in str(e) else f"{e}"
        raise InputError(f"{path.name}: cannot decode the image: {cause}; copy the original file again or "
                         "remove it from the folder.") from None
    if _needs_cv2(path, im):
        _read_cv2(path)


def _strict_jpeg_check(path: Path) -> None:
    """Decode the (first) JPEG frame with FFmpeg, treating every bitstream error as fatal (``err_detect=explode``).

    libjpeg, under Pillow, only *warns* about damaged entropy-coded data and returns an image with grey blocks;
    FFmpeg's checks catch that. Only ``InvalidDataError`` counts as damage: features FFmpeg lacks (arithmetic
    coding, 12-bit) raise other errors and are left to Pillow, which decoded the file already.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency; without it Pillow's check stands alone
        return
    try:
        ctx = av.CodecContext.create("mjpeg", "r")
        ctx.options = {"err_detect": "explode"}
        ctx.decode(av.Packet(path.read_bytes()))
        ctx.decode(None)
    except av.error.InvalidDataError:
        raise InputError(f"{path.name}: the JPEG data is damaged (parts of the picture would be grey or garbled); "
                         "copy the original file again or remove it from the folder.") from None
    except Exception:  # noqa: BLE001 - unsupported by FFmpeg, not damaged
        return


def _read_cv2(path: Path) -> np.ndarray:
    import cv2

    # imdecode on the bytes: works for any file name (imread fails on some non-ASCII paths).
    arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"{path.name}: cannot decode the 16-bit image; re-export it as an 8-bit PNG or JPEG.")
    if arr.ndim == 3 and arr.shape[2] >= 3:  # OpenCV channel order is BGR(A)
        arr = np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=2)
    return arr


# ---- loading ----------------------------------------------------------------------------------------------------

def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``orientation`` (1-8) to an (H, W, ...) array, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return np.swapaxes(arr, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def load_image(path: str | Path, background: tuple[float, float, float] | None = (1.0, 1.0, 1.0),
               limits: ImageLimits | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) float32 RGB in [0, 1] (EXIF orientation applied, alpha composited).

    Args:
        path: image file (any supported format; identified by content).
        background: RGB in [0, 1] that transparent pixels are composited on (``None``: white).
        limits: size limits (``ImageLimits()`` when omitted).
    """
    rgb, alpha = load_image_rgba(path, limits)
    if alpha is None:
        return rgb
    bg = np.asarray(background if background is not None else (1.0, 1.0, 1.0), dtype=np.float32).reshape(1, 1, 3)
    # Straight (non-premultiplied) alpha, as PNG/WEBP/TIFF store it: rgb * a + bg * (1 - a) = (rgb - bg) * a + bg.
    a = alpha[..., None]
    rgb -= bg
    rgb *= a
    rgb += bg
    return rgb


def load_image_rgba(path: str | Path, limits: ImageLimits | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image as (H, W, 3) float32 RGB and an (H, W) float32 alpha in [0, 1] (None when opaque)."""
    path = Path(path)
    limits = limits or ImageLimits()
    with _opened(path, limits) as im:
        try:
            if _needs_cv2(path, im):
                orientation = _orientation(im)
                im.close()
                rgb, alpha = _split_channels(_read_cv2(path), 65535.0)
            else:
                im.load()
                orientation = _orientation(im)
                rgb, alpha = _pil_to_float(im)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{path.name}: cannot decode the image ({e}); copy the original file again or "
                             "remove it from the folder.") from None
    rgb = np.ascontiguousarray(apply_orientation(rgb, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    return rgb, alpha


def _split_channels(arr: np.ndarray, full_scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W[, C]) samples with C in 1-4 -> (H, W, 3) float32 RGB and optional (H, W) alpha, in [0, 1].

    ``full_scale`` is the sample value of 1.0 (255 for 8-bit, 65535 for 16-bit, 1 for float images).
    """
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    color = arr[..., :3] if c >= 3 else np.repeat(arr[..., :1], 3, axis=2)
    alpha = arr[..., 3] if c == 4 else (arr[..., 1] if c == 2 else None)

    def scaled(x: np.ndarray) -> np.ndarray:
        out = np.multiply(x, np.float32(1.0 / full_scale), dtype=np.float32)
        # Integer samples within their bit depth are in [0, 1] already; float/32-bit ones may not be.
        return out if x.dtype in (np.uint8, np.uint16) else np.clip(out, 0.0, 1.0, out=out)

    return scaled(color), None if alpha is None else scaled(alpha)


def _pil_to_float(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # Pillow's 32-bit "I" holds 16-bit data from most plugins
        return _split_channels(np.asarray(im), 65535.0)
    if mode == "F":
        return _split_channels(np.asarray(im), 1.0)
    if mode in ("RGBA", "LA", "RGB", "L") and "transparency" not in im.info:
        return _split_channels(np.asarray(im), 255.0)
    if mode in ("P", "PA", "RGBa", "La", "RGB", "L"):  # palette, premultiplied, or colour-key transparency
        return _split_channels(np.asarray(im.convert("RGBA")), 255.0)
    # 1-bit, CMYK, YCbCr, LAB, HSV: Pillow's conversion to RGB.
    return _split_channels(np.asarray(im.convert("RGB")), 255.0)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8 with rounding (exact inverse of ``/ 255`` for 8-bit sources)."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


# ---- folders ----------------------------------------------------------------------------------------------------

def list_image_files(folder: str | Path) -> list[Path]:
    """Regular, non-hidden files directly in ``folder``, in natural name order (sub-folders are ignored)."""
    from splatworks.scene.camera import natural_key

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist or is not a folder.")
    # Hidden files (.DS_Store, macOS ._ resource forks, Thumbs.db-like dotfiles) are never photos.
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def validate_image_folder(folder: str | Path, limits: ImageLimits | None = None) -> list[ImageInfo]:
    """Probe every file in ``folder``; raise ONE ``InputError`` listing every problem (file + cause + fix).

    Images of different sizes are allowed (each ``ImageInfo`` says its size). Returns the infos in natural
    name order.
    """
    limits = limits or ImageLimits()
    files = list_image_files(folder)
    problems: list[str] = []
    if len(files) > limits.max_count:
        raise InputError(f"{folder}: {len(files)} files, more than the limit of {limits.max_count} images; "
                         "use fewer photos (or extract fewer video frames).")
    def probe(path: Path) -> ImageInfo | str:
        try:
            return probe_image(path, limits)
        except InputError as e:
            return str(e)

    # Decoding releases the GIL (Pillow, FFmpeg): a few threads check a big folder several times faster. Few,
    # because each may hold a full-size decoded photo.
    workers = max(1, min(4, os.cpu_count() or 1, len(files)))
    with ThreadPoolExecutor(workers) as pool:
        results = list(_progress(pool.map(probe, files), len(files), "checking images"))
    infos = [r for r in results if isinstance(r, ImageInfo)]
    problems.extend(r for r in results if isinstance(r, str))
    if len(infos) < limits.min_count:
        problems.append(f"{len(infos)} usable image(s) in {folder}: at least {limits.min_count} overlapping "
                        "photos of the same scene are needed (take more photos from slightly different "
                        "positions, each overlapping the previous one).")
    if problems:
        raise InputError(f"{len(problems)} problem(s) with the images in {folder}:\n- " + "\n- ".join(problems))
    return infos


def safe_name(name: str, suffix: str, taken: set[str]) -> str:
    """A file name made only of ``[A-Za-z0-9._-]`` (no separators, no leading dot), unique (case-insensitive)."""
    stem = Path(name.replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    stem = stem[:120]
    candidate, i = stem + suffix, 1
    while candidate.lower() in taken:
        candidate, i = f"{stem}_{i}{suffix}", i + 1
    taken.add(candidate.lower())
    return candidate


def prepare_images(src_dir: str | Path, dst_dir: str | Path, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   limits: ImageLimits | None = None, max_size: int | None = None) -> list[ImageInfo]:
    """Write normalised copies of every image in ``src_dir`` into ``dst_dir`` (the source is never modified).

    Each copy is 8-bit RGB with EXIF orientation applied and alpha composited on ``background``; JPEG sources
    stay JPEG (quality 95), everything else becomes PNG. With ``max_size`` the longer side is downscaled to at
    most that many pixels (area averaging). EXIF metadata is kept with orientation reset to 1 (COLMAP reads
    the focal length from it). Output names are sanitised and unique within the batch; a file of the same
    name already in ``dst_dir`` (an earlier run's copy) is replaced atomically.

    Returns:
        one ``ImageInfo`` per written file (``path`` = the copy, ``source`` = the original), in source order.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    limits = limits or ImageLimits()
    if dst_dir.resolve() == src_dir.resolve():
        raise InputError(f"the output folder {dst_dir} is the input folder; choose another one (the input folder "
                         "is never modified).")
    infos = validate_image_folder(src_dir, limits)
    dst_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()  # unique within this batch; a re-run replaces its own earlier copies
    names = [safe_name(info.path.name, ".jpg" if info.format in JPEG_FORMATS else ".png", taken) for info in infos]
    workers = max(1, min(4, os.cpu_count() or 1, len(infos)))
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda job: _prepare_one(job[0], dst_dir / job[1], background, limits, max_size),
                        zip(infos, names))
        return list(_progress(jobs, len(infos), "preparing images"))


def _progress(items: Any, total: int, desc: str) -> Any:
    """A tqdm bar on long folder work (shown from 20 images on)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, total=total, desc=desc, unit="img", disable=total < 20)


def _target_size(w: int, h: int, max_size: int | None) -> tuple[int, int]:
    if max_size is None or max(w, h) <= max_size:
        return w, h
    scale = max_size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _normalised(info: ImageInfo, background: tuple[float, float, float], limits: ImageLimits,
                max_size: int | None) -> Image.Image:
    """8-bit RGB, oriented, composited and downscaled copy of ``info.path``."""
    if info.bits <= 8 and not info.has_alpha and info.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # Common case (camera JPEGs): stay in 8-bit Pillow, a 100 MP photo never becomes a 1.2 GB float array.
        with _opened(info.path, limits) as im:
            im.load()
            orientation = _orientation(im)
            img = im.convert("RGB")
        img = Image.fromarray(np.ascontiguousarray(apply_orientation(np.asarray(img), orientation)), mode="RGB")
        size = _target_size(img.width, img.height, max_size)
        return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    rgb = load_image(info.path, background=background, limits=limits)
    h, w = rgb.shape[:2]
    size = _target_size(w, h, max_size)
    if size != (w, h):
        import cv2

        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)  # area averaging: no aliasing when shrinking
    return Image.fromarray(to_uint8(rgb), mode="RGB")


def _prepare_one(info: ImageInfo, dst: Path, background: tuple[float, float, float], limits: ImageLimits,
                 max_size: int | None) -> ImageInfo:
    img = _normalised(info, background, limits, max_size)
    is_jpeg = info.format in JPEG_FORMATS
    exif = _exif_without_orientation(info.path)
    tmp = dst.with_name(f".{dst.name}.tmp")
    kwargs: dict[str, Any] = {"exif": exif} if exif else {}
    if is_jpeg:
        img.save(tmp, format="JPEG", quality=95, **kwargs)
    else:
        img.save(tmp, format="PNG", compress_level=3, **kwargs)  # 3x faster than the default 6, ~15% larger
    os.replace(tmp, dst)
    return ImageInfo(path=dst, width=img.width, height=img.height, mode="RGB",
                     format="JPEG" if is_jpeg else "PNG", bits=8, has_alpha=False, exif_rotated=False,
                     source=info.path)


def _exif_without_orientation(path: Path) -> bytes | None:
    try:
        with Image.open(path) as im:
            if im.format == "PNG":  # getexif() would decode a whole PNG looking for a late eXIf chunk
                raw = im.info.get("exif")
                if not raw:
                    return None
                exif = Image.Exif()
                exif.load(raw)
            else:
                exif = im.getexif()
            if not exif:
                return None
            exif[ORIENTATION_TAG] = 1
            return exif.tobytes()
    except Exception:  # metadata is a nicety; never fail a good image over it
        return None


__all__ = ["ImageInfo", "ImageLimits", "HEIF_SUPPORTED", "SUPPORTED_FORMATS", "apply_orientation", "image_size", "list_image_files",
           "load_image", "load_image_rgba", "prepare_images", "probe_image", "safe_name", "to_uint8",
           "validate_image_folder"]
