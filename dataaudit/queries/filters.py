"""One filter object for every view of the images table, compiled to parameterised SQL.

Column names are checked against the index's own columns, and values travel as query
parameters, so a user's string never becomes SQL. The one exception is ``where``: a free
SQL condition for power users (the app's filter box, notebooks); it is checked to be a
single read-only expression and only ever runs on a read-only connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from dataaudit.errors import DataAuditError

# Columns computed on the fly for every image, usable in filters, sorts and histograms.
# The first two cost nothing; the issue columns aggregate the issues table, so a query
# joins them only when its filter, sort or columns mention them (at a million images
# that aggregate is most of a query's time).
CHEAP_DERIVED: dict[str, str] = {
    "aspect_ratio": "i.width::DOUBLE / nullif(i.height, 0)",
    "megapixels": "i.width::DOUBLE * i.height / 1e6",
}
ISSUE_DERIVED: dict[str, str] = {
    "issues": "coalesce(f.issues, [])",
    "n_issues": "coalesce(len(f.issues), 0)",
    "outlier_score": "o.score",
}
DERIVED_COLUMNS = {**CHEAP_DERIVED, **ISSUE_DERIVED}
HIDDEN_COLUMNS = ("signature",)  # raw bytes no person reads


def issue_joins(ids_from: str | None = None) -> str:
    """LEFT JOINs that give ``f.issues`` and ``o.score``, optionally only for some ids."""
    only = f" AND file_id IN (SELECT file_id FROM {ids_from})" if ids_from else ""
    return f"""
    LEFT JOIN (SELECT file_id, list(DISTINCT issue ORDER BY issue) AS issues
               FROM issues WHERE is_issue{only} GROUP BY file_id) f USING (file_id)
    LEFT JOIN (SELECT file_id, max(score) AS score FROM issues
               WHERE issue = 'outlier'{only} GROUP BY file_id) o USING (file_id)
    """


def images_view(with_issue_columns: bool = True) -> str:
    """The images table as people browse it: stored columns plus derived ones."""
    cheap = ", ".join(f"{expr} AS {name}" for name, expr in CHEAP_DERIVED.items())
    sql = f"SELECT i.* EXCLUDE ({', '.join(HIDDEN_COLUMNS)}), {cheap}"
    if not with_issue_columns:
        return sql + " FROM images i"
    issue = ", ".join(f"{expr} AS {name}" for name, expr in ISSUE_DERIVED.items())
    return f"{sql}, {issue} FROM images i {issue_joins()}"


IMAGES_VIEW = images_view()


@dataclass
class Filters:
    """Which images, in which order. Every field is optional; empty means everything.

    ``splits``/``labels`` may contain ``None`` to mean "no split"/"unlabelled".
    ``issues``: images flagged with any of these types. ``ranges``: ``{column: (lo, hi)}``,
    either bound may be ``None``. ``where``: a free, read-only SQL condition over the
    columns of :func:`columns`.
    """

    splits: list[str | None] | None = None
    labels: list[str | None] | None = None
    issues: list[str] | None = None
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    file_ids: list[int] | None = None
    path_contains: str | None = None
    where: str | None = None
    sort: str | None = None
    descending: bool = False

    def needs_issue_columns(self, columns: list[str] | None = None) -> bool:
        """Whether filtering or sorting reads the (costly) issue columns."""
        named = {self.sort, *self.ranges, *(columns or [])}
        if self.issues is not None or named & set(ISSUE_DERIVED):
            return True
        text = (self.where or "").lower()
        return any(name in text for name in ISSUE_DERIVED)

    def compile(self, known: set[str]) -> tuple[str, list[Any]]:
        """``(where_sql, params)`` over the view ``v``; raises on unknown columns."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (("split", self.splits), ("label", self.labels)):
            if values is None:
                continue
            named = [v for v in values if v is not None]
            parts = []
            if named:
                parts.append(f"v.{column} IN (SELECT unnest(?::VARCHAR[]))")
                params.append(named)
            if len(named) < len(values):
                parts.append(f"v.{column} IS NULL")
            clauses.append("(" + " OR ".join(parts) + ")" if parts else "FALSE")
        if self.issues is not None:
            clauses.append("len(list_intersect(v.issues, ?::VARCHAR[])) > 0")
            params.append(list(self.issues))
        for column, (lo, hi) in self.ranges.items():
            check_column(column, known)
            if lo is not None:
                clauses.append(f'v."{column}" >= ?')
                params.append(lo)
            if hi is not None:
                clauses.append(f'v."{column}" <= ?')
                params.append(hi)
        if self.file_ids is not None:  # a literal list of ints: DuckDB prunes on it
            ids = ", ".join(str(int(i)) for i in self.file_ids)
            clauses.append(f"v.file_id IN ({ids})" if ids else "FALSE")
        if self.path_contains:
            clauses.append("contains(lower(v.path), lower(?))")
            params.append(self.path_contains)
        if self.where and self.where.strip():
            check_where(self.where)
            clauses.append(f"({self.where})")
        return (" AND ".join(clauses) or "TRUE"), params

    def order_by(self, known: set[str], alias: str = "v") -> str:
        """The ORDER BY clause: the chosen column, then path, so pages are stable."""
        if not self.sort:
            return f"ORDER BY {alias}.path"
        check_column(self.sort, known)
        direction = "DESC" if self.descending else "ASC"
        return f'ORDER BY {alias}."{self.sort}" {direction} NULLS LAST, {alias}.path'


def check_column(column: str, known: set[str]) -> None:
    if column not in known:
        raise DataAuditError(
            f"unknown column {column!r}", f"known columns: {', '.join(sorted(known))}"
        )


def check_where(where: str) -> None:
    """Refuse anything but one plain condition (no second statement, no subquery tricks)."""
    probe = f"SELECT * FROM v WHERE ({where})"
    try:
        statements = duckdb.extract_statements(probe)
    except duckdb.Error as exc:
        raise DataAuditError(f"invalid filter: {_first_line(exc)}") from exc
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise DataAuditError("the filter must be a single condition", "e.g. width < 64")


def check_read_only(query: str) -> None:
    """Accept exactly one SELECT-like statement; say clearly why anything else is refused."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise DataAuditError(f"invalid SQL: {_first_line(exc)}") from exc
    if not statements:
        raise DataAuditError("empty query", "write a SELECT statement")
    if len(statements) > 1:
        raise DataAuditError("one statement at a time", "remove the extra ';' statements")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        name = str(kind).rsplit(".", 1)[-1]
        raise DataAuditError(
            f"the index is read-only here: {name} statements are refused",
            "use SELECT; the index changes only through dataaudit scan/detect/train",
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
