"""Human-baseline answers: the label a person gave an image shown without its own.

The app's Human baseline page appends one JSON line per answer to ``human_labels.jsonl``
beside the index file (never into the index, so no write lock is needed); the training
module reads them with ``HumanLabels.for_index(idx).latest()`` to put a person's agreement
with the dataset next to the models'. ``human_label`` is null when the person could not tell.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from dataaudit.store import jsonl

FILE_NAME = "human_labels.jsonl"
SCHEMA = {
    "file_id": pl.Int64,
    "path": pl.String,
    "dataset_label": pl.String,
    "human_label": pl.String,
    "session": pl.String,
    "who": pl.String,
    "at": pl.String,
}


class HumanLabels:
    """Append-only log of human-baseline answers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_index(cls, idx: Any) -> HumanLabels:
        """The log beside an ``Index`` (or beside an index file path)."""
        db_path = Path(getattr(idx, "db_path", idx))
        return cls(db_path.parent / FILE_NAME)

    def record(
        self,
        file_id: int,
        path: str,
        dataset_label: str | None,
        human_label: str | None,
        session: str,
        who: str | None = None,
    ) -> None:
        """Append one answer; a single ``write`` of one line, so readers never see half a line."""
        jsonl.append(
            self.path,
            [{
                "file_id": int(file_id),
                "path": path,
                "dataset_label": dataset_label,
                "human_label": human_label,
                "session": session,
                "who": who or os.environ.get("USER") or "unknown",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }],
        )  # fmt: skip

    def read(self) -> pl.DataFrame:
        """Every answer in the order given (a torn last line from a crash is skipped)."""
        rows = [{k: r.get(k) for k in SCHEMA} for r in jsonl.read(self.path) if "file_id" in r]
        return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)

    def latest(self) -> pl.DataFrame:
        """One answer per (person, image): the latest, so a corrected answer replaces the first."""
        return self.read().unique(["who", "file_id"], keep="last", maintain_order=True)


def agreement(answers: pl.DataFrame) -> dict[str, Any]:
    """Agreement of a person with the dataset: share, a 95 % Wilson interval, answered count.

    Answers without a human label ("can't tell") are counted but not scored.
    """
    scored = answers.filter(pl.col("human_label").is_not_null())
    n = scored.height
    k = scored.filter(pl.col("human_label") == pl.col("dataset_label")).height
    if n == 0:
        return {"answered": answers.height, "scored": 0, "agree": 0, "share": None,
                "low": None, "high": None}  # fmt: skip
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return {"answered": answers.height, "scored": n, "agree": k, "share": p,
            "low": max(0.0, centre - half), "high": min(1.0, centre + half)}  # fmt: skip
