"""The one reader: parameterized queries over the index, returned as polars DataFrames.

The CLI report, the issues export and the app all read through these functions; none of
them builds SQL from user strings.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import polars as pl


def issues(
    con: duckdb.DuckDBPyConnection,
    types: list[str] | None = None,
    flagged_only: bool = True,
) -> pl.DataFrame:
    """Issue rows with paths: path, issue, group, score, details, split, label, file_id."""
    where, params = ["TRUE"], []
    if flagged_only:
        where.append("s.is_issue")
    if types:
        where.append("s.issue IN (SELECT unnest(?))")
        params.append(types)
    return con.sql(
        f"""
        SELECT i.path, s.issue, s.group_id AS "group", s.score, s.details, i.split, i.label,
               s.file_id
        FROM issues s JOIN images i USING (file_id)
        WHERE {" AND ".join(where)}
        ORDER BY s.issue, s.score DESC, i.path
        """,
        params=params,
    ).pl()


def issue_examples(con: duckdb.DuckDBPyConnection, per_issue: int) -> pl.DataFrame:
    """The ``per_issue`` most severe flagged files of each issue type: issue, path, details."""
    return con.sql(
        """
        SELECT s.issue, i.path, s.details
        FROM issues s JOIN images i USING (file_id)
        WHERE s.is_issue
        QUALIFY row_number() OVER (PARTITION BY s.issue ORDER BY s.score DESC, i.path) <= ?
        ORDER BY s.issue, s.score DESC, i.path
        """,
        params=[per_issue],
    ).pl()


def issue_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Flagged files per issue type: issue, files."""
    return con.sql(
        "SELECT issue, count(*) AS files FROM issues WHERE is_issue GROUP BY issue ORDER BY issue"
    ).pl()


def findings(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute("SELECT finding, severity, message, details FROM findings").fetchall()
    return [
        {"finding": f, "severity": s, "message": m, "details": json.loads(d) if d else {}}
        for f, s, m, d in rows
    ]


def split_label_counts(con: duckdb.DuckDBPyConnection) -> list[tuple[str | None, str | None, int]]:
    return con.execute(
        "SELECT split, label, count(*) FROM images GROUP BY ALL ORDER BY ALL NULLS FIRST"
    ).fetchall()


def duplicate_layers(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many pairs each layer (bytes, pixels, phash, embedding) linked."""
    return dict(
        con.execute(
            "SELECT layer, count(*) FROM duplicate_pairs GROUP BY layer ORDER BY layer"
        ).fetchall()
    )


def leakage_by_split_pair(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Cross-split duplicate pairs per split pair (train<->test, ...)."""
    rows = con.execute(
        """
        SELECT least(ia.split, ib.split) || '<->' || greatest(ia.split, ib.split), count(*)
        FROM duplicate_pairs p
        JOIN images ia ON ia.file_id = p.a JOIN images ib ON ib.file_id = p.b
        WHERE ia.split IS NOT NULL AND ib.split IS NOT NULL AND ia.split <> ib.split
        GROUP BY ALL ORDER BY 1
        """
    ).fetchall()
    return dict(rows)


def latest_run(con: duckdb.DuckDBPyConnection, kind: str) -> dict[str, Any] | None:
    rows = con.execute(
        "SELECT run_id, status, started_at, ended_at, params, versions, counts FROM runs "
        "WHERE kind = ? ORDER BY run_id DESC LIMIT 1",
        [kind],
    ).fetchall()
    if not rows:
        return None
    run_id, status, started, ended, params, versions, counts = rows[0]
    return {
        "run_id": run_id,
        "status": status,
        "started_at": str(started),
        "ended_at": str(ended) if ended else None,
        "params": json.loads(params) if params else {},
        "versions": json.loads(versions) if versions else {},
        "counts": json.loads(counts) if counts else {},
    }


def image_totals(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    n, nbytes, corrupt = con.execute(
        "SELECT count(*), coalesce(sum(bytes), 0), count(*) FILTER (WHERE is_corrupt) FROM images"
    ).fetchall()[0]
    return {"images": n, "bytes": nbytes, "corrupt": corrupt}


def duplicate_pairs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every linked pair with both paths and splits, the layer that linked them and how close."""
    return con.sql(
        """
        SELECT p.a, p.b, ia.path AS path_a, ib.path AS path_b, ia.split AS split_a,
               ib.split AS split_b, ia.label AS label_a, ib.label AS label_b, p.layer,
               p.distance, g.group_id
        FROM duplicate_pairs p
        JOIN images ia ON ia.file_id = p.a JOIN images ib ON ib.file_id = p.b
        LEFT JOIN duplicate_groups g ON g.file_id = p.a
        ORDER BY g.group_id, p.distance, ia.path, ib.path
        """
    ).pl()


def duplicate_groups(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Members of each duplicate group, the representative (the copy to keep) first."""
    return con.sql(
        """
        SELECT g.group_id, g.file_id, g.is_representative, i.path, i.split, i.label,
               i.width, i.height, i.bytes, count(*) OVER (PARTITION BY g.group_id) AS size
        FROM duplicate_groups g JOIN images i USING (file_id)
        ORDER BY size DESC, g.group_id, g.is_representative DESC, i.path
        """
    ).pl()


def leakage_pairs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Duplicate pairs whose members sit in different splits, with the split pair named."""
    return con.sql(
        """
        SELECT least(ia.split, ib.split) || '<->' || greatest(ia.split, ib.split) AS split_pair,
               p.a, p.b, ia.path AS path_a, ib.path AS path_b, ia.split AS split_a,
               ib.split AS split_b, ia.label AS label_a, ib.label AS label_b, p.layer,
               p.distance
        FROM duplicate_pairs p
        JOIN images ia ON ia.file_id = p.a JOIN images ib ON ib.file_id = p.b
        WHERE ia.split IS NOT NULL AND ib.split IS NOT NULL AND ia.split <> ib.split
        ORDER BY split_pair, p.distance, ia.path
        """
    ).pl()


def group_totals(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(duplicate groups, files in them)."""
    groups, files = con.execute(
        "SELECT count(DISTINCT group_id), count(*) FROM duplicate_groups"
    ).fetchall()[0]
    return int(groups), int(files)


def meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
    return rows[0][0] if rows else None
