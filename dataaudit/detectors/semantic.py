"""Embedding-based detectors: semantic near duplicates, ``outlier`` and ``label_error``.

They read the ``knn`` table the embedding stage writes (image, neighbour, rank, cosine
similarity; scope ``all`` or within the same ``label``), never the vectors, so they run in
milliseconds and without torch.

* Near duplicates: neighbours with cosine similarity >= ``embed_min_similarity`` are
  linked (layer ``embedding``) into the same duplicate groups as the hash layers.
* outlier: mean cosine distance to the k nearest neighbours, as a robust z-score against
  the dataset (``all``) and against the image's own label (``label``); flagged when the
  global z-score reaches ``outlier_z``. Every embedded image gets a ranked row.
* label_error: a similarity-weighted vote of the k nearest neighbours; flagged when the
  vote names another label and gives the image's own label at most
  ``label_max_own_share`` of the weight. The suggested label and the agreement are in the
  details. Every labelled image gets a ranked row.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataaudit.detectors.base import DetectContext, empty_issues, issue_rows
from dataaudit.embed.analysis import knn_distance, label_disagreement, robust_zscore

# Issues that explain why an image sits far from the rest (checked before outliers run).
EXPLAINING_ISSUES = ("corrupt", "dark", "light", "blurry", "low_information", "grayscale",
                     "odd_size", "odd_aspect_ratio")  # fmt: skip

PAIR_SCHEMA = {"a": pl.Int64, "b": pl.Int64, "layer": pl.String, "distance": pl.Float64}


def has_table(ctx: DetectContext, name: str) -> bool:
    rows = ctx.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(rows[0][0])


def semantic_duplicate_pairs(ctx: DetectContext) -> pl.DataFrame:
    """Pairs whose embeddings are at least ``embed_min_similarity`` alike (a < b)."""
    if not has_table(ctx, "knn"):
        return pl.DataFrame(schema=PAIR_SCHEMA)
    rel = ctx.con.sql(
        """
        SELECT least(file_id, neighbor_id) AS a, greatest(file_id, neighbor_id) AS b,
               'embedding' AS layer, 1.0 - max(similarity) AS distance
        FROM knn WHERE scope = 'all' AND similarity >= ? AND file_id <> neighbor_id
        GROUP BY ALL
        """,
        params=[ctx.config.duplicates.embed_min_similarity],
    )
    # Nearly flat images all embed alike: a match between them says nothing.
    q = ctx.config.quality
    flat = ctx.images.filter(
        (pl.col("contrast") < q.low_info_max_contrast)
        | (pl.col("entropy") < q.low_info_max_entropy)
    )["file_id"]
    pairs = rel.pl().cast(PAIR_SCHEMA)
    return pairs.filter(~pl.col("a").is_in(flat.implode()) & ~pl.col("b").is_in(flat.implode()))


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
    threshold = ctx.config.semantic.outlier_z
    ids, _, sim = _knn_matrix(ctx, "all")
    if len(ids) < 3:
        return empty_issues()
    z_all = robust_zscore(knn_distance(sim))
    frame = pl.DataFrame({"file_id": ids, "z_all": z_all})
    lab_ids, _, lab_sim = _knn_matrix(ctx, "label")
    if len(lab_ids):
        frame = frame.join(
            pl.DataFrame({"file_id": lab_ids, "z_label": robust_zscore(knn_distance(lab_sim))}),
            on="file_id",
            how="left",
        )
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("z_label"))
    frame = frame.with_columns(pl.col("z_all", "z_label").fill_nan(None))
    # An image already flagged as dark, blurry, a strip, ... is far from the others for a
    # reason we have named: rank it lower and do not flag it again.
    explained = {fid: issue for issue in EXPLAINING_ISSUES for fid in ctx.flagged.get(issue, ())}
    frame = frame.with_columns(
        pl.col("file_id")
        .replace_strict(explained, default=None, return_dtype=pl.String)
        .alias("why")
    )
    # Ranked by the global z-score: a high within-label z with a normal global one is the
    # signature of a wrong label (see label_error), not of an image that does not belong.
    severity = (pl.col("z_all") / (2.0 * threshold)).fill_null(0.0)
    return issue_rows(
        frame,
        "outlier",
        pl.when(pl.col("why").is_null()).then(severity).otherwise(0.5 * severity),
        pl.format(
            "far from its nearest neighbours: z = {} in the dataset, {} within its label{}",
            pl.col("z_all").round(1),
            pl.col("z_label").round(1).cast(pl.String).fill_null("n/a"),
            pl.when(pl.col("why").is_null())
            .then(pl.lit(""))
            .otherwise(pl.lit(" (explained by: ") + pl.col("why") + pl.lit(")")),
        ),
        is_issue=((pl.col("z_all") >= threshold) & pl.col("why").is_null()).fill_null(False),
    )


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
