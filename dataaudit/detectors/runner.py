"""Run every registered detector over an index and store the results in one transaction.

Detectors read only stored measurements, so changing a threshold and re-running takes
seconds: ``dataaudit detect PATH --set quality.z=3``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from dataaudit.detectors.base import DetectContext, Finding, empty_issues
from dataaudit.detectors.config import DetectConfig
from dataaudit.detectors.registry import DETECTORS
from dataaudit.detectors.semantic import drop_temp_tables
from dataaudit.store import db

MEMORY_LIMIT = "1GB"  # DuckDB's buffer pool during detection


@dataclass
class DetectResult:
    """What one detection produced: issue rows, dataset-level findings, duplicate structure.

    ``run_id`` is 0 until the result is written (``compute`` alone writes nothing).
    """

    issues: pl.DataFrame
    findings: list[Finding]
    pairs: pl.DataFrame
    groups: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    run_id: int = 0

    def counts(self) -> dict[str, int]:
        flagged = self.issues.filter(pl.col("is_issue"))
        return dict(flagged.group_by("issue").len().sort("issue").iter_rows())


def compute(con: duckdb.DuckDBPyConnection, config: DetectConfig) -> DetectResult:
    """Run every registered detector in memory; needs only a read-only connection.

    The app's threshold sliders call this; :func:`run_detectors` adds the write.
    """
    started = time.perf_counter()
    ctx = DetectContext.load(con, config)
    issue_frames = [empty_issues()]
    findings: list[Finding] = []
    # DuckDB spills to its temp directory past this, so detection runs in bounded memory
    # at any index size (10M images: see bench/bench_scale.py)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    try:
        _run_all(ctx, issue_frames, findings)
    finally:
        drop_temp_tables(ctx)
        con.execute("RESET memory_limit")
    return DetectResult(
        issues=pl.concat(issue_frames),
        findings=findings,
        pairs=ctx.pairs if ctx.pairs is not None else pl.DataFrame(),
        groups=ctx.groups if ctx.groups is not None else pl.DataFrame(),
        stats=ctx.stats,
        elapsed_s=time.perf_counter() - started,
    )


def _run_all(ctx: DetectContext, issue_frames: list[pl.DataFrame], findings: list[Finding]) -> None:
    for detector in DETECTORS:
        out = detector.run(ctx)
        if isinstance(out, pl.DataFrame):
            out = out.select(empty_issues().columns).cast(empty_issues().schema)
            issue_frames.append(out)
            for issue, ids in (
                out.filter(pl.col("is_issue")).group_by("issue").agg("file_id").iter_rows()
            ):
                ctx.flagged.setdefault(issue, set()).update(ids)
        else:
            findings.extend(out)


def run_detectors(
    con: duckdb.DuckDBPyConnection, config: DetectConfig, sources: list[str] | None = None
) -> DetectResult:
    """Run all detectors, replace the previous results in one transaction, record the run."""
    run_id = db.start_run(con, "detect", {"config": config.to_dict(), "sources": sources or []})
    try:
        result = compute(con, config)
        result.run_id = run_id
        _write(con, result)
    except BaseException as exc:
        db.finish_run(con, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    db.finish_run(con, run_id, "completed", {"issues": result.counts(), **_jsonable(result.stats)})
    return result


def _write(con: duckdb.DuckDBPyConnection, result: DetectResult) -> None:
    run_id, findings = result.run_id, result.findings
    issues = result.issues.with_columns(pl.lit(run_id).alias("run_id"))
    pairs, groups = result.pairs, result.groups
    finding_rows = pl.DataFrame(
        {
            "finding": [f.finding for f in findings],
            "severity": [f.severity for f in findings],
            "message": [f.message for f in findings],
            "details": [json.dumps(f.details, default=str) for f in findings],
            "run_id": [run_id] * len(findings),
        },
        schema={
            "finding": pl.String,
            "severity": pl.String,
            "message": pl.String,
            "details": pl.String,
            "run_id": pl.Int32,
        },  # fmt: skip
    )
    con.execute("BEGIN")
    try:
        for table in ("issues", "duplicate_pairs", "duplicate_groups", "findings"):
            con.execute(f"DELETE FROM {table}")
        db.write_frame(con, "issues", issues)
        if pairs.height:
            db.write_frame(
                con, "duplicate_pairs", pairs.with_columns(pl.lit(run_id).alias("run_id"))
            )
        if groups.height:
            db.write_frame(
                con, "duplicate_groups", groups.with_columns(pl.lit(run_id).alias("run_id"))
            )
        db.write_frame(con, "findings", finding_rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(stats, default=str))
