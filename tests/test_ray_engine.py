"""``--engine ray``: the index equals the local engine's row for row, on the sample data, on
every kind of bad file and through an object-store filesystem; a killed worker and a killed
driver both end with exactly one row per file.

One local Ray (2 CPUs) serves the whole module; starting it costs a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from PIL import Image
from test_scan import build_zoo

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
psutil = pytest.importorskip("psutil")

from fsspec.implementations.dirfs import DirFileSystem  # noqa: E402  (ray brings fsspec)
from fsspec.implementations.local import LocalFileSystem  # noqa: E402

from dataaudit.errors import DataAuditError  # noqa: E402
from dataaudit.scan import manifest, ray_engine  # noqa: E402
from dataaudit.scan.pipeline import ScanOptions  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TABLES = {  # table -> columns that legitimately differ between two scans
    "images": ["scan_run_id"],
    "thumbnails": [],
    "skipped_files": [],
}


class FakeObjectStore(DirFileSystem):
    """An fsspec filesystem serving ``fakes3://bucket/key`` from a local folder.

    It lists and reads through fsspec, as s3fs and gcsfs do, so the object-store code path
    runs end to end; Ray workers rebuild it from its arguments (the root comes with them).
    """

    protocol = "fakes3"

    def __init__(self, root: str | None = None, **kwargs: Any) -> None:
        super().__init__(path=root or os.environ["DATAAUDIT_FAKES3_ROOT"], fs=LocalFileSystem())


class FlakyObjectStore(FakeObjectStore):
    """The fake store, but reading ``poison.jpg`` fails the way a dropped connection does."""

    protocol = "fakeflaky"

    def open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("poison.jpg"):
            raise RuntimeError("connection reset by peer")
        return super().open(path, *args, **kwargs)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray for the module; its address lets subprocess drivers join it."""
    store = tmp_path_factory.mktemp("fakes3")
    os.environ["DATAAUDIT_FAKES3_ROOT"] = str(store)
    import fsspec

    fsspec.register_implementation("fakes3", FakeObjectStore, clobber=True)
    fsspec.register_implementation("fakeflaky", FlakyObjectStore, clobber=True)
    # Workers unpickle FakeObjectStore by importing this module: give them tests/ too.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), path]))
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield {"address": ray.get_runtime_context().gcs_address, "fakes3": store}
    if started:
        ray.shutdown()
    if path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = path


def scan(root: Any, db: Path, engine: str, **options: Any):
    opts = ScanOptions(workers=options.pop("workers", 0), **options)
    if engine == "ray":
        return ray_engine.scan(root, db, opts)
    from dataaudit.scan.pipeline import scan as local_scan

    return local_scan(root, db, opts)


def table_rows(db: Path, table: str, skip: list[str]) -> dict[int, tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        exclude = f" EXCLUDE ({', '.join(skip)})" if skip else ""
        cur = con.execute(f"SELECT *{exclude} FROM {table}")
        cols = [c[0] for c in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    by_id = {r[cols.index("file_id")]: r for r in rows}
    assert len(by_id) == len(rows), f"{table}: a file_id appears twice"
    return by_id


def assert_same_index(a: Path, b: Path, skip_extra: dict[str, list[str]] | None = None) -> None:
    for table, skip in TABLES.items():
        skip = skip + (skip_extra or {}).get(table, [])
        ra, rb = table_rows(a, table, skip), table_rows(b, table, skip)
        assert ra.keys() == rb.keys(), table
        diff = [k for k in ra if ra[k] != rb[k]]
        assert not diff, f"{table}: {len(diff)} rows differ, e.g. {ra[diff[0]]} != {rb[diff[0]]}"


def one_row_per_file(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*), count(DISTINCT file_id) FROM images").fetchall()[0]
    finally:
        con.close()


def committed_runs(index: Path) -> list[dict[str, Any]]:
    work = manifest.locate(index.parent / "ray")
    out = []
    for name, committed in manifest.run_folders(work):
        assert committed, f"uncommitted run folder left behind: {name}"
        out.append(manifest.read_commit(manifest.RunFolder(work, name)))
    return out


def noise_folder(root: Path, n: int, size: int = 160) -> Path:
    """``n`` noisy JPEGs in two labels: a few ms each to measure, so runs last long enough
    to interrupt."""
    rng = np.random.default_rng(0)
    for i in range(n):
        p = root / f"c{i % 2}" / f"{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p, quality=90)
    return root


def test_sample_data_matches_local_engine(ray_cluster, tmp_path: Path) -> None:
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    a = scan(REPO / "sample_data", local_db, "local")
    b = scan(REPO / "sample_data", ray_db, "ray")
    assert_same_index(local_db, ray_db)
    keep = ("files_seen", "images", "bytes", "new", "skipped_non_images", "corrupt", "flagged",
            "measured", "layout", "split_label_counts")  # fmt: skip
    assert {k: getattr(b, k) for k in keep} == {k: getattr(a, k) for k in keep}
    (run,) = committed_runs(ray_db)
    assert run["files"] == a.files_seen == sum(s["rows"] for s in run["shards"])
    # The shards hold the same rows, keyed by file_id, with thumbnails.
    folder = ray_db.parent / "ray" / "runs" / run["run"]
    con = duckdb.connect()
    n, ids, thumbs = con.execute(
        f"SELECT count(*), count(DISTINCT file_id), count(thumbnail) "
        f"FROM read_parquet('{folder}/part-*.parquet')"
    ).fetchall()[0]
    assert n == ids == a.files_seen and thumbs == a.images - a.corrupt
    # Unchanged folder: nothing to read, so no Ray work and no new run folder.
    again = scan(REPO / "sample_data", ray_db, "ray")
    assert (again.new, again.changed, again.unchanged) == (0, 0, a.files_seen)
    assert len(committed_runs(ray_db)) == 1


def test_bad_inputs_match_local_engine(
    ray_cluster, tmp_path: Path, make_image, image_bytes, bomb_png
) -> None:
    root = tmp_path / "zoo"
    build_zoo(root, make_image, image_bytes, bomb_png)
    raw = os.fsencode(root) + b"/names/caf\xe9.png"  # not UTF-8: stored with an escape
    with open(raw, "wb") as f:
        f.write(image_bytes(fmt="PNG"))
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    scan(root, local_db, "local")
    summary = scan(root, ray_db, "ray")
    assert summary.corrupt >= 7 and summary.skipped_non_images == 1
    assert_same_index(local_db, ray_db)
    # A changed file is measured again, by file_id, and only it.
    make_image(root / "good" / "ok.jpg", size=(50, 20))
    os.utime(root / "good" / "ok.jpg", ns=(1, 10**18))
    scan(root, local_db, "local")
    summary = scan(root, ray_db, "ray")
    assert (summary.changed, summary.measured) == (1, 1)
    assert_same_index(local_db, ray_db)


def test_object_store_path_matches_local_engine(ray_cluster, tmp_path: Path) -> None:
    bucket = ray_cluster["fakes3"] / "bucket" / "data"
    noise_folder(bucket, 24, size=48)
    (bucket / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (bucket / "c1" / ".hidden.jpg").write_bytes(b"litter")
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    scan(bucket, local_db, "local")
    # Listing and reading go through fsspec; run folders go to the "bucket" as well.
    opts = ScanOptions(workers=0)
    s = ray_engine.scan("fakes3://bucket/data", ray_db, opts, work_dir="fakes3://bucket/work")
    assert (s.files_seen, s.images, s.corrupt) == (25, 25, 1)
    # mtime comes from the store's listing (float seconds in fsspec): compared apart.
    assert_same_index(local_db, ray_db, {"images": ["mtime_ns"], "skipped_files": ["mtime_ns"]})
    a = table_rows(local_db, "images", [])
    b = table_rows(ray_db, "images", [])
    assert all(abs(a[k][5] - b[k][5]) < 1_000_000 for k in a)  # mtime_ns within 1 ms
    runs = list((ray_cluster["fakes3"] / "bucket" / "work" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / manifest.COMMIT_FILE).is_file()
    with pytest.raises(DataAuditError, match="needs a local file"):
        ray_engine.scan("fakes3://bucket/data", None, opts)
    with pytest.raises(DataAuditError, match="does not exist"):
        ray_engine.scan("fakes3://bucket/nothing", tmp_path / "x.duckdb", opts)


def test_failed_job_is_one_line_error_and_resumes(ray_cluster, tmp_path: Path) -> None:
    bucket = ray_cluster["fakes3"] / "flaky" / "data"
    noise_folder(bucket, 40, size=32)
    (bucket / "c0" / "poison.jpg").write_bytes((bucket / "c0" / "0000.jpg").read_bytes())
    db = tmp_path / "index.duckdb"
    opts = ScanOptions(workers=0, write_batch=8)
    with pytest.raises(DataAuditError, match="the Ray job failed after .* connection reset"):
        ray_engine.scan("fakeflaky://flaky/data", db, opts)
    (bucket / "c0" / "poison.jpg").unlink()
    summary = ray_engine.scan("fakeflaky://flaky/data", db, opts)
    assert summary.images == 40 and one_row_per_file(db) == (40, 40)


def _kill_first_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker seen running a measurement task."""
    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("ray::") and "measure_batch" in cmd:
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.01)


def test_killed_worker_is_retried(ray_cluster, tmp_path: Path) -> None:
    root = noise_folder(tmp_path / "data", 240)
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    scan(root, local_db, "local")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker, args=(stop, killed))
    killer.start()
    try:
        summary = scan(root, ray_db, "ray", write_batch=40)
    finally:
        stop.set()
        killer.join()
    assert killed, "no measurement worker was seen running"
    assert summary.images == 240
    assert one_row_per_file(ray_db) == (240, 240)
    assert_same_index(local_db, ray_db)


DRIVER = """
import sys
from dataaudit.scan import ray_engine
from dataaudit.scan.pipeline import ScanOptions
ray_engine.scan(sys.argv[1], sys.argv[2], ScanOptions(write_batch=50), address=sys.argv[3])
"""


def test_killed_driver_resumes(ray_cluster, tmp_path: Path, cli) -> None:
    n = 600
    root = noise_folder(tmp_path / "data", n)
    db = tmp_path / "index.duckdb"
    runs = tmp_path / "ray" / "runs"
    # A driver process joins the module's Ray and writes a shard every 50 files, so it is
    # surely mid-run when its second shard appears (its first batch is then in the index).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root), str(db), ray_cluster["address"]],
                            env=env, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not list(runs.glob("*/part-00001.parquet")):
            assert proc.poll() is None, "the scan ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed_run,) = [p.name for p in runs.iterdir()]
    assert not (runs / killed_run / manifest.COMMIT_FILE).exists()
    rc, out, err = cli("scan", root, "--db", db, "--engine", "ray", "--no-embed", "--no-detect")
    assert rc == 0, err
    con = duckdb.connect(str(db), read_only=True)
    try:
        (counts,) = con.execute(
            "SELECT counts FROM runs WHERE kind = 'scan' ORDER BY run_id DESC LIMIT 1"
        ).fetchall()[0]
    finally:
        con.close()
    counts = json.loads(counts)
    assert 0 < counts["measured"] < n, counts  # the rerun read only what was missing
    assert one_row_per_file(db) == (n, n)
    (run,) = committed_runs(db)  # the killed run's folder is gone, the rerun's committed
    assert run["run"] != killed_run and run["files"] == counts["measured"]


def test_embeddings_in_actor_pool_match_local(ray_cluster, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from dataaudit.embed.stage import EmbedStage

    root = noise_folder(tmp_path / "data", 12, size=64)
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    stage = EmbedStage(device="cpu")  # the driver's model loads once for both scans
    scan(root, local_db, "local", embed=stage)
    scan(root, ray_db, "ray", embed=stage)
    assert_same_index(local_db, ray_db)
    a, b = table_rows(local_db, "embeddings", []), table_rows(ray_db, "embeddings", [])
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        np.testing.assert_allclose(a[k][1], b[k][1], atol=1e-5)
    assert one_row_per_file(ray_db) == (12, 12)
    con = duckdb.connect(str(ray_db), read_only=True)
    assert con.execute("SELECT count(DISTINCT file_id) FROM knn").fetchall()[0][0] == 12
    con.close()


def test_missing_cluster_is_one_line_error(cli, tmp_path: Path, ray_cluster) -> None:
    rc, _, err = cli("scan", tmp_path, "--engine", "spark")
    assert rc == 2 and "unknown engine" in err
    rc, _, err = cli("scan", tmp_path, "--address", "localhost:1")
    assert rc == 2 and "need --engine ray" in err
    rc, _, err = cli("scan", "s3://bucket/data")
    assert rc == 2 and "need --engine ray" in err
