"""Crop-aware verification of near-duplicate candidates on the stored thumbnails.

Embeddings find crops and re-shoots as neighbours, but in a dataset of look-alike photos
(the same hand on the same wall) true copies and distinct photos have similar cosine
similarity. A copy, however, matches its original pixel for pixel once aligned: we slide
the smaller thumbnail (rescaled over a range of scales) across the larger one and take
the best normalised cross-correlation (computed with FFTs). Distinct photos, however
alike, do not line up everywhere.

Only the thumbnails stored in the index are read, never the image files.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import fft as sp_fft  # faster than numpy.fft; scipy comes with imagehash

ALIGN_SIZE = 48  # px; alignment is robust at this size and ~5x cheaper than at 128


def small_gray(jpeg: bytes, size: int = ALIGN_SIZE) -> np.ndarray:
    """Decode a stored thumbnail to a float32 grey array fitting ``size`` x ``size``."""
    im = Image.open(io.BytesIO(jpeg)).convert("L")
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


class _Search:
    """One image prepared for many template searches: its FFT and integral images."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        ih, iw = image.shape
        self.shape = (2 * ih, 2 * iw)  # fits any template no larger than the image
        self.spectrum = sp_fft.rfft2(image, self.shape)
        self.sum1 = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        self.sum2 = np.pad(image * image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)

    def best(self, template: np.ndarray) -> float:
        """Best normalised cross-correlation of ``template`` fully inside the image."""
        ih, iw = self.image.shape
        th, tw = template.shape
        if th > ih or tw > iw or th < 4 or tw < 4:
            return -1.0
        t = template - template.mean()
        t_norm = float(np.sqrt((t * t).sum()))
        if t_norm < 1e-6:
            return -1.0
        spec = self.spectrum * sp_fft.rfft2(t[::-1, ::-1], self.shape)
        corr = sp_fft.irfft2(spec, self.shape)[th - 1 : ih, tw - 1 : iw]
        s1 = _window(self.sum1, th, tw)
        s2 = _window(self.sum2, th, tw)
        var = np.maximum(s2 - s1 * s1 / (th * tw), 0.0)
        denom = np.sqrt(var) * t_norm
        valid = denom > 1e-6 * t_norm
        if not valid.any():
            return -1.0
        return float((corr[valid] / denom[valid]).max())


def _window(c: np.ndarray, th: int, tw: int) -> np.ndarray:
    return c[th:, tw:] - c[:-th, tw:] - c[th:, :-tw] + c[:-th, :-tw]


def aligned_correlation(
    a: np.ndarray, b: np.ndarray, min_cover: float = 0.7, steps: int = 16, coarse: int = 24
) -> float:
    """Best correlation of one image placed, rescaled or shifted, inside the other.

    The smaller image is scaled so that it covers from ``min_cover`` to all of the larger
    one's extent (crops of up to 30% per dimension, with or without a resize), and slid
    across it; images of the same size are also slid by up to 10% unscaled (shifted copies).
    Coarse to fine: pairs that do not line up at ``coarse`` px (most distinct photos) are
    rejected there; the rest are measured at full size over ``steps`` scales.
    Returns a value in [-1, 1]; copies score close to 1.
    """
    if a.size < b.size:
        a, b = b, a
    # Of two images of (nearly) the same size either may be the zoomed-in crop: try both.
    orders = [(a, b), (b, a)] if b.size >= 0.9 * a.size else [(a, b)]
    best = -1.0
    for big, small in orders:
        if max(big.shape + small.shape) > coarse:
            rough = _best_over_scales(_shrink(big, coarse), _shrink(small, coarse), min_cover, 8)
            if rough < COARSE_REJECT:
                best = max(best, rough)
                continue
        best = max(best, _best_over_scales(big, small, min_cover, steps))
    return best


COARSE_REJECT = 0.8  # coarse correlation below which a pair is not worth refining


def _shrink(x: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(x)
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def _best_over_scales(a: np.ndarray, b: np.ndarray, min_cover: float, steps: int) -> float:
    """Slide ``b``, rescaled to cover ``min_cover``..1 of ``a`` (or, same size, its central
    80% unscaled), across ``a``."""
    ah, aw = a.shape
    bh, bw = b.shape
    g_max = min(ah / bh, aw / bw)
    search = _Search(a)
    templates = []
    for g in np.geomspace(g_max, g_max * min_cover, steps):
        h, w = max(4, round(bh * g)), max(4, round(bw * g))
        if h > ah or w > aw:
            continue
        if (h, w) == (bh, bw):
            templates.append(b)
        else:
            im = Image.fromarray(b).resize((w, h), Image.Resampling.BILINEAR)
            templates.append(np.asarray(im, dtype=np.float32))
    mh, mw = round(0.1 * bh), round(0.1 * bw)
    if (bh, bw) == (ah, aw) and min(mh, mw) >= 1:  # a shifted copy of the same size
        templates.append(b[mh : bh - mh, mw : bw - mw])
    return max((search.best(t) for t in templates), default=-1.0)


def residual_correlation(a: np.ndarray, b: np.ndarray, background: np.ndarray | None) -> float:
    """Correlation of two thumbnails on what differs from their common background.

    Two different objects on the same backdrop (or two different digits of one class)
    correlate highly as whole images, because what they share dominates. Subtracting the
    background, estimated as the median of the pair's nearest neighbours' thumbnails,
    leaves the content: a copy's residual matches, another object's does not. ``b`` is
    resized to ``a``'s shape and shifted by up to 6% of the side (shifted and re-cropped
    copies). Returns a value in [-1, 1].
    """
    b = _resize(b, a.shape)
    ra = a - background if background is not None else a
    rb = b - background if background is not None else b
    h, w = a.shape
    s = max(1, round(0.06 * max(h, w)))
    best = -1.0
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            pa = ra[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            pb = rb[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            pa, pb = pa - pa.mean(), pb - pb.mean()
            denom = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
            if denom > 1e-6:
                best = max(best, float((pa * pb).sum()) / denom)
    return best


def background_of(thumbs: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray | None:
    """Per-pixel median of thumbnails resized to ``shape``: the common background."""
    if len(thumbs) < 3:
        return None
    return np.median(np.stack([_resize(t, shape) for t in thumbs]), axis=0)


def _resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if x.shape == shape:
        return x
    im = Image.fromarray(x).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)
