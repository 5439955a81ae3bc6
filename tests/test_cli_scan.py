"""``dataaudit scan`` as a user runs it: summaries, one-line errors, exit codes, Ctrl-C, kill -9.

Most tests call ``dataaudit.cli.main`` in-process (``cli``); those about exit codes, stderr
and signals run the real ``python -m dataaudit`` in a subprocess (``run_cli``/``start_cli``).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

FAST = ("--no-detect", "--no-embed", "--workers", "0", "-q")  # the scan alone, in-process


def assert_one_error_line(rc: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dataaudit: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


# ------------------------------------------------------------------ summaries


def test_scan_prints_a_summary(tmp_path, make_image, cli):
    for i in range(3):
        make_image(tmp_path / "train" / "cat" / f"{i}.png")
    make_image(tmp_path / "test" / "dog" / "x.jpg")
    (tmp_path / "test" / "dog" / "broken.jpg").write_bytes(b"")
    (tmp_path / "README.txt").write_text("about this data")
    rc, out, err = cli("scan", tmp_path, *FAST)
    assert rc == 0, err
    assert "layout          split/label/image" in out
    assert "files seen      6" in out
    assert "images indexed  5" in out
    assert "6 new, 0 changed, 0 unchanged, 0 removed" in out  # new counts every file
    assert "not images      1" in out
    assert "unreadable      1" in out
    assert (tmp_path / ".dataaudit" / "index.duckdb").is_file()
    rc, out, _ = cli("scan", tmp_path, *FAST)
    assert "0 new, 0 changed, 6 unchanged, 0 removed" in out


def test_folder_without_images(tmp_path, cli):
    (tmp_path / "empty label").mkdir()
    (tmp_path / "notes.md").write_text("# nothing here")
    rc, out, err = cli("scan", tmp_path, *FAST)
    assert rc == 0, err
    assert "images indexed  0" in out
    assert "not images      1" in out


def test_empty_folder_with_detectors(tmp_path, cli):
    """The default path (detectors on) must also cope with an index of zero images."""
    rc, out, err = cli("scan", tmp_path, "--no-embed", "--workers", "0", "-q")
    assert rc == 0, err
    assert "images indexed  0" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions (see test_scan.py)")
def test_read_only_folder_indexes_into_the_cache(
    tmp_path, monkeypatch, make_image, run_cli, snapshot
):
    from dataaudit.store.db import fallback_index_dir

    root = tmp_path / "ro"
    make_image(root / "cat" / "a.png")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the child inherits it
    before = snapshot(root)
    for p in (root / "cat", root):
        p.chmod(0o555)
    try:
        rc, out, err = run_cli("scan", root, *FAST)
    finally:
        for p in (root, root / "cat"):
            p.chmod(0o755)
    assert rc == 0, err
    index = fallback_index_dir(root) / "index.duckdb"
    assert index.is_file()
    assert str(index) in out.replace("\n", "")
    assert snapshot(root) == before


def test_brackets_in_paths_are_printed_verbatim(tmp_path, make_image, cli):
    root = tmp_path / "data [v2] [/x]"
    make_image(root / "a.png")
    rc, out, err = cli("scan", root, *FAST)
    assert rc == 0, err
    assert f"Indexed {root}" in out.replace("\n", "")


def test_scan_with_labels_file(tmp_path, make_image, cli, index_rows):
    root = tmp_path / "flat"
    for name in ("a.png", "b.png", "c.png"):
        make_image(root / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\na.png,cat,train\nb.png,dog,VALID\n")
    rc, out, err = cli("scan", root, "--labels", labels, *FAST)
    assert rc == 0, err
    assert "(labels from file)" in out
    rows = index_rows(root / ".dataaudit" / "index.duckdb")
    assert {p: (r["split"], r["label"]) for p, r in rows.items()} == {
        "a.png": ("train", "cat"),
        "b.png": ("val", "dog"),
        "c.png": (None, None),
    }


def test_labels_file_without_label_column(tmp_path, make_image, cli):
    make_image(tmp_path / "data" / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,class\na.png,cat\n")
    rc, _, err = cli("scan", tmp_path / "data", "--labels", labels, *FAST)
    assert_one_error_line(rc, err, "lacks column(s) label", "path,label")
    assert not (tmp_path / "data" / ".dataaudit").exists()  # checked before anything is written


def test_db_option(tmp_path, make_image, cli, query):
    make_image(tmp_path / "data" / "a.png")
    db = tmp_path / "elsewhere" / "my.duckdb"
    rc, out, err = cli("scan", tmp_path / "data", "--db", db, *FAST)
    assert rc == 0, err
    assert query(db, "SELECT path FROM images") == [("a.png",)]
    assert not (tmp_path / "data" / ".dataaudit").exists()


def test_thumb_size_option(tmp_path, make_image, cli, query):
    make_image(tmp_path / "a.png", size=(100, 50))
    rc, _, err = cli("scan", tmp_path, "--thumb-size", "20", *FAST)
    assert rc == 0, err
    (jpeg,) = query(tmp_path / ".dataaudit" / "index.duckdb", "SELECT jpeg FROM thumbnails")[0]
    assert Image.open(io.BytesIO(jpeg)).size == (20, 10)


def test_source_folder_untouched_by_the_full_default_pipeline(tmp_path, make_image, cli, snapshot):
    for i in range(4):
        make_image(tmp_path / "cat" / f"{i}.jpg", color=(i * 50, 10, 10))
    make_image(tmp_path / "cat" / "dup.jpg", color=(0, 10, 10))
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"<html>nope</html>")
    before = snapshot(tmp_path)
    rc, _, err = cli("scan", tmp_path, "--no-embed", "--workers", "0", "-q")
    assert rc == 0, err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ errors: one line, exit 2


def test_missing_path_is_one_line(tmp_path, run_cli):
    rc, out, err = run_cli("scan", tmp_path / "no such folder", *FAST)
    assert_one_error_line(rc, err, "path does not exist", "no such folder")
    assert out == ""


def test_path_is_a_file(tmp_path, make_image, cli):
    f = make_image(tmp_path / "a.png")
    rc, _, err = cli("scan", f, *FAST)
    assert_one_error_line(rc, err, "not a folder")


def test_index_that_is_not_duckdb_is_left_untouched(tmp_path, make_image, run_cli):
    make_image(tmp_path / "data" / "a.png")
    bogus = tmp_path / "index.duckdb"
    bogus.write_bytes(b"SQLite format 3\x00" + bytes(200))
    before = (bogus.read_bytes(), bogus.stat().st_mtime_ns)
    rc, _, err = run_cli("scan", tmp_path / "data", "--db", bogus, *FAST)
    assert_one_error_line(rc, err, "not a DuckDB database", str(bogus))
    assert (bogus.read_bytes(), bogus.stat().st_mtime_ns) == before
    assert sorted(os.listdir(tmp_path)) == ["data", "index.duckdb"]


def test_index_path_that_is_a_folder(tmp_path, make_image, cli):
    make_image(tmp_path / "data" / "a.png")
    (tmp_path / "idx").mkdir()
    rc, _, err = cli("scan", tmp_path / "data", "--db", tmp_path / "idx", *FAST)
    assert_one_error_line(rc, err, "is a folder")
    assert list((tmp_path / "idx").iterdir()) == []


def test_empty_index_file_is_refused(tmp_path, make_image, cli):
    make_image(tmp_path / "data" / "a.png")
    empty = tmp_path / "made-by-touch.duckdb"
    empty.touch()
    rc, _, err = cli("scan", tmp_path / "data", "--db", empty, *FAST)
    assert_one_error_line(rc, err, "cannot open index", str(empty))
    assert empty.stat().st_size == 0


def test_index_of_another_dataset(tmp_path, make_image, cli):
    make_image(tmp_path / "a" / "1.png")
    make_image(tmp_path / "b" / "1.png")
    db = tmp_path / "shared.duckdb"
    assert cli("scan", tmp_path / "a", "--db", db, *FAST)[0] == 0
    rc, _, err = cli("scan", tmp_path / "b", "--db", db, *FAST)
    assert_one_error_line(rc, err, "belongs to")


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--bogus",), "No such option: --bogus"), (("--workers", "abc"), "--workers"),
     (("--workers", "-1"), "--workers"), (("--thumb-size", "x"), "--thumb-size")],
    ids=["unknown-option", "workers-text", "workers-negative", "thumb-size"],
)  # fmt: skip
def test_misuse_is_one_line_without_traceback(tmp_path, cli, args, needle):
    rc, out, err = cli("scan", tmp_path, *args)
    assert_one_error_line(rc, err, needle, "dataaudit scan --help")
    assert out == ""
    assert not (tmp_path / ".dataaudit").exists()


def test_misuse_through_the_real_entry_point(tmp_path, run_cli):
    """The long message of a bad value stays on one line at the default 80 columns."""
    rc, out, err = run_cli("scan", tmp_path, "--workers", "abc")
    assert_one_error_line(rc, err, "--workers", "dataaudit scan --help")
    assert len(err.strip()) > 80
    assert out == ""


def test_unknown_command(cli):
    rc, _, err = cli("scna")
    assert_one_error_line(rc, err, "No such command")


def test_no_arguments_shows_help(run_cli):
    rc, out, err = run_cli()
    assert rc == 0, err
    assert "scan" in out and "Usage" in out


def test_in_use_index_is_a_clear_error(tmp_path, make_image, cli):
    make_image(tmp_path / "a.png")
    assert cli("scan", tmp_path, *FAST)[0] == 0
    db = tmp_path / ".dataaudit" / "index.duckdb"
    holder = subprocess.Popen(
        ["python3", "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        rc, _, err = cli("scan", tmp_path, *FAST)
        assert_one_error_line(rc, err, "in use by another process")
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ interruption


def add_images(root: Path, start: int, n: int) -> None:
    """n noisy 256 px JPEGs: a few ms each to measure, so a scan of hundreds takes seconds."""
    rng = np.random.default_rng(start)
    tile = rng.integers(0, 256, (256, 512, 3), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        shift = (i * 7) % 256
        Image.fromarray(tile[:, shift : shift + 256]).save(root / f"{i:05d}.jpg", quality=90)


def committed_images(db: Path, scratch: Path) -> int:
    """Rows committed so far by a running scan (whose file is locked): count them in a copy."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "copy.duckdb"
    for p in scratch.iterdir():
        p.unlink()
    try:
        shutil.copyfile(db, copy)
        if Path(f"{db}.wal").exists():
            shutil.copyfile(f"{db}.wal", f"{copy}.wal")
        con = duckdb.connect(str(copy))
        try:
            return con.execute("SELECT count(*) FROM images").fetchall()[0][0]
        finally:
            con.close()
    except (OSError, duckdb.Error):
        return 0  # not created yet, or caught mid-write: look again


SCAN_ARGS = ("--workers", "2", "-q", "--no-detect", "--no-embed")


def scan_caught_midway(start_cli, root: Path, scratch: Path):
    """A real scan (two workers) that has durably written some rows of this run, still running.

    A fast machine may be near the end (or done) before it can be caught; then more files are
    added and the incremental re-scan of those is caught instead, in its first half.
    Returns (process, rows seen, number of files).
    """
    db = root / ".dataaudit" / "index.duckdb"
    n_files, batch = 0, 600
    for _ in range(4):
        add_images(root, n_files, batch)
        n_files += batch
        baseline = committed_images(db, scratch) if db.exists() else 0
        proc = start_cli(
            "scan", root, *SCAN_ARGS,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            seen = committed_images(db, scratch)
            if baseline < seen <= baseline + batch // 2:
                return proc, seen, n_files
            if seen > baseline:
                break  # too close to the end to be sure of landing midway: let it finish
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        batch *= 2
    pytest.fail("could not catch a scan midway")


def group_alive(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if line.split()[1] == str(pgid)]


def wait_group_gone(pgid: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (alive := group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.mark.slow
def test_kill_9_midway_then_resume(tmp_path, start_cli, run_cli, query):
    root = tmp_path / "many"
    proc, seen, n = scan_caught_midway(start_cli, root, tmp_path / "scratch")
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, like the OOM killer
    proc.communicate(timeout=30)
    leftover = wait_group_gone(proc.pid)
    if leftover:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not leftover, f"workers outlived their killed parent: {leftover}"

    rc, out, err = run_cli("scan", root, *SCAN_ARGS)
    assert rc == 0, err
    db = root / ".dataaudit" / "index.duckdb"
    assert query(db, "SELECT count(*), count(DISTINCT path) FROM images") == [(n, n)]
    runs = query(db, "SELECT status, (counts->>'measured')::INT FROM runs ORDER BY run_id")
    # The killed run never got to say anything else; the next scan marked it interrupted.
    assert runs[-2] == ("interrupted", None)
    assert runs[-1][0] == "completed"
    assert runs[-1][1] <= n - seen  # what was committed before the kill is not re-read
    assert f"{n - runs[-1][1]:,} unchanged" in out


@pytest.mark.slow
def test_ctrl_c_midway_exits_130_then_resume(tmp_path, start_cli, run_cli, query):
    root = tmp_path / "many"
    proc, seen, n = scan_caught_midway(start_cli, root, tmp_path / "scratch")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("dataaudit: scan interrupted;"), err
    assert len(lines) <= 2, err  # "layout: ...; N file(s) to read" and the message
    assert wait_group_gone(proc.pid) == []

    db = root / ".dataaudit" / "index.duckdb"
    assert query(db, "SELECT status FROM runs ORDER BY run_id")[-1] == ("interrupted",)
    kept = query(db, "SELECT count(*) FROM images")[0][0]
    assert seen <= kept < n
    rc, out, err = run_cli("scan", root, *SCAN_ARGS)
    assert rc == 0, err
    assert query(db, "SELECT count(*), count(DISTINCT path) FROM images") == [(n, n)]
    assert f"{n - kept:,} new" in out
