"""Decide what a scan must read: stage the folder listing, then new/changed/deleted in SQL.

The listing streams into the ``_scan_seen`` table and the plan is a join against the
index, so memory does not grow with the dataset; the work list (``_scan_todo``) streams
back out as :class:`~dataaudit.scan.task.Task` values from its own cursor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from dataaudit import discover
from dataaudit.scan.hooks import EmbedHook
from dataaudit.scan.identity import disk_name, escaped, file_id, storable
from dataaudit.scan.measure import MEASURE_CHANGES, MEASURE_VERSION
from dataaudit.scan.task import TASK_COLUMNS, Task
from dataaudit.store import db

_STAGE_BATCH = 50_000  # listing rows per insert


@dataclass
class Discovery:
    """What the listing found."""

    files_seen: int
    layout: str
    # Folders (ending in "/") and files that could not be listed or examined, with why:
    # what they held is unknown, so their indexed rows are kept, not deleted.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. labels-file rows matching nothing


@dataclass
class Plan:
    """How many files fall in each bucket; ``todo`` of them must be read."""

    todo: int
    changed: int
    unchanged: int
    embed_only: int  # unchanged images read again only to embed them
    deleted: int


def stage_discovered(
    con: duckdb.DuckDBPyConnection,
    root: Path | None,
    index_path: Path,
    labels: pl.DataFrame | None,
    entries: Iterable[discover.FileEntry] | None = None,
) -> Discovery:
    """Stream the folder walk into ``_scan_seen`` with split and label resolved.

    Folders and files the walk could not read go to ``_scan_unlisted`` (in both stored
    forms a path under them can take), so planning keeps their rows. ``entries`` replaces
    the walk of ``root`` (the Ray engine passes an object-store listing; the index is not
    inside it).
    """
    con.execute(
        "CREATE OR REPLACE TABLE _scan_seen (file_id BIGINT, path VARCHAR, split VARCHAR, "
        "label VARCHAR, bytes BIGINT, mtime_ns BIGINT, has_image_ext BOOLEAN)"
    )
    own_files = {_relative(p, root) for p in _index_files(index_path)} if root else set()
    batch: list[tuple[Any, ...]] = []
    cols = ["file_id", "path", "split", "label", "bytes", "mtime_ns", "has_image_ext"]
    unreadable: list[tuple[str, str]] = []

    def on_error(rel: str, exc: OSError) -> None:
        unreadable.append((rel, f"{exc.strerror or exc} (errno {exc.errno})"))

    for entry in discover.walk(root, on_error) if entries is None else entries:
        if entry.rel_path in own_files:
            continue
        path = storable(entry.rel_path)
        split, label = discover.split_and_label(path)
        row = (file_id(entry.rel_path), path, split, label, entry.size,
               entry.mtime_ns, entry.has_image_ext)  # fmt: skip
        batch.append(row)
        if len(batch) >= _STAGE_BATCH:
            db.write_frame(con, "_scan_seen", pl.DataFrame(batch, schema=cols, orient="row"))
            batch.clear()
    db.write_frame(con, "_scan_seen", pl.DataFrame(batch, schema=cols, orient="row"))
    unlisted = {(form, rel == "" or rel.endswith("/")) for rel, _ in unreadable
                for form in (storable(rel), escaped(rel))}  # fmt: skip
    con.execute("CREATE OR REPLACE TABLE _scan_unlisted (prefix VARCHAR, is_dir BOOLEAN)")
    if unlisted:
        con.executemany("INSERT INTO _scan_unlisted VALUES (?, ?)", sorted(unlisted))
    if labels is not None:
        con.register("_labels", labels.to_arrow())
        con.execute(
            "UPDATE _scan_seen SET label = l.label, split = coalesce(l.split, _scan_seen.split) "
            "FROM _labels l WHERE l.path = _scan_seen.path"
        )
        unmatched, example = con.execute(
            "SELECT count(*), min(path) FROM _labels "
            "WHERE path NOT IN (SELECT path FROM _scan_seen)"
        ).fetchall()[0]
        con.unregister("_labels")
        warning = discover.unmatched_labels_warning(labels.height, unmatched, example)
    seen = con.execute("SELECT count(*) FROM _scan_seen").fetchall()[0][0]
    shown = [(storable(rel) or "./", why) for rel, why in unreadable]
    return Discovery(
        seen,
        _layout(con, labels is not None),
        shown,
        [warning] if labels is not None and warning else [],
    )


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


def invalidate_old_measurements(con: duckdb.DuckDBPyConnection) -> int:
    """Rows measured by an older definition of the statistics are measured again.

    Only the rows each newer version's change affects (``MEASURE_CHANGES``) are marked;
    an index of unknown version is re-measured whole. Returns how many rows were marked.
    """
    stored = db.get_meta(con, "measure_version")
    marked = 0
    if stored != str(MEASURE_VERSION):
        where = _changed_rows(stored)
        if where is not None:  # no file has mtime -1: the plan re-reads these
            marked = con.execute(f"UPDATE images SET mtime_ns = -1 WHERE {where}").fetchall()[0][0]
    db.set_meta(con, "measure_version", str(MEASURE_VERSION))
    return marked


def _changed_rows(stored: str | None) -> str | None:
    """SQL selecting rows an upgrade from ``stored`` must re-measure (None: none)."""
    try:
        old = int(stored) if stored is not None else 0
    except ValueError:
        old = 0
    if old > MEASURE_VERSION:
        return "TRUE"  # written by a newer dataaudit: trust nothing
    preds = [MEASURE_CHANGES.get(v) for v in range(old + 1, MEASURE_VERSION + 1)]
    if not preds:
        return None
    if any(p is None for p in preds) or old == 0:
        return "TRUE"
    return " OR ".join(f"({p})" for p in preds)


def plan(con: duckdb.DuckDBPyConnection, found: Discovery, embed: EmbedHook | None = None) -> Plan:
    """Work out new / changed / unchanged / deleted files and write the work list.

    A file is deleted only when its folder was listed and it was not in it: rows under a
    folder that could not be read are kept. With embeddings on, unchanged images that have
    no vector yet (an earlier scan ran with --no-embed, or with another model) are read
    again too.
    """
    gone = (
        "file_id NOT IN (SELECT file_id FROM _scan_seen) AND NOT EXISTS (SELECT 1 FROM "
        "_scan_unlisted u WHERE (u.is_dir AND starts_with({t}.path, u.prefix)) "
        "OR {t}.path = u.prefix)"
    )
    con.execute("BEGIN")
    deleted = con.execute(f"DELETE FROM images WHERE {gone.format(t='images')}").fetchall()[0][0]
    con.execute("DELETE FROM thumbnails WHERE file_id NOT IN (SELECT file_id FROM images)")
    con.execute(f"DELETE FROM skipped_files WHERE {gone.format(t='skipped_files')}")
    _drop_orphan_vectors(con)
    if embed is not None:
        embed.prepare(con)
    # Labels can change without the bytes changing (a new labels file): apply in place;
    # so can the stored form of a name (an older index's escaping).
    con.execute(
        "UPDATE images SET split = s.split, label = s.label, path = s.path FROM _scan_seen s "
        "WHERE images.file_id = s.file_id AND (images.split IS DISTINCT FROM s.split "
        "OR images.label IS DISTINCT FROM s.label OR images.path <> s.path)"
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
    return Plan(todo, changed, found.files_seen - todo + embed_only, embed_only, deleted)


def _drop_orphan_vectors(con: duckdb.DuckDBPyConnection) -> None:
    """Vectors and graph links of files no longer indexed go, with or without --no-embed."""
    gone = con.execute(
        "DELETE FROM embeddings WHERE file_id NOT IN (SELECT file_id FROM images)"
    ).fetchall()[0][0]
    links = con.execute(
        "DELETE FROM knn WHERE file_id NOT IN (SELECT file_id FROM images) "
        "OR neighbor_id NOT IN (SELECT file_id FROM images)"
    ).fetchall()[0][0]
    con.execute("DELETE FROM embedding_map WHERE file_id NOT IN (SELECT file_id FROM images)")
    if gone or links:
        db.mark_graph_stale(con)


def todo_stream(con: duckdb.DuckDBPyConnection) -> Iterator[Task]:
    """Stream the work list from its own cursor, a record batch at a time.

    Tasks carry the name on disk; the writer stores its :func:`storable` form.
    """
    cur = con.cursor()
    try:
        reader = cur.sql(
            f"SELECT {', '.join(TASK_COLUMNS)} FROM _scan_todo ORDER BY path"
        ).to_arrow_reader(4096)
        for rb in reader:
            d = rb.to_pydict()
            d["path"] = [disk_name(p) for p in d["path"]]
            yield from map(Task._make, zip(*(d[c] for c in TASK_COLUMNS), strict=True))
    finally:
        cur.close()


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS _scan_seen")
    con.execute("DROP TABLE IF EXISTS _scan_todo")
    con.execute("DROP TABLE IF EXISTS _scan_unlisted")
