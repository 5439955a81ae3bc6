"""Readers and a writer on one index file at the same time.

DuckDB lets one process write a file and, while it does, no other process may open it, not
even read-only. So:

- readers open a short-lived read-only connection per question and close it at once, which
  keeps the windows in which they block a writer to milliseconds;
- a writer that finds the file held by readers retries for a while (readers come and go)
  and then fails with a message naming the holder, rather than waiting forever;
- a scan copies the index to ``index.snapshot.duckdb`` before it starts writing (when the
  file is small enough) and reports its progress in ``index.progress.json``; a reader that
  finds the file locked reads the snapshot (the last completed state), or else raises
  :class:`IndexBusyError` saying how far the scan is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from dataaudit.errors import DataAuditError, IndexBusyError

SNAPSHOT_SUFFIX = ".snapshot.duckdb"
PROGRESS_SUFFIX = ".progress.json"
SNAPSHOT_MAX_BYTES = 2 * 1024**3  # bigger indexes are not copied; readers wait instead
READ_CONFIG = {"enable_external_access": False}  # user SQL may not read or attach files


def snapshot_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.stem + SNAPSHOT_SUFFIX)


def progress_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.stem + PROGRESS_SUFFIX)


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and ("lock" in text or "different configuration" in text)


def _holder(exc: BaseException) -> str:
    match = re.search(r"PID (\d+)", str(exc))
    return f" (process {match.group(1)})" if match else ""


def read_progress(db_path: Path) -> dict[str, Any]:
    """What the running writer last reported, or {} when nothing is running."""
    try:
        data = json.loads(progress_path(db_path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_progress(db_path: Path, **fields: Any) -> None:
    """Atomically replace the progress file (temp then rename)."""
    target = progress_path(db_path)
    fields.setdefault("pid", os.getpid())
    fields.setdefault("updated", time.time())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".progress-")
    except OSError:
        return  # progress is a courtesy to readers; the writer's own error says what is wrong
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(fields, f)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def clear_progress(db_path: Path) -> None:
    with contextlib.suppress(OSError):
        progress_path(db_path).unlink()


def busy_message(db_path: Path, progress: dict[str, Any]) -> str:
    done, total = progress.get("done"), progress.get("total")
    stage = progress.get("stage") or "scan"
    if isinstance(done, int) and isinstance(total, int) and total:
        return f"a {stage} is running on {db_path}: {done:,} of {total:,} files done"
    return f"a {stage} or another writer is using {db_path}"


class _Locked(Exception):
    """The file stayed locked by another process for the whole wait."""

    def __init__(self, cause: duckdb.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _connect_waiting(
    db_path: Path, wait_s: float, max_delay: float, **kwargs: Any
) -> duckdb.DuckDBPyConnection:
    """Connect, retrying with backoff while another process holds the file's lock.

    Raises :class:`_Locked` when the lock outlasts ``wait_s``; other errors pass through.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(db_path), **kwargs)
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                raise _Locked(exc) from exc
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def connect_read(
    db_path: Path, wait_s: float | None = None
) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A read-only connection to the index, or to its snapshot while a writer holds it.

    Returns the connection and whether it is the snapshot. Raises :class:`IndexBusyError`
    when the file stays locked for ``wait_s`` (default 2 s, or ``$DATAAUDIT_READ_WAIT_S``:
    a short detect run finishes within it) and no snapshot exists.
    """
    if wait_s is None:
        wait_s = float(os.environ.get("DATAAUDIT_READ_WAIT_S", "2"))
    try:
        con = _connect_waiting(db_path, wait_s, 0.25, read_only=True, config=READ_CONFIG)
        return con, False
    except _Locked as locked:
        last = locked.cause
    except duckdb.Error as exc:
        raise DataAuditError(f"cannot open index {db_path}: {exc}") from exc
    snap = snapshot_path(db_path)
    if snap.is_file():
        try:
            return duckdb.connect(str(snap), read_only=True, config=READ_CONFIG), True
        except duckdb.Error:
            pass
    progress = read_progress(db_path)
    raise IndexBusyError(
        busy_message(db_path, progress) + _holder(last),
        "try again when it has finished",
        progress,
    ) from last


def connect_write(db_path: Path, wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """A read-write connection, retrying while short-lived readers hold the file.

    Waits at most ``wait_s`` (default 30 s, or ``$DATAAUDIT_LOCK_WAIT_S``): a reader that
    keeps a connection open (a notebook) must not stall a scan forever.
    """
    if wait_s is None:
        wait_s = float(os.environ.get("DATAAUDIT_LOCK_WAIT_S", "30"))
    try:
        return _connect_waiting(db_path, wait_s, 0.5)
    except _Locked as locked:
        raise DataAuditError(
            f"the index {db_path} is in use by another process{_holder(locked.cause)}",
            "close the program holding it open (a notebook or an open connection) "
            "and run the command again",
        ) from locked.cause


def take_snapshot(db_path: Path, max_bytes: int | None = None) -> bool:
    """Copy the index (its last completed state) for readers to use while a scan writes.

    Called before the writer opens the file. A stale snapshot is removed when the index is
    too big to copy, so readers never see an older state than they would otherwise.
    """
    if max_bytes is None:
        max_bytes = int(os.environ.get("DATAAUDIT_SNAPSHOT_MAX_BYTES", SNAPSHOT_MAX_BYTES))
    snap = snapshot_path(db_path)
    if not db_path.is_file() or db_path.with_name(db_path.name + ".wal").exists():
        return False  # nothing yet, or a crashed writer's WAL: the file alone is not a state
    if db_path.stat().st_size > max_bytes:
        with contextlib.suppress(OSError):
            snap.unlink()
        return False
    try:
        fd, tmp = tempfile.mkstemp(dir=db_path.parent, prefix=".snapshot-")
        os.close(fd)
    except OSError:
        return False
    try:
        shutil.copyfile(db_path, tmp)
        os.replace(tmp, snap)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


@contextlib.contextmanager
def writing(db_path: Path, stage: str) -> Iterator[None]:
    """Bracket a write run: snapshot for readers first, progress file while it lasts."""
    take_snapshot(db_path)
    write_progress(db_path, stage=stage, done=0, total=None)
    try:
        yield
    finally:
        clear_progress(db_path)
