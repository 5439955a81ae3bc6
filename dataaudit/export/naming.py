"""Where each exported file goes: ``{split}/{label}/{name}``, with collisions resolved.

Two files can want the same destination: a relabel merges two folders that both hold
``0001.jpg``, a re-split gathers ``train/x.jpg`` and ``test/x.jpg`` into one split, or a
labels file names files from different subfolders. The first by source path keeps its name;
every other gets ``{stem}.{8 hex of a hash of its source path}{ext}``, which depends only on
the file itself, so reruns give the same names. Names are compared case-folded, so the
tree also unpacks on case-insensitive file systems (macOS, Windows).
"""

from __future__ import annotations

import os

import polars as pl
import xxhash

UNLABELLED = "_unlabelled"
MAX_NAME_BYTES = 255
RESERVED = ("manifest.csv", "manifest.parquet", "changes.csv", "summary.json", "metadata.csv")


def folder_name(value: str | None, empty: str) -> str:
    """A label or split as one safe folder name (no separators, never '.' or '..')."""
    if value is None or value == "":
        return empty
    name = value.replace("/", "_").replace("\\", "_").replace("\0", "_")
    if name in (".", ".."):
        name = "_" + name
    return _fit(name)


def _fit(name: str, ext: str = "") -> str:
    """Trim a stem so that stem + ext fits in a file name (255 bytes)."""
    budget = MAX_NAME_BYTES - len(ext.encode())
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= budget:
        return name + ext
    return raw[:budget].decode("utf-8", "ignore") + ext


def assign_destinations(files: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add a ``dest`` column (POSIX, relative to DEST); return (files, renames).

    ``files`` needs file_id, path, split, label. Files without a split go to the top level;
    unlabelled files go to ``_unlabelled`` when others have labels, else straight into the
    split folder. ``renames``: file_id, path, dest, reason for every renamed file.
    """
    any_label = files["label"].drop_nulls().len() > 0
    # casefolded dest -> what holds it; the audit files' names are reserved
    taken: dict[str, str] = {name: "the export's own files" for name in RESERVED}
    for split in files["split"].drop_nulls().unique().to_list():
        taken[f"{folder_name(split, '_nosplit')}/metadata.csv".casefold()] = "metadata.csv"
    renames: list[tuple[int, str, str, str]] = []
    order = files.with_row_index("_row").sort("path")
    rows = order.select("_row", "file_id", "path", "split", "label").iter_rows()
    by_row: dict[int, str] = {}
    for row, fid, path, split, label in rows:
        parts = []
        if split is not None:
            parts.append(folder_name(split, "_nosplit"))
        if any_label:
            parts.append(folder_name(label, UNLABELLED))
        base = path.rsplit("/", 1)[-1]
        dest = "/".join([*parts, _fit(base)])
        if dest.casefold() in taken:
            stem, ext = os.path.splitext(base)
            tag = xxhash.xxh3_64_hexdigest(path.encode("utf-8", "surrogateescape"))[:8]
            new = "/".join([*parts, _fit(f"{stem}.{tag}", ext)])
            n = 1
            while new.casefold() in taken:  # a hash clash on 32 bits: count up
                new = "/".join([*parts, _fit(f"{stem}.{tag}-{n}", ext)])
                n += 1
            renames.append((fid, path, new, f"name taken by {taken[dest.casefold()]}"))
            dest = new
        taken[dest.casefold()] = path
        by_row[row] = dest
    dests = [by_row[i] for i in range(files.height)]
    out = files.with_columns(pl.Series("dest", dests, dtype=pl.String))
    ren = pl.DataFrame(
        renames,
        schema={"file_id": pl.Int64, "path": pl.String, "dest": pl.String, "reason": pl.String},
        orient="row",
    )
    return out, ren
