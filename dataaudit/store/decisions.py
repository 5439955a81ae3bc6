"""Reviewer decisions (keep / drop / relabel), kept beside the index, never inside it.

An append-only JSON-lines log, ``decisions.jsonl`` next to the index file: the app records
decisions without ever needing the index's write lock (a scan may be running), every
decision keeps who made it, when and why, and export reads the latest one per file.
Each line is written with a single ``write`` of a complete line and flushed to disk, so a
crash can at worst lose the line being written, never corrupt earlier ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from dataaudit.errors import DataAuditError
from dataaudit.store import jsonl

if TYPE_CHECKING:
    from dataaudit.index import Index

ACTIONS = ("keep", "drop", "relabel")
FILE_NAME = "decisions.jsonl"
SCHEMA = {
    "file_id": pl.Int64,
    "path": pl.String,
    "action": pl.String,
    "new_label": pl.String,
    "reason": pl.String,
    "who": pl.String,
    "at": pl.String,
}


class Decisions:
    """The decision log of one index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_index(cls, index: Index | str | Path) -> Decisions:
        db_path = Path(getattr(index, "db_path", index))
        return cls(db_path.with_name(FILE_NAME))

    def record(
        self,
        file_ids: Sequence[int],
        paths: Sequence[str],
        action: str,
        new_label: str | None = None,
        reason: str = "",
        who: str | None = None,
    ) -> int:
        """Append one decision per file; returns how many were recorded."""
        if action not in ACTIONS:
            raise DataAuditError(f"unknown decision {action!r}", f"use one of {', '.join(ACTIONS)}")
        if action == "relabel" and not (new_label and str(new_label).strip()):
            raise DataAuditError("a relabel decision needs the new label")
        if len(file_ids) != len(paths):
            raise DataAuditError("file_ids and paths must have the same length")
        if not file_ids:
            return 0
        at = datetime.now(UTC).isoformat(timespec="seconds")
        who = who or os.environ.get("USER") or "unknown"
        jsonl.append(
            self.path,
            [
                {
                    "file_id": int(fid),
                    "path": str(p),
                    "action": action,
                    "new_label": str(new_label) if action == "relabel" else None,
                    "reason": reason,
                    "who": who,
                    "at": at,
                }
                for fid, p in zip(file_ids, paths, strict=True)
            ],
        )
        return len(file_ids)

    def history(self) -> pl.DataFrame:
        """Every decision ever recorded, oldest first (a torn last line is skipped)."""
        rows = [
            {k: row.get(k) for k in SCHEMA}
            for row in jsonl.read(self.path)
            if row.get("action") in ACTIONS and "file_id" in row
        ]
        return pl.DataFrame(rows, schema=SCHEMA)

    def current(self) -> pl.DataFrame:
        """The decision in force per file: the latest one. ``keep`` overrides a rule that
        would drop the file (export honours it) and clears an earlier drop or relabel."""
        latest = self.history().with_row_index("_order")
        latest = latest.sort("_order").group_by("file_id", maintain_order=True).last()
        return latest.drop("_order").sort("path")

    def to_csv(self) -> str:
        return self.current().write_csv()
