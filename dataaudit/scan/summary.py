"""What a scan reports when it ends, filled from the index itself."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import duckdb

from dataaudit.scan.plan import Plan, drop_staging
from dataaudit.scan.writer import BatchCounts
from dataaudit.store import db


@dataclass
class ScanSummary:
    root: str
    index_path: str
    layout: str
    run_id: int
    files_seen: int = 0
    images: int = 0
    bytes: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped_non_images: int = 0
    corrupt: int = 0
    flagged: int = 0
    measured: int = 0
    embed_only: int = 0  # unchanged images read again only to embed them
    vanished: int = 0  # listed, then deleted before they were read
    # Folders/files that could not be listed (path, why): their rows are kept as they were
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    split_label_counts: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    status: str = "completed"
    warnings: list[str] = field(default_factory=list)  # for the user, e.g. unmatched labels

    def counts(self) -> dict[str, Any]:
        skip = {"root", "index_path", "split_label_counts", "run_id"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def apply_plan(self, p: Plan) -> None:
        self.changed, self.unchanged = p.changed, p.unchanged
        self.embed_only, self.deleted = p.embed_only, p.deleted

    def apply_written(self, counts: BatchCounts) -> None:
        """Count what the writer stored: new = written minus changed and re-embedded."""
        self.measured, self.vanished = counts.images, counts.vanished
        self.new = max(0, counts.images + counts.skipped - self.changed - self.embed_only)


def finish(con: duckdb.DuckDBPyConnection, summary: ScanSummary, started: float) -> None:
    """Fill the summary from the index, record the run, drop staging tables."""
    row = con.execute(
        "SELECT count(*), coalesce(sum(bytes), 0), count(*) FILTER (WHERE is_corrupt), "
        "count(*) FILTER (WHERE is_corrupt OR decode_status <> 'ok' "
        "OR format_matches_ext = false) FROM images"
    ).fetchall()[0]
    summary.images, summary.bytes, summary.corrupt, summary.flagged = row
    summary.skipped_non_images = con.execute("SELECT count(*) FROM skipped_files").fetchall()[0][0]
    summary.split_label_counts = con.execute(
        "SELECT split, label, count(*) FROM images GROUP BY ALL ORDER BY ALL NULLS FIRST"
    ).fetchall()
    summary.elapsed_s = time.perf_counter() - started
    db.set_meta(con, "layout", summary.layout)
    if summary.status == "completed":
        drop_staging(con)
    db.finish_run(con, summary.run_id, summary.status, summary.counts())
    if summary.status == "completed":
        # Not after an interruption: the work-list cursor may still hold a transaction, and
        # CHECKPOINT would then fail and hide the KeyboardInterrupt. The WAL replays on open.
        con.execute("CHECKPOINT")
