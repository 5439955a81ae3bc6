"""measure(): one pure function from bytes to a record; checked against imagehash and by hand."""

from __future__ import annotations

import io
import time

import duckdb
import imagehash
import numpy as np
import pytest
from PIL import Image

from dataaudit.scan.measure import (
    MEASURED_COLUMNS,
    MeasureConfig,
    hash_to_int,
    measure,
    measure_file,
)
from dataaudit.scan.pixels import to_rgb
from dataaudit.store.db import _SCHEMA_SQL

CFG = MeasureConfig()
MASK64 = (1 << 64) - 1


def encode(im: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth random image: structured enough for perceptual hashes to mean something."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def rec(data: bytes, ext: str = ".png", cfg: MeasureConfig = CFG) -> dict:
    return measure(data, ext, cfg).record


def as_unsigned(stored: int) -> int:
    return stored & MASK64


# ------------------------------------------------------------------ reference hashes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phash_and_dhash_match_imagehash(tmp_path, seed):
    p = tmp_path / "ref.jpg"
    noise((64, 64), seed).save(p, "JPEG", quality=90)
    m = measure_file(str(p), ".jpg", CFG)
    with Image.open(p) as im:
        ref_p, ref_d = imagehash.phash(im), imagehash.dhash(im)
    assert as_unsigned(m.record["phash"]) == int(str(ref_p), 16)
    assert as_unsigned(m.record["dhash"]) == int(str(ref_d), 16)


def test_hashes_of_large_images_stay_close_to_imagehash(tmp_path):
    """Above the 128 px statistics box, hashes come from the downscaled image: a few bits off."""
    p = tmp_path / "big.png"
    noise((640, 480), 3).save(p)
    m = measure_file(str(p), ".png", CFG)
    with Image.open(p) as im:
        ref = int(str(imagehash.phash(im)), 16)
    assert bin(as_unsigned(m.record["phash"]) ^ ref).count("1") <= 4


def test_hash_to_int_is_the_same_64_bits_signed():
    h = imagehash.hex_to_hash("ffffffffffffffff")
    assert hash_to_int(h) == -1
    h = imagehash.hex_to_hash("8000000000000001")
    assert hash_to_int(h) == -(1 << 63) + 1
    h = imagehash.hex_to_hash("0123456789abcdef")
    assert hash_to_int(h) == 0x0123456789ABCDEF


def test_stored_hashes_xor_in_duckdb_like_in_python():
    a, b = noise((64, 64), 4), noise((64, 64), 5)
    ra, rb = rec(encode(a, "PNG")), rec(encode(b, "PNG"))
    py = bin(as_unsigned(ra["phash"]) ^ as_unsigned(rb["phash"])).count("1")
    sql = duckdb.sql(f"SELECT bit_count(xor({ra['phash']}::BIGINT, {rb['phash']}::BIGINT))")
    assert sql.fetchall()[0][0] == py


# ------------------------------------------------------------------ record shape


def test_record_has_every_measured_column_and_they_exist_in_the_schema(image_bytes):
    con = duckdb.connect()
    con.execute(_SCHEMA_SQL.read_text())
    cols = {r[0] for r in con.execute("DESCRIBE images").fetchall()}
    assert set(MEASURED_COLUMNS) <= cols
    for data in (image_bytes(), b"", b"not an image"):
        assert set(rec(data)) == set(MEASURED_COLUMNS)


def test_content_hash_and_pixel_hash(image_bytes):
    png = rec(image_bytes(fmt="PNG"))
    bmp = rec(image_bytes(fmt="BMP"), ".bmp")
    other = rec(image_bytes(color=(1, 2, 3), fmt="PNG"))
    assert png["content_hash"] != bmp["content_hash"]
    assert png["pixel_hash"] == bmp["pixel_hash"]  # same pixels, different container
    assert png["pixel_hash"] != other["pixel_hash"]
    assert rec(image_bytes(fmt="PNG"))["content_hash"] == png["content_hash"]


def test_measure_is_deterministic(image_bytes):
    data = encode(noise((50, 40)), "JPEG")
    a, b = measure(data, ".jpg", CFG), measure(data, ".jpg", CFG)
    assert a.record == b.record
    assert a.thumbnail == b.thumbnail


# ------------------------------------------------------------------ statistics


def test_stats_black_white_and_grey(image_bytes):
    black = rec(image_bytes(color=(0, 0, 0)))
    white = rec(image_bytes(color=(255, 255, 255)))
    grey = rec(image_bytes(color=(128, 128, 128)))
    assert black["brightness_mean"] == 0 and black["dark_fraction"] == 1
    assert white["brightness_mean"] == pytest.approx(255, abs=0.01)
    assert white["bright_fraction"] == 1
    assert grey["brightness_mean"] == pytest.approx(128, abs=0.5)
    for r in (black, white, grey):
        assert r["contrast"] == pytest.approx(0, abs=1e-3)
        assert r["entropy"] == pytest.approx(0, abs=1e-6)
        assert r["laplacian_var"] == pytest.approx(0, abs=1e-3)
        assert r["is_grayscale"] is True
        assert r["colorfulness"] == pytest.approx(0, abs=1e-3)


def test_stats_checkerboard_and_colour():
    board = np.indices((32, 32)).sum(axis=0) % 2 * 255
    r = rec(encode(Image.fromarray(board.astype(np.uint8), "L"), "PNG"))
    assert r["entropy"] == pytest.approx(1.0, abs=1e-6)
    assert r["contrast"] == pytest.approx(127.5, abs=0.1)
    assert r["laplacian_var"] > 1e5
    assert r["is_grayscale"] is True
    red = rec(encode(Image.new("RGB", (32, 32), (255, 0, 0)), "PNG"))
    assert red["is_grayscale"] is False
    assert red["max_channel_diff"] == 255
    assert red["colorfulness"] == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-4)


def test_sharpness_falls_with_blur():
    from PIL import ImageFilter

    arr = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    sharp = Image.fromarray(arr, "L")
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))
    s_sharp = rec(encode(sharp, "PNG"))["sharpness"]
    s_blur = rec(encode(blurred, "PNG"))["sharpness"]
    assert s_blur < 0.5 * s_sharp


def test_edge_sharpness_follows_blur_not_texture():
    """The steepness of the strongest edges is about blur only: an object with sharp edges
    scores near 1 on a plain, striped or soft-noise backdrop, while the fine/coarse detail
    ratio of the same sharp shot falls with the backdrop's softness; a 1.5 px blur brings
    both cues down on every backdrop, and the edge steepness follows blur by its width."""
    from PIL import ImageDraw, ImageFilter
    from scipy.ndimage import gaussian_filter

    from dataaudit.scan.measure import edge_sharpness

    yy, xx = np.mgrid[0:128, 0:96].astype(np.float32)
    soft = gaussian_filter(np.random.default_rng(0).normal(0, 1, (128, 96)), 2.0) / 0.14
    backdrops = {"plain": np.full((128, 96), 150.0), "stripes": 150 + 40 * np.sign(np.sin(xx / 2)),
                 "soft": 150 + 25 * soft}  # fmt: skip
    got = {}
    for name, a in backdrops.items():
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
        ImageDraw.Draw(im).polygon([(20, 30), (70, 40), (60, 100), (25, 90)], fill=40)
        for sigma in (0, 1.5):
            r = rec(encode(im.filter(ImageFilter.GaussianBlur(sigma)) if sigma else im, "PNG"))
            got[name, sigma] = (r["edge_sharpness"], r["sharpness"])
    for name in backdrops:
        assert got[name, 0][0] > 0.95 and got[name, 1.5][0] < 0.35
    assert got["soft", 0][1] < 0.6 * got["plain", 0][1]  # the ratio moves with texture
    step = np.zeros((64, 64), np.uint8)
    step[:, 32:] = 200
    widths = [edge_sharpness(np.asarray(Image.fromarray(step).filter(ImageFilter.GaussianBlur(s)),
                                        dtype=np.float32)) for s in (0.8, 1.0, 1.2)]  # fmt: skip
    assert widths == pytest.approx([0.55, 0.44, 0.36], abs=0.02)  # as the docstring says
    assert edge_sharpness(np.full((64, 64), 128.0, np.float32)) is None  # no edge, no measure


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype("<u2")
    im = Image.frombytes("I;16", (64, 64), ramp.tobytes())
    r = rec(encode(im, "PNG"))
    assert r["decode_status"] == "ok"
    assert r["mode"].startswith("I;16") or r["mode"] == "I"
    assert r["bit_depth"] in (16, 32)
    assert r["brightness_mean"] == pytest.approx(127.5, abs=3)  # clipping would give ~255
    assert r["bright_fraction"] < 0.05
    mid = Image.frombytes("I;16", (8, 8), np.full((8, 8), 1000, "<u2").tobytes())
    assert rec(encode(mid, "PNG"))["brightness_mean"] == pytest.approx(1000 / 257, abs=0.6)


def test_to_rgb_stretches_float_images():
    arr = np.linspace(-1.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    rgb = np.asarray(to_rgb(Image.fromarray(arr, "F")))
    assert rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize(
    ("mode", "fmt", "ext", "alpha", "channels"),
    [("RGBA", "PNG", ".png", True, 4), ("LA", "PNG", ".png", True, 2),
     ("RGB", "PNG", ".png", False, 3), ("L", "PNG", ".png", False, 1),
     ("1", "PNG", ".png", False, 1), ("CMYK", "JPEG", ".jpg", False, 4),
     ("I", "TIFF", ".tif", False, 1), ("F", "TIFF", ".tif", False, 1),
     ("RGB", "WEBP", ".webp", False, 3), ("RGB", "BMP", ".bmp", False, 3),
     ("RGB", "TIFF", ".tif", False, 3), ("RGBA", "WEBP", ".webp", True, 4)],
)  # fmt: skip
def test_modes_and_formats(image_bytes, mode, fmt, ext, alpha, channels):
    # Translucent, so that encoders keep the alpha channel.
    r = rec(image_bytes(size=(20, 10), color=(200, 30, 30, 128), mode=mode, fmt=fmt), ext)
    assert r["decode_status"] == "ok", r["error_message"]
    assert r["format"] == fmt
    assert r["format_matches_ext"] is True
    assert (r["width"], r["height"]) == (20, 10)
    assert r["has_alpha"] is alpha
    assert r["channels"] == channels
    assert 0 <= r["brightness_mean"] <= 255
    assert r["phash"] is not None


def test_cmyk_brightness_is_sensible():
    white_ink = rec(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG"), ".jpg")
    full_black = rec(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 255)), "JPEG"), ".jpg")
    assert white_ink["brightness_mean"] > 240
    assert full_black["brightness_mean"] < 15


def test_palette_with_transparency_has_alpha():
    im = Image.new("P", (16, 16), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    r = rec(encode(im, "PNG", transparency=0))
    assert r["mode"] == "P"
    assert r["has_alpha"] is True
    assert r["brightness_mean"] == pytest.approx(0.299 * 255, abs=0.5)


def test_one_pixel_image(image_bytes):
    m = measure(image_bytes(size=(1, 1), fmt="JPEG"), ".jpg", CFG)
    r = m.record
    assert r["decode_status"] == "ok"
    assert (r["width"], r["height"]) == (1, 1)
    assert r["laplacian_var"] == 0
    assert r["sharpness"] is None
    assert Image.open(io.BytesIO(m.thumbnail)).size == (1, 1)


# ------------------------------------------------------------------ thumbnails, EXIF, size


def test_thumbnail_is_a_small_jpeg(image_bytes):
    m = measure(image_bytes(size=(300, 150), fmt="PNG"), ".png", CFG)
    with Image.open(io.BytesIO(m.thumbnail)) as t:
        assert t.format == "JPEG"
        assert t.size == (128, 64)
    assert measure(image_bytes(), ".png", MeasureConfig(thumb_size=0)).thumbnail is None


def test_exif_rotated_thumbnail_is_upright(image_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6
    m = measure(image_bytes(size=(64, 32), fmt="JPEG", exif=exif), ".jpg", CFG)
    assert m.record["exif_orientation"] == 6
    assert (m.record["width"], m.record["height"]) == (64, 32)  # as stored
    assert '"Orientation": "6"' in m.record["exif"]
    with Image.open(io.BytesIO(m.thumbnail)) as t:
        assert t.size == (32, 64)  # rotated to how a viewer shows it


def test_24_megapixel_jpeg_uses_draft_mode():
    data = encode(Image.new("RGB", (6000, 4000), (90, 120, 150)), "JPEG", quality=80)
    t = time.perf_counter()
    m = measure(data, ".jpg", CFG)
    elapsed = time.perf_counter() - t
    r = m.record
    assert r["decode_status"] == "ok"
    assert (r["width"], r["height"]) == (6000, 4000)
    assert r["decode_scale"] == 8
    assert r["brightness_mean"] == pytest.approx(0.299 * 90 + 0.587 * 120 + 0.114 * 150, abs=2)
    assert max(Image.open(io.BytesIO(m.thumbnail)).size) == 128
    assert elapsed < 2.0  # a full decode plus full-size statistics takes several times longer


# ------------------------------------------------------------------ failures become flags


@pytest.mark.parametrize(
    ("data", "status", "corrupt"),
    [(b"", "empty", True), (b"<html><body>Forbidden</body></html>", "not_image", True),
     (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "truncated", True)],
)  # fmt: skip
def test_failures_are_flags_not_exceptions(data, status, corrupt):
    m = measure(data, ".jpg", CFG)
    assert m.record["decode_status"] == status
    assert m.record["is_corrupt"] is corrupt
    assert m.record["error_message"]
    assert m.record["phash"] is None
    assert m.thumbnail is None


def test_bomb_record_keeps_size_and_skips_pixels(bomb_png):
    m = measure(bomb_png, ".png", CFG)
    r = m.record
    assert r["decode_status"] == "bomb"
    assert (r["width"], r["height"]) == (20_000, 20_000)
    assert r["brightness_mean"] is None and m.thumbnail is None


def test_wrong_extension_is_recorded(image_bytes):
    as_jpg = rec(image_bytes(fmt="PNG"), ".jpg")
    assert as_jpg["decode_status"] == "ok"
    assert as_jpg["format"] == "PNG"
    assert as_jpg["format_matches_ext"] is False
    assert as_jpg["is_corrupt"] is False


def test_measure_file_on_a_missing_file(tmp_path):
    """Gone since the listing: vanished (no row), never a corrupt file (issue 8 item 8)."""
    m = measure_file(str(tmp_path / "gone.jpg"), ".jpg", CFG)
    assert m.vanished and m.record["decode_status"] is None


def test_measure_file_on_an_unreadable_path(tmp_path):
    (tmp_path / "dir.jpg").mkdir()  # opening it fails as EIO/EACCES would, not as missing
    m = measure_file(str(tmp_path / "dir.jpg"), ".jpg", CFG)
    assert not m.vanished
    assert m.record["decode_status"] == "unreadable"
    assert m.record["is_corrupt"] is True
    assert m.record["error_class"] == "IsADirectoryError"
    assert "cannot read file" in m.record["error_message"]


def test_a_pixel_stage_failure_is_a_flag(image_bytes, monkeypatch):
    import dataaudit.scan.measure as mod

    def boom(*_):
        raise ValueError("exotic mode")

    monkeypatch.setattr(mod, "image_stats", boom)
    r = rec(image_bytes())
    assert r["decode_status"] == "unreadable"
    assert r["is_corrupt"] is True
    assert r["error_class"] == "ValueError"


@pytest.mark.parametrize(
    ("mode", "color"),
    [("RGBA", (200, 30, 30, 90)), ("LA", (40, 120)), ("P", None), ("I;16", None), ("F", None)],
)
def test_scan_and_api_give_the_embedder_the_same_pixels(image_bytes, mode, color):
    """One RGB conversion: what the scan feeds the embedder equals what the API prepares."""
    from dataaudit.embed.spec import EmbedSpec, prepare_pixels

    if mode == "P":
        im = Image.new("P", (40, 30), 3)
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
        im.info["transparency"] = 3
        data = encode(im, "PNG", transparency=3)
    elif mode in ("I;16", "F"):
        ramp = np.linspace(0, 60000 if mode == "I;16" else -3.5, 40 * 30).reshape(30, 40)
        raw = ramp.astype("<u2" if mode == "I;16" else "<f4").tobytes()
        im = Image.frombytes(mode, (40, 30), raw)
        data = encode(im, "TIFF" if mode == "F" else "PNG")
    else:
        data = image_bytes(size=(40, 30), mode=mode, color=color, fmt="PNG")
    spec = EmbedSpec(input_size=32)
    m = measure(data, ".png", MeasureConfig(embed_size=32), spec)
    assert m.record["decode_status"] == "ok", m.record["error_message"]
    api = prepare_pixels(Image.open(io.BytesIO(data)), spec)
    np.testing.assert_array_equal(m.embed_pixels, api)
    if mode in ("RGBA", "LA", "P"):  # alpha composited on white, not dropped
        white = to_rgb(Image.open(io.BytesIO(data))).getpixel((0, 0))
        assert white != to_rgb(Image.open(io.BytesIO(data)).convert("RGB")).getpixel((0, 0))
