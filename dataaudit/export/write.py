"""Write an export atomically: everything goes to a hidden temporary folder beside DEST, is
verified, and only then renamed to DEST. A killed export leaves no DEST (only the temporary
folder, which the next run removes); the source is only ever read.

Every written file is read back and its xxh3-128 compared with the content hash the scan
stored, so a file that changed since the scan (or a short write) fails the export.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import xxhash

from dataaudit.errors import DataAuditError

MODES = ("copy", "hardlink", "symlink")
MARKER = ".dataaudit-export-partial"
CHUNK = 1 << 20

Progress = Callable[[int, int], None]


def check_destination(out: Path, root: Path, force: bool) -> None:
    """Refuse a DEST that overlaps the source, is a file, or is non-empty without force."""
    out_r, root_r = Path(os.path.realpath(out)), Path(os.path.realpath(root))
    if out_r == root_r or root_r in out_r.parents or out_r in root_r.parents:
        raise DataAuditError(
            f"--out {out} overlaps the dataset folder {root}",
            "export next to the dataset, never inside it (the source is never modified)",
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataAuditError(f"--out {out} exists and is not a folder", "pass a new folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataAuditError(f"--out {out} is not empty", "pass --force to replace it")


def source_path(root: Path, rel: str) -> Path:
    """The file on disk for a stored path (undecodable bytes were stored as ``\\xNN``)."""
    p = root / rel
    if "\\x" in rel and not os.path.lexists(p):
        raw = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(0xDC00 + int(m[1], 16)), rel)
        return root / raw
    return p


def write_tree(
    files: pl.DataFrame,
    root: Path,
    out: Path,
    audit: dict[str, bytes],
    mode: str = "copy",
    force: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> None:
    """Place every file (columns path, dest, content_hash) under ``out``, verify, then rename.

    ``audit`` maps relative names (manifest.csv, ...) to their bytes, written last.
    ``workers`` > 1 copies in threads, which can help on network file systems; on a local
    disk one was fastest here (thread hand-offs cost more than they overlap).
    """
    if mode not in MODES:
        raise DataAuditError(f"unknown mode {mode!r}", f"use {', '.join(MODES)}")
    check_destination(out, root, force)
    tmp = out.parent / f".{out.name}.dataaudit-partial"
    _clear_stale(tmp)
    tmp.mkdir(parents=True)
    (tmp / MARKER).write_text("an unfinished dataaudit export; safe to delete\n")
    try:
        for d in sorted({str(Path(p).parent) for p in files["dest"].to_list()}):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        jobs = list(files.select("path", "dest", "content_hash").iter_rows())
        bad = _place_all(jobs, root, tmp, mode, workers, progress)
        if bad:
            shown = "; ".join(f"{p} ({why})" for p, why in bad[:3])
            raise DataAuditError(
                f"{len(bad)} file(s) differ from the index: {shown}",
                "the source changed since the scan: run `dataaudit scan` again, then export",
            )
        written = sum(len(fs) for _, _, fs in os.walk(tmp)) - 1  # minus the marker
        if written != len(jobs):
            raise DataAuditError(
                f"wrote {written} files but the plan has {len(jobs)}", "report this as a bug"
            )
        for name, data in audit.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / MARKER).unlink()
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clear_stale(tmp: Path) -> None:
    """Remove a temporary folder left by a killed export (only if it carries our marker)."""
    if not os.path.lexists(tmp):
        return
    if tmp.is_dir() and not tmp.is_symlink() and (tmp / MARKER).exists():
        shutil.rmtree(tmp)
        return
    raise DataAuditError(f"{tmp} is in the way", "move it away; it is not a dataaudit export")


def _place_all(
    jobs: list[tuple[str, str, str | None]],
    root: Path,
    tmp: Path,
    mode: str,
    workers: int,
    progress: Progress | None,
) -> list[tuple[str, str]]:
    bad: list[tuple[str, str]] = []
    total = len(jobs)
    if progress:
        progress(0, total)
    place = functools.partial(_place, root=root, tmp=tmp, mode=mode)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(place, jobs) if pool else map(place, jobs)
        for done, problem in enumerate(results, start=1):
            if problem:
                bad.append(problem)
            if progress and (done % 64 == 0 or done == total):
                progress(done, total)
    finally:  # on Ctrl-C, drop the queued copies instead of finishing them
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return bad


def _place(job: tuple[str, str, str | None], root: Path, tmp: Path, mode: str):
    """Copy/link one file, then read back what DEST holds and compare its hash."""
    rel, dest_rel, expected = job
    src, dest = source_path(root, rel), tmp / dest_rel
    try:
        if mode == "copy":
            shutil.copyfile(src, dest)
        elif mode == "hardlink":
            os.link(src, dest)
        else:
            os.symlink(os.path.realpath(src), dest)
    except FileNotFoundError:
        return rel, "missing"
    except PermissionError:
        return rel, "permission denied"
    except OSError as exc:
        if mode == "hardlink" and exc.errno in (18, 1):  # EXDEV, EPERM
            raise DataAuditError(
                f"cannot hard-link {rel}: {exc.strerror}",
                "DEST must be on the same file system as the dataset; use --mode copy",
            ) from None
        raise DataAuditError(
            f"cannot write {dest_rel}: {exc}", "check DEST's space and rights"
        ) from None
    got = file_hash(dest)
    if expected is not None and got != expected:
        return rel, "content changed"
    return None


def file_hash(path: Path) -> str:
    """xxh3-128 of a file's bytes, as the scan computes ``content_hash``."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished folder to DEST, replacing an old DEST only now (with --force)."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.dataaudit-old"
    if os.path.lexists(old):
        shutil.rmtree(old)
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
