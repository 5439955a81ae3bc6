"""Near-duplicate search at scale: hamming_pairs against exact brute force, in one run.

Run:  python bench/bench_hamming.py                    # 1M hashes, radii 4 and 6, 3 repeats
      python bench/bench_hamming.py --radii 4,6,8 --repeats 1
      python bench/bench_hamming.py --n 100000 --signs # smaller, plus the radius calibration

What it does:

1. Generates ``--n`` random 64-bit hashes (fixed seed, both signs of int64) and plants
   ``--per-distance`` partners at every Hamming distance 1..max radius (a copy of a random
   hash with that many distinct bits flipped).
2. For each radius, runs ``hamming_pairs`` (the planned multi-index join) ``--repeats`` times,
   each in a fresh forked process so that its peak RSS (``getrusage`` ru_maxrss) is its own;
   checks that every planted pair within the radius is found; and checks exactness on a
   random sample of query rows against numpy brute force.
3. Baselines measured in the same run, each in its own process:
   - exact brute force with numpy (``np.bitwise_count`` of xor, one core) on ``--queries``
     random rows against all rows, extrapolated to all n rows;
   - faiss ``IndexBinaryFlat.range_search`` (2 threads) on ``--faiss-queries`` rows,
     extrapolated, when ``faiss`` imports (``pip install faiss-cpu``); skipped otherwise;
   - the plain pigeonhole join (radius + 1 bands, equi-join per band) at ``--plain-radii``;
     for other radii its estimated work is printed instead of a timing.
   Ratios are brute-force (extrapolated) seconds / hamming_pairs median seconds.
4. With ``--signs``: calibrates the default radius on the signs_planted benchmark
   (``../shared/bench`` beside the repository, or ``bench/.data/bench``): pHash distance of every planted near copy to its original, against
   the number of pairs of untouched, different photos within each radius.

The machine is shared: the 1-minute load average is printed before and after, and a warning
when it passed half the core count. Raw numbers go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import save_results, warn_if_loaded  # noqa: E402

from dataaudit.detectors.hamming import (  # noqa: E402
    choose_plan,
    estimate_work,
    hamming_pairs,
    plain_plan,
    plan_cost,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def default_signs_root() -> Path:
    """``../shared/bench`` relative to the repository root, else ``bench/.data/bench``."""
    for root in (HERE.parent.parent / "shared" / "bench", HERE / ".data" / "bench"):
        if root.is_dir():
            return root
    return HERE.parent.parent / "shared" / "bench"


def make_hashes(n: int, per_distance: int, max_radius: int, seed: int, hot: float = 0.0):
    """Random hashes plus planted partners; returns (h, planted (a, b, distance) arrays).

    `hot`: the share of rows whose hash is one of a few hot values, as blank and flat
    images are (half of them hash 0, the rest split over 4 other values).
    """
    rng = np.random.default_rng(seed)
    base = rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    if hot > 0:
        n_hot = int(n * hot)
        values = np.array([0, 0, 0, 0, -1, 0x0F0F0F0F0F0F0F0F, 0x00FF00FF00FF00FF, 1 << 62])
        # planted partners are drawn from all rows; keep hot rows at the end, away from them
        base[n - n_hot :] = values[rng.integers(0, len(values), n_hot)]
    extra, pa, pb, pd = [], [], [], []
    for d in range(1, max_radius + 1):
        src = rng.choice(n - int(n * hot), size=per_distance, replace=False)
        for s in src:
            bits = rng.choice(64, size=d, replace=False)
            mask = np.uint64(sum(1 << int(x) for x in bits))
            extra.append((base[s : s + 1].view(np.uint64) ^ mask).view(np.int64)[0])
            pa.append(s)
            pb.append(n + len(extra) - 1)
            pd.append(d)
    h = np.concatenate([base, np.array(extra, dtype=np.int64)])
    return h, np.array(pa), np.array(pb), np.array(pd)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads, DuckDB's included
    return r.ru_utime + r.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_ours(h: np.ndarray, radius: int, strategy: str, sample: np.ndarray) -> dict:
    """One timed hamming_pairs call (in a child); pairs touching `sample` come back."""
    import duckdb

    frame = pl.DataFrame({"id": np.arange(len(h), dtype=np.int64), "h": h})
    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    rss_before = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    pairs = hamming_pairs(con, frame, radius, strategy=strategy)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    touching = pairs.filter(pl.col("a").is_in(sample) | pl.col("b").is_in(sample))
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": _rss_mb(),
        "rss_before_mb": rss_before,
        "duckdb_threads": threads,
        "pairs": pairs.height,
        "pair_keys": (pairs["a"] * (1 << 32) + pairs["b"]).to_numpy(),
        "touching": sorted(touching.select("a", "b", "distance").rows()),
    }


def run_numpy(h: np.ndarray, radius: int, queries: np.ndarray) -> dict:
    """Exact neighbours of `queries` by xor + bitwise_count over all rows, one core."""
    u = h.view(np.uint64)
    buf = np.empty_like(u)
    cnt = np.empty(len(u), dtype=np.uint8)
    found = []
    t0 = time.perf_counter()
    for q in queries:
        np.bitwise_xor(u, u[q], out=buf)
        np.bitwise_count(buf, out=cnt)
        for j in np.flatnonzero(cnt <= radius):
            if j != q:
                found.append((int(min(q, j)), int(max(q, j)), int(cnt[j])))
    seconds = time.perf_counter() - t0
    return {"seconds_per_query": seconds / len(queries), "touching": sorted(set(found))}


def run_faiss(h: np.ndarray, radius: int, queries: np.ndarray, threads: int) -> dict | None:
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(threads)
    codes = np.ascontiguousarray(h).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    t0 = time.perf_counter()
    lims, _, _ = index.range_search(codes[queries], radius + 1)  # strict "<" in faiss
    seconds = time.perf_counter() - t0
    return {"seconds_per_query": seconds / len(queries), "results": int(lims[-1])}


def in_child(fn, *args):
    """Run fn in a fresh forked process so its peak RSS and threads are its own."""
    with mp.get_context("fork").Pool(1) as pool:
        return pool.apply(fn, args)


def calibrate_signs(root: Path, radii: list[int]) -> dict:
    """pHash distances of planted near copies vs untouched look-alike pairs on signs_planted."""
    import csv

    import duckdb
    import imagehash
    from PIL import Image

    data = root / "signs_planted"
    with open(root / "signs_planted_manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    with open(root / "signs_planted_truth.csv") as f:
        truth = list(csv.DictReader(f))

    def phash(rel: str) -> int | None:
        try:
            with Image.open(data / rel) as im:
                return int.from_bytes(bytes.fromhex(str(imagehash.phash(im))), "big", signed=True)
        except Exception:  # corrupt planted files: no hash, like the scan
            return None

    hashes = {m["path"]: phash(m["path"]) for m in manifest}
    near = [
        bin((hashes[t["path"]] ^ hashes[t["group"]]) & (2**64 - 1)).count("1")
        for t in truth
        if t["issue"] in ("near_duplicate", "leakage") and "byte_copy" not in t["note"]
    ]
    untouched = [m["path"] for m in manifest if m["planted"] == ""]
    frame = pl.DataFrame({"id": range(len(untouched)), "h": [hashes[p] for p in untouched]})
    con = duckdb.connect()
    table = {}
    for r in radii:
        found = sum(d <= r for d in near)
        look_alikes = hamming_pairs(con, frame, r).height
        table[r] = {
            "near_copies_found": found,
            "near_copies": len(near),
            "untouched_pairs": look_alikes,
        }
    return {"untouched_images": len(untouched), "by_radius": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--per-distance", type=int, default=200)
    ap.add_argument("--radii", default="4,6")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200, help="numpy brute-force sample")
    ap.add_argument("--faiss-queries", type=int, default=2000)
    ap.add_argument("--plain-radii", default="4", help="radii to time the plain banded join at")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--signs", action="store_true", help="also calibrate the radius on signs")
    ap.add_argument("--signs-root", type=Path, default=default_signs_root())
    ap.add_argument(
        "--hot",
        type=float,
        default=0.0,
        help="share of rows in a few hot hash values (blank images), e.g. 0.02",
    )
    ap.add_argument(
        "--estimate-radii",
        default="2,3,4,5,6,7,8,10",
        help="radii to extrapolate the time to from the measured ones",
    )
    args = ap.parse_args()
    radii = [int(x) for x in args.radii.split(",")]
    plain_radii = [int(x) for x in args.plain_radii.split(",") if x]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    h, pa, pb, pd = make_hashes(args.n, args.per_distance, max(radii), args.seed, args.hot)
    n = len(h)
    print(f"{n:,} hashes ({args.n:,} random, {args.hot:.1%} of them in 8 hot values, + "
          f"{len(pa):,} planted at distances 1..{max(radii)}), generated in {time.perf_counter() - t0:.1f} s; {cores} cores, "
          f"load {load_before:.1f}")  # fmt: skip
    rng = np.random.default_rng(args.seed + 1)
    # sample rows outside the hot buckets: brute force lists a bucket's whole clique, the
    # search a star (see max_bucket)
    cold = args.n - int(args.n * args.hot)
    sample = np.concatenate([rng.choice(cold, args.queries - 20, replace=False), pb[:20]])
    faiss_sample = rng.choice(n, args.faiss_queries, replace=False)

    results: dict = {"n": n, "cores": cores, "args": {k: str(v) for k, v in vars(args).items()}}
    for r in radii:
        plan = choose_plan(r, n)
        work = estimate_work(plan, n)
        plain_work = estimate_work(plain_plan(r), n)
        print(
            f"\n== radius {r}: plan {[(b.width, b.sub_radius) for b in plan]} (width, sub-radius)"
        )
        print("   estimated work, M rows: probe {probe:.0f}, build {build:.0f}, verify {match:.0f}"
              .format(**{k: v / 1e6 for k, v in work.items()}))  # fmt: skip
        print("   plain {} bands would verify {:.0f} M candidate pairs".format(
            r + 1, plain_work["match"] / 1e6))  # fmt: skip
        runs = [in_child(run_ours, h, r, "auto", sample) for _ in range(args.repeats)]
        secs = [x["seconds"] for x in runs]
        ours = runs[0]
        keys = set(ours["pair_keys"].tolist())
        want = pd <= r
        planted_keys = (np.minimum(pa, pb) * (1 << 32) + np.maximum(pa, pb))[want]
        missing = int(sum(k not in keys for k in planted_keys.tolist()))
        brute = in_child(run_numpy, h, r, sample)
        exact = brute["touching"] == ours["touching"]
        fa = in_child(run_faiss, h, r, faiss_sample, cores)
        med = statistics.median(secs)
        row = {
            "plan": [(b.width, b.sub_radius) for b in plan],
            "seconds": secs,
            "median_s": med,
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
            "rss_before_mb": ours["rss_before_mb"],
            "pairs": ours["pairs"],
            "planted_within_radius": int(want.sum()),
            "planted_missing": missing,
            "sample_exact": exact,
            "numpy_s_per_query": brute["seconds_per_query"],
            "numpy_extrapolated_s": brute["seconds_per_query"] * n,
        }
        row["cpu_s"] = statistics.median(x["cpu_s"] for x in runs)
        print(f"   hamming_pairs: median {med:.1f} s, {row['cpu_s']:.0f} CPU s "
              f"(runs {', '.join(f'{s:.1f}' for s in secs)}),"
              f" peak RSS {row['peak_rss_mb']:.0f} MB (process held {ours['rss_before_mb']:.0f} MB"
              f" before the call), DuckDB threads {ours['duckdb_threads']}")  # fmt: skip
        print(f"   pairs found {ours['pairs']:,}; planted pairs within radius "
              f"{row['planted_within_radius']:,}, missing {missing}; exact on "
              f"{len(sample)} sampled rows vs brute force: {exact}")  # fmt: skip
        print(f"   numpy brute force (1 core): {brute['seconds_per_query'] * 1e3:.2f} ms/query "
              f"-> {row['numpy_extrapolated_s']:.0f} s for all {n:,} queries "
              f"= {row['numpy_extrapolated_s'] / med:.0f}x the banded join")  # fmt: skip
        if fa is None:
            print("   faiss: not installed, skipped (pip install faiss-cpu)")
        else:
            row["faiss_extrapolated_s"] = fa["seconds_per_query"] * n
            print(f"   faiss IndexBinaryFlat range_search ({cores} threads): "
                  f"{fa['seconds_per_query'] * 1e3:.2f} ms/query -> "
                  f"{row['faiss_extrapolated_s']:.0f} s for all queries "
                  f"= {row['faiss_extrapolated_s'] / med:.0f}x the banded join")  # fmt: skip
        if r in plain_radii:
            plain = in_child(run_ours, h, r, "bands", sample)
            row["plain_s"] = plain["seconds"]
            row["plain_peak_rss_mb"] = plain["peak_rss_mb"]
            same = plain["pairs"] == ours["pairs"] and plain["touching"] == ours["touching"]
            print(f"   plain {r + 1}-band join: {plain['seconds']:.1f} s, peak RSS "
                  f"{plain['peak_rss_mb']:.0f} MB = {plain['seconds'] / med:.1f}x the planned "
                  f"join; same pairs: {same}")  # fmt: skip
        results[f"radius_{r}"] = row

    if args.estimate_radii and radii:
        # CPU seconds per unit of modelled cost, from the measured radius with most work
        r0 = max(radii, key=lambda r: plan_cost(choose_plan(r, n), n))
        per_unit = results[f"radius_{r0}"]["cpu_s"] / plan_cost(choose_plan(r0, n), n)
        print(f"\n== estimated time at {n:,} hashes (cost model scaled by the CPU seconds "
              f"measured at radius {r0}; an extrapolation, not a measurement)")  # fmt: skip
        table = {}
        for r in [int(x) for x in args.estimate_radii.split(",")]:
            cpu = per_unit * plan_cost(choose_plan(r, n), n)
            table[r] = {"cpu_s": cpu, "wall_2_cores_s": cpu / min(2, cores)}
            print(f"   radius {r:2d}: ~{cpu:8.0f} CPU s, ~{cpu / min(2, cores) / 60:6.1f} min on "
                  f"2 idle cores ({'under' if cpu / min(2, cores) < 600 else 'over'} 10 min)")  # fmt: skip
        results["estimate"] = table

    if args.signs:
        cal = calibrate_signs(args.signs_root, [2, 4, 6, 8, 10, 12])
        results["signs"] = cal
        print(f"\n== radius calibration on signs_planted ({cal['untouched_images']} untouched "
              "photos of hands on a plain wall; pHash of the full image)")  # fmt: skip
        for r, v in cal["by_radius"].items():
            print(
                f"   radius {r:2d}: planted near copies found {v['near_copies_found']}/"
                f"{v['near_copies']}, pairs of different untouched photos {v['untouched_pairs']}"
            )

    results["load_1min_max"] = warn_if_loaded(load_before, cores)
    save_results("bench_hamming", results)


if __name__ == "__main__":
    main()
