"""Open, create and write the DuckDB index; record runs.

The schema lives in ``schema.sql`` beside this file. Writes go through Arrow frames in
batches (never row by row), and each batch is one transaction, so a killed scan loses
nothing that was already written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import warnings
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from dataaudit.discover import INDEX_DIR_NAME
from dataaudit.errors import DataAuditError, DataAuditWarning
from dataaudit.store import access

SCHEMA_VERSION = 2
INDEX_FILE_NAME = "index.duckdb"
_SCHEMA_SQL = Path(__file__).with_name("schema.sql")


def fallback_index_dir(root: Path) -> Path:
    """Where the index goes when the dataset folder is read-only: a per-root cache folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = root.resolve()  # "." and "data/" must name the same folder as the scan did
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return cache / "dataaudit" / f"{root.name or 'root'}-{digest}"


def default_index_path(root: Path) -> Path:
    """``ROOT/.dataaudit/index.duckdb``, or the cache fallback if ROOT is not writable."""
    local = root / INDEX_DIR_NAME
    if local.is_dir() and os.access(local, os.W_OK):
        return local / INDEX_FILE_NAME
    if not local.exists() and os.access(root, os.W_OK):
        return local / INDEX_FILE_NAME
    return fallback_index_dir(root) / INDEX_FILE_NAME


def index_candidates(path: str | Path) -> list[Path]:
    """The existing indexes of a dataset folder, newest first.

    A folder can have two: ``ROOT/.dataaudit/index.duckdb`` from when it was writable and
    the cache copy written after it became read-only (see :func:`default_index_path`).
    """
    p = Path(path).expanduser()
    found = [
        c
        for c in (p / INDEX_DIR_NAME / INDEX_FILE_NAME, fallback_index_dir(p) / INDEX_FILE_NAME)
        if c.is_file()
    ]
    return sorted(found, key=_last_written, reverse=True)


def _last_written(index: Path) -> int:
    """When the index last changed: the file or its write-ahead log, whichever is later."""
    wal = Path(f"{index}.wal")
    times = [index.stat().st_mtime_ns] + ([wal.stat().st_mtime_ns] if wal.is_file() else [])
    return max(times)


def find_index(path: str | Path) -> Path:
    """Locate an existing index from a dataset folder (or accept the index file itself).

    Never creates one. With two candidates the most recently written wins, and a
    :class:`DataAuditWarning` names the one taken and the one left.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise DataAuditError(f"path does not exist: {path}", "pass the dataset folder you scanned")
    if not p.is_dir():
        raise DataAuditError(f"not a folder or an index file: {path}")
    found = index_candidates(p)
    if not found:
        raise DataAuditError(f"no index found for {path}", f"run `dataaudit scan {path}` first")
    if len(found) > 1:
        warnings.warn(
            f"two indexes exist for {path}; using the newer {found[0]} "
            f"(ignoring the older {found[1]}; delete it or pass --db to choose)",
            DataAuditWarning,
            stacklevel=2,
        )
    return found[0]


def check_index(db_path: Path, may_be_empty: bool = False) -> None:
    """Refuse a file that is not a dataaudit index (``may_be_empty``: or an empty database),
    before a reader trusts it or a writer snapshots it or adds tables to it."""
    _check_is_duckdb(db_path)
    con, _snapshot = access.connect_read(db_path)  # the snapshot while a scan writes
    try:
        _check_ours(con, db_path, may_be_empty=may_be_empty)
        _check_version(con)
    finally:
        con.close()


def _check_is_duckdb(db_path: Path) -> None:
    if db_path.is_dir():
        raise DataAuditError(
            f"the index path {db_path} is a folder", "pass a file path such as FOLDER/index.duckdb"
        )
    if not db_path.exists() or db_path.stat().st_size == 0:
        return
    try:
        with open(db_path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise DataAuditError(f"cannot read the index {db_path}: {exc.strerror or exc}") from exc
    if head[8:12] != b"DUCK":
        raise DataAuditError(
            f"{db_path} exists but is not a DuckDB database",
            "move it away or pass another --db path; dataaudit will not overwrite it",
        )


def open_index(
    db_path: str | Path, read_only: bool = False, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open an index and, for writing, make sure its schema is current.

    ``create=False`` (every command that reads an index, ``detect`` included) refuses a
    missing or empty file instead of creating it, so a typo in ``--db`` is an error.
    A DuckDB file that another program made is never given dataaudit's tables.
    """
    db_path = Path(db_path)
    _check_is_duckdb(db_path)
    if (read_only or not create) and not db_path.is_file():
        raise DataAuditError(f"no index at {db_path}", "check the path, or run `dataaudit scan`")
    if not read_only:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if read_only:
            con = duckdb.connect(str(db_path), read_only=True)
        else:
            con = access.connect_write(db_path)
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            raise DataAuditError(
                f"the index {db_path} is in use by another process",
                "wait for the running scan to finish, or close the other program",
            ) from exc
        raise DataAuditError(f"cannot open index {db_path}: {msg}") from exc
    except duckdb.Error as exc:
        raise DataAuditError(
            f"cannot open index {db_path}: {exc}", "pass another --db path or delete the file"
        ) from exc
    try:
        _check_ours(con, db_path, may_be_empty=create and not read_only)
        if not read_only:
            ensure_schema(con)
        else:
            _check_version(con)
    except BaseException:
        con.close()  # a refused index must not stay open (and locked) in this process
        raise
    return con


def _check_ours(con: duckdb.DuckDBPyConnection, db_path: Path, may_be_empty: bool) -> None:
    """Refuse a DuckDB file that is not a dataaudit index (before any table is added)."""
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY table_name"
        ).fetchall()
    ]
    if "meta" in tables and get_meta(con, "schema_version") is not None:
        if may_be_empty or get_meta(con, "root") is not None:
            return
        raise DataAuditError(
            f"the index {db_path} holds no scan yet", "run `dataaudit scan` to fill it"
        )
    if not tables:
        if may_be_empty:
            return
        raise DataAuditError(
            f"{db_path} is an empty database, not a dataaudit index",
            "check the path, or run `dataaudit scan` to create it",
        )
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise DataAuditError(
        f"{db_path} is a DuckDB database of another program (tables: {shown})",
        "pass another --db path; dataaudit will not add its tables to it",
    )


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables and migrate an older index in place; refuse a newer one."""
    stored = _check_version(con, writing=True)
    con.execute(_SCHEMA_SQL.read_text())
    if stored is not None and stored < SCHEMA_VERSION:
        migrate_schema(con, stored)
    set_meta(con, "schema_version", str(SCHEMA_VERSION))


# ---------------------------------------------------------------- schema migration
# Statements that bring an index from version N-1 to N, for what adding columns cannot
# express (a rename, a backfill). New columns need no entry: migrate_schema adds every
# column schema.sql has and the index lacks. Bump SCHEMA_VERSION with any schema change.
SCHEMA_MIGRATIONS: dict[int, tuple[str, ...]] = {}


def migrate_schema(con: duckdb.DuckDBPyConnection, stored: int) -> list[str]:
    """Upgrade an index written at schema version ``stored``, keeping every row.

    Missing columns are added (nullable, so existing rows read NULL until re-measured:
    whether a file must be re-read is the measurement version's business, not the
    schema's). Returns the columns added, as ``table.column``.
    """
    con.execute("BEGIN")
    try:
        added = _add_missing_columns(con)
        for version in range(stored + 1, SCHEMA_VERSION + 1):
            for statement in SCHEMA_MIGRATIONS.get(version, ()):
                con.execute(statement)
        set_meta(con, "schema_version", str(SCHEMA_VERSION))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return added


def _add_missing_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for each column of schema.sql the index lacks."""
    reference = duckdb.connect(":memory:")
    try:
        reference.execute(_SCHEMA_SQL.read_text())
        wanted = reference.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        reference.close()
    have = {
        (t, c)
        for t, c in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'main'"
        ).fetchall()
    }
    added = []
    for table, column, dtype in wanted:
        if (table, column) not in have:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {dtype}')
            added.append(f"{table}.{column}")
    return added


def _check_version(con: duckdb.DuckDBPyConnection, writing: bool = False) -> int | None:
    """The index's schema version (None for a new file); refuse one this code cannot use.

    A newer index is refused; an older one is migrated when opened for writing, and a
    reader is told that the next scan upgrades it.
    """
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
    ).fetchall()[0][0]
    if not has_meta:
        return None
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if not rows:
        return None
    try:
        stored = int(rows[0][0])
    except ValueError:
        stored = SCHEMA_VERSION + 1
    if stored > SCHEMA_VERSION:
        raise DataAuditError(
            f"index schema version {rows[0][0]} is newer than this dataaudit's {SCHEMA_VERSION}",
            "upgrade dataaudit, or re-scan with --db pointing at a new file",
        )
    if stored < SCHEMA_VERSION and not writing:
        raise DataAuditError(
            f"index schema version {stored} is older than this dataaudit's {SCHEMA_VERSION}",
            "run `dataaudit scan` on the dataset once: it upgrades the index in place "
            "without re-reading unchanged files",
        )
    return stored


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


def get_meta(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
    row = rows[0] if rows else None
    return row[0] if row else None


def write_frame(
    con: duckdb.DuckDBPyConnection, table: str, df: pl.DataFrame, replace: bool = False
) -> None:
    """Insert a frame by column name in one statement (``replace``: upsert on the key)."""
    if df.height == 0:
        return
    verb = "INSERT OR REPLACE INTO" if replace else "INSERT INTO"
    con.register("_frame", df.to_arrow())
    try:
        con.execute(f"{verb} {table} BY NAME SELECT * FROM _frame")
    finally:
        con.unregister("_frame")


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the stored numbers."""
    out = {"python": platform.python_version()}
    for dist in ("dataaudit", "pillow", "imagehash", "duckdb", "polars", "numpy", "xxhash"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    for mod in ("torch", "torchvision", "timm"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def start_run(con: duckdb.DuckDBPyConnection, kind: str, params: dict[str, Any]) -> int:
    """Record the start of a run and return its id."""
    run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()[0][0]
    con.execute(
        "INSERT INTO runs (run_id, kind, status, started_at, params, versions) "
        "VALUES (?, ?, 'running', ?, ?, ?)",
        [run_id, kind, datetime.now(), json.dumps(params, default=str),
         json.dumps(library_versions())],
    )  # fmt: skip
    return int(run_id)


def finish_run(
    con: duckdb.DuckDBPyConnection, run_id: int, status: str, counts: dict[str, Any]
) -> None:
    con.execute(
        "UPDATE runs SET status = ?, ended_at = ?, counts = ? WHERE run_id = ?",
        [status, datetime.now(), json.dumps(counts, default=str), run_id],
    )


def mark_stale_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Runs still ``running`` when a writer opens the index died with their process (one
    writer holds the file at a time): mark them ``interrupted``. Returns how many."""
    return con.execute(
        "UPDATE runs SET status = 'interrupted', ended_at = coalesce(ended_at, ?), "
        "counts = coalesce(counts, ?) WHERE status = 'running'",
        [datetime.now(), json.dumps({"note": "found running by a later scan: its process ended "
                                     "before it could record how it stopped"})],
    ).fetchall()[0][0]  # fmt: skip


# The kNN graph is derived from every vector. Whoever changes a vector marks it stale in
# the same transaction; only a committed rebuild clears the mark, so an interrupted
# rebuild is redone by the next scan.
_GRAPH_STALE_KEY = "knn_needs_rebuild"


def mark_graph_stale(con: duckdb.DuckDBPyConnection) -> None:
    set_meta(con, _GRAPH_STALE_KEY, "1")


def clear_graph_stale(con: duckdb.DuckDBPyConnection) -> None:
    set_meta(con, _GRAPH_STALE_KEY, "0")


def graph_is_stale(con: duckdb.DuckDBPyConnection) -> bool:
    return get_meta(con, _GRAPH_STALE_KEY) == "1"
