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
    sql_float,
)

# Issues that explain why an image sits far from the rest (outliers read them).
EXPLAINING_ISSUES = ("corrupt", "dark", "light", "blurry", "low_information", "grayscale",
                     "odd_size", "odd_aspect_ratio")  # fmt: skip


def _per_file(ctx: DetectContext, scope: str) -> str:
    """A temp table (file_id, d): mean cosine distance to the k neighbours of every image
    in the graph of ``scope`` (NULL for an image seen only as a neighbour), aggregated in
    DuckDB so the 10 x N rows of the graph never come to Python. Made once per run."""
    name = f"_da_knn_{scope}_{id(ctx)}"
    if ctx.cache.get(name) is None:
        ctx.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {name} AS
                SELECT file_id, 1.0 - avg(CAST(similarity AS DOUBLE))
                           FILTER (WHERE NOT isnan(similarity)) AS d
                FROM knn WHERE scope = ? GROUP BY file_id
                UNION ALL
                SELECT DISTINCT neighbor_id, NULL FROM knn WHERE scope = ?
                  AND neighbor_id NOT IN (SELECT file_id FROM knn WHERE scope = ?)""",
            [scope, scope, scope],
        )
        ctx.cache[name] = name
        ctx.cache.setdefault("temp_tables", []).append(name)
    return name


def drop_temp_tables(ctx: DetectContext) -> None:
    """Drop the temp tables detectors made (end of a detect run)."""
    for name in ctx.cache.pop("temp_tables", []):
        ctx.con.execute(f"DROP TABLE IF EXISTS {name}")
        ctx.cache.pop(name, None)


def detect_outliers(ctx: DetectContext) -> pl.DataFrame:
    """Distances and their robust z-scores are computed in DuckDB; only the candidates
    (z beyond a threshold) and the ``ranked_rows`` most distant images come back."""
    if not has_table(ctx, "knn"):
        return empty_issues()
    p = ctx.config.semantic
    all_t = _per_file(ctx, "all")
    if ctx.con.execute(f"SELECT count(*) FROM {all_t}").fetchall()[0][0] < 3:  # type: ignore[index]
        return empty_issues()
    lab_t = _per_file(ctx, "label")
    r_all = Robust.of_sql(ctx, "d", table=all_t)
    r_lab = Robust.of_sql(ctx, "d", table=lab_t)
    z_lab = f"(l.d - {sql_float(r_lab.median)}) / {sql_float(r_lab.sigma)}"
    frame = ctx.rows(
        f"""WITH z AS (
                SELECT a.file_id, (a.d - {sql_float(r_all.median)}) / {sql_float(r_all.sigma)} AS z_all,
                       CASE WHEN isfinite({z_lab}) THEN {z_lab} END AS z_label
                FROM {all_t} a LEFT JOIN {lab_t} l USING (file_id))
            SELECT * FROM z WHERE z_all >= ? OR z_label >= ?
            UNION
            (SELECT * FROM z ORDER BY z_all DESC NULLS LAST, file_id LIMIT ?)
            ORDER BY file_id""",
        [p.outlier_z, p.cluster_z, p.ranked_rows],
    )
    explained = {fid: issue for issue in EXPLAINING_ISSUES for fid in ctx.flagged.get(issue, ())}
    ids = frame["file_id"].to_numpy()
    why = np.array([explained.get(int(f)) for f in ids], dtype=object)
    z_label = frame["z_label"].to_numpy().astype(np.float64)
    cluster = _clusters(ctx, ids, z_label, why)
    frame = pl.DataFrame(
        {
            "file_id": ids,
            "z_all": frame["z_all"].to_numpy().astype(np.float64),
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
    rows = issue_rows(
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
    return _keep_ranked(rows, frame["z_all"], p.ranked_rows)


def _keep_ranked(rows: pl.DataFrame, key: pl.Series, limit: int) -> pl.DataFrame:
    """Every flagged row, and of the others the ``limit`` with the largest ``key``."""
    ranked = rows.with_columns(key.fill_null(float("-inf")).alias("_key"))
    rest = ranked.filter(~pl.col("is_issue")).sort(["_key", "file_id"], descending=[True, False])
    kept = pl.concat([ranked.filter(pl.col("is_issue")), rest.head(limit)]).sort("file_id")
    return kept.drop("_key")


def _clusters(
    ctx: DetectContext, ids: np.ndarray, z_label: np.ndarray, why: np.ndarray
) -> np.ndarray:
    """Cluster id (its smallest file id) of each image in a far-from-its-label cluster, else
    None. Records one dataset-level finding per cluster. ``ids`` must hold every image with
    a within-label z of at least ``cluster_z``; only their neighbours are read."""
    p = ctx.config.semantic
    n = len(ids)
    out = np.full(n, None, dtype=object)
    cand = (np.nan_to_num(z_label, nan=-np.inf) >= p.cluster_z) & np.array(
        [w is None for w in why], dtype=bool
    )
    if cand.sum() < p.cluster_min_size:
        return out
    # neighbours of the candidates only, as positions in ids (-1: not a candidate)
    edges = ctx.of_ids(
        ids[cand], "file_id, neighbor_id, rank", table="(SELECT * FROM knn WHERE scope = 'all')"
    )
    k = int(edges["rank"].max()) if edges.height else 1
    rows_at = np.searchsorted(ids, edges["file_id"].to_numpy())
    nb = edges["neighbor_id"].to_numpy()
    nb_pos = np.searchsorted(ids, nb)
    found = (nb_pos < n) & (ids[np.minimum(nb_pos, n - 1)] == nb)
    idx = np.full((n, k), -1, dtype=np.int64)
    valid = np.zeros((n, k), dtype=bool)
    slot = edges["rank"].to_numpy().astype(np.int64) - 1
    idx[rows_at, slot] = np.where(found, nb_pos, n)  # n: a neighbour that is no candidate
    valid[rows_at, slot] = True
    cand_ext = np.append(cand, False)
    # Keep, twice over, the candidates most of whose neighbours are candidates too: a wrong
    # label's neighbours are ordinary images of another class, a batch's are each other.
    for _ in range(2):
        nb_cand = np.where(valid, cand_ext[np.where(valid, idx, n)], False)
        frac = nb_cand.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        cand = cand & (frac >= 0.5)
        cand_ext = np.append(cand, False)
    nb_cand = np.where(valid, cand_ext[np.where(valid, idx, n)], False)
    rows, cols = np.nonzero(nb_cand & cand[:, None])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, idx[rows, cols])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members_all = ids[cand]
    info = ctx.of_ids(members_all, "file_id, path, label") if len(members_all) else None
    paths = dict(info.select("file_id", "path").iter_rows()) if info is not None else {}
    labels = dict(info.select("file_id", "label").iter_rows()) if info is not None else {}
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
    """The similarity-weighted neighbour vote (see ``embed.analysis.label_disagreement``)
    as GROUP BY file_id, neighbour label in DuckDB; only the images whose vote names another
    label and the ``ranked_rows`` least agreeing others come back."""
    if not has_table(ctx, "knn"):
        return empty_issues()
    p = ctx.config.semantic
    if ctx.con.execute(f"SELECT count(*) FROM {_per_file(ctx, 'all')}").fetchall()[0][0] < 3:  # type: ignore[index]
        return empty_issues()
    name = f"_da_votes_{id(ctx)}"
    ctx.cache.setdefault("temp_tables", []).append(name)
    # A label '' counts as none, as in label_disagreement; negative or NaN similarities
    # vote with weight 0; ties go to the label that sorts first.
    ctx.con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {name} AS
            WITH lab AS (SELECT file_id, label FROM {ctx.table}
                         WHERE label IS NOT NULL AND label <> ''),
            votes AS (
                SELECT k.file_id, nl.label AS nb_label, count(*) AS c,
                       sum(CASE WHEN isnan(k.similarity) THEN 0.0
                                ELSE greatest(CAST(k.similarity AS DOUBLE), 0.0) END) AS w
                FROM knn k JOIN lab nl ON nl.file_id = k.neighbor_id
                WHERE k.scope = 'all' GROUP BY ALL),
            per_file AS (
                SELECT v.file_id, o.label, sum(v.w) AS total, sum(v.c) AS labelled,
                       first(v.nb_label ORDER BY v.w DESC, v.nb_label) AS suggested,
                       sum(CASE WHEN v.nb_label = o.label THEN v.w ELSE 0.0 END) AS own_w,
                       sum(CASE WHEN v.nb_label = o.label THEN v.c ELSE 0 END) AS same
                FROM votes v JOIN lab o USING (file_id) GROUP BY v.file_id, o.label)
            SELECT file_id, label, suggested, same / labelled AS agreement,
                   own_w / total AS own_share
            FROM per_file WHERE total > 0"""
    )
    candidates = f"suggested <> label AND own_share <= {sql_float(p.label_max_own_share)}"
    n_cand = ctx.con.execute(f"SELECT count(*) FROM {name} WHERE {candidates}").fetchall()[0][0]  # type: ignore[index]
    frame = ctx.rows(
        f"""SELECT * FROM {name} WHERE {candidates}
            UNION (SELECT * FROM {name} ORDER BY own_share, file_id LIMIT ?)
            ORDER BY file_id""",
        [p.ranked_rows + n_cand],
    ).with_columns(pl.col("agreement", "own_share").cast(pl.Float64))
    # Images already explained (flat, tiny, out of domain, ...) have no trustworthy vote.
    explained = set().union(*(ctx.flagged.get(i, set()) for i in (*EXPLAINING_ISSUES, "outlier")))
    flagged = (
        (pl.col("suggested") != pl.col("label"))
        & (pl.col("own_share") <= p.label_max_own_share)
        & ~pl.col("file_id").is_in(list(explained))
    )
    rows = issue_rows(
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
    return _keep_ranked(rows, 1.0 - frame["own_share"], p.ranked_rows)
