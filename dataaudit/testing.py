"""Small generated datasets and their indexes, for every test suite (ours, the app's, yours).

``make_dataset`` writes a ``root/{split}/{label}/*.png`` folder of distinct, textured images
(seeded, a few hundred bytes each) with a known set of planted problems, and returns what it
planted; ``build_index`` scans it. Nothing here needs torch unless ``embed=True``::

    from dataaudit.testing import make_dataset, build_index
    planted = make_dataset(tmp_path / "data")
    idx = build_index(tmp_path / "data")
    assert idx.count() == planted.total
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dataaudit.index import Index

LABELS = ("circle", "square", "triangle")


@dataclass
class Planted:
    """What :func:`make_dataset` wrote: every path relative to the root, by kind."""

    root: Path
    total: int = 0
    clean: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    exact_duplicate: list[tuple[str, str]] = field(default_factory=list)
    near_duplicate: list[tuple[str, str]] = field(default_factory=list)
    leakage: list[tuple[str, str]] = field(default_factory=list)
    dark: list[str] = field(default_factory=list)
    odd_size: list[str] = field(default_factory=list)
    by_label: dict[str, list[str]] = field(default_factory=dict)


def textured_image(
    seed: int, label: str = "circle", size: tuple[int, int] = (64, 64), brightness: float = 1.0
) -> Image.Image:
    """A distinct RGB image: smooth random background plus the label's shape, seeded."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.float32)
    base = Image.fromarray(coarse.astype(np.uint8), "RGB").resize(size, Image.BICUBIC)
    pixels = np.asarray(base, np.float32) + rng.normal(0, 6, size=(h, w, 3))
    im = Image.fromarray(np.clip(pixels * brightness, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    cx, cy = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4)
    r = int(rng.integers(max(3, w // 8), max(4, w // 4)))
    fill = tuple(int(c * brightness) for c in rng.integers(0, 255, size=3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if label == "square":
        draw.rectangle(box, fill=fill)
    elif label == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.ellipse(box, fill=fill)
    return im


def image_bytes(im: Image.Image, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def make_dataset(
    root: str | Path,
    per_label: int = 6,
    labels: tuple[str, ...] = LABELS,
    splits: tuple[str, ...] = ("train", "test"),
    seed: int = 0,
    plant: bool = True,
) -> Planted:
    """Write a labelled, split dataset; with ``plant``, add one of each common problem."""
    root = Path(root)
    out = Planted(root)
    n = 0

    def put(rel: str, data: bytes) -> str:
        nonlocal n
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out.total += 1
        out.by_label.setdefault(rel.split("/")[-2], []).append(rel)
        return rel

    for s_i, split in enumerate(splits):
        count = per_label if s_i == 0 else max(2, per_label // 2)
        for l_i, label in enumerate(labels):
            for k in range(count):
                n_seed = seed * 100_000 + s_i * 10_000 + l_i * 1_000 + k
                rel = f"{split}/{label}/{label}_{split}_{k:03d}.png"
                out.clean.append(put(rel, image_bytes(textured_image(n_seed, label))))
    if not plant:
        return out
    first, label = splits[0], labels[0]
    src = out.clean[0]
    data = (root / src).read_bytes()
    out.exact_duplicate.append((src, put(f"{first}/{label}/copy_of_first.png", data)))
    resized = Image.open(root / src).convert("RGB").resize((48, 48), Image.BILINEAR)
    near = put(f"{first}/{label}/resized_first.jpg", image_bytes(resized, "JPEG", quality=92))
    out.near_duplicate.append((src, near))
    if len(splits) > 1:
        leaked = out.clean[1]
        other = f"{splits[1]}/{label}/leaked_from_{splits[0]}.png"
        out.leakage.append((leaked, put(other, (root / leaked).read_bytes())))
    out.corrupt.append(put(f"{first}/{label}/truncated.png", data[: len(data) // 3]))
    out.corrupt.append(put(f"{first}/{labels[-1]}/not_an_image.jpg", b"<html>404</html>"))
    dark = textured_image(seed + 7, labels[-1], brightness=0.08)
    out.dark.append(put(f"{first}/{labels[-1]}/dark.png", image_bytes(dark)))
    tiny = textured_image(seed + 8, labels[-1], size=(640, 20))
    out.odd_size.append(put(f"{first}/{labels[-1]}/strip.png", image_bytes(tiny)))
    return out


def build_index(
    root: str | Path, db: str | Path | None = None, embed: bool = False, **options: Any
) -> Index:
    """Scan ``root`` in this process (no worker pool) and run the detectors."""
    from dataaudit.api import scan

    options.setdefault("workers", 0)
    return scan(root, db, embed=embed, **options)
