"""The one conversion from any Pillow mode to 8-bit RGB, shared by the scan's statistics,
thumbnails and the embedder's input, so a file gets the same pixels from every path.

Memory stays bounded by the decoded image: large or wide-mode images (32-bit integer or
float, 16-bit, alpha, palettes) are converted a strip of rows at a time, optionally
box-reduced on the way, instead of through full-size float copies.

Torch-free and light: scan workers and ``dataaudit.embed.spec`` both import it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
WHITE = (255, 255, 255)
STRIP_PIXELS = 1 << 20  # pixels converted at a time (a few MB of temporaries)


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel Pillow holds in memory for a mode (RGB is stored as 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def to_rgb(im: Image.Image, reduce: int = 1) -> Image.Image:
    """Any Pillow mode as 8-bit RGB, box-reduced by ``reduce`` (an integer factor).

    Transparency is composited on white (what a viewer shows, and what a transparent
    background most often means in a dataset); 16-bit grey is scaled by 1/257, so a dark
    image stays dark; 32-bit integer and float data, whose range is unknown, is stretched
    from its minimum to its maximum (taken over the whole image). The result is the same
    whether the image is converted whole or in strips.
    """
    if im.mode == "RGB" and reduce == 1:
        return im
    w, h = im.size
    extrema = im.getextrema() if im.mode in ("I", "F") else None
    if reduce == 1 and w * h <= STRIP_PIXELS:
        return _convert(im, extrema)
    out = Image.new("RGB", (-(-w // reduce), -(-h // reduce)))
    rows = max(reduce, (STRIP_PIXELS // max(1, w)) // reduce * reduce)  # whole reduce blocks
    for top in range(0, h, rows):
        strip = _convert(im.crop((0, top, w, min(h, top + rows))), extrema)
        out.paste(strip.reduce(reduce) if reduce > 1 else strip, (0, top // reduce))
    return out


def _convert(im: Image.Image, extrema: tuple[float, float] | None) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float32) / 257.0
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F"):
        lo, hi = (float(v) for v in extrema or im.getextrema())
        scale = 255.0 / (hi - lo) if hi > lo and math.isfinite(hi - lo) else 0.0
        arr = np.array(im, dtype=np.float32)  # a writable copy of one strip
        arr -= lo
        arr *= scale
        grey = arr.round(out=arr).clip(0, 255, out=arr).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def fit_size(width: int, height: int, box: int) -> tuple[int, int] | None:
    """The size ``Image.thumbnail((box, box))`` gives (None: already fits), without the copy
    that thumbnail needs."""
    if box >= width and box >= height:
        return None
    aspect = width / height
    x, y = box, box
    if x / y >= aspect:
        x = max(min(math.floor(y * aspect), math.ceil(y * aspect),
                    key=lambda n: abs(aspect - n / y)), 1)  # fmt: skip
    else:
        y = max(min(math.floor(x / aspect), math.ceil(x / aspect),
                    key=lambda n: 0 if n == 0 else abs(aspect - x / n)), 1)  # fmt: skip
    return x, y


def fit(im: Image.Image, box: int, resample: int = Image.Resampling.BILINEAR) -> Image.Image:
    """``im`` shrunk to fit a ``box`` square exactly as ``Image.thumbnail`` does (same
    size, same reducing gap), as a new image; ``im`` itself when it already fits."""
    size = fit_size(im.width, im.height, box)
    if size is None or size == im.size:
        return im
    return im.resize(size, resample, reducing_gap=2.0)


def pixel_hash(im: Image.Image) -> str:
    """xxh3-128 of mode, size and raw pixels, hashed a strip at a time: the same value as
    hashing ``im.tobytes()`` whole, without a full copy of the pixels."""
    import xxhash

    h = xxhash.xxh3_128(f"{im.mode}{im.size}".encode())
    rows = max(1, STRIP_PIXELS // max(1, im.width))
    for top in range(0, im.height, rows):
        h.update(im.crop((0, top, im.width, min(im.height, top + rows))).tobytes())
    return h.hexdigest()
