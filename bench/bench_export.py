"""Export: what the default rules remove on the planted-issue benchmark, and how long writing
a 20,000-image export takes against a plain ``cp -r`` of the same folder, in one run.

Run:  python bench/bench_export.py                   # signs figures + 20,000 photos, 3 repeats
      python bench/bench_export.py --n 2000 --skip-signs
      python bench/bench_export.py --embed           # signs scanned with embeddings (slower)

Part 1 (``../shared/bench/signs_planted``): scan it into a temporary index (the shared folder
is never written), export with the default rules, scan the export again, and print the files
dropped per rule, leaking duplicate groups before and after, the issue counts of the
re-scanned export, and the achieved fractions of a grouped re-split.

Part 2 (timing): builds or reuses ``bench/.data/jpegs_<n>`` with make_jpegs.py, scans it once
(untimed, no embeddings), reads every file once so all runs see a warm page cache, then runs,
interleaved ``--repeats`` times, each as a subprocess timed end to end: ``cp -r`` (the
baseline), ``dataaudit export --mode copy`` (copy + read-back verification + audit files),
``--mode hardlink`` and ``--dry-run`` (planning only), each after an untimed ``sync`` so no run
pays for the previous one's write-back. Prints medians and ratios to ``cp -r``;
raw numbers go to bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIGNS = REPO.parent / "shared" / "bench" / "signs_planted"
sys.path.insert(0, str(REPO))


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "dataaudit", *map(str, args)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def _issue_counts(db: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT issue, count(*) FROM issues WHERE is_issue GROUP BY issue ORDER BY issue"
        ).fetchall()
        groups = con.execute(
            "SELECT count(*) FROM (SELECT d.group_id FROM duplicate_groups d JOIN images i "
            "USING (file_id) WHERE i.split IS NOT NULL GROUP BY d.group_id "
            "HAVING count(DISTINCT i.split) > 1)"
        ).fetchall()[0][0]
    finally:
        con.close()
    return {**dict(rows), "leaking_groups": groups}


def signs_figures(work: Path, embed: bool) -> dict:
    import dataaudit as da

    embed_flag = "--embed" if embed else "--no-embed"
    db = work / "signs.duckdb"
    t = _run(_cli("scan", SIGNS, "--db", db, embed_flag, "-q"))
    before = _issue_counts(db)
    idx = da.open_index(db)
    out = work / "signs_clean"
    t0 = time.perf_counter()
    res = da.export(idx, out)
    export_s = time.perf_counter() - t0
    db2 = work / "signs_clean.duckdb"
    _run(_cli("scan", out, "--db", db2, embed_flag, "-q"))
    after = _issue_counts(db2)
    resplit = da.export(idx, work / "unused", resplit="train=0.8,val=0.1,test=0.1", dry_run=True)
    kept_dups = da.export(
        idx,
        work / "unused",
        rules=da.ExportRules(dedupe=False, leakage="ignore"),
        resplit="train=0.8,val=0.1,test=0.1",
        dry_run=True,
    )
    fig = {
        "embeddings": embed,
        "scan_s": round(t, 1),
        "export_s": round(export_s, 2),
        "files_before": res.summary["files_before"],
        "files_after": res.summary["files_after"],
        "dropped_by_rule": res.summary["dropped_by_rule"],
        "leaking_groups_before": res.summary["leaking_groups_before"],
        "leaking_groups_after_plan": res.summary["leaking_groups_after"],
        "issues_before": before,
        "issues_after_rescan": after,
        "resplit_achieved": resplit.summary["achieved_fractions"],
        "resplit_keep_duplicates_achieved": kept_dups.summary["achieved_fractions"],
    }
    print("\n== signs_planted, default rules ==")
    print(f"scan {fig['scan_s']} s ({'with' if embed else 'without'} embeddings); "
          f"export {fig['export_s']} s; {fig['files_before']} -> {fig['files_after']} files")  # fmt: skip
    for rule, n in fig["dropped_by_rule"].items():
        print(f"  dropped {n:>5}  {rule}")
    print(f"leaking groups: {fig['leaking_groups_before']} before -> "
          f"{fig['leaking_groups_after_plan']} planned -> "
          f"{after['leaking_groups']} in the re-scanned export")  # fmt: skip
    for k in ("corrupt", "exact_duplicate", "near_duplicate", "leakage"):
        print(f"  {k:<16} {before.get(k, 0):>5} before -> {after.get(k, 0):>5} after re-scan")
    print(f"re-split 0.8/0.1/0.1 achieved: {fig['resplit_achieved']}; "
          f"keeping duplicates (grouped): {fig['resplit_keep_duplicates_achieved']}")  # fmt: skip
    return fig


def timing(work: Path, n: int, repeats: int) -> dict:
    data = (
        HERE / ".data" / f"jpegs_{n // 1000}k" if n % 1000 == 0 else HERE / ".data" / f"jpegs_{n}"
    )
    subprocess.run([sys.executable, str(HERE / "make_jpegs.py"), "--n", str(n), "--out", str(data)],
                   check=True)  # fmt: skip
    db = work / "jpegs.duckdb"
    _run(_cli("scan", data, "--db", db, "--no-embed", "-q"))
    nbytes = 0
    for dirpath, _, names in os.walk(data):  # warm the page cache for every run alike
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                nbytes += len(f.read())
    kinds = {
        "cp -r": lambda out: ["cp", "-r", str(data), str(out)],
        "export copy": lambda out: _cli("export", data, "--db", db, "--out", out, "-q"),
        "export hardlink": lambda out: _cli(
            "export", data, "--db", db, "--out", out, "--mode", "hardlink", "-q"
        ),  # fmt: skip
        "export --dry-run": lambda out: _cli("export", data, "--db", db, "--out", out, "--dry-run"),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind, cmd in kinds.items():
            out = work / "out"
            os.sync()  # flush the previous run's dirty pages, so no run pays for another's
            times[kind].append(_run(cmd(out)))
            shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["cp -r"]
    print(
        f"\n== export timing: {n:,} JPEGs, {nbytes / 1e6:,.0f} MB, {repeats} repeats, warm cache =="
    )
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for kind, m in med.items():
        lo, hi = min(times[kind]), max(times[kind])
        print(f"  {kind:<18} median {m:6.2f} s  ({lo:.2f}..{hi:.2f})  "
              f"{n / m:8,.0f} files/s  x{m / base:4.2f} of cp -r")  # fmt: skip
    return {"n": n, "bytes": nbytes, "times_s": times, "median_s": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embed", action="store_true", help="scan the signs bench with embeddings")
    ap.add_argument("--skip-signs", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        work = Path(tmp)
        if not args.skip_signs:
            results["signs"] = signs_figures(work, args.embed)
        if not args.skip_timing:
            results["timing"] = timing(work, args.n, args.repeats)
    out = HERE / "results" / "export.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nraw numbers: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
