"""Pure numpy functions the detectors call on stored kNN results (no torch here).

Scores follow the detector contract: in [0, 1], near 0 = severe.

    g, w = outlier_scores(knn_sim, label_knn_sim)
    suggested, agree, score = label_disagreement(knn_idx, knn_sim, labels)
    pairs, sims = semantic_pairs(knn_idx, knn_sim, threshold=0.95)
    xy = project_2d(vectors)                 # PCA map for the app
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dataaudit.errors import DataAuditError


def knn_distance(knn_sim: np.ndarray) -> np.ndarray:
    """Mean cosine distance (1 - similarity) to the k nearest neighbours; NaN slots skipped."""
    sim = np.asarray(knn_sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"expected (N, k) similarities, got shape {sim.shape}")
    out = np.full(sim.shape[0], np.nan)
    has = ~np.isnan(sim).all(axis=1) if sim.shape[1] else np.zeros(sim.shape[0], dtype=bool)
    if has.any():
        out[has] = 1.0 - np.nanmean(sim[has], axis=1)
    return out


def _label_codes(labels: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Integer codes (-1 for missing: None, NaN, '') and the label values, sorted for ties."""
    values = list(labels)

    def missing(v: Any) -> bool:
        return v is None or v == "" or (isinstance(v, float) and np.isnan(v))

    names = sorted({v for v in values if not missing(v)}, key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(names)}
    codes = np.array([-1 if missing(v) else index[v] for v in values], dtype=np.int64)
    return codes, names


def label_disagreement(
    knn_idx: np.ndarray, knn_sim: np.ndarray, labels: Sequence[Any] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity-weighted neighbour vote: who do this image's neighbours say it is?

    Returns (suggested_label (N,) object, agreement_fraction (N,), score (N,)):
    suggested_label is the label with the largest summed similarity among the k neighbours
    (ties: the label that sorts first; None when no neighbour is labelled);
    agreement_fraction is the share of labelled neighbours that carry the image's own label;
    score is the similarity-weighted share of the own label (low = likely mislabelled).
    Both are NaN for unlabelled images or images without labelled neighbours. Negative
    similarities vote with weight 0.
    """
    idx = np.asarray(knn_idx, dtype=np.int64)
    sim = np.asarray(knn_sim, dtype=np.float32)
    codes, names = _label_codes(labels)
    n, k = idx.shape
    if len(codes) != n:
        raise ValueError("labels must have one entry per row of knn_idx")
    valid = idx >= 0
    nb_code = np.where(valid, codes[np.where(valid, idx, 0)], -1)
    weight = np.where((nb_code >= 0) & ~np.isnan(sim), np.clip(np.nan_to_num(sim), 0, None), 0)
    # Sparse vote: one (row, label, summed weight) entry per label present among a row's
    # neighbours, so memory is O(N * k), not O(N * labels) (1,000 classes x 1.2M images
    # would be 9.5 GB dense).
    row, code, w = _vote_entries(nb_code, weight)
    total = np.bincount(row, weights=w, minlength=n)
    # best label per row: largest summed weight, ties to the lower code (the label sorting
    # first); entries are sorted by (row, code), so a stable sort on -w keeps that order
    best_at = np.lexsort((code, -w, row))
    first = np.ones(len(best_at), dtype=bool)
    first[1:] = row[best_at][1:] != row[best_at][:-1]
    best = np.full(n, -1, dtype=np.int64)
    best[row[best_at][first]] = code[best_at][first]
    suggested = np.full(n, None, dtype=object)
    has_vote = (total > 0) & (best >= 0)
    names_arr = np.empty(len(names), dtype=object)
    names_arr[:] = names
    suggested[has_vote] = names_arr[best[has_vote]]

    labelled_nb = (nb_code >= 0).sum(axis=1)
    same = ((nb_code == codes[:, None]) & (nb_code >= 0)).sum(axis=1)
    has_own = codes >= 0
    agreement = np.full(n, np.nan)
    ok = has_own & (labelled_nb > 0)
    agreement[ok] = same[ok] / labelled_nb[ok]
    own_votes = np.bincount(row, weights=np.where(code == codes[row], w, 0.0), minlength=n)
    score = np.full(n, np.nan)
    ok_w = has_own & (total > 0)
    score[ok_w] = own_votes[ok_w] / total[ok_w]
    return suggested, agreement, score


def _vote_entries(nb_code: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, label code, summed weight) for every distinct labelled (row, code) pair, sorted
    by row then code. Weights are summed in float64."""
    n, k = nb_code.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    flat_code = nb_code.ravel()
    keep = flat_code >= 0
    rows, flat_code = rows[keep], flat_code[keep]
    flat_w = weight.ravel()[keep].astype(np.float64)
    order = np.lexsort((flat_code, rows))
    rows, flat_code, flat_w = rows[order], flat_code[order], flat_w[order]
    if len(rows) == 0:
        return rows, flat_code, flat_w
    start = np.ones(len(rows), dtype=bool)
    start[1:] = (rows[1:] != rows[:-1]) | (flat_code[1:] != flat_code[:-1])
    at = np.flatnonzero(start)
    return rows[at], flat_code[at], np.add.reduceat(flat_w, at)


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) float32 map of the embeddings for plotting.

    PCA (default) is exact, deterministic and fast: eigenvectors of the D x D covariance, signs
    fixed so the largest loading is positive. "umap" needs umap-learn installed.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) vectors, got shape {x.shape}")
    n = x.shape[0]
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DataAuditError(
                "the UMAP map needs umap-learn", hint="pip install umap-learn, or use pca"
            ) from exc
        if n < 4:
            return np.zeros((n, 2), dtype=np.float32)
        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1))
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    if method != "pca":
        raise DataAuditError(f"unknown projection {method!r}", hint="use pca or umap")
    if n < 2:
        return np.zeros((n, 2), dtype=np.float32)
    # Mean and covariance accumulated in float64 over float32 row blocks, and the map
    # projected block by block: no full float64 copy of the vectors (two of them used to
    # cost 16 bytes per value).
    d = x.shape[1]
    total = np.zeros(d)
    for block in _row_blocks(x):
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = np.zeros((d, d))
    for block in _row_blocks(x):
        centred = block - mean.astype(np.float32)
        cov += (centred.T @ centred).astype(np.float64)
    cov /= n - 1
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, ::-1][:, :2]
    if comps.shape[1] < 2:
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    flip = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(2)])
    comps = (comps * np.where(flip == 0, 1.0, flip)).astype(np.float32)
    out = np.empty((n, 2), dtype=np.float32)
    for start, block in _enumerate_blocks(x):
        out[start : start + len(block)] = (block - mean.astype(np.float32)) @ comps
    return out


_BLOCK_ROWS = 16_384  # ~84 MB of float32 temporaries at 1,280 dimensions


def _enumerate_blocks(x: np.ndarray):
    """(start row, float32 block) over the rows of x."""
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        yield start, np.asarray(x[start : start + _BLOCK_ROWS], dtype=np.float32)


def _row_blocks(x: np.ndarray):
    for _, block in _enumerate_blocks(x):
        yield block
