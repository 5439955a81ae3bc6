"""Near-duplicate candidates over 64-bit perceptual hashes without an O(n^2) scan.

    pairs = hamming_pairs(con, hashes_df, radius=6)   # hashes_df: id int64, h int64

Hashes are stored as DuckDB BIGINT holding the uint64 bit pattern (two's complement), so
Hamming distance is ``bit_count(xor(a, b))`` in SQL and ``np.bitwise_count(a ^ b)`` in numpy.

How the search works (multi-index hashing, generalised pigeonhole):

* Identical hash values are collapsed first; the search runs over *distinct* values and the
  id pairs are expanded at the end. Thousands of flat images sharing hash 0 then cost one
  row in the search, not a million-pair self-join per band.
* The 64 bits are cut into ``m`` contiguous bands and band ``i`` gets a sub-radius ``s_i``
  with ``sum(s_i + 1) == radius + 1``. If two hashes differ in at most ``radius`` bits, at
  least one band differs in at most ``s_i`` bits (otherwise the total would be > radius).
  With every ``s_i == 0`` this is the plain scheme: radius + 1 bands, one equi-join each.
* Band ``i`` is searched with one DuckDB equi-join: each side lists every value with its
  band key xor'ed by every mask of up to ceil(s_i/2) (probe side) or floor(s_i/2) (build
  side) bits, so keys within s_i bits meet. Splitting the flips between the sides keeps
  both small (23 + 23 rows per value for s_i = 2 on 22 bits, not 254). A pair that meets
  through several flip combinations is kept only for its canonical split, and only in the
  first band that can find it, so no pair is reported twice and no DISTINCT is needed.
  Candidates are verified with ``bit_count(xor(a, b)) <= radius`` inside the join.
* Memory stays bounded: one band at a time, the build side split into passes of at most
  ``_BUILD_ROWS_PER_PASS`` rows by a hash of the key, and only verified pairs are stored.
* ``strategy="auto"`` picks ``m``, the ``s_i`` and the band widths with a cost model (rows
  probed + rows built + candidates verified, for uniform hash bits); ``strategy="bands"``
  forces the plain scheme. At 1M random hashes, radius 6, the model's plan does ~1/60 of
  the plain scheme's work; see bench/bench_hamming.py.
* Real pHashes are not uniform: look-alike photos share more band bits than chance, so
  band buckets are fuller than the model assumes. That costs time, not memory (candidates
  are filtered inside the join). Drop near-flat images before the search: their hashes are
  noise that collides.

Heavy buckets: a hash value shared by more than ``max_bucket`` ids would expand to
``c * (c - 1) / 2`` pairs. Such a bucket is emitted as a star instead (every member paired
with its smallest id, distance 0) and only that smallest id is paired with nearby hashes.
Connected components (duplicate groups) are unchanged; only the redundant clique edges are
left out. ``max_bucket=None`` emits every pair.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dataaudit.errors import DataAuditError

HASH_BITS = 64
MAX_RADIUS = 16
# Relative costs of the three things a band join does, used only to choose a plan: generate
# and probe one row, insert one row into the hash table, and verify one candidate pair
# (bit_count on the full hash). Measured in DuckDB on 2 shared cores with 1M random hashes:
# probe and verify ~50-90 ns per row each, a row of a 25M-row build side ~4x that. The
# chosen plans for radius 4-10 at 1M hashes are the same for build weights 2 to 6.
_PROBE_COST = 1.0
_BUILD_COST = 4.0
_MATCH_COST = 1.0
_MAX_MASKS = 4096  # flip masks per side and band; bounds the probe-side blow-up
_MAX_SEARCH_GROUPS = 3  # optimise widths only when a split has at most this many sub-radii
_MAX_SEARCH_BANDS = 5  # ... and at most this many bands (keeps choose_plan under ~0.3 s)
# Rows on the build side of one join pass; bounds the hash table. At 1M hashes, radius 6,
# the whole call peaked at ~550 MB RSS (bench/bench_hamming.py).
_BUILD_ROWS_PER_PASS = 4_000_000

# Candidate pairs of the banded search: Hamming distance in bits (not groups.PAIR_SCHEMA,
# whose rows carry the layer that linked a verified pair).
HAMMING_PAIR_SCHEMA = {"a": pl.Int64, "b": pl.Int64, "distance": pl.Int64}


@dataclass(frozen=True)
class Band:
    """Bits [lo, lo + width) of the hash, searched for keys within `sub_radius` bits.

    The probe side flips up to ceil(sub_radius / 2) key bits and the build side up to
    floor(sub_radius / 2), so a pair at band distance d <= sub_radius meets on some
    (probe flip, build flip) combination; splitting the flips keeps both sides small.
    """

    lo: int
    width: int
    sub_radius: int

    @property
    def probe_radius(self) -> int:
        return (self.sub_radius + 1) // 2

    @property
    def build_radius(self) -> int:
        return self.sub_radius // 2


def plain_plan(radius: int) -> list[Band]:
    """radius + 1 near-equal bands, each joined on exact equality (the pigeonhole scheme)."""
    return _bands(_even_widths(radius + 1), [0] * (radius + 1))


@functools.lru_cache(maxsize=64)
def choose_plan(radius: int, n: int) -> tuple[Band, ...]:
    """The band plan with the lowest estimated cost for `n` distinct uniform hashes.

    Tries every band count m, every split of the sub-radii (sum(s_i + 1) == radius + 1) and,
    for splits with few distinct sub-radii, every width per sub-radius.
    """
    if radius == 0:
        return tuple(plain_plan(0))
    best = (math.inf, plain_plan(radius))
    for m in range(2, radius + 2):
        for subs in _sub_radius_splits(radius + 1 - m, m):
            for widths in _width_choices(subs):
                cost = sum(_band_cost(w, s, n) for w, s in zip(widths, subs, strict=True))
                if cost < best[0]:
                    best = (cost, _bands(widths, subs))
    return tuple(best[1])


def radius_within(radius: int, n: int, max_cost: float) -> int:
    """The largest radius <= ``radius`` whose best plan for ``n`` distinct hashes costs at
    most ``max_cost`` (plan_cost units): the search time grows steeply with both, so at ten
    million hashes radius 6 takes hours where 3 takes minutes (bench/README.md)."""
    r = radius
    while r > 0 and plan_cost(choose_plan(r, n), n) > max_cost:
        r -= 1
    return r


def estimate_work(bands: Sequence[Band], n: int) -> dict[str, float]:
    """Rows probed, rows built into hash tables and candidate pairs verified, for n uniform
    distinct hashes (candidates count every (probe flip, build flip) meeting)."""
    probe = build = match = 0.0
    for b in bands:
        vp, vb = _volume(b.width, b.probe_radius), _volume(b.width, b.build_radius)
        probe += n * vp
        build += n * vb
        match += n * vp * vb * n / 2.0**b.width
    return {"probe": probe, "build": build, "match": match}


def plan_cost(bands: Sequence[Band], n: int) -> float:
    """Estimated cost in units of one probed row."""
    w = estimate_work(bands, n)
    return _PROBE_COST * w["probe"] + _BUILD_COST * w["build"] + _MATCH_COST * w["match"]


@functools.lru_cache(maxsize=8192)
def _band_cost(width: int, sub_radius: int, n: int) -> float:
    """plan_cost of one band; infinite when its probe side needs too many flip masks."""
    band = Band(0, width, sub_radius)
    if _volume(width, band.probe_radius) > _MAX_MASKS:
        return math.inf
    return plan_cost([band], n)


def hamming_pairs(
    con: duckdb.DuckDBPyConnection,
    hashes: pl.DataFrame,
    radius: int,
    *,
    max_bucket: int | None = 1000,
    strategy: Literal["auto", "bands"] = "auto",
    plan: Sequence[Band] | None = None,
) -> pl.DataFrame:
    """All id pairs a < b whose hashes differ in at most `radius` bits: columns a, b, distance.

    `hashes` has columns `id` (unique int64) and `h` (int64 bit pattern); rows with a null
    hash (e.g. corrupt images) are ignored. See the module docstring for `max_bucket`.
    `plan` overrides `strategy` with explicit bands (benchmarks); it must cover all 64 bits
    with sum(sub_radius + 1) > radius.
    """
    _validate(hashes, radius, max_bucket, strategy)
    if plan is not None:
        _validate_plan(plan, radius)
    frame = hashes.select(pl.col("id").cast(pl.Int64), pl.col("h").cast(pl.Int64))
    frame = frame.filter(pl.col("h").is_not_null())
    if frame.height < 2:
        return pl.DataFrame(schema=HAMMING_PAIR_SCHEMA)

    values = _distinct(frame["h"].to_numpy())
    if plan is not None:
        bands = list(plan)
    elif strategy == "bands":
        bands = plain_plan(radius)
    else:
        bands = list(choose_plan(radius, len(values)))
    tag = uuid.uuid4().hex[:12]
    names = {k: f"_da_{k}_{tag}" for k in ("vals", "masks_x", "masks_y", "vp")}
    cur = con.cursor()  # own cursor: temp tables and registrations stay off the caller's
    try:
        cur.execute(f"CREATE TEMP TABLE {names['vp']} (ha BIGINT, hb BIGINT, d INTEGER)")
        if radius > 0 and len(values) > 1:  # at radius 0 only identical values pair up
            cur.register(names["vals"], _band_table(values, bands))
            for j in range(len(bands)):
                _search_band(cur, names, bands, j, radius, len(values))
        return _expand(cur, names["vp"], frame, max_bucket)
    finally:
        for key in ("vals", "masks_x", "masks_y"):
            _try(cur.unregister, names[key])
        _try(cur.execute, f"DROP TABLE IF EXISTS {names['vp']}")
        cur.close()


def hamming_pairs_bruteforce(
    hashes: np.ndarray, radius: int, ids: np.ndarray | None = None, chunk: int = 2048
) -> pl.DataFrame:
    """Exact O(n^2) reference: all pairs i < j within `radius`, as ids (default positions).

    Chunked so memory stays at about chunk * n * 8 bytes. Used by tests and the benchmark.
    """
    h = np.ascontiguousarray(hashes, dtype=np.int64).view(np.uint64)
    n = len(h)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    out_a, out_b, out_d = [], [], []
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, start:])
        i, j = np.nonzero(dist <= radius)
        keep = j > i  # columns are offset by `start`, so j > i means global index j > i
        i, j = i[keep], j[keep]
        out_a.append(ids[start + i])
        out_b.append(ids[start + j])
        out_d.append(dist[i, j].astype(np.int64))
    if not out_a:
        return pl.DataFrame(schema=HAMMING_PAIR_SCHEMA)
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return pl.DataFrame(
        {"a": lo, "b": hi, "distance": np.concatenate(out_d)}, schema=HAMMING_PAIR_SCHEMA
    )


# --- internals -------------------------------------------------------------------------


def _validate(hashes: pl.DataFrame, radius: int, max_bucket: int | None, strategy: str) -> None:
    if not isinstance(radius, int) or not 0 <= radius <= MAX_RADIUS:
        raise DataAuditError(
            f"Hamming radius must be an integer in 0..{MAX_RADIUS}, got {radius!r}",
            "64-bit pHash near-duplicates typically use a radius of 4 to 10",
        )
    if max_bucket is not None and max_bucket < 1:
        raise DataAuditError(f"max_bucket must be >= 1 or None, got {max_bucket}")
    if strategy not in ("auto", "bands"):
        raise DataAuditError(f"unknown strategy {strategy!r}", "use 'auto' or 'bands'")
    missing = {"id", "h"} - set(hashes.columns)
    if missing:
        raise DataAuditError(f"hash frame lacks columns {sorted(missing)}", "pass columns id, h")
    if hashes["id"].n_unique() != hashes.height:
        raise DataAuditError("hash frame has repeated ids", "pass one row per image id")


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; np.unique took seconds on 1M int64 here (numpy 2.4), a sort
    and a neighbour compare take tens of milliseconds."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _validate_plan(plan: Sequence[Band], radius: int) -> None:
    lo = 0
    for band in plan:
        wide_ok = band.width < HASH_BITS or band.sub_radius == 0  # 64-bit masks overflow
        if band.lo != lo or not 1 <= band.width <= HASH_BITS or band.sub_radius < 0 or not wide_ok:
            raise DataAuditError(f"bad band {band}", "bands must tile bits 0..63 in order")
        lo += band.width
    if lo != HASH_BITS or sum(b.sub_radius + 1 for b in plan) <= radius:
        raise DataAuditError(
            f"band plan does not cover radius {radius}",
            "bands must tile 64 bits and satisfy sum(sub_radius + 1) > radius",
        )


def _even_widths(m: int) -> list[int]:
    base, extra = divmod(HASH_BITS, m)
    return [base + 1] * extra + [base] * (m - extra)


def _bands(widths: Sequence[int], subs: Sequence[int]) -> list[Band]:
    """Contiguous bands with the given widths and sub-radii (same order)."""
    bands, lo = [], 0
    for width, sub in zip(widths, subs, strict=True):
        bands.append(Band(lo, width, sub))
        lo += width
    return bands


def _sub_radius_splits(total: int, m: int, cap: int | None = None) -> list[tuple[int, ...]]:
    """All non-increasing m-tuples of non-negative ints summing to `total` (parts <= cap)."""
    cap = total if cap is None else cap
    if m == 1:
        return [(total,)] if total <= cap else []
    return [
        (first, *rest)
        for first in range(min(total, cap), -1, -1)
        if first * m >= total  # the largest part must be at least the average
        for rest in _sub_radius_splits(total - first, m - 1, first)
    ]


def _width_choices(subs: tuple[int, ...]) -> list[list[int]]:
    """Width vectors for bands with sub-radii `subs` (non-increasing): bands that share a
    sub-radius share a width (+-1 bit); each group's width is searched when the plan is
    small enough for that to matter and stay quick."""
    m = len(subs)
    groups = [len(list(g)) for _, g in itertools.groupby(subs)]
    if len(groups) == 1 or len(groups) > _MAX_SEARCH_GROUPS or m > _MAX_SEARCH_BANDS:
        return [_even_widths(m)]
    choices = [_even_widths(m)]
    # widths of all groups but the last; the last group shares what is left evenly
    for head in itertools.product(range(6, 45), repeat=len(groups) - 1):
        used = sum(w * c for w, c in zip(head, groups, strict=False))
        rest, last = HASH_BITS - used, groups[-1]
        if rest < 4 * last or rest > 62 * last:
            continue
        base, extra = divmod(rest, last)
        widths = [w for w, c in zip(head, groups, strict=False) for _ in range(c)]
        choices.append(widths + [base + 1] * extra + [base] * (last - extra))
    return choices


@functools.lru_cache(maxsize=4096)
def _volume(width: int, radius: int) -> int:
    """Number of width-bit masks with popcount <= radius."""
    return sum(math.comb(width, i) for i in range(radius + 1))


def _band_table(values: np.ndarray, bands: Sequence[Band]) -> pa.Table:
    """Distinct hash values with one key column per band (key = the band's bits, unsigned)."""
    u = values.view(np.uint64)
    cols = {"hv": pa.array(values)}
    for i, band in enumerate(bands):
        key = (u >> np.uint64(band.lo)) & np.uint64((1 << band.width) - 1)
        cols[f"k{i}"] = pa.array(key.astype(np.int64))
    return pa.table(cols)


def _masks(width: int, radius: int) -> pa.Table:
    """Every width-bit mask with popcount <= radius, mask 0 included."""
    masks = [
        sum(1 << bit for bit in bits)
        for r in range(radius + 1)
        for bits in itertools.combinations(range(width), r)
    ]
    return pa.table({"mask": pa.array(masks, type=pa.int64())})


def _search_band(
    cur: duckdb.DuckDBPyConnection,
    names: dict[str, str],
    bands: Sequence[Band],
    j: int,
    radius: int,
    n: int,
) -> None:
    """Insert the verified value pairs that band j is the first band to find."""
    band, vals, vp = bands[j], names["vals"], names["vp"]
    mx, my = names["masks_x"], names["masks_y"]
    _try(cur.unregister, mx)
    _try(cur.unregister, my)
    cur.register(mx, _masks(band.width, band.probe_radius))
    cur.register(my, _masks(band.width, band.build_radius))
    # A pair belongs to the first band within whose sub-radius it falls; excluding pairs
    # that an earlier band already found keeps the bands' outputs disjoint. Earlier bands
    # are tested on xor(hv) under a bit mask, so the join carries only hv, key and flip.
    diff = "xor(x.hv, y.hv)"
    earlier = [
        f"{diff} & {_bits(b)} <> 0"
        if b.sub_radius == 0
        else f"bit_count({diff} & {_bits(b)}) > {b.sub_radius}"
        for b in bands[:j]
    ]
    checks = ["x.hv < y.hv", f"bit_count({diff}) <= {radius}", *earlier]
    flips = band.build_radius > 0
    if flips:
        # Keys meet when k_x ^ f_x == k_y ^ f_y, so the band difference is D = f_x ^ f_y, and
        # a pair meets once per way of splitting D's bits between the sides. Accept only the
        # canonical split: disjoint flips, the probe side taking the lowest
        # min(|D|, probe_radius) bits. No DISTINCT is needed, even across passes.
        checks += [
            "x.f & y.f = 0",
            f"bit_count(x.f) = least(bit_count(x.f | y.f), {band.probe_radius})",
            "(y.f = 0 OR (y.f & -y.f) > x.f)",
        ]
    where = " AND ".join(checks)
    passes = max(1, math.ceil(n * _volume(band.width, band.build_radius) / _BUILD_ROWS_PER_PASS))
    for p in range(passes):
        part = f"WHERE hash(xor(k{j}, mask)) % {passes} = {p}" if passes > 1 else ""
        f = ", mask AS f" if flips else ""
        side = f"SELECT hv, xor(k{j}, mask) AS key{f} FROM {vals} CROSS JOIN"
        cur.execute(
            f"""INSERT INTO {vp}
            SELECT x.hv, y.hv, bit_count({diff})
            FROM ({side} {mx} {part}) x JOIN ({side} {my} {part}) y ON x.key = y.key
            WHERE {where}"""
        )


def _bits(band: Band) -> str:
    """The band's bits of a 64-bit hash as a signed BIGINT literal."""
    mask = ((1 << band.width) - 1) << band.lo
    return f"CAST({mask - (1 << 64) if mask >= 1 << 63 else mask} AS BIGINT)"


def _expand(
    cur: duckdb.DuckDBPyConnection, vp: str, frame: pl.DataFrame, max_bucket: int | None
) -> pl.DataFrame:
    """Turn value pairs back into id pairs, plus pairs among ids sharing one value.

    Done in polars: its hash windows over a million ids take ~0.1 s where DuckDB's
    PARTITION BY windows took over a second.
    """
    buckets = frame.with_columns(
        pl.len().over("h").alias("size"), pl.col("id").min().over("h").alias("rep")
    )
    heavy = pl.lit(False) if max_bucket is None else pl.col("size") > max_bucket
    # ids that stand for their value in cross-value pairs: all, or the rep if heavy
    members = buckets.filter(~heavy | (pl.col("id") == pl.col("rep"))).select("id", "h")
    light = buckets.filter((pl.col("size") > 1) & ~heavy).select("id", "h")
    same_light = (
        light.join(light, on="h", suffix="_b")
        .filter(pl.col("id") < pl.col("id_b"))
        .select(pl.col("id").alias("a"), pl.col("id_b").alias("b"), pl.lit(0).alias("distance"))
    )
    same_heavy = buckets.filter(heavy & (pl.col("id") != pl.col("rep"))).select(
        pl.col("rep").alias("a"), pl.col("id").alias("b"), pl.lit(0).alias("distance")
    )
    value_pairs = pl.DataFrame(
        cur.sql(f"SELECT ha, hb, d FROM {vp}").to_arrow_table(),
        schema={"ha": pl.Int64, "hb": pl.Int64, "d": pl.Int64},
    )
    cross = (
        value_pairs.join(members.rename({"id": "x", "h": "ha"}), on="ha")
        .join(members.rename({"id": "y", "h": "hb"}), on="hb")
        .select(
            pl.min_horizontal("x", "y").alias("a"),
            pl.max_horizontal("x", "y").alias("b"),
            pl.col("d").alias("distance"),
        )
    )
    parts = [df.cast(HAMMING_PAIR_SCHEMA) for df in (same_light, same_heavy, cross)]
    return pl.concat(parts).sort("a", "b")


def _try(fn: Callable[..., object], *args: object) -> None:
    """Best-effort cleanup: a missing registration or table is not an error."""
    with contextlib.suppress(duckdb.Error, KeyError):
        fn(*args)
