"""Reference helpers used only by tests: outlier scores and semantic pairs as plain numpy.

They document, and test against, what the detectors compute inside DuckDB and polars.
"""

from __future__ import annotations

import numpy as np

from dataaudit.embed.analysis import knn_distance


def _distance_to_score(dist: np.ndarray) -> np.ndarray:
    """exp(-d / typical d): 1 for a point sitting on its neighbours, ~0.37 for a typical one.

    Scaling by the median distance makes scores comparable across backbones and datasets.
    """
    score = np.full(dist.shape, np.nan)
    ok = ~np.isnan(dist)
    if not ok.any():
        return score
    typical = float(np.median(dist[ok]))
    if typical <= 0:
        typical = float(dist[ok].max()) or 1.0
    score[ok] = np.exp(-np.maximum(dist[ok], 0.0) / typical)
    return score


def outlier_scores(
    knn_sim: np.ndarray, label_knn_sim: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(global score, within-label score), each (N,) in [0, 1], low = far from its neighbours.

    `knn_sim` comes from `knn(vectors, k)`; `label_knn_sim` from `knn_within_groups(vectors,
    labels, k)` (kNN among images of the same label). Rows without neighbours (a label with a
    single image) score NaN: the detector decides what that means.
    """
    global_score = _distance_to_score(knn_distance(knn_sim))
    if label_knn_sim is None:
        return global_score, None
    return global_score, _distance_to_score(knn_distance(label_knn_sim))


def semantic_pairs(
    knn_idx: np.ndarray, knn_sim: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of neighbours with cosine similarity >= threshold, each pair once.

    Returns (pairs int64 (M, 2), similarities float32 (M,)), most similar first, then by
    (a, b). A pair found from both ends keeps the larger of its two similarity values.
    """
    idx = np.asarray(knn_idx, dtype=np.int64)
    sim = np.asarray(knn_sim, dtype=np.float32)
    rows = np.repeat(np.arange(idx.shape[0], dtype=np.int64), idx.shape[1])
    cols = idx.ravel()
    vals = sim.ravel()
    keep = (cols >= 0) & (cols != rows) & ~np.isnan(vals) & (vals >= threshold)
    a = np.minimum(rows[keep], cols[keep])
    b = np.maximum(rows[keep], cols[keep])
    vals = vals[keep]
    if len(a) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    order = np.lexsort((-vals, b, a))  # by pair, largest similarity first
    a, b, vals = a[order], b[order], vals[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, vals = a[first], b[first], vals[first]
    order = np.lexsort((b, a, -vals))
    pairs = np.stack([a[order], b[order]], axis=1)
    return pairs, vals[order].astype(np.float32)
