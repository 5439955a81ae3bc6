"""``Index``: the read side of the Python API, answering in polars DataFrames.

Every method opens a short-lived read-only connection, asks, and closes it, so an index
can be read while a scan writes it (see :mod:`dataaudit.store.access`). Example::

    import dataaudit as da
    idx = da.open_index("sample_data")
    idx.images(da.Filters(labels=["3"], splits=["test"], sort="sharpness"))
    idx.issues("near_duplicate")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from dataaudit.errors import DataAuditError
from dataaudit.queries import index as q
from dataaudit.queries.filters import (
    IMAGES_VIEW,
    ISSUE_DERIVED,
    Filters,
    check_column,
    check_read_only,
    images_view,
    issue_joins,
)
from dataaudit.store import access
from dataaudit.store import db as store


@dataclass
class Embeddings:
    """Stored vectors as one float32 matrix, row i belonging to ``file_ids[i]``."""

    file_ids: np.ndarray  # int64, (n,)
    matrix: np.ndarray  # float32, (n, d), L2-normalised
    labels: list[str | None]
    splits: list[str | None]
    model: str | None = None

    def __len__(self) -> int:
        return len(self.file_ids)


class Index:
    """A dataset's index file. Read-only: writing goes through scan/detect/train."""

    def __init__(self, db_path: str | Path, root: str | Path | None = None) -> None:
        self.db_path = Path(db_path).resolve()
        if not self.db_path.is_file():
            raise DataAuditError(f"no index at {self.db_path}", "run `dataaudit scan PATH` first")
        self._root = Path(root) if root else None
        self._columns: set[str] | None = None
        self.last_scan: Any = None  # the ScanSummary when this Index came from scan()
        self.last_detect: Any = None  # the DetectResult of that scan's detectors

    def __repr__(self) -> str:
        return f"Index({str(self.db_path)!r})"

    # -- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for a batch of questions; closed on exit."""
        con, _ = access.connect_read(self.db_path)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection (schema ensured), for the training module's predictions.

        Waits for short-lived readers (see :func:`dataaudit.store.access.connect_write`).
        """
        con = store.open_index(self.db_path)
        try:
            yield con
        finally:
            con.close()

    def _frame(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.sql(sql, params=params or []).pl()

    # -- state -----------------------------------------------------------------------------

    @property
    def root(self) -> Path | None:
        """The dataset folder this index describes (as recorded by the scan)."""
        if self._root is None:
            with self.connect() as con:
                value = store.get_meta(con, "root")
            self._root = Path(value) if value else None
        return self._root

    def state(self) -> dict[str, Any]:
        """Last run id and kind, and whether a writer is at work: a cache key for the app."""
        progress = access.read_progress(self.db_path)
        try:
            with self.connect() as con:
                row = con.execute(
                    "SELECT run_id, kind, status FROM runs ORDER BY run_id DESC LIMIT 1"
                ).fetchall()
        except DataAuditError:
            row = []
        run_id, kind, status = row[0] if row else (0, None, None)
        return {
            "last_run_id": run_id,
            "last_run_kind": kind,
            "last_run_status": status,
            "writing": bool(progress),
            "progress": progress,
            "mtime_ns": self.db_path.stat().st_mtime_ns,
        }

    def columns(self) -> list[str]:
        """Columns of :meth:`images`, stored and derived, in order."""
        with self.connect() as con:
            cols = con.sql(f"DESCRIBE {IMAGES_VIEW}").pl()
        return cols["column_name"].to_list()

    def numeric_columns(self) -> list[str]:
        with self.connect() as con:
            cols = con.sql(f"DESCRIBE {IMAGES_VIEW}").pl()
        numeric = ("INT", "FLOAT", "DOUBLE", "REAL", "DECIMAL", "BIGINT", "SMALLINT", "TINYINT")
        return [
            name
            for name, kind in cols.select("column_name", "column_type").iter_rows()
            if any(kind.upper().startswith(k) for k in numeric)
            and name not in ("file_id", "scan_run_id", "mtime_ns", "phash", "dhash")
        ]

    def _known(self) -> set[str]:
        if self._columns is None:
            self._columns = set(self.columns())
        return self._columns

    # -- images ----------------------------------------------------------------------------

    def images(
        self,
        filters: Filters | None = None,
        columns: list[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> pl.DataFrame:
        """Images matching ``filters``, sorted as they say, one row each."""
        filters = filters or Filters()
        known = self._known()
        where, params = filters.compile(known)
        for c in columns or []:
            check_column(c, known)
        page = " LIMIT ? OFFSET ?" if limit is not None else ""
        if limit is not None:
            params += [int(limit), int(offset)]
        if filters.needs_issue_columns(columns):
            select = ", ".join(f'v."{c}"' for c in columns) if columns else "v.*"
            sql = f"WITH v AS ({IMAGES_VIEW}) SELECT {select} FROM v WHERE {where} "
            return self._run_user(sql + filters.order_by(known) + page, params)
        # Filter, sort and page on the stored columns; add issue columns to that page only.
        issue_cols = ", ".join(f"{expr} AS {name}" for name, expr in ISSUE_DERIVED.items())
        select = ", ".join(f'sel."{c}"' for c in columns) if columns else f"sel.*, {issue_cols}"
        sql = f"""WITH v AS ({images_view(False)}),
                       sel AS (SELECT v.* FROM v WHERE {where} {filters.order_by(known)}{page})
                  SELECT {select} FROM sel {"" if columns else issue_joins("sel")}
                  {filters.order_by(known, "sel")}"""
        return self._run_user(sql, params)

    def count(self, filters: Filters | None = None) -> int:
        filters = filters or Filters()
        where, params = filters.compile(self._known())
        view = images_view(filters.needs_issue_columns())
        frame = self._run_user(
            f"WITH v AS ({view}) SELECT count(*) AS n FROM v WHERE {where}", params
        )
        return int(frame["n"][0])

    def image(self, file_id: int) -> dict[str, Any]:
        """Every stored field of one image, its issues (with reasons) and its decode status."""
        rows = self.images(Filters(file_ids=[int(file_id)]))
        if rows.height == 0:
            raise DataAuditError(f"no image with file_id {file_id} in {self.db_path}")
        record = rows.row(0, named=True)
        record["issue_rows"] = self._frame(
            "SELECT issue, score, is_issue, group_id, details FROM issues WHERE file_id = ? "
            "ORDER BY is_issue DESC, score DESC",
            [int(file_id)],
        ).to_dicts()
        return record

    def thumbnails(self, file_ids: list[int]) -> dict[int, bytes]:
        """Small JPEGs stored by the scan, so nothing reopens full-size files to draw a grid."""
        if not file_ids:
            return {}
        ids = ", ".join(str(int(i)) for i in file_ids)  # a literal list: DuckDB prunes on it
        rows = self._frame(f"SELECT file_id, jpeg FROM thumbnails WHERE file_id IN ({ids})")
        return dict(zip(rows["file_id"].to_list(), rows["jpeg"].to_list(), strict=True))

    def histogram(
        self, column: str, bins: int = 30, filters: Filters | None = None
    ) -> pl.DataFrame:
        """Equal-width histogram of a numeric column: ``lo, hi, count`` per bin."""
        filters = filters or Filters()
        known = self._known()
        check_column(column, known)
        where, params = filters.compile(known)
        view = images_view(filters.needs_issue_columns([column]))
        bins = max(1, int(bins))
        sql = f"""
            WITH v AS ({view}),
                 x AS (SELECT v."{column}"::DOUBLE AS val FROM v
                       WHERE {where} AND v."{column}" IS NOT NULL AND isfinite(v."{column}")),
                 r AS (SELECT min(val) AS lo, max(val) AS hi FROM x),
                 b AS (SELECT least(CAST(floor((val - r.lo) / nullif(r.hi - r.lo, 0) * ?) AS INT),
                                    ? - 1) AS bin
                       FROM x, r)
            SELECT coalesce(bin, 0) AS bin, count(*) AS count FROM b GROUP BY ALL ORDER BY 1
        """
        counts = self._run_user(sql, [*params, bins, bins])
        lo_hi = self._run_user(
            f"""WITH v AS ({view}) SELECT min(v."{column}")::DOUBLE AS lo,
                max(v."{column}")::DOUBLE AS hi FROM v WHERE {where}""",
            params,
        )
        lo, hi = lo_hi.row(0)
        if lo is None:
            return pl.DataFrame(schema={"lo": pl.Float64, "hi": pl.Float64, "count": pl.Int64})
        width = (hi - lo) / bins if hi > lo else 1.0
        n = bins if hi > lo else 1
        full = pl.DataFrame({"bin": list(range(n))}, schema={"bin": pl.Int32})
        out = full.join(counts.cast({"bin": pl.Int32}), on="bin", how="left").fill_null(0)
        return out.select(
            (lo + pl.col("bin") * width).alias("lo"),
            (lo + (pl.col("bin") + 1) * width).alias("hi"),
            pl.col("count").cast(pl.Int64),
        )

    # -- findings --------------------------------------------------------------------------

    def issues(
        self, type: str | list[str] | None = None, flagged_only: bool = True
    ) -> pl.DataFrame:  # noqa: A002
        """Issue rows with paths, most severe first within each type."""
        types = [type] if isinstance(type, str) else type
        with self.connect() as con:
            return q.issues(con, types, flagged_only)

    def issue_counts(self) -> dict[str, int]:
        with self.connect() as con:
            return dict(q.issue_counts(con).iter_rows())

    def duplicate_pairs(self) -> pl.DataFrame:
        with self.connect() as con:
            return q.duplicate_pairs(con)

    def duplicate_groups(self) -> pl.DataFrame:
        with self.connect() as con:
            return q.duplicate_groups(con)

    def leakage(self) -> pl.DataFrame:
        with self.connect() as con:
            return q.leakage_pairs(con)

    def findings(self) -> pl.DataFrame:
        with self.connect() as con:
            rows = q.findings(con)
        return pl.DataFrame(
            {
                "finding": [r["finding"] for r in rows],
                "severity": [r["severity"] for r in rows],
                "message": [r["message"] for r in rows],
                "details": [json.dumps(r["details"]) for r in rows],
            },
            schema={"finding": pl.String, "severity": pl.String, "message": pl.String,
                    "details": pl.String},
        )  # fmt: skip

    def runs(self) -> pl.DataFrame:
        return self._frame("SELECT * FROM runs ORDER BY run_id")

    def split_label_counts(self) -> pl.DataFrame:
        return self._frame(
            "SELECT split, label, count(*) AS images FROM images GROUP BY ALL "
            "ORDER BY ALL NULLS FIRST"
        )

    def decisions(self) -> pl.DataFrame:
        """Reviewer decisions in force (the app's Review page writes them)."""
        from dataaudit.store.decisions import Decisions

        return Decisions.for_index(self).current()

    # -- embeddings ------------------------------------------------------------------------

    def embedding_map(self) -> pl.DataFrame:
        """2-D map of the embeddings with each point's path, split, label and issues."""
        return self._frame(
            f"""WITH v AS ({IMAGES_VIEW})
                SELECT m.file_id, m.x, m.y, v.path, v.split, v.label, v.issues,
                       v.outlier_score
                FROM embedding_map m JOIN v USING (file_id) ORDER BY m.file_id"""
        )

    def neighbors(self, file_id: int, k: int = 10, scope: str = "all") -> pl.DataFrame:
        """The stored nearest neighbours of one image (scope 'all' or 'label')."""
        return self._frame(
            """SELECT n.rank, n.neighbor_id AS file_id, n.similarity, i.path, i.split, i.label
               FROM knn n JOIN images i ON i.file_id = n.neighbor_id
               WHERE n.file_id = ? AND n.scope = ? ORDER BY n.rank LIMIT ?""",
            [int(file_id), scope, int(k)],
        )

    def embeddings(self, filters: Filters | None = None) -> Embeddings:
        """Every stored vector as one float32 matrix (read through Arrow, no Python lists)."""
        filters = filters or Filters()
        where, params = filters.compile(self._known())
        with self.connect() as con:
            view = images_view(filters.needs_issue_columns())
            table = con.sql(
                f"""WITH v AS ({view})
                    SELECT e.file_id, v.label, v.split, e.vector
                    FROM embeddings e JOIN v USING (file_id) WHERE {where}
                    ORDER BY e.file_id""",
                params=params,
            ).to_arrow_table()
            model = store.get_meta(con, "embedding_model")
        ids = table.column("file_id").to_numpy().astype(np.int64)
        vectors = table.column("vector").combine_chunks()
        if len(ids):
            flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            matrix = flat.reshape(len(ids), -1)
        else:
            matrix = np.zeros((0, 0), np.float32)
        return Embeddings(
            ids,
            matrix,
            table.column("label").to_pylist(),
            table.column("split").to_pylist(),
            model,
        )

    # -- free SQL --------------------------------------------------------------------------

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run one read-only statement; anything that would write is refused with a reason."""
        check_read_only(query)
        return self._run_user(query, params or [])

    def _run_user(self, sql: str, params: list[Any]) -> pl.DataFrame:
        """Run SQL that may contain a user's condition; its errors become one clear line."""
        with self.connect() as con:
            try:
                return con.sql(sql, params=params).pl()
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise DataAuditError(f"query failed: {first}") from exc
