"""The atomic writer: temp folder then rename, verification, modes, odd names, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import polars as pl
import pytest
import xxhash
from conftest import ODD_NAMES, REPO, _subprocess_env

from dataaudit.errors import DataAuditError
from dataaudit.export import write as write_mod
from dataaudit.export.write import check_destination, file_hash, write_tree


def _tree(root, names: list[str]) -> pl.DataFrame:
    """Write one small distinct file per name; return the frame write_tree takes."""
    rows = []
    for i, name in enumerate(names):
        p = root / "train" / "cat" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        data = f"image {i} {name}".encode() * 50
        p.write_bytes(data)
        rows.append((f"train/cat/{name}", f"train/cat/{name}", xxhash.xxh3_128_hexdigest(data)))
    return pl.DataFrame(rows, schema=["path", "dest", "content_hash"], orient="row")


def _checksums(root) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = file_hash(p)
    return out


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_modes_write_verified_tree_and_leave_source_untouched(tmp_path, mode):
    src = tmp_path / "src"
    files = _tree(src, ODD_NAMES)
    before = _checksums(src)
    out = tmp_path / "out"
    workers = 3 if mode == "hardlink" else 1  # the threaded path too
    write_tree(files, src, out, {"manifest.csv": b"x\n"}, mode=mode, workers=workers)
    assert _checksums(src) == before
    for _rel, dest, h in files.iter_rows():
        p = out / dest
        assert p.exists() and file_hash(p) == h, dest
        assert p.is_symlink() == (mode == "symlink")
    assert (out / "manifest.csv").read_bytes() == b"x\n"
    assert not list(tmp_path.glob(".out.*"))  # no temp folder left


def test_destination_checks(tmp_path):
    src = tmp_path / "src"
    files = _tree(src, ["a.jpg"])
    with pytest.raises(DataAuditError, match="overlaps"):
        check_destination(src / "clean", src, force=True)
    with pytest.raises(DataAuditError, match="overlaps"):
        check_destination(tmp_path, src, force=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataAuditError, match="not empty"):
        write_tree(files, src, out, {})
    assert (out / "keep.txt").read_text() == "mine"
    write_tree(files, src, out, {}, force=True)
    assert not (out / "keep.txt").exists() and (out / "train/cat/a.jpg").exists()


def test_changed_source_fails_and_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    files = _tree(src, ["a.jpg", "b.jpg"])
    (src / "train/cat/b.jpg").write_bytes(b"edited after the scan")
    out = tmp_path / "out"
    with pytest.raises(DataAuditError, match="differ from the index"):
        write_tree(files, src, out, {})
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_interrupted_write_leaves_no_destination(tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = _tree(src, [f"{i}.jpg" for i in range(300)])
    out = tmp_path / "out"

    def stop(done: int, total: int) -> None:
        if done >= 64:
            raise KeyboardInterrupt

    placed = []
    real_place = write_mod._place
    monkeypatch.setattr(
        write_mod, "_place", lambda *a, **k: placed.append(1) or real_place(*a, **k)
    )
    with pytest.raises(KeyboardInterrupt):
        write_tree(files, src, out, {}, progress=stop)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert len(placed) < 300  # the queued copies were dropped, not finished


KILLER = """
import os, signal, sys, polars as pl
from pathlib import Path
from dataaudit.export.write import write_tree
src, out = Path(sys.argv[1]), Path(sys.argv[2])
files = pl.read_parquet(sys.argv[3])
def kill(done, total):
    if done >= 64:
        os.kill(os.getpid(), signal.SIGKILL)
write_tree(files, src, out, {}, progress=kill)
"""


def test_killed_write_leaves_no_destination_and_rerun_completes(tmp_path):
    src = tmp_path / "src"
    files = _tree(src, [f"{i}.jpg" for i in range(300)])
    files.write_parquet(tmp_path / "plan.parquet")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(src), str(out), str(tmp_path / "plan.parquet")],
        env=_subprocess_env(), cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert list(tmp_path.glob(".out.dataaudit-partial"))  # the killed run's leftovers
    write_tree(files, src, out, {})
    assert len(list((out / "train/cat").iterdir())) == 300
    assert not list(tmp_path.glob(".out.*"))


def test_undecodable_file_name_is_found_from_its_stored_form(tmp_path):
    """The scan stores b"bad\\xff.png" as the text ``bad\\xff.png``; export finds the file."""
    src = tmp_path / "src"
    (src / "train" / "cat").mkdir(parents=True)
    raw = os.path.join(os.fsencode(src / "train" / "cat"), b"bad\xff.png")
    with open(raw, "wb") as f:
        f.write(b"pixels")
    files = pl.DataFrame(
        {"path": ["train/cat/bad\\xff.png"], "dest": ["train/cat/bad\\xff.png"],
         "content_hash": [xxhash.xxh3_128_hexdigest(b"pixels")]}
    )  # fmt: skip
    write_tree(files, src, tmp_path / "out", {})
    assert (tmp_path / "out" / "train/cat/bad\\xff.png").read_bytes() == b"pixels"
