"""Small PNG figures drawn with Pillow: image grids and a labels-vs-predictions chart.

Pillow is already a dependency, so the checks and baselines can save what they saw without
a plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] (clipped) -> (N, H, W, 3) uint8."""
    x = np.clip(np.nan_to_num(x), 0.0, 1.0)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    elif x.shape[1] != 3:
        x = np.repeat(x.mean(axis=1, keepdims=True), 3, axis=1)
    return (x.transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)


def image_grid(
    images: np.ndarray, captions: Sequence[str] | None = None, cell: int = 64, cols: int = 8
) -> Image.Image:
    """Tile (N, H, W, 3) uint8 images into one picture, each with an optional caption."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    caption_h = 12 if captions else 0
    grid = Image.new("RGB", (cols * (cell + 2), rows * (cell + 2 + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, arr in enumerate(images):
        r, c = divmod(i, cols)
        x0, y0 = c * (cell + 2), r * (cell + 2 + caption_h)
        tile = Image.fromarray(arr).resize((cell, cell), Image.Resampling.NEAREST)
        grid.paste(tile, (x0, y0))
        if captions:
            draw.text((x0 + 1, y0 + cell), str(captions[i])[:12], fill="black")
    return grid


def filter_grid(weights: np.ndarray, cell: int = 32) -> Image.Image:
    """First-layer conv filters (O, I, kh, kw), each scaled to its own range, as a grid."""
    w = weights.astype(np.float64)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    w = (w - lo) / np.maximum(hi - lo, 1e-12)
    return image_grid(to_uint8_images(w), cell=cell, cols=8)


def labels_vs_predictions(
    labels: Sequence[int], history: Sequence[Sequence[int]], n_classes: int, size: int = 12
) -> Image.Image:
    """One column per example, one row per recorded step: green = prediction is the label.

    The last row is the end of training; a correct pipeline ends all green.
    """
    n, steps = len(labels), len(history)
    img = Image.new("RGB", (max(1, n) * size + 60, max(1, steps) * size + 14), "white")
    draw = ImageDraw.Draw(img)
    draw.text((2, 1), f"labels vs predictions ({n_classes} classes)", fill="black")
    for s, preds in enumerate(history):
        for i, (y, p) in enumerate(zip(labels, preds, strict=True)):
            colour = (40, 160, 60) if int(y) == int(p) else (200, 40, 40)
            x0, y0 = 58 + i * size, 14 + s * size
            draw.rectangle([x0, y0, x0 + size - 2, y0 + size - 2], fill=colour)
    return img


def save_png(img: Image.Image, path: Path) -> Path:
    """Write atomically: a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def curve(
    values: Sequence[float] | np.ndarray, title: str, width: int = 400, height: int = 160
) -> Image.Image:
    """A line chart of one series (learning rate per step, accuracy per size, ...)."""
    v = np.asarray(values, dtype=np.float64)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    draw.text((4, 2), f"{title}  [{lo:.3g}, {hi:.3g}]", fill="black")
    if len(v) < 2:
        return img
    xs = np.linspace(6, width - 6, len(v))
    ys = height - 8 - (v - lo) / max(hi - lo, 1e-12) * (height - 28)
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 90, 200), width=2)
    return img
