"""Everything the index stores about one file, computed from its bytes in one pass.

:func:`measure` is a pure function of the bytes: it never raises and touches no database,
so the same code runs in the local process pool today and in a distributed engine later.
Each file is decoded once; statistics, hashes, the thumbnail and the embedder's input are
all taken from that one decode (for large JPEGs, a DCT-scaled draft decode).
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from typing import Any

import imagehash
import numpy as np
import xxhash
from PIL import Image

from dataaudit.scan.decode import (
    DEFAULT_BOMB_PIXELS,
    Decoded,
    decode,
    describe_non_image,
    extension_matches,
    sniff_format,
)
from dataaudit.scan.pixels import fit, pixel_hash, to_rgb

# Above this many pixels an image is reduced while converted (see _reduction).
LARGE_PIXELS = 16_000_000

# Bump when a stored measurement changes meaning: a re-scan then re-measures the files it
# affects (see dataaudit.scan.plan.invalidate_old_measurements).
MEASURE_VERSION = 4
# For each version, the rows its change affects, as SQL over ``images`` (None: every row).
# Upgrading an index re-measures only those, not a million untouched files.
MEASURE_CHANGES: dict[int, str | None] = {
    2: None,
    3: "has_alpha",  # transparency composited on white (was dropped), as for embeddings
    4: "decode_status = 'ok'",  # edge_sharpness added: every image with pixels
}

# Statuses that make a file unusable for training.
CORRUPT_STATUSES = frozenset({"empty", "not_image", "truncated", "unreadable", "corrupt"})

_BIT_DEPTH = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8, "LA": 8,
              "PA": 8, "La": 8, "RGBa": 8, "LAB": 8, "HSV": 8, "I;16": 16, "I;16B": 16,
              "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}  # fmt: skip
_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3,
             "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "CMYK": 4}  # fmt: skip
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class MeasureConfig:
    """Parameters of the per-file measurement; recorded with every scan run."""

    stats_size: int = 128  # statistics are taken on an image fitting this box
    draft_size: int = 128  # JPEGs at least twice this are DCT-scaled to at least this
    thumb_size: int = 128  # thumbnail box; 0 disables thumbnails
    thumb_quality: int = 80
    bomb_pixels: int = DEFAULT_BOMB_PIXELS
    embed_size: int = 0  # >0: also return the embedder's input at this size
    # Memory per file: an image whose decoded pixels (width x height x bytes per pixel,
    # after JPEG draft scaling) exceed this is flagged, not decoded; a file larger than
    # max_file_bytes is never read whole (only its head, to say what it is).
    max_decoded_bytes: int = 512 * 2**20
    max_file_bytes: int = 2**30

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def empty_record() -> dict[str, Any]:
    """A record with every measured column present, so batches share one shape."""
    return dict.fromkeys(MEASURED_COLUMNS)


MEASURED_COLUMNS = (
    "content_hash", "format", "format_matches_ext", "width", "height", "mode", "channels",
    "bit_depth", "has_alpha", "n_frames", "exif_orientation", "exif", "decode_status",
    "is_corrupt", "error_class", "error_message", "decode_scale", "trailing_bytes",
    "pixel_hash", "phash", "dhash", "signature", "brightness_mean", "brightness_p05", "brightness_p95",
    "contrast", "laplacian_var", "sharpness", "edge_sharpness", "entropy", "colorfulness", "is_grayscale", "max_channel_diff",
    "dark_fraction", "bright_fraction",
)  # fmt: skip


@dataclass
class Measurement:
    record: dict[str, Any]
    thumbnail: bytes | None = None
    embed_pixels: np.ndarray | None = None
    vanished: bool = False  # deleted between the listing and the read: no row, not corrupt


def vanished() -> Measurement:
    """A file that was listed but was gone when its turn came (deleted meanwhile)."""
    return Measurement(empty_record(), vanished=True)


def measure(data: bytes, ext: str, config: MeasureConfig, embed_spec: Any = None) -> Measurement:
    """Measure one file's bytes. Never raises: failures become flags in the record."""
    rec = empty_record()
    rec["content_hash"] = xxhash.xxh3_128_hexdigest(data)
    d = decode(data, config.draft_size, config.bomb_pixels, config.max_decoded_bytes)
    _fill_header(rec, d, ext)
    if d.image is None:
        return Measurement(rec)
    try:
        return _measure_pixels(rec, d, config, embed_spec)
    except Exception as exc:  # e.g. an exotic mode numpy cannot view
        rec["decode_status"], rec["is_corrupt"] = "unreadable", True
        rec["error_class"], rec["error_message"] = type(exc).__name__, str(exc)[:300]
        return Measurement(rec)


def _fill_header(rec: dict[str, Any], d: Decoded, ext: str) -> None:
    rec["format"] = d.format
    rec["format_matches_ext"] = extension_matches(d.format, ext)
    rec["width"], rec["height"], rec["mode"] = d.width, d.height, d.mode
    rec["channels"] = _CHANNELS.get(d.mode) if d.mode else None
    rec["bit_depth"] = _BIT_DEPTH.get(d.mode) if d.mode else None
    rec["has_alpha"] = (
        (d.mode in ("RGBA", "LA", "PA", "RGBa", "La") or d.transparency) if d.mode else None
    )
    rec["n_frames"] = d.n_frames
    rec["exif_orientation"] = d.exif_orientation
    rec["exif"] = _json(d.exif) if d.exif else None
    rec["decode_status"] = d.status
    rec["is_corrupt"] = d.status in CORRUPT_STATUSES
    rec["error_class"], rec["error_message"] = d.error_class, d.error_message
    rec["decode_scale"] = d.decode_scale
    rec["trailing_bytes"] = d.trailing_bytes


def _measure_pixels(rec: dict[str, Any], d: Decoded, config: MeasureConfig, embed_spec: Any):
    im = d.image
    assert im is not None
    rec["pixel_hash"] = pixel_hash(im)
    # A large image is box-reduced while it is converted (never to less than twice what
    # the statistics, thumbnail and embedder use), so no full-size copy is ever made.
    rgb = to_rgb(im, _reduction(im.width, im.height, config, embed_spec))
    small = fit(rgb, config.stats_size)  # what thumbnail() gives, without its full copy
    # Hashes from the statistics image: identical to imagehash on the full image when it
    # already fits the box, and within a bit or two otherwise, at a fraction of the cost.
    gray = small.convert("L")
    rec["phash"] = hash_to_int(imagehash.phash(gray))
    rec["dhash"] = hash_to_int(imagehash.dhash(gray))
    rec["signature"] = gray.resize((16, 16), Image.Resampling.BOX).tobytes()
    rec.update(image_stats(np.asarray(small), np.asarray(gray)))
    out = Measurement(rec)
    if config.thumb_size:
        out.thumbnail = make_thumbnail(small, d.exif_orientation, config)
    if config.embed_size and embed_spec is not None:
        from dataaudit.embed.spec import prepare_pixels  # torch-free

        out.embed_pixels = prepare_pixels(rgb, embed_spec)
    return out


def _reduction(width: int, height: int, config: MeasureConfig, embed_spec: Any) -> int:
    """Integer reduction for converting a large image: 1 below LARGE_PIXELS (so ordinary
    images are measured exactly as before); above, as much as keeps the statistics and
    thumbnail box at twice their size and each side of the embedder's input at three times."""
    if width * height <= LARGE_PIXELS:
        return 1
    factor = max(width, height) // (2 * max(config.stats_size, config.thumb_size, 1))
    if config.embed_size and embed_spec is not None:
        factor = min(factor, min(width, height) // (3 * config.embed_size))
    return max(1, factor)


def hash_to_int(h: imagehash.ImageHash) -> int:
    """64-bit hash as a signed int64 (the same bits), so SQL can XOR and bit_count it."""
    bits = np.packbits(h.hash.flatten())
    return int.from_bytes(bits.tobytes(), "big", signed=True)


def image_stats(rgb: np.ndarray, gray: np.ndarray | None = None) -> dict[str, Any]:
    """Brightness, contrast, blur, entropy and colour statistics of an RGB uint8 array.

    ``gray`` (uint8, Pillow's ITU-R 601 luma) may be passed when already computed. Every
    grey-level statistic comes from one 256-bin histogram, which is far cheaper than
    sorting pixels for percentiles.
    """
    if gray is None:
        gray = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    n = float(gray.size)
    levels = np.arange(256, dtype=np.float64)
    mean = float((hist * levels).sum() / n)
    var = float((hist * (levels - mean) ** 2).sum() / n)
    cdf = np.cumsum(hist) / n
    p = hist[hist > 0] / n
    px = rgb.astype(np.int16)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    rg, yb = (r - g).astype(np.float32), (0.5 * (r + g) - b).astype(np.float32)
    colorfulness = float(
        np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    )
    diff = float(max(np.abs(r - g).max(), np.abs(g - b).max()))
    gray_f = gray.astype(np.float32)
    return {
        "brightness_mean": mean,
        "brightness_p05": float(np.searchsorted(cdf, 0.05)),
        "brightness_p95": float(np.searchsorted(cdf, 0.95)),
        "contrast": var**0.5,
        "laplacian_var": laplacian_variance(gray_f),
        "sharpness": sharpness_ratio(gray_f),
        "edge_sharpness": edge_sharpness(gray_f),
        "entropy": float(-(p * np.log2(p)).sum()),
        "colorfulness": colorfulness,
        "is_grayscale": diff <= 3.0,
        "max_channel_diff": diff,
        "dark_fraction": float(hist[:6].sum() / n),
        "bright_fraction": float(hist[250:].sum() / n),
    }


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low means few edges (blurry or flat).

    Taken on the statistics image (at most ``stats_size`` on a side), so the score of a
    large photo is comparable with that of a small one.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


def sharpness_ratio(gray: np.ndarray) -> float | None:
    """Fine-to-coarse detail ratio: Laplacian energy at full scale over that at half scale.

    Blur removes the finest detail first, so a blurry image scores well below a sharp one
    (on real photos: blurred < 0.2, sharp > 0.6). Unlike a raw Laplacian variance it does
    not depend on exposure or contrast, and it is taken on the statistics image, so it is
    comparable across image sizes. None when the image is too small or flat.
    """
    h, w = gray.shape
    if min(h, w) < 16:
        return None
    half = 0.25 * (
        gray[0 : h - h % 2 : 2, 0 : w - w % 2 : 2] + gray[1::2, 0 : w - w % 2 : 2][: h // 2]
        + gray[0 : h - h % 2 : 2, 1::2][:, : w // 2] + gray[1::2, 1::2][: h // 2, : w // 2]
    )  # fmt: skip
    coarse = laplacian_variance(half)
    if coarse < 1e-6:
        return None
    return laplacian_variance(gray) / coarse


EDGE_WINDOW = 5  # px: the local range is taken over this square, wider than a sharp edge
EDGE_MIN_STEP = 8.0  # grey levels: weaker steps are texture or noise, not edges


def edge_sharpness(gray: np.ndarray) -> float | None:
    """Steepness of the image's strongest edges: the grey step between neighbouring pixels
    over the local range (max - min in a 5x5 window) there, median over the strongest
    ``max(16, sqrt(h * w) / 4)`` gradients.

    A sharp step scores near 1 (it happens between two pixels); a Gaussian blur of sigma px
    spreads it: about 0.55 at sigma 0.8, 0.44 at 1, 0.36 at 1.2 (Pillow's GaussianBlur on a
    step). Unlike a detail ratio
    over the whole frame (``sharpness_ratio``), it does not depend on how much texture the
    scene has: a textured backdrop and a plain one score the same if their edges are
    sharp. Taken on the statistics image; None when a side is under 16 px or without a step
    of at least ``EDGE_MIN_STEP`` grey levels.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    h, w = gray.shape
    if min(h, w) < 16:  # as for the detail ratio: a 5x5 window would span a strip
        return None
    step = np.maximum(np.abs(np.diff(gray, axis=1))[:-1, :], np.abs(np.diff(gray, axis=0))[:, :-1])
    span = (maximum_filter(gray, EDGE_WINDOW) - minimum_filter(gray, EDGE_WINDOW))[:-1, :-1]
    n = max(16, round(0.25 * (h * w) ** 0.5))
    flat_step, flat_span = step.ravel(), span.ravel()
    top = np.argpartition(flat_step, -n)[-n:] if flat_step.size > n else np.arange(flat_step.size)
    ok = flat_span[top] >= EDGE_MIN_STEP
    if ok.sum() < 8:
        return None
    return float(np.median(flat_step[top][ok] / flat_span[top][ok]))


def make_thumbnail(small: Image.Image, orientation: int | None, config: MeasureConfig) -> bytes:
    """A small upright JPEG so the app never reopens full-size files to draw a grid."""
    thumb = small
    if orientation in _ORIENTATION_TRANSPOSE:
        thumb = thumb.transpose(_ORIENTATION_TRANSPOSE[orientation])
    if max(thumb.size) > config.thumb_size:
        thumb = thumb.copy()
        thumb.thumbnail((config.thumb_size, config.thumb_size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=config.thumb_quality)
    return buf.getvalue()


def measure_file(
    abs_path: str, ext: str, config: MeasureConfig, embed_spec: Any = None
) -> Measurement:
    """Read a file and measure it; an unreadable file becomes a flagged record."""
    try:
        with open(abs_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > config.max_file_bytes:
                return _too_large(f.read(64 * 1024), size, config.max_file_bytes)
            data = f.read()
    except FileNotFoundError:
        return vanished()
    except OSError as exc:
        rec = empty_record()
        rec.update(
            decode_status="unreadable",
            is_corrupt=True,
            error_class=type(exc).__name__,
            error_message=f"cannot read file: {exc.strerror or exc}",
        )
        return Measurement(rec)
    return measure(data, ext or os.path.splitext(abs_path)[1], config, embed_spec)


def _too_large(head: bytes, size: int, limit: int) -> Measurement:
    """A file over the size limit, judged by its first bytes only."""
    rec = empty_record()
    fmt = sniff_format(head)
    status = "bomb" if fmt else "not_image"
    what = f"an image ({fmt})" if fmt else describe_non_image(head)
    rec.update(
        format=fmt,
        decode_status=status,
        is_corrupt=status in CORRUPT_STATUSES,
        error_class="FileTooLarge",
        error_message=f"{size / 2**20:,.0f} MB, over the {limit / 2**20:,.0f} MB file limit; "
        f"not read whole. Its first bytes: {what}",
    )
    return Measurement(rec)


def _json(obj: dict[str, str]) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
