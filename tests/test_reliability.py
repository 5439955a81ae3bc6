"""Faults forced on purpose (issue 8): dead workers, vanished files, unreadable folders,
interrupted runs, colliding names, huge files, stale vectors and an interrupted graph."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import faults
import pytest

from dataaudit.scan.measure import MeasureConfig
from dataaudit.scan.pool import DIED_CLASS, MeasurePool
from dataaudit.scan.task import Task


def _tasks(root: Path, names: list[str]) -> list[Task]:
    out = []
    for i, n in enumerate(names):
        st = (root / n).stat()
        out.append(Task(i, n, None, None, st.st_size, st.st_mtime_ns, True, False))
    return out


def test_a_worker_that_dies_costs_one_file_and_never_hangs(tmp_path, make_image):
    names = [f"{i:03d}.png" for i in range(40)]
    names[5] = "005_poison.png"
    names[23] = "023_poison.png"
    for i, n in enumerate(names):
        make_image(tmp_path / n, color=(i * 5, 0, 0))
    pool = MeasurePool(2, str(tmp_path), MeasureConfig(), work=faults.die_on_poison)
    try:
        results = dict((t.path, m) for t, m in pool.map(iter(_tasks(tmp_path, names)), 32))
    finally:
        pool.close()
    assert sorted(results) == sorted(names)  # every file answered exactly once
    died = {p for p, m in results.items() if m.record["error_class"] == DIED_CLASS}
    assert died == {"005_poison.png", "023_poison.png"}
    for p in died:
        rec = results[p].record
        assert rec["decode_status"] == "unreadable" and rec["is_corrupt"]
        assert "the decoder process died" in rec["error_message"]
        assert "signal 9" in rec["error_message"]
    assert all(results[n].record["decode_status"] == "ok" for n in names if n not in died)
    assert pool.deaths == 2


def test_worker_killed_mid_scan_the_scan_finishes(tmp_path, make_image, scan_dir, query):
    """SIGKILL a real pool worker from outside while it holds files: the scan completes,
    the files it held are recorded, every other file is measured."""
    root = tmp_path / "data"
    for i in range(300):
        make_image(root / f"{i:03d}.png", size=(48, 48), color=(i % 256, 7, 7))
    db = tmp_path / "i.duckdb"
    killed: list[int] = []
    real_map = MeasurePool.map

    def map_and_kill(self, tasks, in_flight=0):
        for n, item in enumerate(real_map(self, tasks, in_flight)):
            if n == 50 and not killed:
                killed.append(self.pids()[0])
                os.kill(killed[0], signal.SIGKILL)
            yield item

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MeasurePool, "map", map_and_kill)
        summary = scan_dir(root, db, workers=2)
    assert killed and summary.status == "completed"
    rows = query(db, "SELECT decode_status, error_class, count(*) FROM images GROUP BY ALL")
    by = {(s, c): n for s, c, n in rows}
    assert sum(by.values()) == 300
    assert 1 <= by.get(("unreadable", DIED_CLASS), 0) <= 16  # at most the chunks it held
    assert by[("ok", None)] == 300 - by[("unreadable", DIED_CLASS)]
    assert query(db, "SELECT status FROM runs") == [("completed",)]


def test_ctrl_c_while_waiting_on_workers_stops_the_scan(tmp_path, make_image):
    """The pool waits with timeouts: a KeyboardInterrupt arrives even while every worker
    is busy and no result is coming."""
    make_image(tmp_path / "a.png")
    pool = MeasurePool(1, str(tmp_path), MeasureConfig(), work=faults.sleep_forever)
    timer = threading.Timer(1.0, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                            signal.SIGINT))  # fmt: skip
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(pool.map(iter(_tasks(tmp_path, ["a.png"])), 8))
    finally:
        timer.cancel()
        pool.close(terminate=True)
    assert time.monotonic() - t0 < 10
