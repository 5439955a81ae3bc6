"""Write measurements into the index: one transaction per batch, rows and vectors together.

:func:`write_batch` is the one place that turns measured files into index rows (images,
thumbnails, skipped files, embedding vectors); every scan engine calls it.
:class:`BatchWriter` is the local engine's buffer around it: it embeds pixels as they
arrive and flushes every ``write_batch`` rows or ``write_every_s`` seconds, so a kill
loses little work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import duckdb
import polars as pl

from dataaudit.scan.hooks import EmbedHook
from dataaudit.scan.identity import storable
from dataaudit.scan.measure import Measurement
from dataaudit.scan.task import Task
from dataaudit.store import db

SKIP_REASON = "not an image (no image extension, no image signature)"
EMBED_CHUNK = 32  # images per embedder call during a scan


class BatchCounts(NamedTuple):
    images: int
    skipped: int
    vanished: int = 0  # listed, then deleted before it was read: old rows dropped

    def __add__(self, other: tuple[int, ...]) -> BatchCounts:  # type: ignore[override]
        return BatchCounts(*(a + b for a, b in zip(self, other, strict=True)))


def write_batch(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    results: Sequence[tuple[Task, Measurement | None]],
    vectors: pl.DataFrame | None = None,
) -> BatchCounts:
    """Write measured files in one transaction; a None measurement is a skipped non-image,
    a vanished one (deleted since the listing) only loses its old rows.

    Each file's old rows go first, from every table, vectors and neighbour links included:
    a changed file may have turned corrupt, or from an image into a non-image, and its old
    vector must never outlive its old row. ``vectors`` (``file_id``, ``vector``) are the
    new embeddings of files in this batch. Any vector change marks the kNN graph stale.
    """
    records, thumbs, skipped = [], [], []
    gone = 0
    for task, m in results:
        path = storable(task.path)
        if m is not None and m.vanished:
            gone += 1
            continue
        if m is None:
            skipped.append({"file_id": task.file_id, "path": path, "bytes": task.bytes,
                            "mtime_ns": task.mtime_ns, "reason": SKIP_REASON})  # fmt: skip
            continue
        rec = dict(m.record)
        rec.update(
            file_id=task.file_id, path=path, split=task.split, label=task.label,
            bytes=task.bytes, mtime_ns=task.mtime_ns, ext=os.path.splitext(path)[1].lower(),
            scan_run_id=run_id,
        )  # fmt: skip
        records.append(rec)
        if m.thumbnail is not None:
            thumbs.append({"file_id": task.file_id, "jpeg": m.thumbnail})
    if not results:
        return BatchCounts(0, 0)
    ids = pl.DataFrame(
        {"file_id": [task.file_id for task, _ in results]}, schema={"file_id": pl.Int64}
    )
    con.execute("BEGIN")
    try:
        con.register("_batch_ids", ids.to_arrow())
        try:
            for table in ("thumbnails", "images", "skipped_files"):
                con.execute(f"DELETE FROM {table} WHERE file_id IN (SELECT * FROM _batch_ids)")
            stale = con.execute(
                "DELETE FROM embeddings WHERE file_id IN (SELECT * FROM _batch_ids)"
            ).fetchall()[0][0]
            if stale:
                con.execute(
                    "DELETE FROM knn WHERE file_id IN (SELECT * FROM _batch_ids) "
                    "OR neighbor_id IN (SELECT * FROM _batch_ids)"
                )
                con.execute("DELETE FROM embedding_map WHERE file_id IN (SELECT * FROM _batch_ids)")
        finally:
            con.unregister("_batch_ids")
        if records:
            db.write_frame(con, "images", pl.DataFrame(records, infer_schema_length=None))
        if thumbs:
            db.write_frame(con, "thumbnails", pl.DataFrame(thumbs))
        if skipped:
            db.write_frame(con, "skipped_files", pl.DataFrame(skipped))
        if vectors is not None and vectors.height:
            db.write_frame(con, "embeddings", vectors, replace=True)
        if stale or (vectors is not None and vectors.height):
            db.mark_graph_stale(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return BatchCounts(len(records), len(skipped), gone)


class BatchWriter:
    """Buffer measurements, embed their pixels in small batches, write in transactions."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        run_id: int,
        embed: EmbedHook | None = None,
        batch_rows: int = 2000,
        every_s: float = 2.0,
    ) -> None:
        self.con = con
        self.run_id = run_id
        self.embed = embed
        self.batch_rows = batch_rows
        self.every_s = every_s
        self.results: list[tuple[Task, Measurement | None]] = []
        self.counts = BatchCounts(0, 0, 0)  # written so far
        self.last_write = time.monotonic()
        self.pixels: list[tuple[int, Any]] = []  # embedder input waiting for a batch
        self.vectors: list[pl.DataFrame] = []  # embedded, waiting for the next write

    def add(self, task: Task, m: Measurement | None) -> None:
        self.results.append((task, m))
        if m is not None and m.embed_pixels is not None:
            if self.embed is not None:
                # Embed in small batches as results arrive, so inference interleaves with
                # the workers' decoding instead of stalling them at every write.
                self.pixels.append((task.file_id, m.embed_pixels))
                if len(self.pixels) >= EMBED_CHUNK:
                    self._embed_pending()
            m.embed_pixels = None
        if len(self.results) >= self.batch_rows or (
            time.monotonic() - self.last_write >= self.every_s
        ):
            self.flush()

    def _embed_pending(self) -> None:
        if self.pixels and self.embed is not None:
            frame = self.embed.embed(self.pixels)
            if frame is not None:
                self.vectors.append(frame)
        self.pixels = []

    def flush(self) -> None:
        if not self.results:
            return
        self._embed_pending()
        vectors = pl.concat(self.vectors) if self.vectors else None
        counts = write_batch(self.con, self.run_id, self.results, vectors)
        self.counts += counts
        self.results.clear()
        self.vectors.clear()
        self.last_write = time.monotonic()
