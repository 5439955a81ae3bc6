"""Peak memory of a scan with embeddings, and of its kNN step alone at larger sizes.

Run:  python bench/bench_memory.py --data bench/.data/jpegs_2k --knn-n 20000 --knn-n 100000

Target (issue 8): a scan of 100,000 images with embeddings, kNN step included, peaks at
<= 2 GB. A full 100k scan with embeddings takes hours on a small CPU box, so this measures
the two parts separately and says how each grows:

- ``--data DIR`` (repeatable): ``dataaudit scan DIR --no-detect`` with the default embedder,
  into a fresh index, as a subprocess; peak summed RSS of it and its workers (sampled every
  20 ms, see bench_scan.TreeRssMonitor), and the peak of the main process alone. Decoding
  and writing stream in bounded batches, so this part should not grow with the dataset.
- ``--knn-n N`` (repeatable): an index holding N synthetic unit vectors of the default
  embedder's width (1280) in 100 labelled clusters, then the scan's graph step alone
  (``EmbedStage.finish``: kNN over all, kNN within labels, 2-D map) in a subprocess; its
  peak RSS. This part holds every vector at once, so it is the one that grows.

The scan peak for 100k is the larger of the two parts (they do not overlap: the graph is
built after the last batch is written). Raw numbers go to bench/results/memory_*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_scan import timed  # noqa: E402  (sibling script, not a package)

DIM = 1280  # efficientnet_lite0, the default embedder
CLASSES = 100


def build_vector_index(db: Path, n: int, seed: int = 0) -> None:
    """An index with n images in CLASSES labelled clusters and their unit vectors."""
    import numpy as np
    import polars as pl

    from dataaudit.store import db as store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, DIM)).astype(np.float32)
    con = store.open_index(db)
    try:
        step = 20_000
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            cls = rng.integers(0, CLASSES, hi - lo)
            v = centres[cls] + 0.6 * rng.standard_normal((hi - lo, DIM)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ids = np.arange(lo, hi, dtype=np.int64)
            store.write_frame(con, "images", pl.DataFrame({
                "file_id": ids, "path": [f"train/{c}/{i}.jpg" for c, i in zip(cls, ids, strict=True)],
                "split": "train", "label": [str(c) for c in cls], "bytes": 1, "mtime_ns": 1,
                "decode_status": "ok", "is_corrupt": False,
            }))  # fmt: skip
            store.write_frame(con, "embeddings", pl.DataFrame(
                {"file_id": ids, "vector": list(v)},
                schema={"file_id": pl.Int64, "vector": pl.List(pl.Float32)},
            ))  # fmt: skip
        store.mark_graph_stale(con)
    finally:
        con.close()


def graph_step(db: Path) -> None:
    """What a scan runs after its last batch: the kNN graph and the map (subprocess body)."""
    from dataaudit.embed.stage import EmbedStage
    from dataaudit.store import db as store

    con = store.open_index(db)
    try:
        t0 = time.perf_counter()
        EmbedStage(device="cpu").finish(con)
        links = con.execute("SELECT count(*) FROM knn").fetchall()[0][0]
        print(json.dumps({"graph_s": time.perf_counter() - t0, "links": links}))
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", default=[], help="image folder")
    parser.add_argument("--knn-n", type=int, action="append", default=[], help="vectors")
    parser.add_argument("--graph-step", type=Path, help=argparse.SUPPRESS)  # subprocess body
    args = parser.parse_args()
    if args.graph_step:
        graph_step(args.graph_step)
        return
    rows = []
    env_py = [sys.executable]
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as scratch:
        for data in args.data:
            n = sum(len(f) for _, _, f in os.walk(data))
            db = Path(scratch) / f"scan_{data.name}.duckdb"
            cmd = [*env_py, "-m", "dataaudit", "scan", str(data), "--db", str(db), "--no-detect",
                   "--quiet"]  # fmt: skip
            run = timed(f"scan {n}", cmd)
            rows.append({"part": "scan+embed+graph", "n": n, "seconds": run.seconds,
                         "peak_tree_rss_mb": run.peak_rss / 2**20, "max_procs": run.max_procs})  # fmt: skip
            print(f"scan with embeddings, {n:>7,} images: peak {run.peak_rss / 2**20:7.0f} MB "
                  f"(all processes), {run.seconds:.0f} s", flush=True)  # fmt: skip
        for n in args.knn_n:
            db = Path(scratch) / f"vectors_{n}.duckdb"
            build_vector_index(db, n)
            run = timed(f"graph {n}", [*env_py, str(Path(__file__)), "--graph-step", str(db)])
            out = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append({"part": "graph step only", "n": n, "seconds": run.seconds,
                         "peak_tree_rss_mb": run.peak_rss / 2**20, **out})  # fmt: skip
            print(f"graph step (kNN + map), {n:>7,} vectors: peak {run.peak_rss / 2**20:7.0f} MB,"
                  f" {out['graph_s']:.0f} s", flush=True)  # fmt: skip
            db.unlink()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out_file = results / f"memory_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out_file.write_text(json.dumps({"rows": rows, "target_mb": 2048}, indent=1))
    print(f"raw numbers: {out_file.relative_to(REPO)}")


if __name__ == "__main__":
    main()
