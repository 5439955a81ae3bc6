"""The app's reads: every one goes through ``dataaudit.open_index`` -> ``Index``, cached.

Results are cached with ``st.cache_data`` keyed on ``key``, the index's last run (see
``widgets.stamp``), so pages re-render from memory until a scan or detect run changes the
index. Decisions and human-baseline answers are files beside the index, read here too.
Plain functions (no widgets), so ``bench/bench_app.py`` times exactly what the pages call.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import streamlit as st
from PIL import Image

import dataaudit as da
from dataaudit.errors import DataAuditError
from dataaudit.store.decisions import Decisions

ENV_PATH = "DATAAUDIT_APP_PATH"  # dataset folder or index file, set by `dataaudit app`
ENV_DB = "DATAAUDIT_APP_DB"  # explicit index file (--db), optional

# The numeric columns a person looks at (histograms, range filters), stored or derived by
# the API's images view; the expressions compute them over the raw tables in one query.
NUMERIC = {
    "width": "width", "height": "height",
    "aspect_ratio": "width::DOUBLE / nullif(height, 0)",
    "megapixels": "width::DOUBLE * height / 1e6",
    "bytes": "bytes", "brightness_mean": "brightness_mean", "contrast": "contrast",
    "sharpness": "sharpness", "laplacian_var": "laplacian_var", "entropy": "entropy",
    "colorfulness": "colorfulness", "dark_fraction": "dark_fraction",
    "bright_fraction": "bright_fraction", "max_channel_diff": "max_channel_diff",
}  # fmt: skip
# outlier_score lives in the issues table (one score per image when embeddings exist).
OUTLIER_SCORE = "(SELECT score FROM issues WHERE issue = 'outlier')"
HIDDEN = {"signature", "exif"}  # blobs and long JSON stay out of tables


def target() -> tuple[str, str | None]:
    """The dataset path and optional index file the app was started on."""
    path = os.environ.get(ENV_PATH, "")
    if not path:
        raise DataAuditError(
            "no dataset given to the app", "start it with `dataaudit app PATH` (after a scan)"
        )
    return path, os.environ.get(ENV_DB) or None


@st.cache_resource(show_spinner=False)
def _open(path: str, db: str | None) -> da.Index:
    return da.open_index(db or path)


def index() -> da.Index:
    """The app's ``Index`` (opened once per process; each call opens a short connection)."""
    return _open(*target())


def make_filters(spec: dict[str, Any] | None) -> da.Filters | None:
    """A plain dict (hashable by the cache) -> ``da.Filters``."""
    if not spec:
        return None
    return da.Filters(
        splits=spec.get("splits") or None,
        labels=spec.get("labels") or None,
        issues=spec.get("issues") or None,
        ranges=dict(spec.get("ranges") or {}),
        where=spec.get("where") or None,
        sort=spec.get("sort") or None,
        descending=bool(spec.get("descending")),
    )


@st.cache_data(show_spinner=False, max_entries=64)
def images(
    key: str,
    spec: dict | None = None,
    columns: tuple[str, ...] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pl.DataFrame:
    """One page of rows in the filter's order (ask for the columns you show: sorting a
    million wide rows to keep sixty costs several times more than narrow ones)."""
    return index().images(
        make_filters(spec), columns=list(columns) if columns else None, limit=limit, offset=offset
    )


@st.cache_data(show_spinner=False, max_entries=64)
def count(key: str, spec: dict | None = None) -> int:
    return index().count(make_filters(spec))


@st.cache_data(show_spinner=False, max_entries=32)
def thumbnails(key: str, ids: tuple[int, ...]) -> dict[int, bytes]:
    """Stored JPEG thumbnails by file id. Asked with a literal IN list of integers: DuckDB
    pushes that into the scan, where ``Index.thumbnails``' join with unnest(?) reads every
    blob (1M rows, 60 scattered ids: 0.33 s vs 1.22 s; 1,000 ids: 1.05 s vs 5.26 s)."""
    if not ids:
        return {}
    listed = ", ".join(str(int(i)) for i in ids)
    rows = index().sql(f"SELECT file_id, jpeg FROM thumbnails WHERE file_id IN ({listed})")
    return dict(zip(rows["file_id"].to_list(), rows["jpeg"].to_list(), strict=True))


@st.cache_data(show_spinner=False, max_entries=64)
def issues(key: str, issue: str | None = None, flagged_only: bool = True) -> pl.DataFrame:
    return index().issues(type=issue, flagged_only=flagged_only)


@st.cache_data(show_spinner=False, max_entries=64)
def ranked(
    key: str, issue: str, flagged: bool | None, limit: int, offset: int = 0
) -> tuple[pl.DataFrame, int]:
    """One issue type's rows, flagged first then most severe, a page at a time, and the total.

    ``flagged``: True only flagged rows, False only the ranked candidates below the
    threshold, None both. Detectors such as outlier store a score for every image, so this
    pages in SQL rather than loading a million rows.
    """
    cond = {True: "AND s.is_issue", False: "AND NOT s.is_issue", None: ""}[flagged]
    rows = index().sql(
        f"""
        SELECT s.file_id, i.path, i.label, i.split, s.score, s.details, s.is_issue,
               s.group_id AS "group"
        FROM issues s JOIN images i USING (file_id)
        WHERE s.issue = ? {cond}
        ORDER BY s.is_issue DESC, s.score DESC NULLS LAST, i.path
        LIMIT ? OFFSET ?
        """,
        params=[issue, int(limit), int(offset)],
    )
    total = (
        index()
        .sql(f"SELECT count(*) AS n FROM issues s WHERE s.issue = ? {cond}", params=[issue])
        .item()
    )
    return rows, int(total)


@st.cache_data(show_spinner=False, max_entries=256)
def image(key: str, file_id: int) -> dict:
    return index().image(file_id)


@st.cache_data(show_spinner=False, max_entries=256)
def neighbors(key: str, file_id: int, k: int = 8) -> pl.DataFrame:
    return index().neighbors(file_id, k=k)


@st.cache_data(show_spinner=False)
def findings(key: str) -> pl.DataFrame:
    out = index().findings()
    return out if isinstance(out, pl.DataFrame) else pl.DataFrame(out)


@st.cache_data(show_spinner=False)
def sql(key: str, query: str) -> pl.DataFrame:
    return index().sql(query)


@st.cache_data(show_spinner=False)
def overview(key: str) -> dict[str, Any]:
    """Counts, split x label and flagged files per issue: two queries (each call opens a
    connection, ~30 ms, so pages ask for a lot at once rather than piece by piece)."""
    idx = index()
    totals = idx.sql(
        """
        SELECT count(*) AS images, coalesce(sum(bytes), 0)::DOUBLE AS bytes,
               count(*) FILTER (WHERE is_corrupt) AS corrupt,
               count(DISTINCT label) AS labels,
               count(*) FILTER (WHERE label IS NULL) AS unlabelled,
               (SELECT count(DISTINCT file_id) FROM issues WHERE is_issue) AS files_flagged,
               (SELECT count(*) FROM embedding_map) > 0 AS has_embeddings,
               (SELECT list({'issue': issue, 'files': n} ORDER BY n DESC, issue) FROM (
                   SELECT issue, count(DISTINCT file_id) AS n FROM issues WHERE is_issue
                   GROUP BY issue)) AS flagged
        FROM images
        """
    ).row(0, named=True)
    by = idx.sql(
        "SELECT coalesce(split, '(none)') AS split, coalesce(label, '(none)') AS label, "
        "count(*) AS n FROM images GROUP BY ALL ORDER BY ALL"
    )
    flagged = pl.DataFrame(
        totals.pop("flagged") or [], schema={"issue": pl.String, "files": pl.Int64}
    )
    return {
        "totals": totals,
        "by": by,
        "flagged": flagged,
        "files_flagged": totals["files_flagged"],
        "has_embeddings": bool(totals["has_embeddings"]),
    }


def _numeric_cte() -> str:
    """``x``: one row per image with every NUMERIC column and the outlier score."""
    cols = ", ".join(f"({e})::DOUBLE AS {c}" for c, e in NUMERIC.items())
    return f"""x AS (
        SELECT {cols}, o.score::DOUBLE AS outlier_score FROM images
        LEFT JOIN (SELECT file_id, max(score) AS score FROM issues WHERE issue = 'outlier'
                   GROUP BY file_id) o USING (file_id))"""


def numeric_columns() -> list[str]:
    return [*NUMERIC, "outlier_score"]


@st.cache_data(show_spinner=False)
def facets(key: str) -> dict[str, Any]:
    """Distinct splits, labels and flagged issue types (one query) and the sortable columns,
    for the filter widgets. Numeric ranges are asked per column, when a range is chosen."""
    row = (
        index()
        .sql(
            """
        SELECT
            (SELECT list(s ORDER BY s) FROM (SELECT DISTINCT split AS s FROM images
             WHERE split IS NOT NULL)) AS splits,
            (SELECT list(s ORDER BY s) FROM (SELECT DISTINCT label AS s FROM images
             WHERE label IS NOT NULL)) AS labels,
            (SELECT list(s ORDER BY s) FROM (SELECT DISTINCT issue AS s FROM issues
             WHERE is_issue)) AS issues
        """
        )
        .row(0, named=True)
    )
    return {
        "splits": row["splits"] or [],
        "labels": row["labels"] or [],
        "issues": row["issues"] or [],
        "columns": [c for c in index().columns() if c not in HIDDEN],
    }


@st.cache_data(show_spinner=False)
def column_range(key: str, column: str) -> tuple[float | None, float | None]:
    """(min, max) of one numeric column, for its range slider."""
    if column == "outlier_score":
        return 0.0, 1.0  # detector scores are in [0, 1]
    expr = NUMERIC[column]
    row = index().sql(f"SELECT min({expr})::DOUBLE AS lo, max({expr})::DOUBLE AS hi FROM images")
    return row["lo"][0], row["hi"][0]


@st.cache_data(show_spinner=False)
def histograms(key: str, bins: int = 40) -> dict[str, pl.DataFrame]:
    """Every numeric column's histogram (lo, hi, count) in one query."""
    cols = numeric_columns()
    ranges = ", ".join(f"min({c}) AS lo_{c}, max({c}) AS hi_{c}" for c in cols)
    parts = [
        f"""SELECT '{c}' AS col, least(floor((x.{c} - r.lo_{c}) / nullif(r.hi_{c} - r.lo_{c}, 0)
                   * {bins}), {bins - 1})::INT AS b, any_value(r.lo_{c}) AS lo,
                   any_value(r.hi_{c}) AS hi, count(*) AS n
            FROM x, r WHERE x.{c} IS NOT NULL AND isfinite(x.{c}) GROUP BY b"""
        for c in cols
    ]
    df = index().sql(
        f"WITH {_numeric_cte()}, r AS (SELECT {ranges} FROM x) " + " UNION ALL ".join(parts)
    )
    out = {}
    for c in cols:
        part = df.filter(pl.col("col") == c)
        if part.height == 0:
            out[c] = pl.DataFrame(schema={"lo": pl.Float64, "hi": pl.Float64, "count": pl.Int64})
            continue
        lo, hi = part["lo"][0], part["hi"][0]
        width = (hi - lo) / bins if hi > lo else 1.0
        b = part["b"].fill_null(0)
        out[c] = (
            pl.DataFrame({"b": b, "count": part["n"]})
            .group_by("b").agg(pl.col("count").sum()).sort("b")
            .select((lo + pl.col("b") * width).alias("lo"),
                    (lo + (pl.col("b") + 1) * width).alias("hi"), "count")
        )  # fmt: skip
    return out


def decisions() -> pl.DataFrame:
    """Decisions in force (latest per file; a "keep" only clears, so it is left out), cached
    on the log file's size."""
    path = Decisions.for_index(index()).path
    size = path.stat().st_size if path.exists() else -1
    return _decisions(str(path), size)


@st.cache_data(show_spinner=False, max_entries=4)
def _decisions(path: str, size: int) -> pl.DataFrame:
    return Decisions(Path(path)).current().filter(pl.col("action") != "keep")


def record_decision(
    file_ids: list[int],
    paths: list[str],
    action: str,
    new_label: str | None,
    reason: str,
    who: str | None = None,
) -> None:
    Decisions.for_index(index()).record(
        file_ids, paths, action, new_label=new_label, reason=reason, who=who
    )


def decision_badges() -> dict[int, str]:
    """file_id -> short text ("drop", "relabel -> 3") for every active decision."""
    d = decisions()
    out = {}
    for fid, action, new in d.select("file_id", "action", "new_label").iter_rows():
        out[fid] = f"relabel → {new}" if action == "relabel" else action
    return out


def with_images(key: str, df: pl.DataFrame) -> pl.DataFrame:
    """Add path/label/split for frames that carry only file ids."""
    need = [c for c in ("path", "label", "split") if c not in df.columns]
    if not need or df.height == 0:
        return df
    extra = (
        index()
        .sql(
            "SELECT file_id, path, label, split FROM images WHERE file_id IN (SELECT unnest(?))",
            params=[df["file_id"].to_list()],
        )
        .select("file_id", *need)
    )
    return df.join(extra, on="file_id", how="left")


# ----------------------------------------------------------------------------- page loaders

MAX_POINTS = 20_000  # a browser draws this many map points smoothly; more are sampled
THUMB_SIDE = 64  # per-class look: thumbnails are resized to this square before averaging
THUMB_BUDGET = 1_000  # per-class look: thumbnails decoded in all, spread over the classes


@st.cache_data(show_spinner=False)
def duplicates(key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group members (group_id, file_id, is_representative, path, split, label, ...) and
    linked pairs (a, b, layer, distance, split_a, split_b, ...)."""
    idx = index()
    return idx.duplicate_groups(), idx.duplicate_pairs()


@st.cache_data(show_spinner=False)
def map_points(key: str) -> pl.DataFrame:
    """Map coordinates with path, label, split and the most severe flagged issue ('none');
    a fixed sample of about MAX_POINTS when there are more (drawn in SQL)."""
    return index().sql(
        """
        WITH n AS (SELECT count(*) AS n FROM embedding_map),
        m AS (SELECT m.file_id, m.x, m.y FROM embedding_map m, n
              WHERE hash(m.file_id) % greatest(1, n.n // ?) = 0)
        SELECT m.file_id, m.x, m.y, i.path, coalesce(i.label, '(none)') AS label,
               coalesce(i.split, '(none)') AS split, coalesce(t.issue, 'none') AS issue
        FROM m JOIN images i USING (file_id)
        LEFT JOIN (SELECT file_id, arg_max(issue, score) AS issue FROM issues
                   WHERE is_issue AND file_id IN (SELECT file_id FROM m) GROUP BY file_id) t
               USING (file_id)
        ORDER BY m.file_id
        """,
        params=[MAX_POINTS],
    )


@st.cache_data(show_spinner=False)
def outlier_clusters(key: str, ids: tuple[int, ...], min_sim: float) -> list[list[int]]:
    """Connected components of ``ids`` linked by embedding cosine similarity >= ``min_sim``,
    the one holding the most outlying image first."""
    if not ids:
        return []
    where = f"file_id IN ({', '.join(str(int(i)) for i in ids)})"
    emb = index().embeddings(da.Filters(where=where))
    pos = {int(f): i for i, f in enumerate(emb.file_ids)}
    order = [i for i in ids if i in pos]
    if not order:
        return []
    x = np.asarray(emb.matrix, dtype=np.float32)[[pos[i] for i in order]]
    sim = x @ x.T
    parent = list(range(len(order)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(sim >= min_sim, k=1)), strict=False):
        parent[find(int(i))] = find(int(j))
    comps: dict[int, list[int]] = {}
    for i, fid in enumerate(order):
        comps.setdefault(find(i), []).append(fid)
    return sorted(comps.values(), key=lambda c: order.index(c[0]))


@st.cache_data(show_spinner=False)
def confused_pairs(key: str) -> pl.DataFrame:
    """Class pairs whose images are each other's nearest neighbours most often."""
    return index().sql(
        """
        WITH links AS (
            SELECT ia.label AS a, ib.label AS b
            FROM knn k
            JOIN images ia ON ia.file_id = k.file_id
            JOIN images ib ON ib.file_id = k.neighbor_id
            WHERE k.scope = 'all' AND k.rank <= 5 AND ia.label IS NOT NULL
              AND ib.label IS NOT NULL
        ),
        per_class AS (SELECT a, count(*) AS total FROM links GROUP BY a)
        SELECT least(l.a, l.b) AS class_1, greatest(l.a, l.b) AS class_2,
               count(*) AS neighbour_links,
               round(100.0 * count(*) / any_value(p.total), 1) AS pct_of_class_1_links
        FROM links l JOIN per_class p ON p.a = least(l.a, l.b)
        WHERE l.a <> l.b
        GROUP BY ALL ORDER BY neighbour_links DESC LIMIT 15
        """
    )


@st.cache_data(show_spinner=False)
def tables(key: str) -> dict[str, list[str]]:
    """Every table of the index and its columns (the SQL page's schema, predictions lookup)."""
    df = index().sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "ORDER BY table_name, ordinal_position"
    )
    out: dict[str, list[str]] = {}
    for t, c in df.iter_rows():
        out.setdefault(t, []).append(c)
    return out


@st.cache_data(show_spinner=False)
def schema(key: str) -> pl.DataFrame:
    return index().sql(
        'SELECT table_name AS "table", column_name AS "column", data_type AS type '
        "FROM information_schema.columns ORDER BY table_name, ordinal_position"
    )


@st.cache_data(show_spinner=False)
def mispredictions(key: str, table: str, loss: str, pred: str) -> pl.DataFrame:
    """Images whose stored prediction differs from their label, highest loss first."""
    return index().sql(
        f"""
        SELECT p.file_id, p."{pred}" AS predicted, p."{loss}" AS loss, i.path, i.label, i.split
        FROM "{table}" p JOIN images i USING (file_id)
        WHERE p."{pred}"::VARCHAR IS DISTINCT FROM i.label
        QUALIFY row_number() OVER (PARTITION BY p.file_id ORDER BY p."{loss}" DESC) = 1
        ORDER BY loss DESC LIMIT 200
        """
    )


def human_sample(n: int, seed: int, splits: list[str]) -> pl.DataFrame:
    """``n`` labelled, readable images in a seeded random order (not cached: a new draw)."""
    where, params = "label IS NOT NULL AND NOT is_corrupt", []
    if splits:
        where += " AND split IN (SELECT unnest(?))"
        params.append(list(splits))
    return index().sql(
        f"SELECT file_id, path, label FROM images WHERE {where} "
        "ORDER BY hash(file_id + ?), file_id LIMIT ?",
        params=[*params, int(seed), int(n)],
    )


@st.cache_data(show_spinner="Averaging thumbnails...")
def class_stats(key: str) -> list[dict]:
    """[{label, n, mean: uint8 HxWx3, std: float HxWx3}] from a fixed sample per class."""
    f = facets(key)
    n_classes = max(1, len(f["labels"]))
    per_class = max(4, min(64, THUMB_BUDGET // n_classes))
    # Pre-sample by hash (about 20x what is needed) so no million-row window sort is needed.
    n = overview(key)["totals"]["images"] or 1
    keep = min(1.0, 20 * per_class * n_classes / n)
    picks = index().sql(
        "SELECT file_id, label FROM images WHERE label IS NOT NULL AND NOT is_corrupt "
        "AND hash(file_id) % 1000000 < ? "
        "QUALIFY row_number() OVER (PARTITION BY label ORDER BY hash(file_id)) <= ? "
        "ORDER BY label",
        params=[int(keep * 1_000_000), per_class],
    )
    thumbs = thumbnails(key, tuple(picks["file_id"].to_list()))
    out = []
    for (label,), part in picks.group_by(["label"], maintain_order=True):
        arrs = []
        for fid in part["file_id"].to_list():
            blob = thumbs.get(fid)
            if not blob:
                continue
            with Image.open(io.BytesIO(blob)) as im:
                im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG DCT scaling: decode less
                arrs.append(
                    np.asarray(im.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE)), np.float32)
                )
        if arrs:
            stack = np.stack(arrs)
            out.append({"label": label, "n": len(arrs), "mean": stack.mean(0).astype(np.uint8),
                        "std": stack.std(0), "per_class": per_class})  # fmt: skip
    return out
