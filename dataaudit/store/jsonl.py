"""Append-only JSON-lines logs beside the index (reviewer decisions, human-baseline answers).

Each append is one ``write`` of complete lines, flushed to disk, so a reader never sees half a
line and a crash can at worst lose the lines being written; a torn last line is skipped on read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dataaudit.errors import DataAuditError


def append(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """Every well-formed object in the log, oldest first ([] when there is no log yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataAuditError(f"cannot read {path}: {exc}") from exc
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
