"""The detector contract and the shared helpers detectors are built from.

A detector reads stored measurements (never image files) and returns long-form issue rows:
``file_id, issue, score, is_issue, group_id, details``. ``score`` is a severity in [0, 1]:
higher means more likely a real problem, and rows with ``is_issue`` false are kept only
where a ranking is useful (for example the least sharp images that were not flagged).
Dataset-level problems (class balance, spurious signals) are :class:`Finding` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import polars as pl

from dataaudit.detectors.config import DetectConfig

ISSUE_SCHEMA = {
    "file_id": pl.Int64,
    "issue": pl.String,
    "score": pl.Float64,
    "is_issue": pl.Boolean,
    "group_id": pl.Int64,
    "details": pl.String,
}

# Columns every detector may read; loaded once per run.
IMAGE_COLUMNS = (
    "file_id", "path", "split", "label", "bytes", "ext", "format", "format_matches_ext",
    "width", "height", "mode", "has_alpha", "n_frames", "exif_orientation", "decode_status",
    "is_corrupt", "error_class", "error_message", "trailing_bytes", "content_hash",
    "pixel_hash", "phash", "dhash", "brightness_mean", "contrast", "sharpness", "entropy",
    "is_grayscale", "colorfulness",
)  # fmt: skip


@dataclass
class Finding:
    """A dataset-level problem or fact, shown in the report."""

    finding: str  # e.g. class_imbalance, missing_class, label_shift, spurious_signal
    severity: str  # error, warning, info
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DetectContext:
    """What a detector may use: the index connection, the config, and the image table."""

    con: duckdb.DuckDBPyConnection
    config: DetectConfig
    images: pl.DataFrame
    groups: pl.DataFrame | None = None  # duplicate groups, once the duplicate detector ran
    pairs: pl.DataFrame | None = None  # duplicate pairs with their layer
    stats: dict[str, Any] = field(default_factory=dict)  # numbers for the report
    flagged: dict[str, set[int]] = field(default_factory=dict)  # issue -> files, so far
    cache: dict[str, Any] = field(default_factory=dict)  # reads shared between detectors

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, config: DetectConfig) -> DetectContext:
        cols = ", ".join(IMAGE_COLUMNS)
        images = con.sql(f"SELECT {cols} FROM images ORDER BY file_id").pl()
        return cls(con, config, images)

    @property
    def decodable(self) -> pl.DataFrame:
        return self.images.filter(pl.col("decode_status") == "ok")


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

    def z(self, expr: pl.Expr) -> pl.Expr:
        return (expr - self.median) / self.sigma

    def z_array(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.median) / self.sigma


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
