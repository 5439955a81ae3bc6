"""Candidate-search settings for the approximate kNN graph, swept on the first n rows.

Run:  python bench/knn_sweep.py --n 200000 --queries 2000
      python bench/knn_sweep.py --n 1000000 --configs hnsw_norm --ef 64,128

The approximate graph keeps the true top 10 exactly when the candidate search finds them
(the re-rank scores candidates with the full vectors), so this measures only that: for
--queries random rows, the share of the true top 10 (brute force over the n stored
vectors) found among the C candidates of each index, plus build seconds and search
seconds per 1M queries (timed on --time-queries rows, CPU seconds beside wall).

Data: the float16 vectors of bench/synth.py (`cached_vectors`, 1,280-d, 1,000 classes),
projected like `build_graph` does (`reduce_stream`). Configurations:
  exact      exact top-C in the projected space (the ceiling of any index on it)
  hnsw_ip    faiss IndexHNSWFlat, inner product on the projections (norms <= 1)
  hnsw_norm  the same on re-normalised projections (inner product = cosine: a metric)
  hnsw_sq    hnsw_norm stored as fp16 (IndexHNSWSQ QT_fp16): half the index memory
  ivf        IndexIVFFlat, inner product, nlist = 4 sqrt(n), nprobe swept
  ivf_sq     the same with the lists stored as fp16 (IndexIVFScalarQuantizer QT_fp16)
  cells      `approx_knn` as built: k-means cells, each against its nprobe nearest cells,
             every row searched (the time is the whole candidate search)
Ground truth is cached in bench/.data/ (it costs a pass of n x queries dot products).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import save_results  # noqa: E402
from synth import BLOCK, cached_vectors, exact_top_k, read_rows  # noqa: E402

from dataaudit.embed import knn as K_  # noqa: E402

K = 10


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _hits(cand: np.ndarray, truth: np.ndarray) -> float:
    return (
        sum(len(set(c.tolist()) & set(t.tolist())) for c, t in zip(cand, truth, strict=True))
        / truth.size
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--source-n", type=int, default=1_000_000, help="rows in the cached file")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--time-queries", type=int, default=20_000)
    ap.add_argument("--configs", default="exact,hnsw_ip,hnsw_norm,ivf")
    ap.add_argument("--ef", default="64,128,256")
    ap.add_argument("--nprobe", default="8,16,32,64")
    ap.add_argument("--nlist-factor", type=float, default=4.0, help="nlist = factor * sqrt(n)")
    ap.add_argument("--row-probes", type=int, default=3, help="cells: nearest cells per row")
    ap.add_argument("--cands", default="30,50")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=HERE / ".data", help="vector cache folder")
    args = ap.parse_args()
    faiss = K_._faiss(args.threads)
    n = args.n
    stored = cached_vectors(args.source_n, args.data)

    def read(lo, hi):
        for start in range(lo, hi, BLOCK):
            yield read_rows(stored, start, min(hi, start + BLOCK))

    t0, c0 = time.perf_counter(), _cpu()
    reduced = K_.reduce_stream(read, n)
    print(
        f"n={n:,}: projection {time.perf_counter() - t0:.0f} s ({_cpu() - c0:.0f} CPU s)",
        flush=True,
    )
    rows = np.sort(np.random.default_rng(11).choice(n, args.queries, replace=False))
    t0 = time.perf_counter()
    truth = exact_top_k(stored, n, rows, args.data, K)
    print(f"truth on {len(rows)} rows: {time.perf_counter() - t0:.0f} s", flush=True)
    cands = [int(c) for c in args.cands.split(",")]
    tq = np.random.default_rng(12).choice(n, min(args.time_queries, n), replace=False)
    red32 = reduced.astype(np.float32)
    norm32 = K_._unit_rows(red32)
    results = []

    def record(name, build_s, build_cpu, search, **extra):
        for c in cands:
            _, ids = search(rows, c + 1)
            ids = np.where(ids == rows[:, None], -1, ids)
            t0, c0 = time.perf_counter(), _cpu()
            search(tq, c + 1)
            per_m = 1e6 / len(tq)
            r = {"config": name, "n": n, "cand": c, **extra, "build_s": build_s,
                 "build_cpu_s": build_cpu, "search_s_per_1M": (time.perf_counter() - t0) * per_m,
                 "search_cpu_s_per_1M": (_cpu() - c0) * per_m, "recall": _hits(ids, truth)}  # fmt: skip
            results.append(r)
            print(json.dumps(r), flush=True)

    configs = args.configs.split(",")
    if "exact" in configs:
        for name, data in (("exact_ip", red32), ("exact_norm", norm32)):
            top, parts = max(cands), []
            for lo in range(0, len(rows), 100):  # 100 x n similarities at a time
                q = rows[lo : lo + 100]
                sims = data[q] @ data.T
                sims[np.arange(len(q)), q] = -np.inf
                part = np.argpartition(-sims, top, axis=1)[:, :top]
                order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
                parts.append(np.take_along_axis(part, order, axis=1))
            order = np.concatenate(parts)
            for c in cands:
                r = {"config": name, "n": n, "cand": c, "recall": _hits(order[:, :c], truth)}
                results.append(r)
                print(json.dumps(r), flush=True)
    for name in ("hnsw_ip", "hnsw_norm", "hnsw_sq"):
        if name not in configs:
            continue
        data = red32 if name == "hnsw_ip" else norm32
        d = data.shape[1]
        if name == "hnsw_sq":
            index = faiss.IndexHNSWSQ(
                d, faiss.ScalarQuantizer.QT_fp16, args.m, faiss.METRIC_INNER_PRODUCT
            )
        else:
            index = faiss.IndexHNSWFlat(d, args.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        t0, c0 = time.perf_counter(), _cpu()
        index.add(data)
        build_s, build_cpu = time.perf_counter() - t0, _cpu() - c0
        for ef in [int(e) for e in args.ef.split(",")]:
            index.hnsw.efSearch = ef
            record(name, build_s, build_cpu, lambda r, c, i=index, d=data: i.search(d[r], c),
                   ef=ef, m=args.m, efc=args.ef_construction)  # fmt: skip
        del index
    for name in ("ivf", "ivf_sq"):
        if name not in configs:
            continue
        nlist = int(args.nlist_factor * np.sqrt(n))
        quant = faiss.IndexFlatIP(red32.shape[1])
        if name == "ivf":
            index = faiss.IndexIVFFlat(quant, red32.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quant, red32.shape[1], nlist,
                                                  faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        t0, c0 = time.perf_counter(), _cpu()
        train = red32[np.random.default_rng(3).choice(n, min(n, 64 * nlist), replace=False)]
        index.train(train)
        index.add(red32)
        build_s, build_cpu = time.perf_counter() - t0, _cpu() - c0
        for nprobe in [int(p) for p in args.nprobe.split(",")]:
            index.nprobe = nprobe
            record(name, build_s, build_cpu, lambda r, c, i=index: i.search(red32[r], c),
                   nlist=nlist, nprobe=nprobe)  # fmt: skip
    if "cells" in configs:
        for nprobe in [int(p) for p in args.nprobe.split(",")]:
            for c in cands:
                t0, c0 = time.perf_counter(), _cpu()
                K_.IVF_ROW_PROBES = args.row_probes
                ids, _ = K_.approx_knn(reduced, c, threads=args.threads, nprobe=nprobe)
                r = {"config": "cells", "n": n, "cand": c, "nprobe": nprobe,
                     "nlist": K_.ivf_lists(n), "row_probes": args.row_probes, "all_rows_s": time.perf_counter() - t0,
                     "all_rows_cpu_s": _cpu() - c0, "recall": _hits(ids[rows], truth)}  # fmt: skip
                results.append(r)
                print(json.dumps(r), flush=True)
    save_results(f"knn_sweep-{n}", results)


if __name__ == "__main__":
    main()
