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
    sim = np.asarray(knn_sim, dtype=np.float64)
    codes, names = _label_codes(labels)
    n, k = idx.shape
    if len(codes) != n:
        raise ValueError("labels must have one entry per row of knn_idx")
    valid = idx >= 0
    nb_code = np.where(valid, codes[np.where(valid, idx, 0)], -1)
    weight = np.where((nb_code >= 0) & ~np.isnan(sim), np.clip(np.nan_to_num(sim), 0, None), 0.0)
    n_labels = max(len(names), 1)
    votes = np.zeros((n, n_labels))
    rows = np.repeat(np.arange(n), k)
    keep = nb_code.ravel() >= 0
    np.add.at(votes, (rows[keep], nb_code.ravel()[keep]), weight.ravel()[keep])
    total = votes.sum(axis=1)
    best = votes.argmax(axis=1)  # argmax takes the first maximum: the label sorting first
    suggested = np.array(
        [names[b] if t > 0 else None for b, t in zip(best, total, strict=True)], dtype=object
    )

    labelled_nb = (nb_code >= 0).sum(axis=1)
    own = codes[:, None]
    same = ((nb_code == own) & (nb_code >= 0)).sum(axis=1)
    has_own = codes >= 0
    agreement = np.full(n, np.nan)
    ok = has_own & (labelled_nb > 0)
    agreement[ok] = same[ok] / labelled_nb[ok]
    score = np.full(n, np.nan)
    ok_w = has_own & (total > 0)
    score[ok_w] = votes[ok_w, codes[ok_w]] / total[ok_w]
    return suggested, agreement, score


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


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) float32 map of the embeddings for plotting.

    PCA (default) is exact, deterministic and fast: eigenvectors of the D x D covariance, signs
    fixed so the largest loading is positive. "umap" needs umap-learn installed.
    """
    x = np.asarray(vectors, dtype=np.float64)
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
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / (n - 1)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, ::-1][:, :2]
    if comps.shape[1] < 2:
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    flip = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(2)])
    comps = comps * np.where(flip == 0, 1.0, flip)
    return (centred @ comps).astype(np.float32)
