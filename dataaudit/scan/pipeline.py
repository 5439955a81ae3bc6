"""The scan: discover files, measure the new and changed ones in a process pool, write batches.

Flow: :func:`dataaudit.discover.walk` streams entries into a staging table; SQL against
the existing index decides what is new, changed, unchanged or deleted (so memory does not
grow with the dataset); a bounded stream of work goes to worker processes running
:func:`dataaudit.scan.measure.measure_file`; only this process writes the index, one
transaction per batch. Killing the scan at any point keeps every batch already written,
and the next run measures only what is missing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import xxhash

from dataaudit import discover
from dataaudit.errors import DataAuditError
from dataaudit.scan.decode import sniff_format
from dataaudit.scan.measure import MEASURE_VERSION, MeasureConfig, Measurement, measure_file
from dataaudit.store import db

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class ScanOptions:
    """Everything that shapes a scan; recorded in the ``runs`` table."""

    workers: int | None = None  # None: one per core; 0: measure in this process
    labels_file: str | None = None
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    write_batch: int = 2000  # rows per transaction
    write_every_s: float = 2.0  # ...or sooner: a kill loses at most this much work
    embed: Any = None  # a dataaudit.embed.stage.EmbedStage, or None

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
    elapsed_s: float = 0.0
    split_label_counts: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    status: str = "completed"

    def counts(self) -> dict[str, Any]:
        skip = {"root", "index_path", "split_label_counts", "run_id"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def storable(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes become ``\\xNN`` escapes.

    ``os.scandir`` hands back such bytes as lone surrogates, which Arrow and DuckDB refuse.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_id(rel_path: str) -> int:
    """Stable id of a file: a 64-bit hash of its relative path (resume and joins key on it)."""
    return xxhash.xxh3_64_intdigest(rel_path.encode("utf-8", "surrogateescape")) - (1 << 63)


# ---------------------------------------------------------------- worker side

_WORKER_STATE: dict[str, Any] = {}


def _init_worker(root: str, config: MeasureConfig, embed_spec: Any) -> None:
    _WORKER_STATE.update(root=root, config=config, embed_spec=embed_spec)


def _init_pool_worker(*initargs: Any) -> None:
    """Ctrl-C reaches the whole process group: only the main process handles it (it saves
    what is done and terminates the pool), so workers do not each print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*initargs)


# A unit of work: (file_id, path, split, label, bytes, mtime_ns, has_image_ext, was_indexed).
Task = tuple[int, str, str | None, str | None, int, int, bool, bool]


def _work(task: Task) -> tuple[Task, Measurement | None]:
    """Measure one file; a file without an image extension is first sniffed (None = skip)."""
    rel_path, has_image_ext = task[1], task[6]
    abs_path = os.path.join(_WORKER_STATE["root"], rel_path)
    if not has_image_ext:
        try:
            with open(abs_path, "rb") as f:
                head = f.read(64)
        except OSError:
            return task, None
        if sniff_format(head) is None:
            return task, None
    ext = os.path.splitext(rel_path)[1].lower()
    cfg = _WORKER_STATE["config"]
    return task, measure_file(abs_path, ext, cfg, _WORKER_STATE["embed_spec"])


# ---------------------------------------------------------------- main side


class _Pool:
    """A process pool fed from a bounded iterator, or in-process work when workers == 0."""

    def __init__(self, workers: int, initargs: tuple[Any, ...]) -> None:
        self.workers = workers
        self.initargs = initargs
        self.pool = None
        if workers > 0:
            ctx = mp.get_context("forkserver")
            # scipy.fftpack is imagehash.phash's lazy import (~1 s): pay it once, not per worker
            ctx.set_forkserver_preload(["dataaudit.scan.measure", "scipy.fftpack"])
            self.pool = ctx.Pool(workers, initializer=_init_pool_worker, initargs=initargs)

    def map(self, tasks: Iterator[Task], in_flight: int) -> Iterator[Any]:
        if self.pool is None:
            _init_worker(*self.initargs)
            yield from map(_work, tasks)
            return
        sem = threading.BoundedSemaphore(in_flight)
        stop = threading.Event()

        def throttled() -> Iterator[Task]:
            for t in tasks:
                sem.acquire()
                if stop.is_set():
                    return
                yield t

        try:
            for result in self.pool.imap_unordered(_work, throttled(), chunksize=8):
                sem.release()
                yield result
        finally:
            stop.set()
            for _ in range(in_flight):  # unblock the feeder so the pool can shut down
                try:
                    sem.release()
                except ValueError:
                    break

    def close(self, terminate: bool = False) -> None:
        if self.pool is not None:
            (self.pool.terminate if terminate else self.pool.close)()
            self.pool.join()


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
    measure_cfg = options.measure
    if options.embed and not measure_cfg.embed_size:
        from dataclasses import replace

        measure_cfg = replace(measure_cfg, embed_size=embed_spec.input_size)
    pool = _Pool(0, (str(root), measure_cfg, embed_spec))  # replaced below if there is work
    con = None
    try:
        con = db.open_index(index_path)
        _check_root(con, root, index_path)
        run_id = db.start_run(con, "scan", {"root": str(root), **options.to_dict()})
        summary = ScanSummary(str(root), str(index_path), "", run_id)
        disk_names = _stage_discovered(con, root, index_path, labels, summary)
        _invalidate_old_measurements(con)
        todo = _plan(con, summary, options.embed)
        if on_start:
            on_start(summary.layout, todo)
        if todo:  # forkserver workers start from a fresh interpreter: no DuckDB state leaks
            pool = _Pool(options.resolved_workers(), (str(root), measure_cfg, embed_spec))
            if options.embed:
                options.embed.share_cpu_with(pool.workers)
        try:
            _measure_and_write(con, pool, todo, run_id, options, progress, summary, disk_names)
        except BaseException:
            summary.status = "interrupted"
            pool.close(terminate=True)
            _finish(con, summary, started)
            raise
        pool.close()
        if options.embed:
            options.embed.finish(con)
        _finish(con, summary, started)
        return summary
    finally:
        pool.close(terminate=True)
        if con is not None:
            con.close()


def _check_root(con: duckdb.DuckDBPyConnection, root: Path, index_path: Path) -> None:
    stored = db.get_meta(con, "root")
    if stored is None:
        db.set_meta(con, "root", str(root))
    elif stored != str(root):
        raise DataAuditError(
            f"the index {index_path} belongs to {stored}, not {root}",
            "pass --db with a new file for this dataset",
        )


def _stage_discovered(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    index_path: Path,
    labels: pl.DataFrame | None,
    summary: ScanSummary,
) -> dict[str, str]:
    """Stream the folder walk into ``_scan_seen`` with split and label resolved.

    Returns the few paths whose stored (escaped) form differs from their name on disk.
    """
    con.execute(
        "CREATE OR REPLACE TABLE _scan_seen (file_id BIGINT, path VARCHAR, split VARCHAR, "
        "label VARCHAR, bytes BIGINT, mtime_ns BIGINT, has_image_ext BOOLEAN)"
    )
    own_files = {_relative(p, root) for p in _index_files(index_path)}
    batch: list[tuple[Any, ...]] = []
    cols = ["file_id", "path", "split", "label", "bytes", "mtime_ns", "has_image_ext"]
    disk_names: dict[str, str] = {}
    for entry in discover.walk(root):
        if entry.rel_path in own_files:
            continue
        path = storable(entry.rel_path)
        if path != entry.rel_path:
            disk_names[path] = entry.rel_path
        split, label = discover.split_and_label(path)
        row = (file_id(entry.rel_path), path, split, label, entry.size,
               entry.mtime_ns, entry.has_image_ext)  # fmt: skip
        batch.append(row)
        if len(batch) >= 50_000:
            db.write_frame(con, "_scan_seen", pl.DataFrame(batch, schema=cols, orient="row"))
            batch.clear()
    db.write_frame(con, "_scan_seen", pl.DataFrame(batch, schema=cols, orient="row"))
    if labels is not None:
        con.register("_labels", labels.to_arrow())
        con.execute(
            "UPDATE _scan_seen SET label = l.label, split = coalesce(l.split, _scan_seen.split) "
            "FROM _labels l WHERE l.path = _scan_seen.path"
        )
        con.unregister("_labels")
    summary.files_seen = con.execute("SELECT count(*) FROM _scan_seen").fetchall()[0][0]
    summary.layout = _layout(con, labels is not None)
    return disk_names


def _index_files(index_path: Path) -> list[Path]:
    return [index_path, Path(f"{index_path}.wal"), Path(f"{index_path}.tmp")]


def _relative(p: Path, root: Path) -> str | None:
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _layout(con: duckdb.DuckDBPyConnection, from_labels_file: bool) -> str:
    n, n_split, n_label = con.execute(
        "SELECT count(*), count(split), count(label) FROM _scan_seen WHERE has_image_ext"
    ).fetchall()[0]
    layout = discover.describe_layout(n_split, n_label, n)
    return f"{layout} (labels from file)" if from_labels_file else layout


def _invalidate_old_measurements(con: duckdb.DuckDBPyConnection) -> None:
    """Rows measured by an older definition of the statistics are measured again."""
    stored = db.get_meta(con, "measure_version")
    has_rows = con.execute("SELECT count(*) FROM images").fetchall()[0][0] > 0
    if has_rows and stored != str(MEASURE_VERSION):
        con.execute("UPDATE images SET mtime_ns = -1")  # no file has this mtime: re-read all
    db.set_meta(con, "measure_version", str(MEASURE_VERSION))


def _plan(con: duckdb.DuckDBPyConnection, summary: ScanSummary, embed: Any = None) -> int:
    """Work out new / changed / unchanged / deleted files; return how many need reading.

    With embeddings on, unchanged images that have no vector yet (an earlier scan ran with
    --no-embed, or with another model) are read again too.
    """
    con.execute("BEGIN")
    summary.deleted = con.execute(
        "DELETE FROM images WHERE file_id NOT IN (SELECT file_id FROM _scan_seen)"
    ).fetchall()[0][0]
    con.execute("DELETE FROM thumbnails WHERE file_id NOT IN (SELECT file_id FROM images)")
    con.execute("DELETE FROM skipped_files WHERE file_id NOT IN (SELECT file_id FROM _scan_seen)")
    if embed is not None:
        embed.prepare(con)
    # Labels can change without the bytes changing (a new labels file): apply in place.
    con.execute(
        "UPDATE images SET split = s.split, label = s.label FROM _scan_seen s "
        "WHERE images.file_id = s.file_id "
        "AND (images.split IS DISTINCT FROM s.split OR images.label IS DISTINCT FROM s.label)"
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE _scan_todo AS
        SELECT s.*, (i.file_id IS NOT NULL OR k.file_id IS NOT NULL) AS was_indexed,
               (i.file_id IS NOT NULL AND i.bytes = s.bytes AND i.mtime_ns = s.mtime_ns)
                   AS embed_only
        FROM _scan_seen s
        LEFT JOIN images i ON i.file_id = s.file_id
        LEFT JOIN skipped_files k ON k.file_id = s.file_id
        WHERE NOT (i.file_id IS NOT NULL AND i.bytes = s.bytes AND i.mtime_ns = s.mtime_ns
                   AND NOT ({missing_vector}))
          AND NOT (k.file_id IS NOT NULL AND k.bytes = s.bytes AND k.mtime_ns = s.mtime_ns)
        """.format(
            missing_vector="i.decode_status = 'ok' AND i.file_id NOT IN "
            "(SELECT file_id FROM embeddings)"
            if embed is not None
            else "FALSE"
        )
    )
    con.execute("COMMIT")
    todo, changed, embed_only = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE was_indexed AND NOT embed_only), "
        "count(*) FILTER (WHERE embed_only) FROM _scan_todo"
    ).fetchall()[0]
    summary.changed = changed
    summary.unchanged = summary.files_seen - todo + embed_only
    summary.embed_only = embed_only
    return todo


def _todo_stream(con: duckdb.DuckDBPyConnection, disk_names: dict[str, str]) -> Iterator[Task]:
    """Stream the work list from its own cursor, a record batch at a time.

    Tasks carry the name on disk; the writer stores its :func:`storable` form.
    """
    cols = ["file_id", "path", "split", "label", "bytes", "mtime_ns", "has_image_ext",
            "was_indexed"]  # fmt: skip
    cur = con.cursor()
    try:
        reader = cur.sql(f"SELECT {', '.join(cols)} FROM _scan_todo ORDER BY path").to_arrow_reader(
            4096
        )
        for rb in reader:
            d = rb.to_pydict()
            if disk_names:
                d["path"] = [disk_names.get(p, p) for p in d["path"]]
            yield from zip(*(d[c] for c in cols), strict=True)
    finally:
        cur.close()


def _measure_and_write(
    con: duckdb.DuckDBPyConnection,
    pool: _Pool,
    todo: int,
    run_id: int,
    options: ScanOptions,
    progress: Progress | None,
    summary: ScanSummary,
    disk_names: dict[str, str],
) -> None:
    writer = _BatchWriter(con, run_id, options)
    in_flight = max(64, 32 * max(1, pool.workers))
    done = 0
    if progress:
        progress(0, todo)
    try:
        for task, m in pool.map(_todo_stream(con, disk_names), in_flight):
            writer.add(task, m)
            done += 1
            if progress and (done % 64 == 0 or done == todo):
                progress(done, todo)
    except KeyboardInterrupt:
        writer.flush()  # keep every finished measurement
        raise
    writer.flush()
    summary.measured = writer.images_written
    summary.new = (
        writer.images_written + writer.skipped_written - summary.changed - summary.embed_only
    )


EMBED_CHUNK = 32  # images per embedder call during a scan


class _BatchWriter:
    """Collect measurements and write them in batches, one transaction per batch."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: int, options: ScanOptions) -> None:
        self.con = con
        self.run_id = run_id
        self.options = options
        self.rows: list[tuple[Task, Measurement]] = []
        self.skipped: list[Task] = []
        self.images_written = 0
        self.skipped_written = 0
        self.last_write = time.monotonic()
        self.pixels: list[tuple[int, Any]] = []  # embedder input waiting for a batch
        self.vectors: list[Any] = []  # embedded, waiting for the next write

    def add(self, task: Task, m: Measurement | None) -> None:
        if m is None:
            self.skipped.append(task)
        else:
            self.rows.append((task, m))
            if m.embed_pixels is not None:
                # Embed in small batches as results arrive, so inference interleaves with
                # the workers' decoding instead of stalling them at every write.
                self.pixels.append((task[0], m.embed_pixels))
                m.embed_pixels = None
                if len(self.pixels) >= EMBED_CHUNK:
                    self._embed_pending()
        pending = len(self.rows) + len(self.skipped)
        if pending >= self.options.write_batch or (
            time.monotonic() - self.last_write >= self.options.write_every_s
        ):
            self.flush()

    def _embed_pending(self) -> None:
        if self.pixels:
            self.vectors.append(self.options.embed.embed(self.pixels))
            self.pixels = []

    def flush(self) -> None:
        if not self.rows and not self.skipped:
            return
        self._embed_pending()
        records, thumbs = [], []
        for task, m in self.rows:
            fid, path, split, label, nbytes, mtime_ns = task[:6]
            path = storable(path)
            rec = dict(m.record)
            rec.update(
                file_id=fid, path=path, split=split, label=label, bytes=nbytes,
                mtime_ns=mtime_ns, ext=os.path.splitext(path)[1].lower(), scan_run_id=self.run_id,
            )  # fmt: skip
            records.append(rec)
            if m.thumbnail is not None:
                thumbs.append({"file_id": fid, "jpeg": m.thumbnail})
        skipped = [
            {"file_id": t[0], "path": storable(t[1]), "bytes": t[4], "mtime_ns": t[5],
             "reason": "not an image (no image extension, no image signature)"}
            for t in self.skipped
        ]  # fmt: skip
        self.con.execute("BEGIN")
        try:
            # A changed file may also have turned from an image into a non-image or back:
            # drop its old rows from every table before writing its new one.
            ids = [r["file_id"] for r in records] + [k["file_id"] for k in skipped]
            self.con.register("_changed", pl.DataFrame({"file_id": ids}).to_arrow())
            for table in ("thumbnails", "images", "skipped_files"):
                self.con.execute(f"DELETE FROM {table} WHERE file_id IN (SELECT * FROM _changed)")
            self.con.unregister("_changed")
            if records:
                db.write_frame(self.con, "images", pl.DataFrame(records, infer_schema_length=None))
            if thumbs:
                db.write_frame(self.con, "thumbnails", pl.DataFrame(thumbs))
            if skipped:
                db.write_frame(self.con, "skipped_files", pl.DataFrame(skipped))
            for frame in self.vectors:
                self.options.embed.write(self.con, frame)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.images_written += len(records)
        self.skipped_written += len(skipped)
        self.rows.clear()
        self.skipped.clear()
        self.vectors.clear()
        self.last_write = time.monotonic()


def _finish(con: duckdb.DuckDBPyConnection, summary: ScanSummary, started: float) -> None:
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
        con.execute("DROP TABLE IF EXISTS _scan_seen")
        con.execute("DROP TABLE IF EXISTS _scan_todo")
    db.finish_run(con, summary.run_id, summary.status, summary.counts())
    if summary.status == "completed":
        # Not after an interruption: the work-list cursor may still hold a transaction, and
        # CHECKPOINT would then fail and hide the KeyboardInterrupt. The WAL replays on open.
        con.execute("CHECKPOINT")
