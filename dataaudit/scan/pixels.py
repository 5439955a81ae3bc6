"""The one conversion from any Pillow mode to 8-bit RGB, shared by the scan's statistics,
thumbnails and the embedder's input, so a file gets the same pixels from every path.

Torch-free and light: scan workers and ``dataaudit.embed.spec`` both import it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
WHITE = (255, 255, 255)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB.

    Transparency is composited on white (what a viewer shows, and what a transparent
    background most often means in a dataset); 16-bit grey is scaled by 1/257, so a dark
    image stays dark; 32-bit integer and float data, whose range is unknown, is stretched
    from its minimum to its maximum.
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float32) / 257.0
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        grey = ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
