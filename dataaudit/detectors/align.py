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
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import fft as sp_fft  # faster than numpy.fft; scipy comes with imagehash
from scipy import ndimage

ALIGN_SIZE = 48  # px; the scale search runs at this size (~5x cheaper than at 128)
BLUR = 1.0  # px; Gaussian smoothing before correlating (see ``aligned_correlation``)
COARSE_REJECT = 0.8  # coarse correlation below which a pair is not worth refining


def small_gray(jpeg: bytes, size: int | None = ALIGN_SIZE) -> np.ndarray:
    """Decode a stored thumbnail to a grey array fitting ``size`` x ``size`` (float32), or at
    its stored size (uint8, a quarter of the memory) when ``size`` is None."""
    im = Image.open(io.BytesIO(jpeg)).convert("L")
    if size is None:
        return np.asarray(im, dtype=np.uint8)
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

    def best(self, template: np.ndarray) -> tuple[float, int, int]:
        """Best normalised cross-correlation of ``template`` fully inside the image, and
        the top-left corner (y, x) where it is reached."""
        ih, iw = self.image.shape
        th, tw = template.shape
        if th > ih or tw > iw or th < 4 or tw < 4:
            return -1.0, 0, 0
        t = template - template.mean()
        t_norm = float(np.sqrt((t * t).sum()))
        if t_norm < 1e-6:
            return -1.0, 0, 0
        spec = self.spectrum * sp_fft.rfft2(t[::-1, ::-1], self.shape)
        corr = sp_fft.irfft2(spec, self.shape)[th - 1 : ih, tw - 1 : iw]
        s1 = _window(self.sum1, th, tw)
        s2 = _window(self.sum2, th, tw)
        var = np.maximum(s2 - s1 * s1 / (th * tw), 0.0)
        denom = np.sqrt(var) * t_norm
        valid = denom > 1e-6 * t_norm
        if not valid.any():
            return -1.0, 0, 0
        ncc = np.where(valid, corr / np.where(valid, denom, 1.0), -1.0)
        y, x = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        return float(ncc[y, x]), int(y), int(x)


def _window(c: np.ndarray, th: int, tw: int) -> np.ndarray:
    return c[th:, tw:] - c[:-th, tw:] - c[th:, :-tw] + c[:-th, :-tw]


MIN_SIDE = 12  # px; a thumbnail smaller than this (a 5x5 image) is too coarse to align


class _Match(NamedTuple):
    """Where the smaller image (``template``, rescaled and smoothed) lines up best inside
    the larger one (``image``, smoothed): top-left corner ``y``, ``x``."""

    corr: float
    image: np.ndarray
    template: np.ndarray
    y: int
    x: int


def aligned_correlation(
    a: np.ndarray,
    b: np.ndarray,
    min_cover: float = 0.7,
    steps: int = 12,
    coarse: int = 24,
    size: int = ALIGN_SIZE,
    blur: float = BLUR,
) -> float:
    """Best correlation of one image placed, rescaled or shifted, inside the other.

    The smaller image is scaled so that it covers from ``min_cover`` to all of the larger
    one's extent (crops of up to 30% per dimension, with or without a resize), and slid
    across it; images of the same size are also slid by up to 10% unscaled (shifted copies).
    Coarse to fine: pairs of larger images that do not line up at ``coarse`` px (most
    distinct photos) are rejected there; the rest are searched over ``steps`` scales at
    ``size`` px, and the best scale is refined in 0.8% steps on the thumbnails as stored
    (up to 128 px), where object detail survives.

    Both images are smoothed by ``blur`` px and templates are resampled at the exact scale
    (not rounded to whole pixels): a copy re-sampled on another pixel grid (a crop of a 32 px
    image, a rescale) then correlates like a copy (0.97-0.99 instead of 0.92-0.95 unblurred
    on 32 px signs), while distinct look-alikes, which differ in shape, gain less.
    Returns a value in [-1, 1]; copies score close to 1; -1 for a thumbnail under
    ``MIN_SIDE`` px.
    """
    match = _align(a, b, min_cover, steps, coarse, size, blur)
    return -1.0 if match is None else match.corr


def aligned_content_correlation(
    a: np.ndarray, b: np.ndarray, background: np.ndarray | None, blur: float = BLUR
) -> float:
    """Correlation of two aligned thumbnails on what differs from their common background.

    Two different objects on one backdrop line up almost everywhere (the backdrop), so
    their aligned correlation is as high as a copy's (0.97-0.98 at 128 px). At the best
    placement found by ``aligned_correlation``, subtract the background there (the
    ``background`` image, e.g. the median of the pair's neighbours, in the larger image's
    frame) from both: a copy's remainder still matches, another object's does not.
    Returns a value in [-1, 1] (the plain aligned correlation when ``background`` is None).
    """
    match = _align(a, b, 0.7, 12, 24, ALIGN_SIZE, blur)
    if match is None:
        return -1.0
    if background is None:
        return match.corr
    bg = _smooth(_resize(np.asarray(background, dtype=np.float32), match.image.shape), blur)
    th, tw = match.template.shape
    window = (slice(match.y, match.y + th), slice(match.x, match.x + tw))
    ra = match.image[window] - bg[window]
    rb = match.template - bg[window]
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum()) / denom if denom > 1e-6 else -1.0


def _align(
    a: np.ndarray,
    b: np.ndarray,
    min_cover: float,
    steps: int,
    coarse: int,
    size: int,
    blur: float,
) -> _Match | None:
    """The best placement (see ``aligned_correlation``); None for too small thumbnails."""
    if min(a.shape + b.shape) < MIN_SIDE:
        return None
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.size < b.size:
        a, b = b, a
    # Of two images of (nearly) the same size either may be the zoomed-in crop: try both.
    orders = [(a, b), (b, a)] if b.size >= 0.9 * a.size else [(a, b)]
    best: _Match | None = None
    for big, small in orders:
        if max(big.shape) > size:
            _, rough = _best_over_scales(_shrink(big, coarse), _shrink(small, coarse),
                                         np.geomspace(1.0, min_cover, 8))  # fmt: skip
            if rough.corr < COARSE_REJECT:
                best = rough if best is None or rough.corr > best.corr else best
                continue
        mid_big, mid_small = _smooth(_shrink(big, size), blur), _smooth(_shrink(small, size), blur)
        cover, match = _best_over_scales(mid_big, mid_small, np.geomspace(1.0, min_cover, steps))
        if cover > 0:
            if max(big.shape) > size:
                mid_big, mid_small = _smooth(big, blur), _smooth(small, blur)
            half_step = (1.0 / min_cover) ** (0.5 / max(1, steps - 1))
            fine = cover * np.geomspace(half_step, 1.0 / half_step, 5)
            _, match = _best_over_scales(mid_big, mid_small, fine)
        if best is None or match.corr > best.corr:
            best = match
    return best


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma, mode="nearest") if sigma > 0 else x


def _shrink(x: np.ndarray, size: int) -> np.ndarray:
    if max(x.shape) <= size:
        return x
    im = Image.fromarray(x)
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def _rescaled(x: np.ndarray, g: float) -> np.ndarray:
    """``x`` scaled by exactly ``g`` (an affine resample; a resize to whole-pixel sizes would
    stretch each axis differently by up to half a pixel)."""
    h, w = int(x.shape[0] * g + 1e-6), int(x.shape[1] * g + 1e-6)
    if abs(g - 1.0) < 1e-9:
        return x
    if h < 4 or w < 4:
        return np.zeros((0, 0), dtype=np.float32)
    im = Image.fromarray(x).transform((w, h), Image.Transform.AFFINE, (1 / g, 0, 0, 0, 1 / g, 0),
                                      resample=Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(im, dtype=np.float32)


def _best_over_scales(a: np.ndarray, b: np.ndarray, covers: np.ndarray) -> tuple[float, _Match]:
    """Slide ``b``, rescaled to cover each of ``covers`` (fractions, up to 1) of ``a``'s
    extent, across ``a`` (and, same size, its central 80% unscaled).
    Returns (the cover of the best placement, or 0 if none fits; the placement)."""
    ah, aw = a.shape
    bh, bw = b.shape
    g_max = min(ah / bh, aw / bw)
    search = _Search(a)
    best, best_cover = _Match(-1.0, a, b, 0, 0), 0.0
    templates = [(float(c), _rescaled(b, float(min(c, 1.0) * g_max))) for c in covers]
    mh, mw = round(0.1 * bh), round(0.1 * bw)
    if (bh, bw) == (ah, aw) and min(mh, mw) >= 1:  # a shifted copy of the same size
        templates.append((1.0, b[mh : bh - mh, mw : bw - mw]))
    for c, t in templates:
        if t.shape[0] > ah or t.shape[1] > aw or t.size == 0:
            continue
        value, y, x = search.best(t)
        if value > best.corr:
            best, best_cover = _Match(value, a, t, y, x), c
    return best_cover, best


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
