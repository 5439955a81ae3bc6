"""Synthetic data for the scale benchmarks: no images, only what the index would hold.

    x = clustered_vectors(0, 100_000, dim=1280)    # rows 0..99,999 of an endless stream

Rows are generated in fixed blocks of `BLOCK` rows, each from its own seed, so row i is the
same whatever range it is asked in: a benchmark can stream a million rows block by block,
and regenerate any of them later to check results, without holding them all.

The vectors imitate CNN image embeddings: `clusters` classes (centres in a low-rank latent
space with a decaying spectrum, 1/sqrt(i)), a 32-d within-class variation, and isotropic
noise over all dimensions sized so the top 256 of 1,280 directions keep ~91% of the energy
(real efficientnet/ResNet features keep 85-95%), and nearest-neighbour cosines sit around
0.7-0.8. Real embeddings have different structure; recall measured here is a proxy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

BLOCK = 16_384


def _model(dim: int, seed: int, clusters: int, latent: int, extra: int):
    g = np.random.default_rng([seed, 0])
    width = latent + extra
    basis = g.standard_normal((width, dim)).astype(np.float32)
    basis *= (np.arange(1, width + 1, dtype=np.float32) ** -0.5)[:, None]
    centres = g.standard_normal((clusters, width)).astype(np.float32)
    return basis, centres


def clustered_vectors(
    start: int,
    stop: int,
    dim: int = 1280,
    seed: int = 0,
    clusters: int = 1000,
    latent: int = 32,
    noise: float = 4.0,
) -> np.ndarray:
    """Rows [start, stop) of the stream, float32 (stop - start, dim), not normalised."""
    extra = 64
    basis, centres = _model(dim, seed, clusters, latent, extra)
    width = latent + extra
    within = (np.arange(width) < latent).astype(np.float32) * 0.6
    noise_sd = noise * float(np.sqrt((basis**2).sum() / dim / width))
    out = np.empty((stop - start, dim), dtype=np.float32)
    for block in range(start // BLOCK, -(-stop // BLOCK)):
        lo, hi = block * BLOCK, (block + 1) * BLOCK
        r = np.random.default_rng([seed, 1, block])
        label = r.integers(0, clusters, BLOCK)
        z = centres[label] + within * r.standard_normal((BLOCK, width), dtype=np.float32)
        x = z @ basis
        x += noise_sd * r.standard_normal((BLOCK, dim), dtype=np.float32)
        a, b = max(lo, start), min(hi, stop)
        out[a - start : b - start] = x[a - lo : b - lo]
    return out


def cached_vectors(n: int, folder: Path, dim: int = 1280, seed: int = 0) -> np.ndarray:
    """Rows [0, n) as a read-only float16 memmap in `folder`, generated once (generating
    a million 1,280-d rows costs minutes; reading them back from the page cache, seconds).
    Written to a temp name and renamed, so an interrupted build is never reused."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"vectors_{n}x{dim}_seed{seed}.f16.npy"
    if not path.exists():
        tmp = path.with_suffix(f".partial{os.getpid()}")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            out[lo:hi] = clustered_vectors(lo, hi, dim=dim, seed=seed)
        out.flush()
        del out
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def read_rows(stored: np.memmap, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of a `cached_vectors` file as float32, by a plain file read: pages of
    a memory map would count in the reader's RSS, and the scan reads from DuckDB instead."""
    row_bytes = stored.shape[1] * 2
    out = np.empty((hi - lo, stored.shape[1]), dtype=np.float16)
    with open(stored.filename, "rb") as f:
        f.seek(stored.offset + lo * row_bytes)
        f.readinto(memoryview(out).cast("B"))
    return out.astype(np.float32)


def exact_top_k(
    stored: np.ndarray, n: int, rows: np.ndarray, data: Path, k: int = 10
) -> np.ndarray:
    """True top ``k`` neighbours (by cosine, self excluded) of ``rows`` among the first ``n``
    stored vectors, by brute force in blocks; cached as ``data/truth_{n}_{len(rows)}.npy``
    (the ground truth bench_knn.py and knn_sweep.py share)."""
    from dataaudit.embed.knn import _unit_rows

    path = data / f"truth_{n}_{len(rows)}.npy"
    if path.exists():
        return np.load(path)
    q = _unit_rows(np.asarray(stored[rows], dtype=np.float32))
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), k), dtype=np.int64)
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        s = q @ _unit_rows(read_rows(stored, lo, hi)).T
        self_hit = (rows >= lo) & (rows < hi)
        s[np.flatnonzero(self_hit), rows[self_hit] - lo] = -np.inf
        cat_s = np.concatenate([best_s, s], axis=1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), s.shape)], axis=1)
        top = np.argpartition(-cat_s, k, axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, top, axis=1)
        best_i = np.take_along_axis(cat_i, top, axis=1)
    np.save(path, best_i)
    return best_i
