"""The detector contract and the shared helpers detectors are built from.

A detector reads stored measurements (never image files) and returns long-form issue rows:
``file_id, issue, score, is_issue, group_id, details``. ``score`` is a severity in [0, 1]:
higher means more likely a real problem, and rows with ``is_issue`` false are kept only
where a ranking is useful (for example the least sharp images that were not flagged).
Dataset-level problems (class balance, spurious signals) are :class:`Finding` objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dataaudit.detectors.config import DetectConfig

# Rows per block when a detector streams the image table.
CHUNK_ROWS = 1_000_000

ISSUE_SCHEMA = {
    "file_id": pl.Int64,
    "issue": pl.String,
    "score": pl.Float64,
    "is_issue": pl.Boolean,
    "group_id": pl.Int64,
    "details": pl.String,
}


@dataclass
class Finding:
    """A dataset-level problem or fact, shown in the report."""

    finding: str  # e.g. class_imbalance, missing_class, label_shift, spurious_signal
    severity: str  # error, warning, info
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DetectContext:
    """What a detector may use: the index connection, the config, and the image table.

    The image table is never loaded whole (10M rows of paths and hashes do not fit a
    bounded memory): detectors aggregate in SQL over ``ctx.table`` and fetch rows only for
    what they flag (:meth:`rows`, :meth:`of_ids`) or stream it in blocks (:meth:`chunks`).
    ``images`` (tests) stands in for the index's table: it is registered as a view.
    """

    con: duckdb.DuckDBPyConnection
    config: DetectConfig
    images: pl.DataFrame | None = None
    groups: pl.DataFrame | None = None  # duplicate groups, once the duplicate detector ran
    pairs: pl.DataFrame | None = None  # duplicate pairs with their layer
    stats: dict[str, Any] = field(default_factory=dict)  # numbers for the report
    flagged: dict[str, set[int]] = field(default_factory=dict)  # issue -> files, so far
    cache: dict[str, Any] = field(default_factory=dict)  # reads shared between detectors
    table: str = "images"

    def __post_init__(self) -> None:
        if self.images is not None:
            self.table = f"_da_images_{uuid.uuid4().hex[:12]}"
            self.con.register(self.table, self.images.to_arrow())

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, config: DetectConfig) -> DetectContext:
        return cls(con, config)

    def rows(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """A query's result as polars; ``{images}`` names the image table."""
        table = self.con.sql(query.format(images=self.table), params=params).to_arrow_table()
        return pl.from_arrow(table)  # type: ignore[return-value]

    def chunks(
        self, query: str, params: list[Any] | None = None, rows: int = CHUNK_ROWS
    ) -> Iterator[pl.DataFrame]:
        """A query's result in blocks of at most ``rows`` rows (no other query may run on
        the connection until the iteration ends)."""
        reader = self.con.sql(query.format(images=self.table), params=params)
        for batch in reader.to_arrow_reader(rows):
            yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]

    def of_ids(self, ids: Any, columns: str, table: str | None = None) -> pl.DataFrame:
        """``columns`` of the rows whose file_id is in ``ids`` (an image table by default)."""
        name = f"_da_ids_{uuid.uuid4().hex[:12]}"
        frame = pl.DataFrame({"file_id": np.unique(np.asarray(ids, dtype=np.int64))})
        self.con.register(name, frame.to_arrow())
        try:
            return self.rows(
                f"SELECT {columns} FROM {table or '{images}'} JOIN {name} USING (file_id)"
            )
        finally:
            self.con.unregister(name)

    def count(self, where: str = "true") -> int:
        return int(self.con.execute(
            f"SELECT count(*) FROM {self.table} WHERE {where}").fetchall()[0][0])  # type: ignore[index]  # fmt: skip


@dataclass(frozen=True)
class Detector:
    """A registered detector: its name, the issue types it emits, its function, and the
    issue types of earlier detectors it reads (``ctx.flagged``), so the order is checked."""

    name: str
    issues: tuple[str, ...]
    run: Callable[[DetectContext], pl.DataFrame | list[Finding]]
    description: str
    reads: tuple[str, ...] = ()


def issue_rows(
    frame: pl.DataFrame,
    issue: str,
    score: pl.Expr,
    details: pl.Expr,
    is_issue: pl.Expr | bool = True,
    group_id: pl.Expr | None = None,
) -> pl.DataFrame:
    """Build issue rows in the contract's shape from a frame of images."""
    return frame.select(
        pl.col("file_id").cast(pl.Int64),
        pl.lit(issue).alias("issue"),
        score.clip(0.0, 1.0).cast(pl.Float64).alias("score"),
        (pl.lit(is_issue) if isinstance(is_issue, bool) else is_issue).alias("is_issue"),
        (group_id if group_id is not None else pl.lit(None)).cast(pl.Int64).alias("group_id"),
        details.cast(pl.String).alias("details"),
    )


def empty_issues() -> pl.DataFrame:
    return pl.DataFrame(schema=ISSUE_SCHEMA)


@dataclass(frozen=True)
class Robust:
    """Median and MAD-based spread of a value: the dataset's own notion of typical.

    The one robust z-score of the detectors. When more than half the values are equal the
    MAD is 0: then the caller's floor ``min_sigma`` is the spread (in a dataset where every
    image is 100x100 any other size is unusual), or, without a floor, the standard deviation.
    """

    median: float
    sigma: float

    @classmethod
    def of(cls, values: np.ndarray, min_sigma: float | None = None) -> Robust:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        floor = min_sigma if min_sigma is not None else 1e-9
        if values.size == 0:
            return cls(float("nan"), floor)
        med = float(np.median(values))
        sigma = 1.4826 * float(np.median(np.abs(values - med)))
        if sigma == 0 and min_sigma is None:
            sigma = float(np.std(values)) or 1.0
        return cls(med, max(sigma, floor))

    @classmethod
    def of_counts(
        cls, values: np.ndarray, counts: np.ndarray, min_sigma: float | None = None
    ) -> Robust:
        """:meth:`of` for distinct ``values`` each occurring ``counts`` times (exactly the
        same result as on the repeated values, in memory of the distinct ones)."""
        values = np.asarray(values, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64)
        keep = np.isfinite(values) & (counts > 0)
        values, counts = values[keep], counts[keep]
        floor = min_sigma if min_sigma is not None else 1e-9
        if values.size == 0:
            return cls(float("nan"), floor)
        med = weighted_median(values, counts)
        sigma = 1.4826 * weighted_median(np.abs(values - med), counts)
        if sigma == 0 and min_sigma is None:
            mean = float(np.average(values, weights=counts))
            sigma = float(np.sqrt(np.average((values - mean) ** 2, weights=counts))) or 1.0
        return cls(med, max(sigma, floor))

    @classmethod
    def of_sql(
        cls,
        ctx: DetectContext,
        expr: str,
        where: str = "true",
        min_sigma: float | None = None,
        table: str | None = None,
    ) -> Robust:
        """:meth:`of` computed in DuckDB over ``expr`` (SQL on ``table``, the image table by
        default) where ``where`` holds: the same median, MAD and fallbacks, without loading
        the column."""
        src = f"SELECT CAST({expr} AS DOUBLE) AS x FROM {table or ctx.table} WHERE {where}"
        src = f"SELECT x FROM ({src}) WHERE isfinite(x)"
        floor = min_sigma if min_sigma is not None else 1e-9
        n, med, sd = ctx.con.execute(
            f"SELECT count(*), median(x), stddev_pop(x) FROM ({src})"
        ).fetchall()[0]  # type: ignore[misc]
        if n == 0:
            return cls(float("nan"), floor)
        mad = ctx.con.execute(f"SELECT median(abs(x - ?)) FROM ({src})", [med]).fetchall()[0][0]  # type: ignore[index]
        sigma = 1.4826 * float(mad)
        if sigma == 0 and min_sigma is None:
            sigma = float(sd or 0.0) or 1.0
        return cls(float(med), max(sigma, floor))

    def z(self, expr: pl.Expr) -> pl.Expr:
        return (expr - self.median) / self.sigma

    def z_array(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.median) / self.sigma


def sql_float(x: float) -> str:
    """A float as a DuckDB literal, NaN and infinities included (``repr`` gives ``nan``,
    which SQL would read as a column name)."""
    return f"CAST('{float(x)!r}' AS DOUBLE)"


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """``np.median(np.repeat(values, counts))`` without the repeat."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    n = int(c[-1])

    def kth(k: int) -> float:  # the k-th smallest (0-based) of the repeated values
        return float(v[np.searchsorted(c, k, side="right")])

    return kth(n // 2) if n % 2 else (kth(n // 2 - 1) + kth(n // 2)) / 2.0


def z_score(z: pl.Expr, threshold: float) -> pl.Expr:
    """Map a robust z-score to a severity: 0.5 at the threshold, 1.0 at twice it."""
    return (z.abs() / (2.0 * threshold)).clip(0.0, 1.0)


def has_table(ctx: DetectContext, name: str) -> bool:
    rows = ctx.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(rows[0][0])


def dataset_findings(ctx: DetectContext) -> list[Finding]:
    """Dataset-level findings detectors left for the ``dataset`` detector to report."""
    return ctx.cache.setdefault("dataset_findings", [])


def too_common(ctx: DetectContext, issue: str, flagged: int, total: int, what: str) -> bool:
    """True (and one dataset-level finding recorded) when ``issue`` would flag more than
    ``dataset.max_issue_share`` of the images: a property that common is the dataset's
    nature, better said once than on every file. ``what`` describes the typical value."""
    limit = ctx.config.dataset.max_issue_share
    if total == 0 or flagged <= limit * total or flagged < ctx.config.dataset.min_common_count:
        return False
    dataset_findings(ctx).append(
        Finding(
            f"common_{issue}",
            "info",
            f"{flagged:,} of {total:,} images ({flagged / total:.0%}) would be '{issue}': "
            f"{what}. Reported once for the dataset, not per file.",
            {"issue": issue, "would_flag": flagged, "images": total, "max_share": limit},
        )
    )
    return True
