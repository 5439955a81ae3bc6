"""Where a distributed scan's files live, the work list it hands out, and how a run commits.

The Ray engine (``dataaudit.scan.ray_engine``) never lists or plans on the cluster: the
driver lists the dataset, plans against the index in DuckDB, and writes the work list as
Parquet shards (``todo-NNNNN.parquet``, up to 10,000 rows each: ``file_id``, ``uri``,
``path``, ``split``, ``label``, ``bytes``, ``mtime_ns`` (the change token), ...). Workers read
those shards with ``ray.data.read_parquet``; a listing of 100M objects is thus done once,
by one process, in bounded memory, instead of by ``ray.data.read_images``.

Each run gets its own new folder ``WORK_DIR/runs/<run>/``: the work list, the measured rows
as ``part-NNNNN.parquet`` (keyed by ``file_id``), and ``_manifest.json`` written last. That
last write is the commit: a folder without it is an interrupted run. Nothing is ever
overwritten in place; every file is written under a temporary name and renamed (object
stores publish a PUT whole, so there the final name is written directly).

Local folders and object storage (``s3://``, ``gs://``, ``hdfs://``, or any fsspec URL) go
through the same ``pyarrow.fs`` calls.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataaudit import discover
from dataaudit.errors import DataAuditError
from dataaudit.scan.identity import disk_name

MANIFEST_ROWS = 10_000  # work-list rows per shard at most
COMMIT_FILE = "_manifest.json"
RUNS_DIR = "runs"

TODO_SCHEMA = pa.schema(
    [
        ("file_id", pa.int64()),
        ("uri", pa.binary()),  # the name to open (bytes: file names need not be UTF-8)
        ("path", pa.string()),  # relative path as the index stores it
        ("split", pa.string()),
        ("label", pa.string()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),  # change token: modification time (LastModified on S3)
        ("has_image_ext", pa.bool_()),
        ("was_indexed", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem: ``fs`` and the path ``base`` inside it."""

    fs: pafs.FileSystem
    base: str
    uri: str  # as the user named it

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)


def is_uri(path: str | Path) -> bool:
    """``scheme://...`` names object storage (``file://`` is a local folder)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def locate(path: str | Path) -> Location:
    """Resolve a local folder or a URL to a filesystem and a base path.

    Schemes pyarrow knows (s3, gs, hdfs) use its native filesystems; anything else is
    looked up in fsspec (installed with ray) and wrapped, so the rest of the code sees one API.
    """
    s = str(path)
    if s.startswith("file://"):
        s = s[len("file://") :]
    if not is_uri(s):
        return Location(pafs.LocalFileSystem(), str(Path(s).expanduser().resolve()), s)
    try:
        fs, base = pafs.FileSystem.from_uri(s)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        try:
            import fsspec
        except ImportError as exc:
            raise DataAuditError(
                f"cannot open {s}: no filesystem for this scheme", "pip install fsspec"
            ) from exc
        try:
            ffs, base = fsspec.core.url_to_fs(s)
        except (ImportError, ValueError) as exc:
            raise DataAuditError(
                f"cannot open {s}: {exc}", "install the fsspec backend for this scheme"
            ) from exc
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(ffs))
    except OSError as exc:
        raise DataAuditError(f"cannot open {s}: {exc}", "check the URL and credentials") from exc
    return Location(fs, base.rstrip("/"), s)


def walk(loc: Location) -> Iterator[discover.FileEntry]:
    """Every file under ``loc`` in a stable order, skipping hidden and OS-junk names.

    Local folders go through :func:`dataaudit.discover.walk` (symlink rules included), so
    both engines see the same files. Elsewhere one folder (prefix) is listed at a time, so
    memory is bounded by the largest folder, not by the bucket.
    """
    if loc.is_local:
        yield from discover.walk(Path(loc.base))
        return
    try:
        top = loc.fs.get_file_info(loc.base)
    except OSError as exc:
        raise DataAuditError(
            f"cannot list {loc.uri}: {exc}", "check the URL and credentials"
        ) from exc
    if top.type == pafs.FileType.NotFound:
        raise DataAuditError(
            f"path does not exist: {loc.uri}", "pass the prefix that holds your images"
        )
    stack = [loc.base]
    while stack:
        folder = stack.pop()
        try:
            infos = loc.fs.get_file_info(pafs.FileSelector(folder, recursive=False))
        except OSError:
            continue
        subdirs = []
        for info in sorted(infos, key=lambda i: i.base_name):
            if discover.is_skipped_name(info.base_name):
                continue
            if info.type == pafs.FileType.Directory:
                subdirs.append(info.path)
            elif info.type == pafs.FileType.File:
                rel = posixpath.relpath(info.path, loc.base) if loc.base else info.path
                ext = posixpath.splitext(info.base_name)[1].lower()
                mtime = info.mtime_ns if info.mtime_ns is not None else 0
                yield discover.FileEntry(rel, int(info.size or 0), int(mtime),
                                         ext in discover.IMAGE_EXTENSIONS)  # fmt: skip
        stack.extend(reversed(subdirs))


def shard_rows(todo: int, cpus: int) -> int:
    """Rows per work-list shard: 10,000, or fewer so that every CPU gets a few shards.

    Ray hands each shard (a block) to one task, so a small scan split into too few shards
    would leave cores idle.
    """
    spread = -(-todo // max(1, 4 * cpus))
    return max(1, min(MANIFEST_ROWS, spread))


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write a Parquet file so that readers see all of it or nothing."""
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, path)
    else:
        pq.write_table(table, path, filesystem=fs)


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Write a small text file atomically (temp then rename; one PUT on object stores)."""
    data = text.encode("utf-8")
    target = f"{path}.tmp-{uuid.uuid4().hex[:8]}" if isinstance(fs, pafs.LocalFileSystem) else path
    with fs.open_output_stream(target) as out:
        out.write(data)
    if target != path:
        fs.move(target, path)


@dataclass
class RunFolder:
    """``WORK_DIR/runs/<name>/``: one run's work list, measured shards and commit file."""

    loc: Location
    name: str

    @property
    def path(self) -> str:
        return self.loc.join(RUNS_DIR, self.name)

    def file(self, name: str) -> str:
        return posixpath.join(self.path, name)


def new_run_folder(work: Location, run_id: int) -> RunFolder:
    """A fresh folder for this run; an existing name is never reused."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = RunFolder(work, f"{stamp}-run{run_id}-{uuid.uuid4().hex[:6]}")
    work.fs.create_dir(folder.path, recursive=True)
    return folder


def run_folders(work: Location) -> list[tuple[str, bool]]:
    """(name, committed) for every run folder under ``work``, oldest first."""
    runs = work.join(RUNS_DIR)
    try:
        infos = work.fs.get_file_info(pafs.FileSelector(runs, allow_not_found=True))
    except OSError:
        return []
    out = []
    for info in sorted(infos, key=lambda i: i.base_name):
        if info.type == pafs.FileType.Directory:
            commit = work.fs.get_file_info(posixpath.join(info.path, COMMIT_FILE))
            out.append((info.base_name, commit.type == pafs.FileType.File))
    return out


def drop_uncommitted(work: Location) -> list[str]:
    """Delete folders of interrupted runs (no commit file).

    Their measured rows reached the index batch by batch as they arrived, so the next
    plan already skips them; what is left in such a folder is a stale work list.
    """
    dropped = []
    for name, committed in run_folders(work):
        if not committed:
            work.fs.delete_dir(work.join(RUNS_DIR, name))
            dropped.append(name)
    return dropped


def commit(folder: RunFolder, record: dict[str, Any]) -> None:
    """Write ``_manifest.json`` last: from now on the run's shards are complete."""
    body = {"format": 1, "run": folder.name, "committed_at": datetime.now(UTC).isoformat(),
            **record}  # fmt: skip
    write_text(folder.loc.fs, folder.file(COMMIT_FILE), json.dumps(body, indent=1, default=str))


def read_commit(folder: RunFolder) -> dict[str, Any] | None:
    """The commit record of a run, or None while it is uncommitted."""
    try:
        with folder.loc.fs.open_input_stream(folder.file(COMMIT_FILE)) as f:
            return json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, OSError):
        return None


def write_todo(con: Any, folder: RunFolder, source: Location, rows: int) -> list[str]:
    """Write the planned work list (``_scan_todo``) as shards; return their paths.

    ``uri`` is the name to open: the dataset base joined with the name on disk (which may
    differ from the stored path when the name is not valid UTF-8).
    """
    cols = [c for c in TODO_SCHEMA.names if c != "uri"]
    cur = con.cursor()
    paths = []
    try:
        reader = cur.sql(f"SELECT {', '.join(cols)} FROM _scan_todo ORDER BY path").to_arrow_reader(
            rows
        )
        pending: list[pa.RecordBatch] = []
        n = 0

        def flush() -> None:
            if not pending:
                return
            table = pa.Table.from_batches(pending)
            uris = [
                source.join(disk_name(p)).encode("utf-8", "surrogateescape")
                for p in table.column("path").to_pylist()
            ]
            table = table.add_column(1, "uri", pa.array(uris, pa.binary())).cast(TODO_SCHEMA)
            path = folder.file(f"todo-{len(paths):05d}.parquet")
            write_parquet(folder.loc.fs, path, table)
            paths.append(path)
            pending.clear()

        for rb in reader:
            pending.append(rb)
            n += rb.num_rows
            if n >= rows:
                flush()
                n = 0
        flush()
    finally:
        cur.close()
    return paths
