"""Detectors and report over 1,000,000 and 10,000,000 synthetic rows: time and peak RSS.

Run:  python bench/bench_scale.py                       # 1M and 10M (builds both once)
      python bench/bench_scale.py --sizes 100000,1000000   # quicker

For each size, builds (once, cached in bench/.data/) a synthetic index with
make_synth_index.py (rows, hashes, statistics, 64-d vectors and a kNN graph; no images),
then runs, as subprocesses, exactly what a user runs:

    python -m dataaudit detect DIR --db INDEX
    python -m dataaudit report DIR --db INDEX --format json

and records wall seconds, CPU seconds and the peak RSS of the process tree (sampled every
20 ms, as bench_scan.py does). A run whose RSS passes --max-rss-gb is stopped and reported
as such (the machine is shared; an unbounded run must not take it down).

Targets (issue 12): peak RSS at the largest size <= 3x that at the smallest; time is
printed with its ratio (linear growth would be 10x from 1M to 10M).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

try:
    import psutil
except ImportError:  # pragma: no cover
    sys.exit("bench_scale.py needs psutil: pip install psutil")

from harness import save_results, warn_if_loaded  # noqa: E402
from make_synth_index import build  # noqa: E402


class Watch(threading.Thread):
    """Peak RSS of a process tree; stops the tree when it passes `cap` bytes."""

    def __init__(self, pid: int, cap: int) -> None:
        super().__init__(daemon=True)
        self.root, self.cap = psutil.Process(pid), cap
        self.peak, self.capped = 0, False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                total = 0
            self.peak = max(self.peak, total)
            if total > self.cap and not self.capped:
                self.capped = True
                os.killpg(self.root.pid, signal.SIGKILL)
            self._done.wait(0.02)

    def stop(self) -> None:
        self._done.set()
        self.join()


def timed(cmd: list[str], cap: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        watch = Watch(proc.pid, cap)
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        watch.stop()
        out.seek(0)
        text = out.read()
    return {
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": watch.peak / 2**20,
        "exit": os.waitstatus_to_exitcode(status),
        "stopped_at_cap": watch.capped,
        "tail": text[-1500:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--max-rss-gb", type=float, default=8.0)
    ap.add_argument("--steps", default="detect,report")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    cap = int(args.max_rss_gb * 2**30)
    cores = os.cpu_count() or 1
    results: dict = {"sizes": sizes, "cores": cores, "load_before": os.getloadavg()[0]}
    python = sys.executable
    for n in sizes:
        db_path = HERE / ".data" / f"synth_{n}.duckdb"
        db_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        existed = db_path.exists()
        build(n, db_path)
        size_mb = db_path.stat().st_size / 2**20
        print(f"\n== {n:,} rows: {db_path.name} {size_mb:,.0f} MB"
              f"{' (reused)' if existed else f', built in {time.perf_counter() - t0:.0f} s'}")  # fmt: skip
        row: dict = {"db_mb": size_mb}
        for step in args.steps.split(","):
            cmd = [python, "-m", "dataaudit", step, str(db_path.parent), "--db", str(db_path)]
            if step == "report":
                cmd += ["--format", "json"]
            r = timed(cmd, cap)
            row[step] = r
            state = (
                f"STOPPED at the {args.max_rss_gb:g} GB cap"
                if r["stopped_at_cap"]
                else f"exit {r['exit']}"
            )
            print(f"   {step:7s} {r['seconds']:7.1f} s wall, {r['cpu_s']:7.1f} CPU s, "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB, {state}")  # fmt: skip
            if r["exit"] != 0 and not r["stopped_at_cap"]:
                print("   " + r["tail"].strip().replace("\n", "\n   ")[-800:])
        results[str(n)] = row
    if len(sizes) > 1:
        lo, hi = str(sizes[0]), str(sizes[-1])
        print(f"\n== {sizes[-1]:,} vs {sizes[0]:,} rows ({sizes[-1] / sizes[0]:g}x the rows)")
        for step in args.steps.split(","):
            a, b = results[lo][step], results[hi][step]
            ok = not b["stopped_at_cap"] and b["exit"] == 0
            ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
            verdict = "PASS" if ok and ratio <= 3 else "MISS"
            print(f"   {step:7s} peak RSS ratio {ratio:.2f} (target <= 3: {verdict}"
                  f"{'' if ok else ', the large run did not finish'}); time ratio "
                  f"{b['seconds'] / a['seconds']:.1f}, CPU ratio {b['cpu_s'] / a['cpu_s']:.1f}")  # fmt: skip
    results["load_after"] = os.getloadavg()[0]
    warn_if_loaded(results["load_before"], cores)
    save_results("bench_scale", results)


if __name__ == "__main__":
    main()
