"""decode() never raises and names what is wrong with a file; its helpers sniff and check."""

from __future__ import annotations

import io
import resource
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from dataaudit.scan.decode import (
    decode,
    describe_non_image,
    extension_matches,
    png_crc_error,
    sniff_format,
)


def noise_bytes(fmt: str, size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    """An incompressible image, so a cut lands in the pixel data, not the header."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"),
     ("WEBP", "WEBP")],
)  # fmt: skip
def test_sniff_format_names_common_formats(image_bytes, fmt, name):
    assert sniff_format(image_bytes(fmt=fmt)) == name


def test_sniff_format_unknown_is_none():
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"") is None


def test_empty_bytes():
    d = decode(b"")
    assert (d.status, d.error_class) == ("empty", "EmptyFile")
    assert "zero bytes" in d.error_message
    assert d.image is None


def test_html_page_is_named_html():
    page = b"  <!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>"
    d = decode(page)
    assert d.status == "not_image"
    assert "HTML" in d.error_message


@pytest.mark.parametrize(
    ("data", "says"),
    [(b'{"error": "quota"}', "JSON"), (b"Access denied\n", "text"),
     (bytes(range(256)) * 4, "random or unknown")],
)  # fmt: skip
def test_describe_non_image(data, says):
    assert says in describe_non_image(data)
    assert decode(data).status == "not_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_in_pixel_data(fmt, keep):
    data = noise_bytes(fmt)
    d = decode(data[: int(len(data) * keep)])
    assert d.status == "truncated", d
    assert d.format == fmt
    assert d.width == 64 and d.height == 64  # the header survived
    assert d.image is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [12, 30, 100])
def test_truncated_in_header(fmt, keep):
    d = decode(noise_bytes(fmt)[:keep])
    assert d.status == "truncated", d
    assert d.format == fmt


def test_error_messages_are_reproducible():
    """No object addresses in messages: the same file must give the same row every scan."""
    cut = noise_bytes("PNG")[:40]
    assert decode(cut).error_message == decode(cut).error_message
    assert "0x" not in decode(cut).error_message


def test_png_bad_crc(image_bytes):
    data = bytearray(image_bytes(size=(16, 16), fmt="PNG"))
    i = data.find(b"IDAT")
    data[i + 6] ^= 0xFF  # flip bits inside the compressed pixel data
    d = decode(bytes(data))
    assert d.status == "corrupt"
    assert d.error_class == "PNGChecksumError"
    assert "IDAT" in d.error_message


def test_png_crc_error_helper(image_bytes):
    good = image_bytes(fmt="PNG")
    assert png_crc_error(good) is None
    bad = bytearray(good)
    bad[16] ^= 1  # inside IHDR's data (width)
    assert png_crc_error(bytes(bad)) == "IHDR"


def test_bomb_is_not_decoded(bomb_png):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    d = decode(bomb_png)
    elapsed = time.perf_counter() - t
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert d.status == "bomb"
    assert d.error_class == "DecompressionBombError"
    assert (d.width, d.height) == (20_000, 20_000)
    assert "400,000,000" in d.error_message
    assert d.image is None
    assert grown_mb < 200  # decoding it would take 1.2 GB
    assert elapsed < 1.0


def test_bomb_limit_is_a_parameter(image_bytes):
    d = decode(image_bytes(size=(100, 100)), bomb_pixels=5_000)
    assert d.status == "bomb"
    assert decode(image_bytes(size=(100, 100)), bomb_pixels=10_000).status == "ok"


def test_pillow_limit_is_restored(bomb_png):
    limit = Image.MAX_IMAGE_PIXELS
    decode(bomb_png)
    decode(b"junk")
    assert limit == Image.MAX_IMAGE_PIXELS


def test_zero_sized_header(png_chunk):
    ihdr = (0).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
    d = decode(data)
    assert d.status in {"unreadable", "truncated", "corrupt"}
    assert d.image is None


def test_trailing_bytes_after_jpeg(image_bytes):
    data = image_bytes(fmt="JPEG") + b"<html>appended by a proxy</html>"
    d = decode(data)
    assert d.status == "ok"
    assert d.trailing_bytes is True
    assert "end-of-image" in d.error_message
    assert decode(image_bytes(fmt="JPEG")).trailing_bytes is False


def test_jpeg_draft_scales_large_images(image_bytes):
    d = decode(image_bytes(size=(1600, 1200), fmt="JPEG"), draft_size=160)
    assert d.status == "ok"
    assert (d.width, d.height) == (1600, 1200)  # the stored size is the file's
    assert d.decode_scale == 4  # 1/8 would give 150 px, under the 160 asked for
    assert d.image.size == (400, 300)


def test_small_jpeg_is_decoded_in_full(image_bytes):
    d = decode(image_bytes(size=(200, 200), fmt="JPEG"), draft_size=160)
    assert d.decode_scale == 1
    assert d.image.size == (200, 200)


def test_animated_gif_frames():
    frames = [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    d = decode(buf.getvalue())
    assert d.status == "ok"
    assert d.n_frames == 4


def test_exif_orientation_and_tags(image_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon\x00"
    d = decode(image_bytes(fmt="JPEG", exif=exif))
    assert d.exif_orientation == 6
    assert d.exif["Make"] == "Canon"


def test_unsupported_formats_are_named():
    d = decode(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40)
    assert d.status in {"unsupported", "ok"}  # ok only where an AVIF plugin is installed
    if d.status == "unsupported":
        assert d.format == "AVIF"


@pytest.mark.parametrize(
    ("fmt", "ext", "expected"),
    [("JPEG", ".jpg", True), ("JPEG", ".JPEG", True), ("JPEG", ".png", False),
     ("PNG", ".jpg", False), ("PNG", "", False), (None, ".jpg", None),
         # a format outside the allow-list fits only its own extensions (issue 8, item 14)
         ("PCX", ".pcx", True), ("PCX", ".jpg", False), ("XYZ", ".q", False)],
)  # fmt: skip
def test_extension_matches(fmt, ext, expected):
    assert extension_matches(fmt, ext) is expected


def test_never_raises_on_damaged_files(image_bytes):
    """Every prefix and many bit flips of real files decode to a status, never an exception."""
    rng = np.random.default_rng(1)
    sources = [noise_bytes("JPEG", (24, 24)), noise_bytes("PNG", (24, 24)),
               image_bytes(fmt="GIF"), image_bytes(fmt="BMP"), image_bytes(fmt="WEBP"),
               image_bytes(fmt="TIFF")]  # fmt: skip
    statuses = set()
    for src in sources:
        for cut in range(0, len(src), max(1, len(src) // 40)):
            statuses.add(decode(src[:cut]).status)
        for _ in range(25):
            data = bytearray(src)
            for pos in rng.integers(0, len(data), 3):
                data[pos] = int(rng.integers(0, 256))
            statuses.add(decode(bytes(data)).status)
    assert statuses <= {"ok", "empty", "not_image", "truncated", "unreadable", "corrupt",
                        "bomb", "unsupported"}  # fmt: skip
    assert {"ok", "truncated"} <= statuses


def test_zlib_bomb_inside_small_file_is_bounded(png_chunk):
    """A PNG that inflates far beyond its size but stays under the pixel limit decodes fine."""
    w, h = 2000, 2000
    raw = b"".join(b"\x00" + b"\x00" * w for _ in range(h))
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))  # fmt: skip
    assert len(data) < 10_000
    d = decode(data)
    assert d.status == "ok"
    assert d.image.size == (w, h)
