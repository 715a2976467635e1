"""Image input: every bad input of issue 2 gets a clear error or is handled; the input folder is never modified."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from splatworks.errors import InputError
from splatworks.scene import images as img_mod
from splatworks.scene.images import (ImageLimits, apply_orientation, load_image, load_image_rgba, prepare_images,
                                     probe_image, safe_name, validate_image_folder)


def _pattern(h: int = 24, w: int = 32) -> np.ndarray:
    """An asymmetric uint8 RGB pattern, so any flip or rotation changes it."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7) % 256, (y * 11) % 256, (x * y) % 256], axis=2).astype(np.uint8)


def _jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _folder_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> Path:
    """A ~60 KB, fully valid 1-bit PNG that declares 20000 x 20000 pixels of one colour."""
    side = 20000
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + side // 8)  # filter byte + 2500 bytes of 1-bit pixels
    chunks = [comp.compress(row * 1000) for _ in range(side // 1000)]
    idat = b"".join(chunks) + comp.flush()
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(data)
    return path


# ---- single files -----------------------------------------------------------------------------------------------

def test_png_8bit_loads_exactly(tmp_path):
    arr = _pattern()
    Image.fromarray(arr).save(tmp_path / "a.png")
    info = probe_image(tmp_path / "a.png")
    assert (info.width, info.height, info.bits, info.format, info.has_alpha) == (32, 24, 8, "PNG", False)
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), arr)


def test_png_16bit_keeps_precision(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(10, 12, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    gray16 = rng.integers(0, 65536, size=(10, 12), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")  # Pillow writes mode I;16
    info = probe_image(tmp_path / "c16.png")
    assert info.bits == 16 and info.format == "PNG"
    out = load_image(tmp_path / "c16.png")
    np.testing.assert_allclose(out, rgb16.astype(np.float32) / 65535.0, atol=1e-6)
    assert len(np.unique(np.rint(out * 65535))) > 256  # really more than 8 bits of levels
    g = load_image(tmp_path / "g16.png")
    assert probe_image(tmp_path / "g16.png").bits == 16
    np.testing.assert_allclose(g[..., 0], gray16 / 65535.0, atol=1e-6)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])


def test_rgba_16bit_composited(tmp_path):
    import cv2

    rgba = np.zeros((4, 4, 4), dtype=np.uint16)
    rgba[..., 0] = 65535  # red, in RGBA order
    rgba[..., 3] = 16384  # alpha 0.25
    cv2.imwrite(str(tmp_path / "a16.png"), rgba[..., [2, 1, 0, 3]])
    out = load_image(tmp_path / "a16.png", background=(0.0, 0.0, 1.0))
    a = 16384 / 65535
    np.testing.assert_allclose(out[0, 0], [a, 0.0, 1.0 - a], atol=1e-6)


def test_rgba_composited_on_background(tmp_path):
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    arr[0, 0] = (200, 100, 0, 128)  # half transparent
    arr[0, 1] = (10, 20, 30, 255)   # opaque
    arr[0, 2] = (255, 255, 255, 0)  # fully transparent
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    bg = (0.0, 0.5, 1.0)
    out = load_image(tmp_path / "a.png", background=bg)
    a = 128 / 255
    np.testing.assert_allclose(out[0, 0], [200 / 255 * a, 100 / 255 * a + 0.5 * (1 - a), 1 - a], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [10 / 255, 20 / 255, 30 / 255], atol=1e-6)
    np.testing.assert_allclose(out[0, 2], bg, atol=1e-6)
    rgb, alpha = load_image_rgba(tmp_path / "a.png")
    assert alpha is not None and abs(alpha[0, 0] - a) < 1e-6
    assert probe_image(tmp_path / "a.png").has_alpha


def test_gray_and_palette_become_rgb(tmp_path):
    Image.fromarray(np.full((5, 6), 77, np.uint8), mode="L").save(tmp_path / "g.png")
    pal = Image.fromarray(_pattern(5, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (5, 6, 3) and np.allclose(g, 77 / 255)
    p = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(p, np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    arr = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(tmp_path / "o.png", exif=exif.tobytes())
    with Image.open(tmp_path / "o.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = load_image(tmp_path / "o.png")
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), expected)
    info = probe_image(tmp_path / "o.png")
    assert (info.height, info.width) == expected.shape[:2]
    assert info.exif_rotated == (orientation != 1)


def test_exif_rotated_jpeg(tmp_path):
    arr = _pattern(24, 32)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a portrait photo from a phone held upright
    (tmp_path / "phone.jpg").write_bytes(_jpeg_bytes(arr, exif=exif.tobytes()))
    info = probe_image(tmp_path / "phone.jpg")
    assert info.exif_rotated and (info.width, info.height) == (24, 32) and info.format == "JPEG"
    out = load_image(tmp_path / "phone.jpg")
    assert out.shape == (32, 24, 3)
    expected = np.rot90(arr, -1).astype(np.float32) / 255.0  # clockwise
    assert np.abs(out - expected).mean() < 0.03  # JPEG loss only
    assert np.abs(out - np.rot90(arr, 1) / 255.0).mean() > 0.1  # and not the other way round


def test_heic(tmp_path, monkeypatch):
    if img_mod.HEIF_SUPPORTED:
        Image.new("RGB", (64, 48), (200, 100, 50)).save(tmp_path / "p.heic")
        info = probe_image(tmp_path / "p.heic")
        assert info.format == "HEIF" and (info.width, info.height) == (64, 48)
        out = load_image(tmp_path / "p.heic")
        assert np.abs(out[20, 30] * 255 - [200, 100, 50]).max() < 8
    # Without the plugin a .heic file gets an error that says what to do.
    (tmp_path / "q.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    monkeypatch.setattr(img_mod, "HEIF_SUPPORTED", False)
    with pytest.raises(InputError, match="pillow-heif.*JPEG or PNG"):
        probe_image(tmp_path / "q.heic")


def test_non_image_and_unsupported(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    with pytest.raises(InputError, match="notes.jpg: not an image"):
        probe_image(tmp_path / "notes.jpg")
    Image.fromarray(_pattern()).save(tmp_path / "anim.gif")
    with pytest.raises(InputError, match="GIF images are not supported; convert"):
        probe_image(tmp_path / "anim.gif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe_image(tmp_path / "empty.png")


def test_content_not_extension(tmp_path):
    Image.fromarray(_pattern()).save(tmp_path / "really_png.jpg", format="PNG")
    assert probe_image(tmp_path / "really_png.jpg").format == "PNG"


def test_truncated_and_corrupt_jpeg(tmp_path):
    data = _jpeg_bytes(_pattern(64, 64))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg: .*truncated"):
        probe_image(tmp_path / "cut.jpg")
    with pytest.raises(InputError, match="truncated"):
        load_image(tmp_path / "cut.jpg")
    # Valid JPEG start marker, then garbage: the header cannot be parsed.
    (tmp_path / "garbage.jpg").write_bytes(data[:2] + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="garbage.jpg"):
        probe_image(tmp_path / "garbage.jpg")
    # Markers intact but the Huffman table corrupted (bit rot): decoding must fail, not return noise.
    dht = data.index(b"\xff\xc4")
    broken = data[: dht + 5] + b"\xff" * 16 + data[dht + 21:]
    (tmp_path / "broken.jpg").write_bytes(broken)
    with pytest.raises(InputError, match="broken.jpg: cannot decode"):
        probe_image(tmp_path / "broken.jpg")


def test_damaged_jpeg_scan_data_is_caught(tmp_path):
    """Damage libjpeg only warns about (Pillow returns grey blocks): caught by the strict FFmpeg pass."""
    data = _jpeg_bytes(_pattern(64, 64))
    sos = data.index(b"\xff\xda")
    (tmp_path / "eoi.jpg").write_bytes(data[: sos + 14] + b"\xff\xd9" + data[sos + 16:])  # end marker mid-scan
    (tmp_path / "zeros.jpg").write_bytes(data[: sos + 30] + b"\x00" * 200 + data[sos + 230:])  # zero-filled block
    for name in ("eoi.jpg", "zeros.jpg"):
        with Image.open(tmp_path / name) as im:
            im.load()  # Pillow alone accepts it
        with pytest.raises(InputError, match=f"{name}: the JPEG data is damaged"):
            probe_image(tmp_path / name)
        assert probe_image(tmp_path / name, ImageLimits(strict_jpeg=False)).format == "JPEG"
    # Valid variants must pass: progressive, grayscale, CMYK, 4:4:4, trailing bytes / a second frame (MPO-like).
    im = Image.fromarray(_pattern(48, 64))
    variants = {"prog.jpg": dict(progressive=True), "444.jpg": dict(subsampling=0)}
    for name, kw in variants.items():
        im.save(tmp_path / name, format="JPEG", **kw)
    im.convert("L").save(tmp_path / "gray.jpg")
    im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    plain = _jpeg_bytes(_pattern(48, 64))
    (tmp_path / "trailer.jpg").write_bytes(plain + b"vendor trailer" * 20)
    (tmp_path / "two.jpg").write_bytes(plain + plain)
    for name in ("prog.jpg", "444.jpg", "gray.jpg", "cmyk.jpg", "trailer.jpg", "two.jpg"):
        info = probe_image(tmp_path / name)
        assert (info.width, info.height) == (64, 48), name
    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (48, 64, 3) and np.abs(cmyk - _pattern(48, 64) / 255.0).mean() < 0.05


def test_decompression_bomb_refused_before_decoding(bomb_png):
    assert bomb_png.stat().st_size < 1_000_000
    with pytest.raises(InputError, match="bomb.png: .*(decompression bomb|megapixels)"):
        probe_image(bomb_png)
    with pytest.raises(InputError, match="bomb.png"):
        load_image(bomb_png)


def test_pixel_and_byte_limits(tmp_path):
    Image.fromarray(_pattern(40, 50)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="50x40 = 0 megapixels, more than the limit"):
        probe_image(tmp_path / "a.png", ImageLimits(max_pixels=1999))
    assert probe_image(tmp_path / "a.png", ImageLimits(max_pixels=2000)).width == 50
    with pytest.raises(InputError, match="MiB"):
        probe_image(tmp_path / "a.png", ImageLimits(max_file_bytes=10))


def test_apply_orientation_6_turns_clockwise():
    a = np.arange(6).reshape(2, 3)
    assert apply_orientation(a, 6).shape == (3, 2)
    assert apply_orientation(a, 6)[0, 0] == 3  # bottom-left comes to the top-left after a clockwise turn


# ---- folders ----------------------------------------------------------------------------------------------------

def test_folder_reports_every_problem_at_once(tmp_path):
    for i in range(3):
        Image.fromarray(_pattern()).save(tmp_path / f"ok_{i}.png")
    (tmp_path / "readme.txt").write_text("hello")
    data = _jpeg_bytes(_pattern(64, 64))
    (tmp_path / "cut.jpg").write_bytes(data[:300])
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files are not photos: ignored
    with pytest.raises(InputError) as err:
        validate_image_folder(tmp_path)
    msg = str(err.value)
    assert "2 problem(s)" in msg and "readme.txt: not an image" in msg and "cut.jpg" in msg
    assert ".DS_Store" not in msg


@pytest.mark.parametrize("count", [1, 2])
def test_too_few_images(tmp_path, count):
    for i in range(count):
        Image.fromarray(_pattern()).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="at least 3 overlapping photos"):
        validate_image_folder(tmp_path)


def test_too_many_images(tmp_path):
    for i in range(4):
        Image.fromarray(_pattern(4, 4)).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="more than the limit of 3 images"):
        validate_image_folder(tmp_path, ImageLimits(max_count=3))


def test_different_sizes_allowed_and_reported(tmp_path):
    Image.fromarray(_pattern(24, 32)).save(tmp_path / "a.png")
    Image.fromarray(_pattern(30, 40)).save(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(_jpeg_bytes(_pattern(24, 32)))
    infos = validate_image_folder(tmp_path)
    assert [(i.path.name, i.width, i.height) for i in infos] == [("a.png", 32, 24), ("b.png", 40, 30),
                                                                  ("c.jpg", 32, 24)]


def test_safe_names():
    taken: set[str] = set()
    assert safe_name("../../etc/passwd", ".png", taken) == "passwd.png"
    assert safe_name("..\\..\\x.jpeg", ".jpg", taken) == "x.jpg"
    assert safe_name("my photo (1).HEIC", ".png", taken) == "my_photo_1.png"
    assert safe_name("x.png", ".jpg", taken) == "x_1.jpg"  # case-insensitive clash with x.jpg
    assert safe_name("...", ".png", taken) == "image.png"


def test_prepare_images_normalises_and_never_touches_source(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 8
    exif[0x920A] = 4.2  # focal length: kept for COLMAP
    y, x = np.mgrid[0:60, 0:80]
    smooth = np.stack([x * 3, y * 4, np.full_like(x, 90)], axis=2).astype(np.uint8)  # resampling-agnostic
    (src / "phone.jpg").write_bytes(_jpeg_bytes(smooth, exif=exif.tobytes()))
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 64
    Image.fromarray(rgba, mode="RGBA").save(src / "leaf.png")
    import cv2

    cv2.imwrite(str(src / "deep.png"), np.full((60, 80, 3), 40000, np.uint16))
    (src / "notes.txt.jpg").write_bytes(_jpeg_bytes(_pattern(60, 80)))
    before = _folder_hash(src)
    infos = prepare_images(src, dst, background=(1.0, 0.0, 0.0), max_size=40)
    assert _folder_hash(src) == before
    by_src = {i.source.name: i for i in infos}
    assert sorted(p.name for p in dst.iterdir()) == ["deep.png", "leaf.png", "notes.txt.jpg", "phone.jpg"]
    phone = by_src["phone.jpg"]
    assert phone.format == "JPEG" and (phone.width, phone.height) == (30, 40)  # rotated 90, then downscaled
    with Image.open(phone.path) as im:
        assert im.format == "JPEG" and im.getexif().get(0x0112) == 1
        assert abs(float(im.getexif().get_ifd(0x8769).get(0x920A, im.getexif().get(0x920A, 0))) - 4.2) < 1e-6
    assert probe_image(phone.path).exif_rotated is False
    expected = cv2.resize(load_image(src / "phone.jpg"), (30, 40), interpolation=cv2.INTER_AREA)
    assert np.abs(load_image(phone.path) - expected).mean() < 0.01  # same picture, same way up
    assert np.abs(load_image(phone.path) - expected[::-1, ::-1]).mean() > 0.1
    leaf = np.asarray(Image.open(by_src["leaf.png"].path))
    a = 64 / 255
    assert leaf.shape == (30, 40, 3)
    np.testing.assert_allclose(leaf[5, 5], np.rint(np.array([1 - a, a, 0]) * 255), atol=1)
    deep = np.asarray(Image.open(by_src["deep.png"].path))
    assert deep.dtype == np.uint8 and int(deep[0, 0, 0]) == round(40000 / 65535 * 255)
    # Re-running into the same folder replaces its own copies instead of piling up "_1" duplicates.
    prepare_images(src, dst, max_size=40)
    assert len(list(dst.iterdir())) == 4
    with pytest.raises(InputError, match="is the input folder"):
        prepare_images(src, src)
