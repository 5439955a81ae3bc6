"""Find the files of a dataset and infer split and label from the folder layout.

Layouts understood without configuration:
``root/{split}/{label}/img``, ``root/{label}/img`` and ``root/img`` (unlabelled).
Split folders are matched case-insensitively (train/training, val/valid/validation/dev,
test/testing). A labels file (CSV or Parquet with ``path,label[,split]``) overrides the
folders for flat layouts.

Discovery streams: :func:`walk` yields entries one at a time, so a dataset of ten million
files never sits in memory as a list.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dataaudit.errors import DataAuditError

INDEX_DIR_NAME = ".dataaudit"

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
        ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".jp2", ".j2k", ".heic",
        ".heif", ".avif", ".psd",
    }
)  # fmt: skip

# OS and editor litter that is never part of a dataset.
JUNK_NAMES = frozenset({"Thumbs.db", "thumbs.db", "desktop.ini", "Desktop.ini", "Icon\r"})


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file under the root, as discovery saw it."""

    rel_path: str  # POSIX-style, relative to the root
    size: int
    mtime_ns: int
    has_image_ext: bool


def is_skipped_name(name: str) -> bool:
    """Hidden files, AppleDouble ``._*`` files and OS junk are not dataset content."""
    return name.startswith(".") or name in JUNK_NAMES


def _scandir(path: str):  # noqa: ANN202 - the one place a folder is listed (tests inject faults)
    return os.scandir(path)


def walk(root: Path, on_error: Callable[[str, OSError], None] | None = None) -> Iterator[FileEntry]:
    """Yield every regular file under ``root`` in a stable order.

    Symlinks are followed only while their target stays inside the root, and each real
    directory is entered once, so links can neither escape the root nor loop. A folder
    that cannot be listed, or an entry that cannot be examined (EIO, EACCES), is passed to
    ``on_error`` as (relative path, error): its files are unknown, not deleted. A folder's
    relative path ends with "/" ("" for the root itself).
    """
    root_real = Path(os.path.realpath(root))
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[tuple[str, str]] = [(str(root), "")]  # (filesystem path, relative prefix)

    def failed(rel: str, exc: OSError) -> None:
        if on_error is not None and exc.errno != errno.ENOENT:  # gone is gone, not unknown
            on_error(rel, exc)

    while stack:
        dir_path, prefix = stack.pop()
        try:
            st = os.stat(dir_path)
        except OSError as exc:
            failed(prefix, exc)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        try:
            with _scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            failed(prefix, exc)
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if is_skipped_name(entry.name):
                continue
            rel = f"{prefix}{entry.name}"
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(Path(target), root_real):
                        continue
                st_entry = os.stat(entry.path)  # follows an in-root link
            except OSError as exc:
                failed(rel, exc)
                continue
            if stat.S_ISDIR(st_entry.st_mode):
                subdirs.append((entry.path, rel + "/"))
            elif stat.S_ISREG(st_entry.st_mode):
                ext = os.path.splitext(entry.name)[1].lower()
                yield FileEntry(
                    rel, st_entry.st_size, st_entry.st_mtime_ns, ext in IMAGE_EXTENSIONS
                )
        stack.extend(reversed(subdirs))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def split_and_label(rel_path: str) -> tuple[str | None, str | None]:
    """Infer (split, label) from the folders of a relative path.

    The first folder is a split when its name is a known split alias; the first folder
    after it (if any) is the label. Files directly in the root, or directly in a split
    folder, are unlabelled.
    """
    parts = rel_path.split("/")[:-1]
    split = None
    if parts and parts[0].lower() in SPLIT_ALIASES:
        split = SPLIT_ALIASES[parts[0].lower()]
        parts = parts[1:]
    label = parts[0] if parts else None
    return split, label


def describe_layout(n_split: int, n_label: int, n_total: int) -> str:
    """Name the layout from how many files carried a split and a label."""
    if n_total == 0:
        return "empty"
    if n_split == n_total and n_label == n_total:
        return "split/label/image"
    if n_split == 0 and n_label == n_total:
        return "label/image"
    if n_split == 0 and n_label == 0:
        return "flat (unlabelled)"
    if n_split == n_total and n_label == 0:
        return "split/image (unlabelled)"
    return "mixed"


def resolve_root(path: str | Path) -> Path:
    """Check that the dataset root exists and is a folder."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataAuditError(
            f"path does not exist: {path}", "pass the folder that holds your images"
        )
    if not root.is_dir():
        raise DataAuditError(f"not a folder: {path}", "pass the folder that holds your images")
    return root.resolve()


def load_labels(path: str | Path):  # -> polars.DataFrame
    """Read a labels file (CSV or Parquet) with columns ``path,label[,split]``.

    Paths are relative to the dataset root. Split names are normalised like folder names.
    """
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise DataAuditError(f"labels file not found: {path}", "pass a CSV or Parquet file")
    try:
        if p.suffix.lower() == ".parquet":
            df = pl.read_parquet(p)
        else:
            df = pl.read_csv(p, infer_schema_length=0)  # every column as text
    except Exception as exc:  # polars raises many types for bad files
        raise DataAuditError(
            f"cannot read labels file {path}: {exc}", "use CSV or Parquet with path,label[,split]"
        ) from exc
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise DataAuditError(
            f"labels file {path} lacks column(s) {', '.join(sorted(missing))}",
            f"it has {', '.join(df.columns)}; expected path,label[,split]",
        )
    cols = [pl.col("path").cast(pl.String).str.replace_all("\\\\", "/").str.strip_prefix("./")]
    cols.append(pl.col("label").cast(pl.String))
    if "split" in df.columns:
        _check_splits(df["split"].cast(pl.String), path)
        aliases = pl.col("split").cast(pl.String).str.strip_chars().str.to_lowercase()
        cols.append(aliases.replace(SPLIT_ALIASES).replace("", None).alias("split"))
    else:
        cols.append(pl.lit(None, dtype=pl.String).alias("split"))
    return df.select(cols).unique(subset="path", keep="last")


def _check_splits(splits, path: str | Path) -> None:  # splits: polars.Series
    """Split values must name a split (train/val/test or an alias) or be empty: the same
    names a folder layout yields, so every split in an index means the same thing."""
    bad = [
        (row, value)
        for row, value in enumerate(splits.to_list(), start=2)  # row 1 is the header
        if value is not None and value.strip() and value.strip().lower() not in SPLIT_ALIASES
    ]
    if bad:
        row, value = bad[0]
        raise DataAuditError(
            f"labels file {path}: split value {value!r} (line {row}) is not a split name"
            + (f" ({len(bad)} such lines)" if len(bad) > 1 else ""),
            f"use one of {', '.join(sorted(set(SPLIT_ALIASES)))}, or leave it empty",
        )


def unmatched_labels_warning(rows: int, unmatched: int, example: str | None) -> str | None:
    """Say how many labels-file rows name no file of the dataset (None when all match).

    A file whose paths are relative to another folder (or absolute) applies no label at all;
    the scan must not pass that off as success.
    """
    if not unmatched:
        return None
    return (
        f"{unmatched:,} of {rows:,} row(s) of the labels file match no file of the dataset "
        f"(e.g. {example!r}; paths must be relative to the dataset folder)"
    )
