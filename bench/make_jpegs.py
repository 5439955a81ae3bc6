"""Build a folder of realistic 300-600 px JPEG photos for the scan benchmarks.

Run:  python bench/make_jpegs.py --n 20000 --out bench/.data/jpegs_20k

Why: the scan's speed depends on JPEG size, chroma subsampling and quality, so the benchmark
needs photo-like files of a size people actually train on, not tiny thumbnails. Each image is
made from one of the real hand-sign photos in ../shared/datasets/signs: random crop, upscale to
a random size (both sides 300-600 px), flips, small brightness/white-balance/saturation jitter,
a little sensor grain, then JPEG at quality 75-95 with 4:2:0 or 4:4:4 chroma. The layout is an
ImageFolder: ``train/{label}/`` and ``test/{label}/`` (about 80/20).

Deterministic: image i depends only on (seed, i), so the first 2,000 images of a 20,000-image
build are identical to a 2,000-image build, whatever the number of worker processes. The
folder is built under ``<out>.partial`` and renamed when complete; a marker ``<out>.done.json``
next to it records the parameters so a second run with the same ones does nothing. The marker
lives outside the folder so scanners see only images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

GENERATOR_VERSION = 1
REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES = REPO.parent / "shared" / "datasets" / "signs"
LABELS = [str(d) for d in range(10)]
BIG_SOURCE_SIDE = 1024  # the three 3024 px photos are shrunk once to this before cropping
BIG_SOURCE_PROB = 0.03  # share of images cut from one of the large photos
NOISE_TILE = 640  # grain is cut from one precomputed tile: drawing fresh normals is slow

# Per-worker state, filled by _init_worker (module globals are the simple way with mp.Pool).
_SOURCES: list[tuple[str, Image.Image]] = []
_BIG_SOURCES: list[tuple[str, Image.Image]] = []
_NOISE: np.ndarray | None = None


def _list_sources(src: Path) -> list[tuple[str, Path]]:
    """Return (label, path) for every source photo, sorted so the build is reproducible."""
    pairs = [(label, p) for label in LABELS for p in sorted((src / label).glob("*.JPG"))]
    if not pairs:
        sys.exit(f"no source photos found under {src} (expected {src}/0..9/*.JPG)")
    return pairs


def _init_worker(src: str, seed: int) -> None:
    """Load every source photo once per worker; shrink the large ones to keep memory small."""
    global _NOISE
    for label, path in _list_sources(Path(src)):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if max(im.size) > BIG_SOURCE_SIDE:
                im.thumbnail((BIG_SOURCE_SIDE, BIG_SOURCE_SIDE), Image.Resampling.LANCZOS)
                _BIG_SOURCES.append((label, im))
            else:
                im.load()
                _SOURCES.append((label, im))
    rng = np.random.default_rng([seed, 2**31 - 1])
    _NOISE = rng.standard_normal((NOISE_TILE, NOISE_TILE, 3), dtype=np.float32)


def _crop_box(rng: random.Random, w: int, h: int, aspect: float) -> tuple[int, int, int, int]:
    """Pick a crop covering 50-100% of the source area with (about) the target aspect ratio."""
    area = rng.uniform(0.5, 1.0) * w * h
    cw = min(w, max(8, round((area * aspect) ** 0.5)))
    ch = min(h, max(8, round(cw / aspect)))
    cw = min(w, max(8, round(ch * aspect)))
    x0 = rng.randint(0, w - cw)
    y0 = rng.randint(0, h - ch)
    return x0, y0, x0 + cw, y0 + ch


def make_one(i: int, seed: int) -> tuple[str, Image.Image, dict]:
    """Return (relative path, image, JPEG save options) for image i; depends on (seed, i) only."""
    rng = random.Random(f"{seed}:{i}")
    pool = _BIG_SOURCES if _BIG_SOURCES and rng.random() < BIG_SOURCE_PROB else _SOURCES
    label, src = pool[rng.randrange(len(pool))]
    out_w, out_h = rng.randint(300, 600), rng.randint(300, 600)

    box = _crop_box(rng, src.width, src.height, out_w / out_h)
    resample = rng.choice([Image.Resampling.BICUBIC, Image.Resampling.LANCZOS])
    im = src.resize((out_w, out_h), resample=resample, box=box)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.1:
        im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.85, 1.15))

    # Brightness and white balance as one per-channel gain, plus grain cut from the noise tile.
    gain = np.array([rng.uniform(0.95, 1.05) for _ in range(3)], dtype=np.float32)
    gain *= rng.uniform(0.85, 1.15)
    assert _NOISE is not None
    ny, nx = rng.randint(0, NOISE_TILE - out_h), rng.randint(0, NOISE_TILE - out_w)
    grain = _NOISE[ny : ny + out_h, nx : nx + out_w] * rng.uniform(1.0, 4.0)
    arr = np.asarray(im, dtype=np.float32) * gain + grain
    im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")

    split = "train" if rng.random() < 0.8 else "test"
    subsampling = 0 if rng.random() < 0.3 else 2  # Pillow: 0 = 4:4:4, 2 = 4:2:0
    quality = rng.randint(75, 95)
    rel = f"{split}/{label}/img_{i:06d}.jpg"
    return rel, im, {"quality": quality, "subsampling": subsampling}


def _build_chunk(args: tuple[list[int], int, str]) -> tuple[int, int]:
    """Build and write a chunk of images; return (count, bytes written)."""
    indices, seed, root = args
    total = 0
    for i in indices:
        rel, im, options = make_one(i, seed)
        path = os.path.join(root, rel)
        im.save(path, "JPEG", **options)
        total += os.path.getsize(path)
    return len(indices), total


def marker_path(out: Path) -> Path:
    """The completion marker sits next to the folder, so the folder holds only images."""
    return out.with_name(out.name + ".done.json")


def count_jpegs(folder: Path) -> int:
    """Count .jpg files under folder (the check that backs the marker)."""
    return sum(1 for _, _, files in os.walk(folder) for f in files if f.endswith(".jpg"))


def is_complete(out: Path, n: int, seed: int) -> bool:
    """True when out holds a finished build with exactly these parameters."""
    marker = marker_path(out)
    if not (out.is_dir() and marker.is_file()):
        return False
    info = json.loads(marker.read_text())
    wanted = {"n": n, "seed": seed, "version": GENERATOR_VERSION}
    return all(info.get(k) == v for k, v in wanted.items()) and count_jpegs(out) == n


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on <out>.lock so two builds of one folder cannot interleave."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as fh:
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock, the caller must not run two builds
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build(
    n: int, out: Path, seed: int = 0, workers: int | None = None, src: Path = DEFAULT_SOURCES
) -> dict:
    """Build the dataset unless an identical one exists; return the marker's contents."""
    out = out.resolve()
    with _locked(out):
        return _build_unlocked(n, out, seed, workers, src)


def _build_unlocked(n: int, out: Path, seed: int, workers: int | None, src: Path) -> dict:
    marker = marker_path(out)
    if is_complete(out, n, seed):
        info = json.loads(marker.read_text())
        print(f"{out} already holds {n} images (seed {seed}); nothing to do")
        return info
    if out.exists():
        if not marker.is_file():
            sys.exit(f"{out} exists but has no {marker.name}; not touching it (remove it yourself)")
        print(f"{out} was built with other parameters; rebuilding")
        shutil.rmtree(out)
        marker.unlink()

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # leftovers of an interrupted build of ours
    for split in ("train", "test"):
        for label in LABELS:
            (partial / split / label).mkdir(parents=True)

    workers = workers or os.cpu_count() or 1
    chunk = 200
    jobs = [(list(range(s, min(n, s + chunk))), seed, str(partial)) for s in range(0, n, chunk)]
    t0 = time.perf_counter()
    done = total_bytes = 0
    with mp.get_context("spawn").Pool(workers, _init_worker, (str(src), seed)) as pool:
        for count, nbytes in pool.imap_unordered(_build_chunk, jobs):
            done += count
            total_bytes += nbytes
            if done % 2000 < chunk or done == n:
                print(f"  {done}/{n} images, {time.perf_counter() - t0:.0f} s", flush=True)
    seconds = time.perf_counter() - t0

    os.replace(partial, out)
    info = {
        "n": n,
        "seed": seed,
        "version": GENERATOR_VERSION,
        "bytes": total_bytes,
        "seconds": round(seconds, 1),
        "workers": workers,
        "train": count_jpegs(out / "train"),
        "test": count_jpegs(out / "test"),
    }
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, marker)
    print(
        f"built {n} images in {seconds:.1f} s with {workers} workers: "
        f"{total_bytes / 1e6:.0f} MB, train {info['train']} / test {info['test']} -> {out}"
    )
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="number of images")
    parser.add_argument("--out", type=Path, default=None, help="default bench/.data/jpegs_<n>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--src", type=Path, default=DEFAULT_SOURCES, help="signs photo folder")
    args = parser.parse_args()
    out = args.out or default_out(args.n)
    build(args.n, out, seed=args.seed, workers=args.workers, src=args.src)


def default_out(n: int) -> Path:
    """bench/.data/jpegs_20k for 20000, jpegs_2k for 2000, jpegs_<n> otherwise."""
    name = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return REPO / "bench" / ".data" / f"jpegs_{name}"


if __name__ == "__main__":
    main()
