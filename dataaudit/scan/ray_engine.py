"""The scan on Ray Data (``dataaudit scan PATH --engine ray``): the same per-file measurement,
spread over a cluster, or over a local Ray started for the run.

Flow (the driver is this process; only it touches the index):

1. List the dataset and plan against the index exactly as the local engine does, then write
   the work list as Parquet shards (:mod:`dataaudit.scan.manifest`) into a new run folder.
2. ``ray.data.read_parquet`` the work list; ``map_batches`` tasks read each file's bytes and
   run :func:`dataaudit.scan.measure.measure` (which never raises). They pass on records,
   the JPEG thumbnail and, when embedding, the small uint8 embedder input: never a decoded
   full-size image.
3. Embeddings come from an actor pool (one GPU per actor where the cluster has GPUs), each
   actor loading the model once.
4. The driver streams the results back, keyed by ``file_id`` (Ray does not keep order),
   writes each batch as a Parquet shard in the run folder and then into the index, one
   transaction per shard; ``_manifest.json`` is written last (the commit).

A worker that dies is retried by Ray, and a file measured twice is written once (the writer
replaces rows by ``file_id``). A driver that dies leaves every batch already written in the
index; the rerun's plan is an anti-join of the listing against those rows, so it reads only
what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dataaudit import discover
from dataaudit.errors import DataAuditError
from dataaudit.scan import manifest
from dataaudit.scan import plan as planning
from dataaudit.scan.decode import sniff_format
from dataaudit.scan.identity import disk_name
from dataaudit.scan.measure import (
    MEASURED_COLUMNS,
    MeasureConfig,
    Measurement,
    empty_record,
    measure,
)
from dataaudit.scan.pipeline import ScanOptions, _check_root
from dataaudit.scan.summary import ScanSummary, finish
from dataaudit.scan.task import Task
from dataaudit.scan.writer import BatchCounts, write_batch
from dataaudit.store import db

Progress = Callable[[int, int], None]

MEASURE_BATCH = 32  # files per map_batches call
MEASURE_MEMORY = 512 * 2**20  # bytes reserved per measure task
EMBED_BATCH_CPU = 64
EMBED_BATCH_GPU = 256

# Arrow types of the measured columns, following the index's column types (schema.sql).
_DUCK_TO_ARROW = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int64(),
                  "TINYINT": pa.int64(), "BOOLEAN": pa.bool_(), "REAL": pa.float64(),
                  "FLOAT": pa.float64(), "BLOB": pa.binary()}  # fmt: skip


def scan(
    path: str | Path,
    db_path: str | Path | None = None,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
    on_start: Callable[[str, int], None] | None = None,
    address: str | None = None,
    work_dir: str | None = None,
) -> ScanSummary:
    """Index ``path`` (a folder or an object-store URL) with the measurement run on Ray.

    ``address``: a running cluster (``ray://host:10001`` or ``host:6379``); None starts a
    local Ray for this run, or uses the one this process already started. ``work_dir``
    holds run folders (default: ``runs/`` beside the index); on a cluster of several
    machines it must be storage every node can read, such as ``s3://bucket/prefix``.
    """
    options = options or ScanOptions()
    started = time.perf_counter()
    source = manifest.locate(path)
    if source.is_local:
        root: Any = discover.resolve_root(path)
        index_path = (
            Path(db_path).expanduser().resolve() if db_path else db.default_index_path(root)
        )
        root_name = str(root)
    else:
        if db_path is None:
            raise DataAuditError(
                f"an index for {source.uri} needs a local file",
                "pass --db PATH/index.duckdb",
            )
        root = None
        root_name = source.uri.rstrip("/")
        index_path = Path(db_path).expanduser().resolve()
    work = manifest.locate(work_dir) if work_dir else manifest.locate(index_path.parent / "ray")
    labels = discover.load_labels(options.labels_file) if options.labels_file else None
    measure_cfg = options.measure_config()
    con = None
    owns_ray = False
    try:
        con = db.open_index(index_path)
        _check_root(con, root_name, index_path)
        params = {"root": root_name, "engine": "ray", "address": address, "work_dir": work.uri,
                  **options.to_dict()}  # fmt: skip
        params["workers"] = None  # Ray decides
        db.mark_stale_runs(con)
        run_id = db.start_run(con, "scan", params)
        # An object-store listing replaces the folder walk; planning is the local engine's.
        entries = None if source.is_local else manifest.walk(source)
        found = planning.stage_discovered(con, root, index_path, labels, entries)
        summary = ScanSummary(root_name, str(index_path), found.layout, run_id)
        summary.files_seen = found.files_seen
        summary.warnings.extend(found.warnings)
        summary.unreadable = found.unreadable
        planning.invalidate_old_measurements(con)
        work_plan = planning.plan(con, found, options.embed)
        summary.apply_plan(work_plan)
        todo = work_plan.todo
        if on_start:
            on_start(summary.layout, todo)
        try:
            if todo:
                planned_s = time.perf_counter() - started
                owns_ray = _connect(address)
                stages = {"list_and_plan": planned_s,
                          "connect": time.perf_counter() - started - planned_s}  # fmt: skip
                _run(con, source, work, todo, run_id, options, measure_cfg,
                     summary, progress, stages)  # fmt: skip
        except BaseException:
            summary.status = "interrupted"
            finish(con, summary, started)
            raise
        if options.embed:
            options.embed.finish(con)
        finish(con, summary, started)
        return summary
    finally:
        if con is not None:
            con.close()
        if owns_ray:
            import ray

            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local Ray; True if this call started it.

    A Ray already initialised by this process (a notebook, the tests) is used as it is.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DataAuditError(
            f"--engine ray needs Ray Data ({exc})", 'pip install "dataaudit[ray]"'
        ) from exc
    logging.getLogger("ray").setLevel(logging.WARNING)
    # Ray Data's warnings are about itself; its errors reach the user as one line from us.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}  # fmt: skip
    try:
        if address:
            import dataaudit

            _use_saved_token()

            # The cluster runs this exact dataaudit code; its nodes need the dependencies.
            pkg = str(Path(dataaudit.__file__).parent)
            ray.init(address=address, runtime_env={"py_modules": [pkg]}, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise DataAuditError(
            f"cannot start {where}: {str(exc).splitlines()[0]}",
            "check --address (ray status on the head node prints it), or leave it out",
        ) from exc
    return True


def _use_saved_token() -> None:
    """Send the cluster's auth token when this user has one (``~/.ray/auth_token`` or
    ``RAY_AUTH_TOKEN``): Ray 2.5x clusters require it, but a driver joining by address
    only sends it when ``RAY_AUTH_MODE=token`` is set. An explicit RAY_AUTH_MODE wins."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _arrow_schema(con: Any) -> pa.Schema:
    """Schema of the rows the measure tasks return, from the index's own column types."""
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                             "WHERE table_name = 'images'").fetchall())  # fmt: skip
    fields = [pa.field(c, _DUCK_TO_ARROW[types[c]]) for c in MEASURED_COLUMNS]
    return pa.schema(
        [field for field in manifest.TODO_SCHEMA if field.name != "uri"]
        + [pa.field("skipped", pa.bool_())]
        + fields
        + [pa.field("thumbnail", pa.binary()), pa.field("pixels", pa.binary())]
    )


def _run(
    con: Any,
    source: manifest.Location,
    work: manifest.Location,
    todo: int,
    run_id: int,
    options: ScanOptions,
    measure_cfg: MeasureConfig,
    summary: ScanSummary,
    progress: Progress | None,
    stages: dict[str, float],
) -> None:
    """Measure the planned files on Ray and write them: shards, then index, then commit.

    The commit record keeps each stage's seconds (bench/bench_ray.py reads them).
    """
    import ray
    import ray.data

    t0 = time.perf_counter()

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Ray 2.60's default Parquet reader lists files in a task that waited 5-13 s here and
    # merged the shards into one block (one task, no parallelism); the file-per-task reader
    # reads each shard as its own block.
    ctx.use_datasource_v2 = False
    ctx.raise_original_map_exception = True  # so a failure names its real cause
    manifest.drop_uncommitted(work)
    folder = manifest.new_run_folder(work, run_id)
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    todo_files = manifest.write_todo(con, folder, source, manifest.shard_rows(todo, cpus))
    todo_s = time.perf_counter() - t0
    schema = _arrow_schema(con)
    embed = options.embed
    spec = embed.spec if embed else None
    ds = ray.data.read_parquet(todo_files, filesystem=work.fs, override_num_blocks=len(todo_files))
    ds = ds.map_batches(
        measure_batch,
        batch_size=MEASURE_BATCH,
        batch_format="pyarrow",
        fn_kwargs={"fs": source.fs, "config": measure_cfg, "embed_spec": spec, "schema": schema},
        num_cpus=1,
        # Room for one decode near the bomb limit. Also keeps decoding in its own tasks: with
        # the same resources Ray Data fuses it into the CPU embedding actors (one process).
        memory=MEASURE_MEMORY,
    )
    if embed:
        device = "cuda" if gpus else embed.device
        placement = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        ds = ds.map_batches(
            EmbedActor,
            batch_size=EMBED_BATCH_GPU if gpus else EMBED_BATCH_CPU,
            batch_format="pyarrow",
            fn_constructor_kwargs={"spec": spec, "device": device},
            concurrency=max(1, gpus),
            **placement,
        )
    writer = _ShardWriter(con, folder, run_id, options)
    done = 0
    if progress:
        progress(0, todo)
    t1 = time.perf_counter()
    first_s = None
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            first_s = first_s if first_s is not None else time.perf_counter() - t1
            writer.add(batch)
            if writer.due():
                done = writer.flush()
                summary.apply_written(BatchCounts(writer.images_written, writer.skipped_written))
                if progress:
                    progress(min(done, todo), todo)
    except (ray.exceptions.RayError, ray.data.exceptions.UserCodeException) as exc:
        writer.flush()  # keep every result that arrived
        summary.apply_written(BatchCounts(writer.images_written, writer.skipped_written))
        raise DataAuditError(
            f"the Ray job failed after {writer.files_written:,} of {todo:,} files: "
            f"{_root_cause(exc)}",
            "everything written so far is kept; run the same command again to resume",
        ) from exc
    done = writer.flush()
    stream_s = time.perf_counter() - t1
    summary.apply_written(BatchCounts(writer.images_written, writer.skipped_written))
    if progress:
        progress(min(done, todo), todo)
    manifest.commit(
        folder,
        {"run_id": run_id, "index": summary.index_path, "root": summary.root,
         "todo": [Path(p).name for p in todo_files], "shards": writer.shards,
         "files": writer.files_written, "cluster": {"CPU": cpus, "GPU": gpus},
         "shard_bytes": writer.shard_bytes,
         "stage_s": {**stages, "write_todo": todo_s,
                     "first_result": first_s, "stream": stream_s,
                     "write_shards": writer.shard_s, "write_index": writer.index_s}},
    )  # fmt: skip


def _root_cause(exc: BaseException) -> str:
    """``Type: message`` of the exception a Ray task raised, under Ray's wrappers."""
    seen = {id(exc)}
    while True:
        nxt = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        exc = nxt
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {next(iter(text.splitlines()), '')}"


class _ShardWriter:
    """Collect result batches; per flush: one Parquet shard, then one index transaction."""

    def __init__(self, con: Any, folder: manifest.RunFolder, run_id: int, options: ScanOptions):
        self.con = con
        self.folder = folder
        self.run_id = run_id
        self.options = options
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.last = time.monotonic()
        self.shards: list[dict[str, Any]] = []
        self.images_written = 0
        self.skipped_written = 0
        self.files_written = 0
        self.seen: set[int] = set()  # file_ids written in this run: a retried task's repeats
        self.shard_s = self.index_s = 0.0
        self.shard_bytes = 0

    def add(self, batch: pa.Table) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.rows += batch.num_rows

    def due(self) -> bool:
        return self.rows >= self.options.write_batch or (
            self.rows > 0 and time.monotonic() - self.last >= self.options.write_every_s
        )

    def flush(self) -> int:
        """Write what is pending; return how many distinct files this run has written."""
        if not self.pending:
            return self.files_written
        table = _latest_per_file(pa.concat_tables(self.pending, promote_options="default"))
        if "pixels" in table.column_names:  # embedder input not consumed (no embedding)
            table = table.drop_columns(["pixels"])
        name = f"part-{len(self.shards):05d}.parquet"
        t0 = time.perf_counter()
        manifest.write_parquet(self.folder.loc.fs, self.folder.file(name), table)
        self.shard_bytes += self.folder.loc.fs.get_file_info(self.folder.file(name)).size or 0
        t1 = time.perf_counter()
        images, skipped = _write_index(self.con, self.run_id, table)
        self.shard_s += t1 - t0
        self.index_s += time.perf_counter() - t1
        new_ids = set(table.column("file_id").to_pylist()) - self.seen
        self.seen |= new_ids
        self.files_written += len(new_ids)
        self.images_written += images
        self.skipped_written += skipped
        self.shards.append({"name": name, "rows": table.num_rows})
        self.pending.clear()
        self.rows = 0
        self.last = time.monotonic()
        return self.files_written


def _latest_per_file(table: pa.Table) -> pa.Table:
    """One row per ``file_id`` (a retried task may have sent a file twice)."""
    ids = table.column("file_id").to_numpy()
    _, first = np.unique(ids[::-1], return_index=True)
    if len(first) == len(ids):
        return table
    keep = np.sort(len(ids) - 1 - first)
    return table.take(pa.array(keep))


def _write_index(con: Any, run_id: int, table: pa.Table) -> tuple[int, int]:
    """Write one shard's rows into the index with the writer both engines share."""
    results: list[tuple[Task, Measurement | None]] = []
    vec_ids, vecs = [], []
    has_vectors = "vector" in table.column_names
    for row in table.to_pylist():
        # Tasks carry the name on disk, as the local engine's do; the writer stores it again.
        task = Task(row["file_id"], disk_name(row["path"]), row["split"], row["label"],
                    row["bytes"], row["mtime_ns"], row["has_image_ext"], row["was_indexed"])  # fmt: skip
        if row["skipped"]:
            results.append((task, None))
            continue
        rec = {c: row[c] for c in MEASURED_COLUMNS}
        results.append((task, Measurement(rec, row["thumbnail"])))
        if has_vectors and row["vector"] is not None:
            vec_ids.append(row["file_id"])
            vecs.append(row["vector"])
    vectors = None
    if vec_ids:
        import polars as pl

        vectors = pl.DataFrame({"file_id": vec_ids, "vector": vecs},
                               schema={"file_id": pl.Int64, "vector": pl.List(pl.Float32)})  # fmt: skip
    counts = write_batch(con, run_id, results, vectors)
    return counts.images, counts.skipped


# ---------------------------------------------------------------- cluster side


def measure_batch(
    batch: pa.Table, fs: Any, config: MeasureConfig, embed_spec: Any, schema: pa.Schema
) -> pa.Table:
    """Read and measure a batch of work-list rows (a ``map_batches`` function).

    Returns one row per file: the work-list fields, ``skipped`` (no image extension and no
    image signature), the measured columns, the thumbnail and the embedder's input.
    """
    rows = batch.to_pylist()
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in rows:
        m = measure_entry(fs, row["uri"].decode("utf-8", "surrogateescape"), row["path"],
                          row["has_image_ext"], config, embed_spec)  # fmt: skip
        for key in manifest.TODO_SCHEMA.names:
            if key != "uri":
                cols[key].append(row[key])
        cols["skipped"].append(m is None)
        rec = m.record if m is not None else empty_record()
        for key in MEASURED_COLUMNS:
            cols[key].append(rec[key])
        cols["thumbnail"].append(m.thumbnail if m is not None else None)
        px = m.embed_pixels if m is not None else None
        cols["pixels"].append(px.tobytes() if px is not None else None)
    return pa.Table.from_pydict(cols, schema=schema)


def measure_entry(
    fs: Any, uri: str, path: str, has_image_ext: bool, config: MeasureConfig, embed_spec: Any
) -> Measurement | None:
    """Measure one file; a file without an image extension is first sniffed (None: skip).

    Local files are opened with ``open`` like the local engine, so a failure reads the same.
    """
    opener = _open_local if fs is None or _is_local(fs) else fs.open_input_file
    ext = os.path.splitext(path)[1].lower()
    if not has_image_ext:
        try:
            with opener(uri) as f:
                head = f.read(64)
        except OSError:
            return None
        if sniff_format(head) is None:
            return None
    try:
        with opener(uri) as f:
            data = f.read()
    except OSError as exc:
        rec = empty_record()
        rec.update(decode_status="unreadable", is_corrupt=True, error_class=type(exc).__name__,
                   error_message=f"cannot read file: {exc.strerror or exc}")  # fmt: skip
        return Measurement(rec)
    return measure(data, ext, config, embed_spec)


def _open_local(path: str) -> Any:
    return open(path, "rb")  # noqa: SIM115 - used as a context manager by the caller


def _is_local(fs: Any) -> bool:
    import pyarrow.fs as pafs

    return isinstance(fs, pafs.LocalFileSystem)


class EmbedActor:
    """Turns the ``pixels`` column into a ``vector`` column; the model loads once per actor."""

    def __init__(self, spec: Any, device: str | None) -> None:
        from dataaudit.embed.model import Embedder

        self.spec = spec
        self.embedder = Embedder(spec, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        pixels = batch.column("pixels").to_pylist()
        have = [i for i, px in enumerate(pixels) if px is not None]
        vectors: list[Any] = [None] * len(pixels)
        if have:
            s = self.spec.input_size
            arr = np.stack([np.frombuffer(pixels[i], np.uint8).reshape(s, s, 3) for i in have])
            for i, v in zip(have, self.embedder.embed(arr), strict=True):
                vectors[i] = v
        out = batch.drop_columns(["pixels"])
        return out.append_column("vector", pa.array(vectors, pa.list_(pa.float32())))
