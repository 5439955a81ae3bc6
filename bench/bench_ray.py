"""`dataaudit scan --engine ray` against the local engine, in one run, and per-stage costs.

Run:  python bench/bench_ray.py                    # 4,000 photos, 3 repeats
      python bench/bench_ray.py --n 2000 --repeats 5

Needs ray[data] (the ray extra). Builds (or reuses) the JPEG dataset from bench/make_jpegs.py
and reads it once untimed (warm page cache for every run). Then, interleaved --repeats
times, each a subprocess timed end to end with a fresh database:

- local:      dataaudit scan DATA --db NEW --no-embed --no-detect   (the baseline)
- ray:        the same with --engine ray --address ADDR, against a local Ray started once
              for the benchmark with all cores (the cluster case: the cluster is running)
- ray+start:  the same with --engine ray and no address: the scan starts a local Ray,
              uses it and shuts it down (the one-off case on a single machine)

Each kind also runs on the first quarter of the images (a dataset of n/4). Throughput is
reported two ways: end to end (n / median wall seconds, start-up included), and marginal:
the extra images over the extra seconds, 0.75 n / (T(n) - T(n/4)), which cancels each
engine's fixed start-up (starting or joining Ray, starting its workers) and is what decides
a long run. Target: ray within 1.5x of local on this machine, i.e. marginal ratio
ray/local >= 0.67. It also prints the per-stage seconds the Ray runs recorded in their
``_manifest.json`` (listing and planning, work-list write, time to first result, the
measurement stream, shard writes, index writes), plus one core's cost per file of
``measure()`` measured in-process: the figures docs/scale plans use for 100M images.
Raw numbers go to bench/results/ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
import make_jpegs  # noqa: E402  (sibling script, not a package)

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                  os.environ.get("PYTHONPATH")]))}  # fmt: skip

HOLD_RAY = """
import sys, ray
ray.init(num_cpus={cpus}, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
ray.shutdown()
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall


def measure_cost(data: Path, n: int = 300) -> float:
    """Seconds of one core per file for read + measure(), in this process."""
    from dataaudit.scan.measure import MeasureConfig, measure_file

    files = sorted(data.rglob("*.jpg"))[:n]
    cfg = MeasureConfig()
    measure_file(str(files[0]), ".jpg", cfg)  # imports and first-call costs out of the timing
    t = time.process_time()
    for p in files:
        measure_file(str(p), ".jpg", cfg)
    return (time.process_time() - t) / len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit('bench_ray.py needs Ray: pip install "dataaudit[ray]"')
    data = make_jpegs.default_out(args.n)
    make_jpegs.build(args.n, data)
    small_n = args.n // 4
    small = make_jpegs.default_out(small_n)
    make_jpegs.build(small_n, small)  # identical to the first quarter of the big set
    total_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    for folder in (data, small):
        for p in folder.rglob("*.jpg"):
            p.read_bytes()
    cpus = os.cpu_count() or 1
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RAY.format(cpus=cpus)], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    address = holder.stdout.readline().strip()
    base = [sys.executable, "-m", "dataaudit", "scan", "--no-embed", "--no-detect", "-q"]
    kinds = ("local", "ray", "ray+start")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    small_walls: dict[str, list[float]] = {k: [] for k in kinds}
    commits = []
    loads = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for kind, extra in (("local", []), ("ray", ["--engine", "ray", "--address", address]),
                                    ("ray+start", ["--engine", "ray"])):  # fmt: skip
                    db = Path(tmp) / f"{kind}-{r}-small" / "index.duckdb"
                    small_walls[kind].append(timed([*base, str(small), "--db", str(db), *extra]))
                    db = Path(tmp) / f"{kind}-{r}" / "index.duckdb"
                    walls[kind].append(timed([*base, str(data), "--db", str(db), *extra]))
                    loads.append(os.getloadavg()[0])
                    print(f"  {kind:<10} repeat {r + 1}: {walls[kind][-1]:6.1f} s "
                          f"({small_walls[kind][-1]:.1f} s on n/4)", flush=True)  # fmt: skip
                    if kind != "local":
                        (folder,) = (db.parent / "ray" / "runs").iterdir()
                        commit = json.loads((folder / "_manifest.json").read_text())
                        commit["index_bytes"] = db.stat().st_size
                        commits.append(commit)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    per_file = measure_cost(data)
    med = {k: statistics.median(v) for k, v in walls.items()}
    small_med = {k: statistics.median(v) for k, v in small_walls.items()}
    marginal = {k: (args.n - small_n) / max(1e-9, med[k] - small_med[k]) for k in kinds}
    print(f"\n{args.n:,} JPEGs ({total_bytes / 1e6:.0f} MB), {cpus} cores, "
          f"{args.repeats} repeats; load average during runs: {min(loads):.1f}..{max(loads):.1f}")  # fmt: skip
    if max(loads) > cpus / 2:
        print("WARNING: other work competed for the cores; wall-clock ratios are distorted")
    for k, v in walls.items():
        print(f"  {k:<10} median {med[k]:6.1f} s  {args.n / med[k]:5.0f} images/s end to end "
              f"(min {min(v):.1f}, max {max(v):.1f}); n/4: {small_med[k]:.1f} s; "
              f"marginal {marginal[k]:5.0f} images/s")  # fmt: skip
    ratio = marginal["ray"] / marginal["local"]
    ok = "PASS" if ratio >= 1 / 1.5 else "MISS"
    print(f"  marginal throughput ray / local:       {ratio:.2f}  (target >= 0.67: {ok})")
    print(
        f"  marginal throughput ray+start / local: {marginal['ray+start'] / marginal['local']:.2f}"
    )
    print(
        f"  end to end ray / local: {med['local'] / med['ray']:.2f}; "
        f"ray+start / local: {med['local'] / med['ray+start']:.2f} (start-up included)"
    )
    stages = {k: statistics.median(c["stage_s"][k] or 0 for c in commits)
              for k in commits[0]["stage_s"]}  # fmt: skip
    print("\nper-stage seconds of the Ray runs (medians):")
    for k, v in stages.items():
        print(f"  {k:<14} {v:7.2f} s   {1e3 * v / args.n:7.3f} ms/file")
    shard_b = statistics.median(c["shard_bytes"] for c in commits) / args.n
    index_b = statistics.median(c["index_bytes"] for c in commits) / args.n
    print(f"  measure() one core: {1e3 * per_file:.2f} ms/file; shards {shard_b:.0f} B/file, "
          f"index {index_b:.0f} B/file")  # fmt: skip
    out = HERE / "results" / "ray.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "cores": cpus, "walls": walls, "medians": med,
                               "small_walls": small_walls, "marginal_images_s": marginal,
                               "marginal_ratio_ray_local": ratio,
                               "stages_s": stages, "measure_core_s_per_file": per_file,
                               "shard_bytes_per_file": shard_b, "index_bytes_per_file": index_b,
                               "load": loads}, indent=1))  # fmt: skip
    print(f"raw numbers: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
