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


# --- item 2: memory per file is bounded by decoded pixels -------------------------------

_PROBE = """
import io, resource, sys
from PIL import Image
from dataaudit.scan.measure import MeasureConfig, measure_file
cfg = MeasureConfig()
warm = sys.argv[1] + ".warm.png"
Image.new("RGB", (64, 64), (1, 2, 3)).save(warm)
measure_file(warm, ".png", cfg)  # every lazy import paid before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = measure_file(sys.argv[1], "", cfg)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(m.record["decode_status"], (peak - base) * 1024)
"""


@pytest.mark.parametrize("kind", ["float_tiff", "rgba_png"])
def test_a_large_wide_mode_image_costs_about_its_decoded_size(tmp_path, kind):
    """24 MP float TIFF / RGBA PNG: decoded 96 MB each. Before the strip conversion the
    peak was ~4.7x that (float copies, RGBA copies, a full tobytes and a full thumbnail
    copy); now it is the file's bytes plus its decoded pixels plus a few MB."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    h, w = 4000, 6000
    if kind == "float_tiff":
        levels = (np.arange(w, dtype=np.float32) // 500)[None, :] * np.ones((h, 1), np.float32)
        path = tmp_path / "big.tif"
        Image.fromarray(levels * 3.5 - 7).save(path, compression="tiff_deflate")
    else:
        arr = np.zeros((h, w, 4), np.uint8)
        arr[..., 0], arr[..., 3] = 120, (np.arange(w) % 256)[None, :]
        path = tmp_path / "big.png"
        Image.fromarray(arr, "RGBA").save(path)
    decoded = w * h * 4
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True,
                         text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    status, grew = out.stdout.split()
    assert status == "ok"
    budget = path.stat().st_size + decoded + 40 * 2**20
    assert int(grew) <= budget, f"peak grew {int(grew) / 2**20:.0f} MB, budget {budget / 2**20:.0f}"


def test_decoded_size_cap_refuses_before_decoding(tmp_path, make_image):
    from dataaudit.scan.measure import measure_file

    big = make_image(tmp_path / "rgba.png", size=(2000, 2000), mode="RGBA")  # 16 MB decoded
    photo = make_image(tmp_path / "photo.jpg", size=(4000, 3000))  # drafted to ~500x375
    cfg = MeasureConfig(max_decoded_bytes=10 * 2**20)
    rec = measure_file(str(big), ".png", cfg).record
    assert (rec["decode_status"], rec["error_class"]) == ("bomb", "DecodedSizeLimit")
    assert "15 MB" in rec["error_message"] or "16 MB" in rec["error_message"]
    assert rec["width"] == 2000 and not rec["is_corrupt"] and rec["pixel_hash"] is None
    rec = measure_file(str(photo), ".jpg", cfg).record  # the draft decode fits the cap
    assert rec["decode_status"] == "ok" and rec["decode_scale"] > 1


def test_a_huge_file_is_never_read_whole(tmp_path, make_image, monkeypatch):
    from dataaudit.scan.measure import measure_file

    fake = tmp_path / "movie.jpg"
    fake.write_bytes(b"not an image at all\n" * 2000)  # 40 KB of text named .jpg
    import numpy as np
    from PIL import Image

    png = tmp_path / "real.png"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(png)  # ~120 KB
    cfg = MeasureConfig(max_file_bytes=10_000)
    reads: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr("builtins.open", lambda p, m="r", *a, **k: Spy(real_open(p, m, *a, **k)))
    rec = measure_file(str(fake), ".jpg", cfg).record
    assert reads == [64 * 1024]  # the head only
    assert (rec["decode_status"], rec["error_class"]) == ("not_image", "FileTooLarge")
    assert rec["is_corrupt"] and "text, not an image" in rec["error_message"]
    assert rec["content_hash"] is None
    rec = measure_file(str(png), ".png", cfg).record
    assert (rec["decode_status"], rec["format"]) == ("bomb", "PNG") and not rec["is_corrupt"]


def test_strip_conversion_matches_whole_image_conversion(monkeypatch):
    """The bounded path gives exactly the pixels of the one-shot conversion."""
    import numpy as np
    from PIL import Image

    from dataaudit.scan import pixels

    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (300, 220, 3), dtype=np.uint8))
    images = [rgb.convert(m) for m in ("RGBA", "LA", "P", "1", "CMYK")] + [
        Image.fromarray((rng.random((300, 220)) * 5e4).astype(t)) for t in (np.int32, np.float32)
    ] + [Image.fromarray((rng.random((300, 220)) * 6e4).astype(np.uint16))]  # fmt: skip
    for im in images:
        extrema = im.getextrema() if im.mode in ("I", "F") else None
        whole = np.asarray(pixels._convert(im, extrema))
        monkeypatch.setattr(pixels, "STRIP_PIXELS", 5000)  # many strips
        assert (np.asarray(pixels.to_rgb(im)) == whole).all(), im.mode
        reduced = np.asarray(Image.fromarray(whole).reduce(3))
        assert (np.asarray(pixels.to_rgb(im, 3)) == reduced).all(), im.mode
        monkeypatch.undo()
    import xxhash

    for im in images:
        one_shot = xxhash.xxh3_128_hexdigest(f"{im.mode}{im.size}".encode() + im.tobytes())
        monkeypatch.setattr(pixels, "STRIP_PIXELS", 5000)
        assert pixels.pixel_hash(im) == one_shot, im.mode
        monkeypatch.undo()
    thumb = rgb.copy()
    thumb.thumbnail((128, 128), Image.Resampling.BILINEAR)
    assert (np.asarray(pixels.fit(rgb, 128)) == np.asarray(thumb)).all()


# --- item 8: a file deleted between listing and reading ---------------------------------


def test_file_deleted_after_listing_is_vanished_not_corrupt(tmp_path, make_image, scan_dir,
                                                            query, cli):  # fmt: skip
    root = tmp_path / "data"
    for i in range(6):
        make_image(root / "train" / "cat" / f"{i}.png", color=(i * 30, 9, 9))
    db = tmp_path / "i.duckdb"
    scan_dir(root, db)
    make_image(root / "train" / "cat" / "3.png", color=(1, 2, 3), size=(40, 40))  # changed
    make_image(root / "train" / "cat" / "new.png", color=(5, 2, 3))

    def delete_two(layout: str, todo: int) -> None:  # after planning, before reading
        assert todo == 2
        (root / "train" / "cat" / "3.png").unlink()
        (root / "train" / "cat" / "new.png").unlink()

    from dataaudit.scan.pipeline import ScanOptions, scan

    summary = scan(root, db, ScanOptions(workers=0), on_start=delete_two)
    assert summary.vanished == 2 and summary.corrupt == 0 and summary.status == "completed"
    paths = {p for (p,) in query(db, "SELECT path FROM images")}
    assert paths == {f"train/cat/{i}.png" for i in (0, 1, 2, 4, 5)}  # old row of 3.png gone
    assert query(db, "SELECT count(*) FROM images WHERE is_corrupt") == [(0,)]
    code, out, err = cli("detect", str(root), "--db", str(db))
    assert code == 0, err
    code, out, err = cli("report", str(root), "--db", str(db), "--fail-on", "corrupt")
    assert code == 0, out + err


# --- item 7: a folder that cannot be listed is not a deleted folder ---------------------


def test_unreadable_folder_keeps_its_rows_and_fails_the_scan(tmp_path, make_image, scan_dir,
                                                             query, cli, monkeypatch):  # fmt: skip
    import errno

    from dataaudit import discover

    root = tmp_path / "data"
    for label in ("cat", "dog"):
        for i in range(3):
            make_image(root / "train" / label / f"{i}.png", color=(i * 40, 50, 9))
    db = tmp_path / "i.duckdb"
    scan_dir(root, db)
    before = query(db, "SELECT path, content_hash FROM images ORDER BY path")
    thumbs = query(db, "SELECT count(*) FROM thumbnails")
    real = discover._scandir

    def failing(path: str):  # the listing of train/dog fails as on a flaky disk
        if path.endswith("dog"):
            raise OSError(errno.EIO, "Input/output error", path)
        return real(path)

    monkeypatch.setattr(discover, "_scandir", failing)
    (root / "train" / "cat" / "0.png").unlink()  # a real deletion elsewhere still counts
    summary = scan_dir(root, db)
    assert summary.deleted == 1
    assert summary.unreadable == [("train/dog/", "Input/output error (errno 5)")]
    after = query(db, "SELECT path, content_hash FROM images ORDER BY path")
    assert after == [r for r in before if r[0] != "train/cat/0.png"]
    assert query(db, "SELECT count(*) FROM thumbnails") == [(thumbs[0][0] - 1,)]
    code, out, err = cli("scan", str(root), "--db", str(db), "--no-embed", "--workers", "0")
    assert code == 3
    assert "could not be listed: train/dog/ (Input/output error (errno 5))" in err
    assert "rows are kept" in err
    assert query(db, "SELECT count(*) FROM images WHERE path LIKE 'train/dog/%'") == [(3,)]
    monkeypatch.setattr(discover, "_scandir", real)  # fixed: a clean scan again
    code, out, err = cli("scan", str(root), "--db", str(db), "--no-embed", "--workers", "0")
    assert code == 0 and "not listed" not in out


def test_unreadable_root_keeps_everything(tmp_path, make_image, scan_dir, query, monkeypatch):
    import errno

    from dataaudit import discover

    root = tmp_path / "data"
    for i in range(3):
        make_image(root / f"{i}.png")
    db = tmp_path / "i.duckdb"
    scan_dir(root, db)

    def denied(path: str):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(discover, "_scandir", denied)
    summary = scan_dir(root, db)
    assert summary.deleted == 0 and summary.unreadable == [("./", "Permission denied (errno 13)")]
    assert query(db, "SELECT count(*) FROM images") == [(3,)]


# --- item 6: runs interrupted anywhere never stay 'running' -----------------------------


def test_stale_running_runs_are_marked_when_a_scan_starts(tmp_path, make_image, scan_dir, query):
    root = tmp_path / "data"
    make_image(root / "a.png")
    db = tmp_path / "i.duckdb"
    scan_dir(root, db)
    from dataaudit.store import db as store

    con = store.open_index(db)  # a run whose process was SIGKILLed: nobody finished it
    store.start_run(con, "scan", {})
    store.start_run(con, "detect", {})
    con.close()
    scan_dir(root, db)
    rows = query(db, "SELECT run_id, status, ended_at IS NOT NULL FROM runs ORDER BY run_id")
    assert rows == [(1, "completed", True), (2, "interrupted", True), (3, "interrupted", True),
                    (4, "completed", True)]  # fmt: skip


@pytest.mark.parametrize("where", ["discovery", "planning", "graph"])
def test_interrupt_at_any_step_records_the_run(tmp_path, make_image, scan_dir, query,
                                               monkeypatch, where):  # fmt: skip
    from dataaudit import discover
    from dataaudit.scan import plan as planning

    root = tmp_path / "data"
    for i in range(3):
        make_image(root / f"{i}.png", color=(i * 50, 0, 0))
    db = tmp_path / "i.duckdb"

    def boom(*a, **k):
        raise KeyboardInterrupt

    if where == "discovery":
        monkeypatch.setattr(discover, "_scandir", boom)
    elif where == "planning":
        monkeypatch.setattr(planning, "invalidate_old_measurements", boom)
    else:

        class Hook:  # an embedding hook whose graph step is interrupted
            spec = None

            def on_cpu(self):
                return True

            def share_cpu_with(self, n):
                pass

            def describe(self):
                return {}

            def prepare(self, con):
                pass

            def embed(self, items):
                return None

            def finish(self, con):
                raise KeyboardInterrupt

        monkeypatch.setattr(
            "dataaudit.scan.pipeline.ScanOptions.measure_config", lambda self: MeasureConfig()
        )
        with pytest.raises(KeyboardInterrupt):
            scan_dir(root, db, embed=Hook())
        assert query(db, "SELECT status FROM runs") == [("interrupted",)]
        assert query(db, "SELECT count(*) FROM images") == [(3,)]  # the batches are kept
        return
    with pytest.raises(KeyboardInterrupt):
        scan_dir(root, db)
    assert query(db, "SELECT status FROM runs") == [("interrupted",)]
    monkeypatch.undo()
    scan_dir(root, db)
    assert query(db, "SELECT status FROM runs ORDER BY run_id") == [("interrupted",),
                                                                    ("completed",)]  # fmt: skip
    assert query(db, "SELECT count(*) FROM images") == [(3,)]


# --- item 16: stored paths are reversible and collision-free ----------------------------


def test_byte_name_and_escape_text_name_are_two_files(tmp_path, make_image, scan_dir, query):
    root = tmp_path / "data"
    root.mkdir()
    byte_name = os.fsdecode(b"a\xff.png")  # a real 0xFF byte (not UTF-8)
    text_name = "a\\xff.png"  # the four characters \ x f f
    make_image(root / byte_name, color=(255, 0, 0))
    make_image(root / text_name, color=(0, 0, 255), size=(20, 20))
    db = tmp_path / "i.duckdb"
    first = scan_dir(root, db)
    rows = query(db, "SELECT path, width FROM images ORDER BY width")
    assert [w for _, w in rows] == [20, 32]  # each file read once, with its own pixels
    assert len({p for p, _ in rows}) == 2
    assert first.new == 2
    again = scan_dir(root, db)
    assert (again.new, again.changed, again.unchanged) == (0, 0, 2)
    from dataaudit.scan.identity import disk_name

    for path, _ in rows:
        assert (root / disk_name(path)).stat().st_size > 0


def test_storable_round_trips_random_names():
    import random

    from dataaudit.scan.identity import disk_name, storable

    rng = random.Random(0)
    alphabet = [b"\\", b"x", b"f", b"F", b"0", b"a", b"\xff", b"\x80", b"\xc3\xa9", b"/", b"."]
    seen: dict[str, str] = {}
    for _ in range(5000):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        name = os.fsdecode(raw)
        stored = storable(name)
        stored.encode("utf-8")  # valid text for DuckDB and Arrow
        assert disk_name(stored) == name
        assert seen.setdefault(stored, name) == name  # no two names share a stored path


# --- items 4 and 5: vectors and the neighbour graph never go stale ----------------------


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The graph step's PCA (numpy eigh) slows ~10x on a shared, oversubscribed CPU when
    BLAS runs several threads; one thread keeps these tests at a few seconds anywhere."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up only
        yield
        return
    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture(scope="module")
def embed_stage():
    from dataaudit.embed.spec import EmbedSpec
    from dataaudit.embed.stage import EmbedStage

    stage = EmbedStage(EmbedSpec(input_size=64), device="cpu")  # small input: fast on CPU
    stage.load()
    return stage


def _varied(path: Path, seed: int, size: int = 64) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _ids(db, query, sql):
    return {r[0] for r in query(db, sql)}


def test_file_turned_corrupt_loses_its_vector_and_links(tmp_path, scan_dir, query, embed_stage):
    root = tmp_path / "data"
    for i in range(8):
        _varied(root / "train" / "a" / f"{i}.png", i)
    db = tmp_path / "i.duckdb"
    scan_dir(root, db, embed=embed_stage)
    (fid,) = _ids(db, query, "SELECT file_id FROM images WHERE path = 'train/a/3.png'")
    assert fid in _ids(db, query, "SELECT file_id FROM embeddings")
    assert fid in _ids(db, query, "SELECT neighbor_id FROM knn")
    (root / "train" / "a" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    summary = scan_dir(root, db, embed=embed_stage)
    assert summary.changed == 1 and summary.corrupt == 1
    assert fid not in _ids(db, query, "SELECT file_id FROM embeddings")
    assert fid not in _ids(db, query, "SELECT file_id FROM knn UNION SELECT neighbor_id FROM knn")
    assert fid not in _ids(db, query, "SELECT file_id FROM embedding_map")
    others = _ids(db, query, "SELECT file_id FROM images WHERE NOT is_corrupt")
    assert _ids(db, query, "SELECT file_id FROM knn") == others  # the graph was rebuilt


def test_no_embed_rescan_of_an_edited_file_then_a_normal_scan_re_embeds_it(
    tmp_path, scan_dir, query, embed_stage
):
    import numpy as np
    from PIL import Image

    from dataaudit.embed.spec import prepare_pixels

    root = tmp_path / "data"
    for i in range(5):
        _varied(root / f"{i}.png", i)
    db = tmp_path / "i.duckdb"
    scan_dir(root, db, embed=embed_stage)
    (fid,) = _ids(db, query, "SELECT file_id FROM images WHERE path = '2.png'")
    _varied(root / "2.png", 99, size=80)  # edited: new pixels, new size
    summary = scan_dir(root, db)  # --no-embed
    assert summary.changed == 1
    assert fid not in _ids(db, query, "SELECT file_id FROM embeddings")  # old vector gone
    summary = scan_dir(root, db, embed=embed_stage)
    assert summary.embed_only == 1  # read again only to embed it
    (vec,) = query(db, "SELECT vector FROM embeddings WHERE file_id = ?", [fid])[0]
    truth = embed_stage.embed([(fid, prepare_pixels(Image.open(root / "2.png"), embed_stage.spec))])
    cos = float(np.dot(np.asarray(vec), np.asarray(truth["vector"][0].to_list())))
    assert cos > 0.999


def test_kill_inside_the_knn_write_is_rebuilt_by_the_next_run(
    tmp_path, scan_dir, query, embed_stage, monkeypatch
):
    from dataaudit.store import db as store

    root = tmp_path / "data"
    for i in range(6):
        _varied(root / f"{i}.png", i)
    db = tmp_path / "i.duckdb"
    scan_dir(root, db, embed=embed_stage)
    old_graph = query(db, "SELECT * FROM knn ORDER BY ALL")
    for i in range(6, 9):
        _varied(root / f"{i}.png", i)
    real_write = store.write_frame

    def killed_in_graph_write(con, table, frame, **kw):
        if table == "embedding_map":  # the kNN rows are already in the transaction
            raise KeyboardInterrupt
        return real_write(con, table, frame, **kw)

    monkeypatch.setattr(store, "write_frame", killed_in_graph_write)
    with pytest.raises(KeyboardInterrupt):
        scan_dir(root, db, embed=embed_stage)
    monkeypatch.undo()
    assert query(db, "SELECT count(*) FROM embeddings") == [(9,)]  # vectors committed
    assert query(db, "SELECT * FROM knn ORDER BY ALL") == old_graph  # graph rolled back
    assert query(db, "SELECT value FROM meta WHERE key = 'knn_needs_rebuild'") == [("1",)]
    assert query(db, "SELECT status FROM runs ORDER BY run_id DESC LIMIT 1") == [("interrupted",)]
    summary = scan_dir(root, db, embed=embed_stage)  # nothing to read, but the graph is stale
    assert summary.new == 0 and summary.changed == 0
    all_ids = _ids(db, query, "SELECT file_id FROM embeddings")
    assert _ids(db, query, "SELECT file_id FROM knn") == all_ids
    assert _ids(db, query, "SELECT file_id FROM embedding_map") == all_ids
    assert query(db, "SELECT value FROM meta WHERE key = 'knn_needs_rebuild'") == [("0",)]


def test_workers_that_die_as_they_start_stop_the_scan_with_a_message(tmp_path, make_image,
                                                                     monkeypatch):  # fmt: skip
    """Not every file is blamed when the workers themselves are broken."""
    from dataaudit.errors import DataAuditError
    from dataaudit.scan import pool as pool_mod

    make_image(tmp_path / "a.png")
    monkeypatch.setattr(pool_mod, "_worker_main", faults._exit_at_start)
    pool = MeasurePool(2, str(tmp_path), MeasureConfig())
    try:
        with pytest.raises(DataAuditError, match="die as they start"):
            list(pool.map(iter(_tasks(tmp_path, ["a.png"])), 8))
    finally:
        pool.close(terminate=True)
