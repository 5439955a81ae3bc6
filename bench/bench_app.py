"""How fast the app's pages read a large index: every page's queries, and sort/filter changes.

    python bench/bench_app.py                   # 1,000,000 rows (builds bench/.data/app_1000000)
    python bench/bench_app.py --rows 100000     # quicker

Builds (or reuses) a synthetic index with the real schema: N image rows with plausible
statistics, 100 classes, train/val/test, a 2.5 KB JPEG thumbnail per row (256 distinct ones
repeated: the app never decodes full-size files, so no million images are needed), flagged
issues (~4 %) plus an outlier and a label-error score for every image (as the detectors
store them), 10,000 duplicate pairs, a 10-NN graph, a 2-D map and 32-d embeddings (real
ones are 1280-d; the app reads vectors only for a few dozen ids, by key).

Then, in one process, times what each page asks of ``app/data.py`` for its default view,
with every ``st.cache_data`` cache cleared before each repeat (cold), and sort/filter
changes (count + one page of rows + its thumbnails). Baseline in the same run: the naive
way, reading the whole ``images`` table into polars and filtering/sorting it in memory.
Targets: every page < 1 s, every sort/filter change < 0.5 s (on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))
sys.path.insert(0, str(REPO))

N_CLASSES = 100
N_THUMBS = 256


def thumbs(n: int = N_THUMBS, side: int = 128) -> list[bytes]:
    """Distinct smooth JPEGs of about the size real 128-px thumbnails have."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        base = rng.integers(60, 200, 3)
        yy, xx = np.mgrid[0:side, 0:side]
        arr = np.stack([(base[c] + 40 * np.sin(xx / (9 + c) + yy / 17)) for c in range(3)], -1)
        im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        x, y = rng.integers(10, side - 50, 2)
        d.ellipse([x, y, x + 40, y + 40], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def build(db_path: Path, n: int) -> None:
    """Write the synthetic index with the project's schema (bulk SQL, a minute or two at 1M)."""
    from dataaudit.store import db as store

    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = store.open_index(tmp)
    t0 = time.perf_counter()
    r = "(hash(i, {k}) % 1000000) / 1e6"  # deterministic uniform [0, 1) per row and stream k
    con.execute(f"""
        INSERT INTO images BY NAME
        SELECT i AS file_id,
               split || '/' || label || '/img_' || lpad(i::VARCHAR, 7, '0') || '.jpg' AS path,
               split, label,
               (20000 + {r.format(k=1)} * 80000)::BIGINT AS bytes, 0 AS mtime_ns, '.jpg' AS ext,
               md5(i::VARCHAR) AS content_hash, 'JPEG' AS format, TRUE AS format_matches_ext,
               w AS width, h AS height, 'RGB' AS mode, 3 AS channels, 8 AS bit_depth,
               FALSE AS has_alpha, 1 AS n_frames,
               CASE WHEN corrupt THEN 'truncated' ELSE 'ok' END AS decode_status,
               corrupt AS is_corrupt, (hash(i, 20) % 9223372036854775807)::BIGINT AS phash,
               (hash(i, 21) % 9223372036854775807)::BIGINT AS dhash,
               40 + {r.format(k=3)} * 180 AS brightness_mean, 5 + {r.format(k=4)} * 70 AS contrast,
               {r.format(k=5)} * 3000 AS laplacian_var, 0.1 + {r.format(k=6)} * 0.8 AS sharpness,
               3 + {r.format(k=7)} * 5 AS entropy, {r.format(k=8)} * 120 AS colorfulness,
               {r.format(k=9)} < 0.01 AS is_grayscale, {r.format(k=10)} * 60 AS max_channel_diff,
               {r.format(k=11)} * 0.1 AS dark_fraction, {r.format(k=12)} * 0.1 AS bright_fraction,
               1 AS scan_run_id
        FROM (
            SELECT i,
                   CASE WHEN i % 10 < 8 THEN 'train' WHEN i % 10 = 8 THEN 'val' ELSE 'test' END
                       AS split,
                   'c' || lpad((hash(i, 2) % {N_CLASSES})::VARCHAR, 3, '0') AS label,
                   (200 + hash(i, 13) % 400)::INT AS w, (200 + hash(i, 14) % 300)::INT AS h,
                   hash(i, 15) % 1000 = 0 AS corrupt
            FROM range({n}) t(i)
        )
    """)
    print(f"  images        {time.perf_counter() - t0:6.1f} s", flush=True)
    t0 = time.perf_counter()
    con.execute("CREATE TEMP TABLE tpl (k INTEGER, jpeg BLOB)")
    con.executemany("INSERT INTO tpl VALUES (?, ?)", list(enumerate(thumbs())))
    con.execute(f"""
        INSERT INTO thumbnails SELECT i, jpeg FROM range({n}) t(i)
        JOIN tpl ON tpl.k = i % {N_THUMBS} WHERE hash(i, 15) % 1000 <> 0
    """)
    print(f"  thumbnails    {time.perf_counter() - t0:6.1f} s", flush=True)
    t0 = time.perf_counter()
    types = ["dark", "light", "blurry", "low_information", "grayscale", "odd_size",
             "odd_aspect_ratio", "exact_duplicate", "near_duplicate", "leakage", "corrupt"]  # fmt: skip
    con.execute(
        f"""
        INSERT INTO issues
        SELECT i, list_extract(?, 1 + (hash(i, 31) % {len(types)})::INT), 0.5 + {r.format(k=32)} / 2,
               TRUE, NULL, 'measured value beyond the threshold', 1
        FROM range({n}) t(i) WHERE hash(i, 30) % 100 < 3
        """,
        [types],
    )
    for issue, k in (("outlier", 40), ("label_error", 41)):
        con.execute(f"""
            INSERT INTO issues
            SELECT i, '{issue}', s, s > 0.995, NULL,
                   CASE WHEN s > 0.995 THEN 'far from its neighbours: z = ' || round(s * 8, 1)
                   END, 1
            FROM (SELECT i, {r.format(k=k)} AS s FROM range({n}) t(i))
        """)
    print(f"  issues        {time.perf_counter() - t0:6.1f} s", flush=True)
    t0 = time.perf_counter()
    con.execute(f"""
        INSERT INTO duplicate_pairs
        SELECT i, i + 1, list_extract(['bytes', 'pixels', 'phash', 'embedding'],
               1 + (i // 100 % 4)::INT), (i // 100 % 4) * 1.5, 1
        FROM range(0, {n} - 1, {max(2, n // 10000)}) t(i)
    """)
    con.execute("""
        INSERT INTO duplicate_groups
        SELECT a, a, TRUE, 1 FROM duplicate_pairs UNION ALL SELECT b, a, FALSE, 1 FROM duplicate_pairs
    """)
    con.execute(f"""
        INSERT INTO knn
        SELECT i, (i + 1 + hash(i, r) % 5000) % {n}, r, (0.95 - r * 0.02)::REAL, 'all'
        FROM range({n}) t(i), range(1, 11) s(r)
    """)
    con.execute(f"""
        INSERT INTO embedding_map
        SELECT i, (c % 10) * 3 + {r.format(k=50)}, (c // 10) * 3 + {r.format(k=51)}
        FROM (SELECT i, hash(i, 2) % {N_CLASSES} AS c FROM range({n}) t(i))
    """)
    con.execute(f"""
        INSERT INTO embeddings
        SELECT i, list_transform(range(32), lambda j: ((hash(i, j + 100) % 2000) / 1000.0 - 1)::FLOAT)
        FROM range({n}) t(i)
    """)
    print(f"  graph, embeddings {time.perf_counter() - t0:6.1f} s", flush=True)
    con.execute(
        "INSERT INTO findings VALUES ('class_counts', 'info', ?, '{}', 1)",
        [f"{N_CLASSES} classes, {n:,} labelled images"],
    )
    for run_id, kind in ((1, "scan"), (2, "detect")):
        con.execute(
            "INSERT INTO runs VALUES (?, ?, 'completed', now(), now(), '{}', '{}', '{}')",
            [run_id, kind],
        )
    store.set_meta(con, "root", str(db_path.parent / "no-such-folder"))
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(db_path)


def timed(fn, repeats: int, clear) -> tuple[float, float, float]:  # noqa: ANN001
    """Median, min, max seconds of ``fn()`` with the caches cleared before each call."""
    times = []
    for _ in range(repeats):
        clear()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=REPO / "bench" / ".data")
    ap.add_argument("--build-only", action="store_true", help="build the index and stop")
    ap.add_argument(
        "--recompute", action="store_true", help="also time the Issues page's in-memory detect"
    )
    args = ap.parse_args()
    db_path = args.data / f"app_{args.rows}" / "index.duckdb"
    if not db_path.exists():
        print(f"building a {args.rows:,}-row index at {db_path}", flush=True)
        t0 = time.perf_counter()
        build(db_path, args.rows)
        print(f"  built in {time.perf_counter() - t0:.0f} s, {db_path.stat().st_size / 1e9:.2f} GB")
    if args.build_only:
        return

    os.environ["DATAAUDIT_APP_PATH"] = str(db_path)
    os.environ["DATAAUDIT_APP_DB"] = str(db_path)
    import logging

    import data as d
    import polars as pl
    import streamlit as st

    for name in list(logging.root.manager.loggerDict):  # "no runtime" warnings, once per call
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)

    import dataaudit as da

    idx = d.index()
    key = "bench"
    clear = st.cache_data.clear

    shown = ("file_id", "path", "label", "split", "sharpness", "brightness_mean", "width",
             "height")  # what Browse asks for by default  # fmt: skip

    def page_of(spec: dict, per_page: int = 60) -> None:
        d.count(key, spec)
        cols = tuple(dict.fromkeys([*shown, spec.get("sort") or "path"]))
        rows = d.images(key, spec, columns=cols, limit=per_page)
        d.thumbnails(key, tuple(rows["file_id"].to_list()))

    def overview() -> None:
        d.overview(key)
        d.findings(key)
        d.decisions()
        d.histograms(key)

    def browse() -> None:
        d.facets(key)
        page_of({"sort": "path"})

    def issues() -> None:
        d.issues(key)
        rows, _ = d.ranked(key, "blurry", True, 36)
        d.thumbnails(key, tuple(rows["file_id"].to_list()))
        d.ranked(key, "outlier", False, 36)

    def duplicates() -> None:
        groups, _ = d.duplicates(key)
        first = groups.head(16)
        d.thumbnails(key, tuple(first["file_id"].to_list()))

    def map_page() -> None:
        d.overview(key)
        d.map_points(key)
        top, _ = d.ranked(key, "outlier", None, 30)
        d.thumbnails(key, tuple(top["file_id"].to_list()))
        d.outlier_clusters(key, tuple(top["file_id"].to_list()), 0.8)

    def labels() -> None:
        d.facets(key)
        page_of({"labels": ["c007"], "sort": "path"}, 36)
        d.issues(key, "label_error")
        d.tables(key)

    def human() -> None:
        d.facets(key)
        d.human_sample(20, 1234, [])

    def per_class() -> None:
        d.class_stats(key)
        d.images(key, {"labels": ["c007"], "where": "NOT is_corrupt", "sort": "path"},
                 columns=("file_id", "path"), limit=200)  # fmt: skip

    def review() -> None:
        d.facets(key)
        d.count(key, {"sort": "path"})
        rows = d.images(key, {"sort": "path"}, columns=("file_id", "path", "label", "split"),
                        limit=100)  # fmt: skip
        d.thumbnails(key, tuple(rows["file_id"].to_list()))
        d.decisions()

    def sql_page() -> None:
        d.schema(key)
        d.sql(key, "SELECT label, split, count(*) AS n, avg(sharpness) AS sharpness "
                   "FROM images GROUP BY ALL ORDER BY ALL")  # fmt: skip

    def detail() -> None:
        d.image(key, 4242)
        nb = d.neighbors(key, 4242, 8)
        d.thumbnails(key, tuple(nb["file_id"].to_list()))

    pages = [("Overview", overview), ("Browse", browse), ("Issues", issues),
             ("Duplicates and leakage", duplicates), ("Map and outliers", map_page),
             ("Labels", labels), ("Human baseline", human), ("Per-class look", per_class),
             ("Review", review), ("SQL", sql_page), ("open one image (detail)", detail),
             ("Labels: confused classes (on demand)", lambda: d.confused_pairs(key))]  # fmt: skip
    changes = [
        ("sort by sharpness, descending", {"sort": "sharpness", "descending": True}),
        ("filter: one label's test images", {"splits": ["test"], "labels": ["c042"],
                                             "sort": "path"}),
        ("filter: issue = blurry", {"issues": ["blurry"], "sort": "path"}),
        ("filter: range 0.2 <= sharpness <= 0.3", {"ranges": {"sharpness": (0.2, 0.3)},
                                                   "sort": "sharpness"}),
        ("filter: WHERE width < 250 AND entropy > 7", {"where": "width < 250 AND entropy > 7",
                                                        "sort": "path"}),
        ("page 500 of the full grid", None),
    ]  # fmt: skip

    n = idx.count()
    print(f"\nindex: {n:,} images, {db_path.stat().st_size / 1e9:.2f} GB; "
          f"{os.cpu_count()} cores; medians of {args.repeats} cold runs (caches cleared)\n")  # fmt: skip
    rows = []
    print(f"{'page':<42} {'median s':>9} {'min':>7} {'max':>7}  target < 1 s")
    for name, fn in pages:
        med, lo, hi = timed(fn, args.repeats, clear)
        rows.append({"kind": "page", "name": name, "median_s": med, "min_s": lo, "max_s": hi})
        print(f"{name:<42} {med:9.3f} {lo:7.3f} {hi:7.3f}  {'ok' if med < 1 else 'MISSED'}")

    def naive(spec: dict | None) -> None:
        df = idx.sql("SELECT * FROM images")
        if spec and spec.get("splits"):
            df = df.filter(pl.col("split").is_in(spec["splits"]))
        if spec and spec.get("labels"):
            df = df.filter(pl.col("label").is_in(spec["labels"]))
        df.sort(spec.get("sort") or "path" if spec else "path").head(60)

    print(f"\n{'sort / filter change':<42} {'median s':>9} {'naive s':>8} {'naive/ours':>10}"
          "  target < 0.5 s")  # fmt: skip
    for name, spec in changes:
        if spec is None:
            fn = lambda: d.images(key, {"sort": "path"}, columns=shown, limit=60, offset=60 * 499)  # noqa: E731
        else:
            fn = lambda spec=spec: page_of(spec)  # noqa: E731
        med, lo, hi = timed(fn, args.repeats, clear)
        base, _, _ = timed(lambda spec=spec: naive(spec), args.repeats, clear)
        rows.append({"kind": "change", "name": name, "median_s": med, "min_s": lo, "max_s": hi,
                     "naive_s": base})  # fmt: skip
        print(f"{name:<42} {med:9.3f} {base:8.3f} {base / med:9.1f}x  "
              f"{'ok' if med < 0.5 else 'MISSED'}")  # fmt: skip

    recompute = None
    if args.recompute:
        t0 = time.perf_counter()
        cfg = da.load_config(None)
        da.detect(idx, cfg[0] if isinstance(cfg, tuple) else cfg, write=False)
        recompute = time.perf_counter() - t0
        print(f"\nIssues page 'Recompute' (every detector in memory, write=False): "
              f"{recompute:.1f} s (a button, not a page load)")  # fmt: skip
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"app_{args.rows}.json").write_text(
        json.dumps(
            {
                "rows": n,
                "repeats": args.repeats,
                "results": rows,
                "recompute_s": recompute,
                "duckdb": duckdb.__version__,
            },
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
