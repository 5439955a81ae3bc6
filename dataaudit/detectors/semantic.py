"""Embedding-based detectors: ``outlier`` and ``label_error``.

They read the ``knn`` table the embedding stage writes (image, neighbour, rank, cosine
similarity; scope ``all`` or within the same ``label``), never the vectors, so they run in
milliseconds and without torch.

* outlier, single: mean cosine distance to the k nearest neighbours as a robust z-score
  against the dataset; flagged when it reaches ``outlier_z``. Every embedded image gets a
  ranked row.
* outlier, clustered: a batch of foreign images (a scraper bug, a wrong folder merged) are
  each other's nearest neighbours, so their global kNN distance looks normal. Spread across
  the class folders, each of them is however far from its *own label's* images (within-label
  kNN distance z >= ``cluster_z``), and its global neighbours are mostly such images too.
  Connected groups of at least ``cluster_min_size`` of them, most of whose neighbours are in
  the group, are reported per image (``group_id`` = the cluster) and once per cluster as a
  dataset-level finding. A wrong label looks different: far from its label's images, but its
  neighbours are ordinary images of another class.
* label_error: a similarity-weighted vote of the k nearest neighbours; flagged when the
  vote names another label and gives the image's own label at most
  ``label_max_own_share`` of the weight. The suggested label and the agreement are in the
  details. Every labelled image gets a ranked row.

Images already flagged for a reason that explains their distance (dark, blank, a strip...)
are ranked but not flagged again. The explaining types come from detectors that run earlier
(the registry checks the order), and a type too common to flag per file (see
``base.too_common``) flags nothing, so it cannot blind these detectors.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dataaudit.detectors.base import (
    DetectContext,
    Finding,
    Robust,
    dataset_findings,
    empty_issues,
    has_table,
    issue_rows,
)
from dataaudit.embed.analysis import knn_distance, label_disagreement

# Issues that explain why an image sits far from the rest (outliers read them).
EXPLAINING_ISSUES = ("corrupt", "dark", "light", "blurry", "low_information", "grayscale",
                     "odd_size", "odd_aspect_ratio")  # fmt: skip


def _knn_matrix(ctx: DetectContext, scope: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(file_ids (N,), neighbour positions (N, k) with -1 for none, similarities (N, k)).

    Read once per detect run: outliers and label errors both use the global graph.
    """
    key = f"knn:{scope}"
    if key not in ctx.cache:
        ctx.cache[key] = _read_knn(ctx, scope)
    return ctx.cache[key]


def _read_knn(ctx: DetectContext, scope: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = ctx.con.sql(
        "SELECT file_id, neighbor_id, rank, similarity FROM knn WHERE scope = ? ORDER BY ALL",
        params=[scope],
    ).pl()
    if rows.height == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32)
    ids = np.unique(np.concatenate([rows["file_id"].to_numpy(), rows["neighbor_id"].to_numpy()]))
    k = int(rows["rank"].max())
    pos = np.searchsorted(ids, rows["file_id"].to_numpy())
    nb = np.searchsorted(ids, rows["neighbor_id"].to_numpy())
    rank = rows["rank"].to_numpy().astype(np.int64) - 1
    idx = np.full((len(ids), k), -1, dtype=np.int64)
    sim = np.full((len(ids), k), np.nan, dtype=np.float32)
    idx[pos, rank] = nb
    sim[pos, rank] = rows["similarity"].to_numpy()
    return ids, idx, sim


def detect_outliers(ctx: DetectContext) -> pl.DataFrame:
    if not has_table(ctx, "knn"):
        return empty_issues()
    p = ctx.config.semantic
    ids, idx, sim = _knn_matrix(ctx, "all")
    if len(ids) < 3:
        return empty_issues()
    z_all = Robust.of(knn_distance(sim)).z_array(knn_distance(sim))
    z_label = np.full(len(ids), np.nan)
    lab_ids, _, lab_sim = _knn_matrix(ctx, "label")
    if len(lab_ids):
        d_label = knn_distance(lab_sim)
        z_label[np.searchsorted(ids, lab_ids)] = Robust.of(d_label).z_array(d_label)
    explained = {fid: issue for issue in EXPLAINING_ISSUES for fid in ctx.flagged.get(issue, ())}
    why = np.array([explained.get(int(f)) for f in ids], dtype=object)
    cluster = _clusters(ctx, ids, idx, z_label, why)
    frame = pl.DataFrame(
        {
            "file_id": ids,
            "z_all": z_all,
            "z_label": z_label,
            "why": why.tolist(),
            "cluster": cluster.tolist(),
        },
        schema_overrides={"why": pl.String, "cluster": pl.Int64},
    ).with_columns(pl.col("z_all", "z_label").fill_nan(None))
    frame = frame.with_columns(pl.len().over("cluster").alias("cluster_size"))
    in_cluster = pl.col("cluster").is_not_null()
    single = (pl.col("z_all") >= p.outlier_z) & pl.col("why").is_null()
    # Ranked by the global z-score: a high within-label z with a normal global one is the
    # signature of a wrong label (see label_error), unless neighbours share it (a cluster).
    severity = (pl.col("z_all") / (2.0 * p.outlier_z)).fill_null(0.0)
    severity = (
        pl.when(in_cluster).then(pl.max_horizontal(severity, pl.lit(0.6))).otherwise(severity)
    )
    return issue_rows(
        frame,
        "outlier",
        pl.when(pl.col("why").is_null() | in_cluster).then(severity).otherwise(0.5 * severity),
        pl.when(in_cluster)
        .then(pl.format(
            "one of a cluster of {} images that look alike but unlike the rest of their labels "
            "(z = {} within its label): a batch from another source?",
            pl.col("cluster_size"), pl.col("z_label").round(1)))
        .otherwise(pl.format(
            "far from its nearest neighbours: z = {} in the dataset, {} within its label{}",
            pl.col("z_all").round(1),
            pl.col("z_label").round(1).cast(pl.String).fill_null("n/a"),
            pl.when(pl.col("why").is_null())
            .then(pl.lit(""))
            .otherwise(pl.lit(" (explained by: ") + pl.col("why") + pl.lit(")")))),
        is_issue=(single | in_cluster).fill_null(False),
        group_id=pl.col("cluster"),
    )  # fmt: skip


def _clusters(
    ctx: DetectContext, ids: np.ndarray, idx: np.ndarray, z_label: np.ndarray, why: np.ndarray
) -> np.ndarray:
    """Cluster id (its smallest file id) of each image in a far-from-its-label cluster, else
    None. Records one dataset-level finding per cluster."""
    p = ctx.config.semantic
    n = len(ids)
    out = np.full(n, None, dtype=object)
    cand = (np.nan_to_num(z_label, nan=-np.inf) >= p.cluster_z) & np.array([w is None for w in why])
    if cand.sum() < p.cluster_min_size:
        return out
    valid = idx >= 0
    # Keep, twice over, the candidates most of whose neighbours are candidates too: a wrong
    # label's neighbours are ordinary images of another class, a batch's are each other.
    for _ in range(2):
        nb_cand = np.where(valid, cand[np.where(valid, idx, 0)], False)
        frac = nb_cand.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        cand = cand & (frac >= 0.5)
    nb_cand = np.where(valid, cand[np.where(valid, idx, 0)], False)
    rows, cols = np.nonzero(nb_cand & cand[:, None])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, idx[rows, cols])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    paths = dict(ctx.images.select("file_id", "path").iter_rows())
    labels = dict(ctx.images.select("file_id", "label").iter_rows())
    for c in np.unique(comp[cand]):
        members = np.flatnonzero((comp == c) & cand)
        if len(members) < p.cluster_min_size:
            continue
        cid = int(ids[members].min())
        out[members] = cid
        member_labels = sorted({str(labels.get(int(ids[m]))) for m in members})
        examples = [paths.get(int(ids[m])) for m in members[:5]]
        dataset_findings(ctx).append(
            Finding(
                "outlier_cluster",
                "warning",
                f"{len(members)} images that look alike but unlike the rest of their labels "
                f"({', '.join(member_labels[:8])}{'...' if len(member_labels) > 8 else ''}): "
                f"a batch from another source? e.g. {', '.join(map(str, examples))}",
                {
                    "cluster": cid,
                    "size": len(members),
                    "labels": member_labels,
                    "examples": examples,
                },  # fmt: skip
            )
        )
    return out


def detect_label_errors(ctx: DetectContext) -> pl.DataFrame:
    if not has_table(ctx, "knn"):
        return empty_issues()
    p = ctx.config.semantic
    ids, idx, sim = _knn_matrix(ctx, "all")
    if len(ids) < 3:
        return empty_issues()
    labels_of = dict(ctx.images.select("file_id", "label").iter_rows())
    labels = np.array([labels_of.get(int(i)) for i in ids], dtype=object)
    suggested, agreement, own_share = label_disagreement(idx, sim, labels)
    frame = pl.DataFrame(
        {
            "file_id": ids,
            "label": labels.astype(str),
            "has_label": [lab is not None for lab in labels],
            "suggested": [None if s is None else str(s) for s in suggested],
            "agreement": agreement,
            "own_share": own_share,
        },
        schema_overrides={"suggested": pl.String},
    ).filter(pl.col("has_label") & pl.col("own_share").is_not_nan())
    # Images already explained (flat, tiny, out of domain, ...) have no trustworthy vote.
    explained = set().union(*(ctx.flagged.get(i, set()) for i in (*EXPLAINING_ISSUES, "outlier")))
    flagged = (
        (pl.col("suggested") != pl.col("label"))
        & (pl.col("own_share") <= p.label_max_own_share)
        & ~pl.col("file_id").is_in(list(explained))
    )
    return issue_rows(
        frame,
        "label_error",
        1.0 - pl.col("own_share"),
        pl.format(
            "labelled {} but its neighbours say {} ({}% of neighbours agree with {})",
            pl.col("label"),
            pl.col("suggested"),
            (pl.col("agreement") * 100).round(0).cast(pl.Int64),
            pl.col("label"),
        ),
        is_issue=flagged.fill_null(False),
    )
