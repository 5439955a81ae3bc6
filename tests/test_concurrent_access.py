"""A scan and readers on the same index at once, in separate processes, both ways round.

DuckDB lets no process open a file another one is writing, so readers fall back to the
snapshot of the last completed state (or report how far the scan is), and a scan retries
while short-lived readers hold the file. Neither side may fail or hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, _subprocess_env

import dataaudit as da
from dataaudit.store import access
from dataaudit.testing import build_index, make_dataset


def _grow(root, start: int, count: int) -> None:
    from dataaudit.testing import image_bytes, textured_image

    for k in range(start, start + count):
        p = root / "train" / "circle" / f"extra_{k:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(image_bytes(textured_image(10_000 + k, size=(160, 160))))


def _start_scan(root, **env: str) -> subprocess.Popen:
    code = f"import dataaudit as da; da.scan({str(root)!r}, embed=False, workers=0)"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=_subprocess_env(**env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_while(proc: subprocess.Popen, idx: da.Index) -> tuple[list[int], list[str], int]:
    """Count images over and over until ``proc`` ends: counts seen, busy messages, reads
    made while the scan was writing."""
    counts, busy, during = [], [], 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        writing = bool(access.read_progress(idx.db_path))
        try:
            counts.append(idx.count())
        except da.IndexBusyError as exc:
            busy.append(str(exc))
        during += writing
        time.sleep(0.02)
    return counts, busy, during


@pytest.mark.slow
def test_readers_see_the_last_completed_state_while_a_scan_runs(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, per_label=4, plant=False)
    idx = build_index(root, detect=False)
    before = idx.count()
    _grow(root, 0, 400)
    proc = _start_scan(root)
    counts, busy, during = _read_while(proc, idx)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert during > 0, "no read happened while the scan was writing"
    assert not busy  # the snapshot stood in for the locked file
    assert set(counts) <= {before, before + 400}
    assert idx.count() == before + 400  # and afterwards the live index answers
    assert not access.progress_path(idx.db_path).exists()


@pytest.mark.slow
def test_without_a_snapshot_readers_are_told_how_far_the_scan_is(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_dataset(root, per_label=4, plant=False)
    idx = build_index(root, detect=False)
    access.snapshot_path(idx.db_path).unlink(missing_ok=True)
    _grow(root, 0, 400)
    monkeypatch.setenv("DATAAUDIT_READ_WAIT_S", "0.05")  # a reader that will not wait
    proc = _start_scan(root, DATAAUDIT_SNAPSHOT_MAX_BYTES="0")
    counts, busy, during = _read_while(proc, idx)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert busy, "the scan never held the file while we read"
    assert all("a scan is running" in m or "another writer" in m for m in busy)
    assert any(" of " in m and "files done" in m for m in busy)
    assert idx.count() == counts[-1] if counts else True


@pytest.mark.slow
def test_a_scan_finishes_while_another_process_keeps_reading(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, per_label=4, plant=False)
    idx = build_index(root, detect=False)
    _grow(root, 0, 400)
    reader_code = textwrap.dedent(
        f"""
        import time, dataaudit as da
        idx = da.open_index({str(root)!r})
        reads = busy = 0
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                idx.count(); idx.issues(); idx.images(da.Filters(sort="brightness_mean"), limit=50)
                reads += 1
            except da.IndexBusyError:
                busy += 1
            if open({str(tmp_path / "stop")!r}, "a").tell():
                break
        print(reads, busy)
        """
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", reader_code],
        env=_subprocess_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # let the reader get going
    started = time.monotonic()
    scanned = da.scan(root, embed=False, workers=0)
    took = time.monotonic() - started
    (tmp_path / "stop").write_text("x")
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    reads, _busy = map(int, out.split())
    assert reads > 0
    assert scanned.count() == idx.count() and scanned.last_scan.new == 400
    assert took < 60


def test_a_reader_that_never_lets_go_stops_the_scan_with_a_clear_message(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, per_label=2, plant=False)
    idx = build_index(root, detect=False)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(idx.db_path)!r}, read_only=True); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _start_scan(root, DATAAUDIT_LOCK_WAIT_S="1")
        _, err = proc.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert "in use by another process" in err
    assert "close the program" in err
