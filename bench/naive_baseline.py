"""The naive baseline a user would write first: one process, one file at a time.

Run:  python bench/naive_baseline.py bench/.data/jpegs_20k

For each image file: read the bytes, sha256 them, ``Image.open(p).convert("RGB")`` and
``imagehash.phash(img)``. This is the yardstick ``dataaudit scan`` is compared against in
bench/bench_scan.py, so it is deliberately plain: no pool, no draft decoding, no batching.
Files that fail to decode are counted, not fatal, so it also runs on datasets with bad files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import imagehash
from PIL import Image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(root: Path) -> list[Path]:
    """All image files under root by extension, sorted for a stable order."""
    paths = [
        Path(d) / f
        for d, _, files in os.walk(root)
        for f in files
        if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
    ]
    return sorted(paths)


def run(root: Path) -> dict:
    """Hash and pHash every image; return counts and timing."""
    t0 = time.perf_counter()
    paths = list_images(root)
    failed = 0
    for p in paths:
        data = p.read_bytes()
        hashlib.sha256(data).hexdigest()
        try:
            img = Image.open(p).convert("RGB")
            imagehash.phash(img)
        except Exception:
            failed += 1
    seconds = time.perf_counter() - t0
    return {
        "images": len(paths),
        "failed": failed,
        "seconds": seconds,
        "images_per_s": len(paths) / seconds if seconds > 0 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Naive one-process hash + pHash baseline.")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        parser.error(f"{args.data_dir} is not a folder")
    result = run(args.data_dir)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"naive: {result['images']} images ({result['failed']} failed) in "
            f"{result['seconds']:.2f} s = {result['images_per_s']:.1f} images/s"
        )


if __name__ == "__main__":
    main()
