"""The scan: discover files, measure the new and changed ones in a process pool, write batches.

Flow (one module per step): :mod:`~dataaudit.scan.plan` streams the folder listing into a
staging table and decides in SQL what is new, changed, unchanged or deleted;
:mod:`~dataaudit.scan.pool` runs :func:`~dataaudit.scan.task.measure_task` on a bounded
stream of :class:`~dataaudit.scan.task.Task` values in worker processes;
:mod:`~dataaudit.scan.writer` writes the results (rows, thumbnails, vectors) one
transaction per batch; :mod:`~dataaudit.scan.summary` reports. Only this process writes
the index. Killing the scan at any point keeps every batch already written, and the next
run measures only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from dataaudit import discover
from dataaudit.errors import DataAuditError
from dataaudit.scan import plan as planning
from dataaudit.scan.hooks import EmbedHook
from dataaudit.scan.measure import MeasureConfig
from dataaudit.scan.pool import MeasurePool
from dataaudit.scan.summary import ScanSummary, finish
from dataaudit.scan.writer import BatchWriter
from dataaudit.store import db

Progress = Callable[[int, int], None]  # (done, total)

__all__ = ["Progress", "ScanOptions", "ScanSummary", "scan"]


@dataclass
class ScanOptions:
    """Everything that shapes a scan; recorded in the ``runs`` table."""

    workers: int | None = None  # None: one per core; 0: measure in this process
    labels_file: str | None = None
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    write_batch: int = 2000  # rows per transaction
    write_every_s: float = 2.0  # ...or sooner: a kill loses at most this much work
    embed: EmbedHook | None = None  # e.g. dataaudit.embed.stage.EmbedStage

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.resolved_workers(),
            "labels_file": self.labels_file,
            "measure": self.measure.to_dict(),
            "write_batch": self.write_batch,
            "write_every_s": self.write_every_s,
            "embed": self.embed.describe() if self.embed else None,
        }

    def resolved_workers(self) -> int:
        """Decode workers: one per core, or half the cores when a CPU embedder needs the rest
        (measured on 2 cores: 1 worker + 1 torch thread beat 2 + 1 by 15%)."""
        if self.workers is not None:
            return max(0, self.workers)
        cores = os.cpu_count() or 1
        if self.embed is not None and self.embed.on_cpu():
            return max(1, cores // 2)
        return cores

    def measure_config(self) -> MeasureConfig:
        """The per-file config, asking for the embedder's input when embedding."""
        if self.embed and not self.measure.embed_size:
            return dataclasses.replace(self.measure, embed_size=self.embed.spec.input_size)
        return self.measure


def scan(
    path: str | Path,
    db_path: str | Path | None = None,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> ScanSummary:
    """Index ``path`` into a DuckDB file, measuring only new and changed files."""
    options = options or ScanOptions()
    started = time.perf_counter()
    root = discover.resolve_root(path)
    index_path = Path(db_path).expanduser().resolve() if db_path else db.default_index_path(root)
    labels = discover.load_labels(options.labels_file) if options.labels_file else None
    embed_spec = options.embed.spec if options.embed else None
    measure_cfg = options.measure_config()
    pool: MeasurePool | None = None
    con = None
    try:
        con = db.open_index(index_path)
        _check_root(con, root, index_path)
        db.mark_stale_runs(con)
        run_id = db.start_run(con, "scan", {"root": str(root), **options.to_dict()})
        summary = ScanSummary(str(root), str(index_path), "unknown", run_id)
        writer: BatchWriter | None = None
        try:
            found = planning.stage_discovered(con, root, index_path, labels)
            summary.layout, summary.files_seen = found.layout, found.files_seen
            summary.unreadable = found.unreadable
            summary.warnings.extend(found.warnings)
            planning.invalidate_old_measurements(con)
            work = planning.plan(con, found, options.embed)
            summary.apply_plan(work)
            if on_start:
                on_start(summary.layout, work.todo)
            # Workers start only when there is work (forkserver: a fresh interpreter each,
            # so no DuckDB state leaks into them).
            workers = options.resolved_workers() if work.todo else 0
            pool = MeasurePool(workers, str(root), measure_cfg, embed_spec)
            if options.embed and workers:
                options.embed.share_cpu_with(workers)
            writer = BatchWriter(con, run_id, options.embed, options.write_batch,
                                 options.write_every_s)  # fmt: skip
            _measure_and_write(con, pool, writer, work.todo, progress)
            pool.close()
            summary.apply_written(writer.counts)
            if options.embed:
                options.embed.finish(con)
            finish(con, summary, started)
            return summary
        except BaseException as exc:
            # Interrupted or failed at any step (listing, planning, measuring, the graph):
            # say so in the runs table now, not only when the next scan finds it running.
            if pool is not None:
                pool.close(terminate=True)
            _record_stop(con, summary, writer, started, exc)
            raise
    finally:
        if pool is not None:
            pool.close(terminate=True)
        if con is not None:
            con.close()


def _record_stop(
    con: duckdb.DuckDBPyConnection,
    summary: ScanSummary,
    writer: BatchWriter | None,
    started: float,
    exc: BaseException,
) -> None:
    """Best effort: roll back an open transaction, record the run as interrupted or failed.

    Never raises: the original exception is what the user must see.
    """
    summary.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        with contextlib.suppress(duckdb.Error):  # no transaction was open
            con.execute("ROLLBACK")
        if writer is not None:
            summary.apply_written(writer.counts)
        finish(con, summary, started)
    except Exception:
        # If even this fails the index itself is failing; the next scan marks the run stale.
        with contextlib.suppress(Exception):
            db.finish_run(con, summary.run_id, summary.status, {})


def _check_root(con: duckdb.DuckDBPyConnection, root: Path, index_path: Path) -> None:
    stored = db.get_meta(con, "root")
    if stored is None:
        db.set_meta(con, "root", str(root))
    elif stored != str(root):
        raise DataAuditError(
            f"the index {index_path} belongs to {stored}, not {root}",
            "pass --db with a new file for this dataset",
        )


def _measure_and_write(
    con: duckdb.DuckDBPyConnection,
    pool: MeasurePool,
    writer: BatchWriter,
    todo: int,
    progress: Progress | None,
) -> None:
    in_flight = max(64, 32 * max(1, pool.workers))
    done = 0
    if progress:
        progress(0, todo)
    try:
        for task, m in pool.map(planning.todo_stream(con), in_flight):
            writer.add(task, m)
            done += 1
            if progress and (done % 64 == 0 or done == todo):
                progress(done, todo)
    except KeyboardInterrupt:
        writer.flush()  # keep every finished measurement
        raise
    writer.flush()
