"""A second, independent label vote at detect time: a linear probe on the stored embeddings
with cleanlab's confident learning deciding how many labels to doubt.

The neighbour vote alone (``semantic.detect_label_errors``) flags 1.1-1.9 % of the untouched
images of the domain benches: on look-alike data (digits, objects on a shared backdrop, 32 px
signs) an image's 10 nearest neighbours can all carry another label without the image being
mislabelled. A linear classifier sees the whole dataset instead of 10 neighbours, and cleanlab
turns its out-of-fold probabilities into a calibrated count of label issues
(``cleanlab.count.num_label_issues``, ``off_diagonal_calibrated``: the count
``find_label_issues`` would return). An image is doubted by the probe when its label
quality (cleanlab's self-confidence: the out-of-fold probability of its own label) is among
the lowest that many; ``label_votes`` flags it only when the neighbours doubt it too.

The probe: PCA of the embeddings to ``label_probe_dims`` dimensions (at most one per 10
images; unsupervised, fitted once), standardised, multinomial logistic regression (scikit-learn, ``C = label_probe_c``),
out-of-fold over ``LABEL_PROBE_FOLDS`` stratified folds, fixed seeds. At most
``label_probe_max_fit`` images are fitted (a seeded random sample): their out-of-fold
probabilities calibrate the cut; any other image is judged by the model fitted on the whole
sample, which never saw it. Images other detectors explain (dark, blank, odd, outliers...) are
left out, and so are classes with fewer than ``LABEL_PROBE_FOLDS`` images in the sample.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from dataaudit.detectors.base import DetectContext, has_table

LABEL_PROBE_FOLDS = 5
SEED = 0

PROBE_SCHEMA = {
    "file_id": pl.Int64,
    "suggested": pl.String,
    "quality": pl.Float64,
    "is_issue": pl.Boolean,
}


def probe_votes(
    ctx: DetectContext, explained: set[int], wanted: set[int] | None = None
) -> pl.DataFrame | None:
    """One row per image the probe scored: file_id, suggested (the probe's most likely
    label), quality (probability of the image's own label, out of fold), is_issue (quality
    within cleanlab's estimated number of label issues). It fits on the labelled images
    with an embedding, less the ``explained`` ones; every fitted image is scored, and so are
    those of ``wanted`` (default: all) outside the fitted sample. None when there is
    nothing to fit (no embeddings, fewer than two classes with enough images)."""
    p = ctx.config.semantic
    if not p.label_probe or not has_table(ctx, "embeddings"):
        return None
    # file ids and labels only (16 bytes and a label per image); vectors are read for the
    # fitted sample and the wanted images alone
    labels = ctx.rows(
        """SELECT i.file_id, i.label FROM {images} i JOIN embeddings e USING (file_id)
           WHERE i.label IS NOT NULL AND i.label <> '' ORDER BY i.file_id"""
    ).filter(~pl.col("file_id").is_in(list(explained)))
    if labels.height == 0:
        return None
    rng = np.random.default_rng(SEED)
    ids = labels["file_id"].to_numpy()
    if len(ids) > p.label_probe_max_fit:
        fit_ids = np.sort(rng.choice(ids, p.label_probe_max_fit, replace=False))
    else:
        fit_ids = ids
    label_of = dict(labels.iter_rows())
    y_names = np.array([label_of[int(i)] for i in fit_ids], dtype=object)
    names, counts = np.unique(y_names, return_counts=True)
    kept = set(names[counts >= LABEL_PROBE_FOLDS].tolist())
    if len(kept) < 2:
        return None
    keep = np.array([n in kept for n in y_names])
    fit_ids, y_names = fit_ids[keep], y_names[keep]
    classes = sorted(kept)
    code = {c: i for i, c in enumerate(classes)}
    y = np.array([code[n] for n in y_names], dtype=np.int64)
    x = _vectors(ctx, fit_ids)
    oof, model = _out_of_fold(x, y, len(classes), p.label_probe_dims, p.label_probe_c)

    from cleanlab.count import num_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about tiny classes; they are kept
        n_issues = int(num_label_issues(y, oof, estimation_method="off_diagonal_calibrated"))
    quality = oof[np.arange(len(y)), y]
    cut = np.sort(quality)[n_issues - 1] if n_issues > 0 else -1.0
    ctx.stats["label_probe"] = {
        "fitted": len(y),
        "classes": len(classes),
        "accuracy": float((oof.argmax(axis=1) == y).mean()),
        "estimated_label_issues": n_issues,
        "quality_cut": float(cut),
    }
    # Images outside the fitted sample (large datasets) are scored by the whole-sample model.
    rest = np.setdiff1d(ids, fit_ids)
    if wanted is not None:
        rest = rest[np.isin(rest, np.fromiter(wanted, dtype=np.int64, count=len(wanted)))]
    rest = rest[np.array([label_of[int(i)] in kept for i in rest], dtype=bool)]
    all_ids, all_y, probs = fit_ids, y, oof
    if len(rest):
        rest_probs = np.concatenate(
            [model(_vectors(ctx, chunk)) for chunk in np.array_split(rest, -(-len(rest) // 20_000))]
        )
        all_ids = np.concatenate([fit_ids, rest])
        all_y = np.concatenate([y, [code[label_of[int(i)]] for i in rest]])
        probs = np.concatenate([oof, rest_probs])
    q = probs[np.arange(len(all_y)), all_y]
    names_arr = np.array(classes, dtype=object)
    return pl.DataFrame(
        {
            "file_id": all_ids.astype(np.int64),
            "suggested": names_arr[probs.argmax(axis=1)].tolist(),
            "quality": q.astype(np.float64),
            "is_issue": q <= cut,
        },
        schema=PROBE_SCHEMA,
    )


def _vectors(ctx: DetectContext, file_ids: np.ndarray) -> np.ndarray:
    """Embedding vectors of ``file_ids`` (sorted), as float32 rows in that order."""
    rows = ctx.con.execute(
        "SELECT file_id, vector FROM embeddings WHERE file_id IN (SELECT unnest(?::BIGINT[])) "
        "ORDER BY file_id",
        [file_ids.tolist()],
    ).fetchnumpy()
    got = np.asarray(rows["file_id"])
    if len(got) != len(file_ids) or not np.array_equal(got, np.sort(file_ids)):
        raise RuntimeError("embeddings changed while the label probe read them")
    out = np.stack([np.asarray(v, dtype=np.float32) for v in rows["vector"]])
    order = np.argsort(np.argsort(file_ids))
    return out[order]


def _out_of_fold(x: np.ndarray, y: np.ndarray, n_classes: int, dims: int, c: float):
    """(out-of-fold probabilities (n, classes), predict function of the whole-sample model)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # At least 10 images per dimension: the components are standardised, so on a small
    # dataset the last ones (noise) would weigh as much as the first (30 images, 29 dims:
    # out-of-fold accuracy 17 % on two classes; 3 dims: the wrong label is found).
    dims = max(1, min(dims, x.shape[0] // 10, x.shape[1]))
    # PCA sees no labels, so fitting it once on every image leaks nothing into the folds.
    pca = PCA(dims, random_state=SEED).fit(x)
    z = pca.transform(x)

    def new_model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))

    oof = np.zeros((len(y), n_classes))
    folds = StratifiedKFold(LABEL_PROBE_FOLDS, shuffle=True, random_state=SEED)
    for train, test in folds.split(z, y):
        m = new_model().fit(z[train], y[train])
        oof[np.ix_(test, m.classes_)] = m.predict_proba(z[test])
    whole: list = []  # fitted on first use: only large datasets score images outside the sample

    def predict(v: np.ndarray) -> np.ndarray:
        if not whole:
            whole.append(new_model().fit(z, y))
        out = np.zeros((len(v), n_classes))
        out[:, whole[0].classes_] = whole[0].predict_proba(pca.transform(v))
        return out

    return oof, predict
