"""Scan throughput and memory: `dataaudit scan` against the naive baseline, in one run.

Run:  python bench/bench_scan.py                 # 20,000 photos, 3 repeats
      python bench/bench_scan.py --n 2000 --repeats 5 --embed

Builds (or reuses) the JPEG datasets from bench/make_jpegs.py, reads every file once untimed
so both tools see a warm page cache (dropping the cache needs root), then runs each of these
as a subprocess and times it end to end, interpreter start-up included:

- the naive baseline (bench/naive_baseline.py): one process, sha256 + decode + pHash per file;
- ``dataaudit scan DATA --db NEW_DB --workers W --no-embed --no-detect`` with a fresh database
  each repeat, so nothing is incremental;
- one re-scan of the unchanged folder into the last database (the incremental path);
- the same full scan on a dataset 10x smaller, to check that peak memory does not grow with
  the number of images (target: big-dataset peak <= 1.5x small-dataset peak);
- with --embed, the full scan with embeddings on.

Peak memory is the peak of the summed RSS of the process and all its descendants, sampled
every 20 ms, so a process pool's workers are counted. Summing RSS counts pages shared between
forked workers once per process, so it is an upper bound; it is the same rule for every run.
Medians over the repeats are printed with ratios against the baseline from this same run, and
the raw numbers go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - a message is friendlier than a traceback
    sys.exit("bench_scan.py needs psutil: pip install psutil")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import make_jpegs  # noqa: E402  (sibling script, not a package)

SAMPLE_S = 0.02  # RSS sampling period
CHILD_REFRESH = 5  # look for new descendants every 5th sample: listing them costs ~1.5 ms


@dataclass
class Run:
    """One timed subprocess: wall and CPU seconds, peak summed RSS, and what it printed."""

    label: str
    cmd: list[str]
    seconds: float
    cpu_seconds: float
    peak_rss: int
    max_procs: int
    stdout: str = field(repr=False)


class TreeRssMonitor(threading.Thread):
    """Sample the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.max_procs = 0
        self._done = threading.Event()

    def run(self) -> None:
        procs: dict[int, psutil.Process] = {self.root.pid: self.root}
        tick = 0
        while not self._done.is_set():
            if tick % CHILD_REFRESH == 0:
                try:
                    for child in self.root.children(recursive=True):
                        procs.setdefault(child.pid, child)
                except psutil.Error:
                    pass  # the root has exited; keep summing any children still alive
            total = 0
            for pid, proc in list(procs.items()):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    del procs[pid]  # exited
            self.peak = max(self.peak, total)
            self.max_procs = max(self.max_procs, len(procs))
            tick += 1
            self._done.wait(SAMPLE_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def timed(label: str, cmd: list[str]) -> Run:
    """Run cmd from the repo root; return wall time, CPU time and peak tree RSS.

    ``os.wait4`` gives the exact end time and the CPU time of the child and the descendants
    it waited for (a process pool's workers), which shows how well a run used the cores.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
        monitor = TreeRssMonitor(proc.pid)
        monitor.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        monitor.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        print(f"\n{label} failed with exit code {proc.returncode}: {shlex.join(cmd)}")
        print((stdout + stderr)[-3000:])
        sys.exit(1)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(label, cmd, seconds, cpu, monitor.peak, monitor.max_procs, stdout)


def warm_cache(folder: Path) -> int:
    """Read every file once so all timed runs see the same (warm) page cache; return bytes."""
    total = 0
    for d, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                total += len(fh.read())
    return total


def count_indexed(db: Path) -> int | None:
    """Rows in the index's images table, if duckdb and such a table exist (a sanity check)."""
    try:
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute("SELECT count(*) FROM images").fetchone()[0]
    except Exception:
        return None


def summarise(runs: list[Run], n_images: int) -> dict:
    """Medians (and spread) of one group of runs."""
    secs = [r.seconds for r in runs]
    med = statistics.median(secs)
    return {
        "runs": len(runs),
        "seconds": med,
        "images_per_s": n_images / med,
        "min_s": min(secs),
        "max_s": max(secs),
        "cpu_util": statistics.median(r.cpu_seconds / r.seconds for r in runs),
        "images_per_cpu_s": statistics.median(n_images / r.cpu_seconds for r in runs),
        "peak_rss_mb": statistics.median(r.peak_rss for r in runs) / 2**20,
        "max_procs": max(r.max_procs for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="images in the main dataset")
    parser.add_argument("--small-n", type=int, default=None, help="memory check (default n/10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--embed", action="store_true", help="also time the scan with embeddings")
    parser.add_argument(
        "--dataaudit",
        default=f"{shlex.quote(sys.executable)} -m dataaudit",
        help="command that runs dataaudit (default: this python -m dataaudit, from the checkout)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    small_n = args.small_n or max(1, args.n // 10)
    data = make_jpegs.default_out(args.n)
    small = make_jpegs.default_out(small_n)
    tool = shlex.split(args.dataaudit)

    print("== datasets (bench/make_jpegs.py)")
    for n, folder in ((args.n, data), (small_n, small)):
        make_jpegs.build(n, folder)
    print("== warm-up: one untimed read of every file (page cache not dropped: that needs root)")
    mb = warm_cache(data) / 1e6
    warm_cache(small)
    print(f"   {data.relative_to(REPO)}: {args.n} images, {mb:.0f} MB")

    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench_scan_", dir=HERE / ".data"))
    naive_cmd = [sys.executable, str(HERE / "naive_baseline.py"), str(data), "--json"]

    def scan_cmd(folder: Path, db: Path, embed: bool = False) -> list[str]:
        # With embeddings, time what a user gets: the scan's own split of the cores between
        # decoding and the network (half each on CPU), not a fixed worker count.
        flags = ["--no-detect"] + (
            ["--workers", str(args.workers), "--no-embed"] if not embed else []
        )
        return [*tool, "scan", str(folder), "--db", str(db), *flags]

    groups: dict[str, list[Run]] = {"naive": [], "scan": [], "rescan": [], "small": [], "embed": []}
    try:
        print(f"== {args.repeats} repeats, naive and dataaudit interleaved, workers={args.workers}")
        last_db = scratch / "none.duckdb"
        for i in range(args.repeats):
            groups["naive"].append(timed("naive", naive_cmd))
            last_db = scratch / f"full_{i}.duckdb"
            groups["scan"].append(timed("scan", scan_cmd(data, last_db)))
            print(
                f"   repeat {i + 1}: naive {groups['naive'][-1].seconds:.1f} s, "
                f"scan {groups['scan'][-1].seconds:.1f} s",
                flush=True,
            )
        first_scan_output = groups["scan"][0].stdout.strip()
        indexed = count_indexed(last_db)
        groups["rescan"].append(timed("rescan", scan_cmd(data, last_db)))
        for i in range(args.repeats):
            groups["small"].append(timed("small", scan_cmd(small, scratch / f"small_{i}.duckdb")))
        if args.embed:
            for i in range(args.repeats):
                groups["embed"].append(
                    timed("embed", scan_cmd(data, scratch / f"e_{i}.duckdb", True))
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    load = max(load_before, os.getloadavg()[0])
    sizes = {"small": small_n}
    stats = {k: summarise(v, sizes.get(k, args.n)) for k, v in groups.items() if v}
    naive_self = statistics.median(json.loads(r.stdout)["images_per_s"] for r in groups["naive"])
    report(args, stats, naive_self, first_scan_output, indexed, small_n, mb, load)

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = results / f"bench_scan-{stamp}.json"
    runs = {k: [asdict(r) | {"stdout": r.stdout[-2000:]} for r in v] for k, v in groups.items()}
    payload = {
        "args": vars(args),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
        "stats": stats,
        "runs": runs,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"raw numbers: {out.relative_to(REPO)}")


def report(
    args: argparse.Namespace,
    stats: dict,
    naive_self: float,
    scan_output: str,
    indexed: int | None,
    small_n: int,
    mb: float,
    load: float,
) -> None:
    """Print the table, the ratios and whether the targets were met."""
    names = {
        "naive": "naive baseline (1 process)",
        "scan": f"dataaudit scan, {args.n} images",
        "rescan": "dataaudit re-scan, unchanged",
        "small": f"dataaudit scan, {small_n} images",
        "embed": "dataaudit scan with embeddings",
    }
    print("\n== last lines of the first full scan's output")
    print("\n".join("   " + line for line in scan_output.splitlines()[-8:]))
    if indexed is not None and indexed != args.n:
        print(f"   WARNING: the images table holds {indexed} rows, expected {args.n}")

    print(f"\n== results: medians of {args.repeats} runs, wall time end to end (start-up included)")
    print(f"   {os.cpu_count()} cores; warm page cache for every run; {mb:.0f} MB of JPEGs")
    head = f"   {'':32} {'runs':>4} {'median s':>9} {'images/s':>9} {'min..max s':>13}"
    print(head + f" {'cpu/wall':>8} {'img/cpu-s':>9} {'peak RSS MB':>11} {'procs':>5}")
    for key, s in stats.items():
        spread = f"{s['min_s']:.1f}..{s['max_s']:.1f}"
        print(
            f"   {names[key]:32} {s['runs']:>4} {s['seconds']:>9.2f} {s['images_per_s']:>9.0f} "
            f"{spread:>13} {s['cpu_util']:>8.2f} {s['images_per_cpu_s']:>9.0f} "
            f"{s['peak_rss_mb']:>11.0f} {s['max_procs']:>5}"
        )
    print(f"   (naive baseline's own timer, start-up excluded: {naive_self:.0f} images/s)")
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        print(
            f"   WARNING: 1-min load average reached {load:.1f} on {cores} cores: other work "
            "was running, so wall times and ratios are distorted (cpu/wall < cores shows it; "
            "img/cpu-s is less affected)"
        )

    speedup = stats["scan"]["images_per_s"] / stats["naive"]["images_per_s"]
    growth = stats["scan"]["peak_rss_mb"] / stats["small"]["peak_rss_mb"]
    rescan = stats["rescan"]["seconds"] / stats["scan"]["seconds"]
    print()
    print(
        f"   speed-up dataaudit / naive: {speedup:.2f}x  (target >= 3x: {_verdict(speedup >= 3)})"
    )
    if "embed" in stats:
        e = stats["embed"]["images_per_s"] / stats["naive"]["images_per_s"]
        print(f"   with embeddings / naive:    {e:.2f}x")
    print(
        f"   peak RSS {args.n} / {small_n} images: {growth:.2f}x  "
        f"(target <= 1.5x: {_verdict(growth <= 1.5)})"
    )
    print(f"   re-scan of the unchanged folder: {rescan:.0%} of a full scan's time")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    main()
