"""A synthetic index of N images, no images: rows, hashes, statistics, 64-d vectors, kNN.

    python bench/make_synth_index.py --n 1000000     # -> bench/.data/synth_1000000.duckdb

For the scale benchmark of detectors and report (bench_scale.py): the tables a scan with
embeddings writes, at sizes no test folder reaches. Rows are generated inside DuckDB from
`range(lo, hi)` in chunks of --chunk rows, with values from hash(i, salt), so row i is the
same whatever N and whatever the chunking; only the vectors are made in numpy.

What is planted (row i, classes c = i mod 1000; N must be a multiple of 1000):
- 0.1% corrupt (decode_status truncated, no statistics), 0.1% wrong extension (.png);
- 1% blank images: pHash = dHash = 0 (one hot bucket of N/100 rows), dark statistics;
- 0.5% byte copies of the previous row (same content and pixel hash) and 0.2% near copies
  (pHash one bit away, same grey signature);
- 0.1% tiny (32 px) images, 0.5% grayscale, brightness/sharpness from normal/lognormal laws;
- 0.5% mislabelled: stored label c + 1, neighbours and vector from class c;
- 0.1% embedding outliers: neighbour similarities ~0.35 instead of ~0.9.
kNN: k neighbours per image in scope 'all' (rows i + 1000 r, same class) and 'label'
(members of the stored label), similarity decreasing with rank.

The database is built as <out>.partial and renamed when complete; an existing one is reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CLASSES = 1000
DIM = 64


def _u(salt: str) -> str:
    """SQL for a uniform [0, 1) value from row i and a salt."""
    return f"(hash(i, '{salt}') / 18446744073709551616.0)"


def _normal(salt: str) -> str:
    """SQL for a standard normal value (Box-Muller on two hashed uniforms)."""
    return f"(sqrt(-2 * ln(1 - {_u(salt + '1')})) * cos(2 * pi() * {_u(salt + '2')}))"


def _h64(expr: str) -> str:
    """SQL for a 64-bit pattern as BIGINT from hash(expr)."""
    return f"CAST(CAST(hash({expr}) AS HUGEINT) - 9223372036854775808 AS BIGINT)"


def _fid(expr: str) -> str:
    """file_id of row `expr`: a hash, as real ids are (xxh3 of the path)."""
    return f"CAST(hash({expr}, 'id') >> 1 AS BIGINT)"


IMAGES_SQL = f"""
INSERT INTO images BY NAME
SELECT
    {_fid("i")} AS file_id,
    split || '/' || label || '/img_' || lpad(CAST(i AS VARCHAR), 9, '0') || ext AS path,
    split, label,
    CAST(20000 + {_u("bytes")} * 180000 AS BIGINT) AS bytes,
    1700000000000000000 + i AS mtime_ns,
    ext,
    CASE WHEN copy THEN md5(CAST(i - 1 AS VARCHAR)) ELSE md5(CAST(i AS VARCHAR)) END
        AS content_hash,
    'JPEG' AS format, ext = '.jpg' AS format_matches_ext,
    CASE WHEN corrupt THEN NULL WHEN tiny THEN 32 ELSE 300 + CAST({_u("w")} * 300 AS INTEGER)
        END AS width,
    CASE WHEN corrupt THEN NULL WHEN tiny THEN 32 ELSE 300 + CAST({_u("h")} * 300 AS INTEGER)
        END AS height,
    'RGB' AS mode, 3 AS channels, 8 AS bit_depth, false AS has_alpha, 1 AS n_frames,
    CASE WHEN corrupt THEN 'truncated' ELSE 'ok' END AS decode_status,
    corrupt AS is_corrupt,
    CASE WHEN corrupt THEN 'OSError' END AS error_class,
    CASE WHEN corrupt THEN 'image file is truncated' END AS error_message,
    1 AS decode_scale, false AS trailing_bytes,
    CASE WHEN corrupt THEN NULL WHEN copy THEN md5(CAST(i - 1 AS VARCHAR) || 'px')
         ELSE md5(CAST(i AS VARCHAR) || 'px') END AS pixel_hash,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0
         WHEN copy THEN {_h64("i - 1, 'p'")}
         WHEN near THEN xor({_h64("i - 1, 'p'")}, CAST(1 AS BIGINT) << CAST(i % 63 AS INTEGER))
         ELSE {_h64("i, 'p'")} END AS phash,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0
         WHEN copy OR near THEN {_h64("i - 1, 'd'")} ELSE {_h64("i, 'd'")} END AS dhash,
    CASE WHEN corrupt THEN NULL WHEN blank THEN unhex(repeat('00', 256))
         WHEN copy OR near THEN unhex(repeat(md5(CAST(i - 1 AS VARCHAR)), 16))
         ELSE unhex(repeat(md5(CAST(i AS VARCHAR)), 16)) END AS signature,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 2.0 ELSE greatest(0, least(255,
        120 + 30 * {_normal("b")})) END AS brightness_mean,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.0 ELSE greatest(0, 40 + 20 * {_normal("p5")})
        END AS brightness_p05,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 4.0 ELSE least(255, 210 + 20 * {_normal("p9")})
        END AS brightness_p95,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.5 ELSE greatest(1, 55 + 12 * {_normal("c")})
        END AS contrast,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.0 ELSE exp(6 + {_normal("l")}) END
        AS laplacian_var,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.0 ELSE exp(-1 + 0.5 * {_normal("s")}) END
        AS sharpness,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.0
         ELSE least(1, exp(-0.35 + 0.15 * {_normal("es")})) END AS edge_sharpness,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.1 ELSE least(8, 7 + 0.4 * {_normal("e")}) END
        AS entropy,
    CASE WHEN corrupt THEN NULL WHEN gray OR blank THEN 0.0
         ELSE greatest(0, 30 + 12 * {_normal("col")}) END AS colorfulness,
    CASE WHEN corrupt THEN NULL ELSE gray OR blank END AS is_grayscale,
    CASE WHEN corrupt THEN NULL WHEN gray OR blank THEN 0.0 ELSE 60 + 30 * {_u("mcd")} END
        AS max_channel_diff,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 1.0 ELSE 0.01 * {_u("df")} END AS dark_fraction,
    CASE WHEN corrupt THEN NULL WHEN blank THEN 0.0 ELSE 0.01 * {_u("bf")} END
        AS bright_fraction,
    1 AS scan_run_id
FROM (
    SELECT i,
        CASE WHEN {_u("split")} < 0.8 THEN 'train' WHEN {_u("split")} < 0.9 THEN 'val'
             ELSE 'test' END AS split,
        'c' || lpad(CAST(CASE WHEN i % 200 = 99 THEN (i + 1) % {CLASSES} ELSE i % {CLASSES} END
                         AS VARCHAR), 4, '0') AS label,
        CASE WHEN i % 1000 = 3 THEN '.png' ELSE '.jpg' END AS ext,
        i % 1000 = 5 AS corrupt,
        i % 100 = 11 AS blank,
        i % 200 = 7 AS copy,
        i % 500 = 13 AS near,
        i % 1000 = 21 AS tiny,
        i % 200 = 31 AS gray
    FROM range(?, ?) t(i)
)
"""


def _knn_sql(k: int, n: int) -> str:
    """Neighbours i + 1000 r (same class c = i mod 1000) in scope 'all'; in scope 'label'
    the members of the stored label, which differ only for mislabelled rows."""
    sim = f"""CASE WHEN i % 1000 = 17 THEN 0.35 - 0.01 * r
                  ELSE 0.93 - 0.012 * r + 0.01 * {_u("ks")} END"""
    return f"""
INSERT INTO knn
SELECT {_fid("i")}, {_fid(f"(i + {CLASSES} * r) % {n}")}, r, {sim}, 'all'
FROM range(?, ?) t(i), range(1, {k + 1}) s(r)
UNION ALL
SELECT {_fid("i")},
       {
        _fid(
            f"(CASE WHEN i % 200 = 99 THEN (i + 1) % {CLASSES} + {CLASSES} * (100 * r + 1)"
            f" ELSE i + {CLASSES} * r END) % {n}"
        )
    },
       r,
       CASE WHEN i % 200 = 99 THEN 0.55 - 0.01 * r ELSE {sim} END,
       'label'
FROM range(?, ?) t(i), range(1, {k + 1}) s(r)
"""


def _vectors(lo: int, hi: int, seed: int) -> np.ndarray:
    """Unit 64-d vectors: the class centre (by true class i mod 1000) plus noise."""
    centres = np.random.default_rng([seed, 0]).standard_normal((CLASSES, DIM)).astype(np.float32)
    i = np.arange(lo, hi)
    x = centres[i % CLASSES] + 0.35 * np.random.default_rng([seed, 1, lo]).standard_normal(
        (hi - lo, DIM), dtype=np.float32
    )
    outlier = i % 1000 == 17
    x[outlier] = np.random.default_rng([seed, 2, lo]).standard_normal(
        (int(outlier.sum()), DIM), dtype=np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(n: int, out: Path, k: int = 10, chunk: int = 1_000_000, seed: int = 0) -> Path:
    import pyarrow as pa

    from dataaudit.store import db

    if n % CLASSES:
        raise SystemExit(f"--n must be a multiple of {CLASSES}")
    if out.exists():
        return out
    partial = out.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = db.open_index(partial)
    con.execute("SET preserve_insertion_order = false")
    db.set_meta(con, "root", f"synthetic:{n}")
    run_id = db.start_run(con, "scan", {"synthetic": True, "n": n, "k": k, "seed": seed})
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        con.execute(IMAGES_SQL, [lo, hi])
        ids = con.execute(
            f"SELECT {_fid('i')} FROM range(?, ?) t(i) ORDER BY i", [lo, hi]
        ).fetchnumpy()
        vec = _vectors(lo, hi, seed)
        offsets = pa.array(np.arange(0, (hi - lo + 1) * DIM, DIM, dtype=np.int32))
        batch = pa.table(  # noqa: F841  (read by DuckDB by name)
            {
                "file_id": pa.array(next(iter(ids.values()))),
                "vector": pa.ListArray.from_arrays(offsets, pa.array(vec.ravel())),
            }
        )
        con.execute("INSERT INTO embeddings SELECT * FROM batch")
        con.execute(_knn_sql(k, n), [lo, hi, lo, hi])
        con.execute(
            f"INSERT INTO embedding_map SELECT {_fid('i')}, {_normal('x')}, {_normal('y')} "
            "FROM range(?, ?) t(i)",
            [lo, hi],
        )
        print(f"  rows {hi:,} of {n:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    db.finish_run(con, run_id, "completed", {"files": n})
    con.execute("CHECKPOINT")
    con.close()
    partial.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or HERE / ".data" / f"synth_{args.n}.duckdb"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build(args.n, out, k=args.k, chunk=args.chunk)
    print(f"{out}: {out.stat().st_size / 2**20:.0f} MB, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
