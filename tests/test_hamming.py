"""hamming_pairs (banded DuckDB join) against the numpy brute-force reference."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataaudit.detectors import hamming
from dataaudit.detectors.groups import group_frame
from dataaudit.detectors.hamming import (
    Band,
    choose_plan,
    hamming_pairs,
    hamming_pairs_bruteforce,
    plain_plan,
)
from dataaudit.errors import DataAuditError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    path = Path(tmp_path_factory.mktemp("idx")) / "index.duckdb"
    c = duckdb.connect(str(path))
    yield c
    c.close()


def flip(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each value with k distinct random bits flipped (as signed int64)."""
    u = values.view(np.uint64).copy()
    for row in range(len(u)):
        for bit in rng.choice(64, size=k, replace=False):
            u[row] ^= np.uint64(1) << np.uint64(bit)
    return u.view(np.int64)


def planted_hashes(radius: int, seed: int = 0, n: int = 1500, per: int = 8) -> pl.DataFrame:
    """Random hashes (both signs) plus `per` planted partners at each distance 0..radius + 2,
    a few identical-hash buckets, the int64 extremes, and non-contiguous ids."""
    rng = np.random.default_rng(seed)
    base = rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    parts = [base]
    for k in range(radius + 3):
        parts.append(flip(base[rng.choice(n, size=per, replace=False)], k, rng))
    parts.append(np.repeat(base[:3], 4))  # identical buckets of 5
    parts.append(np.array([INT64_MIN, INT64_MAX, 0, -1, 1, INT64_MIN + 1], dtype=np.int64))
    h = np.concatenate(parts)
    ids = rng.permutation(len(h)).astype(np.int64) * 7 - 1000
    return pl.DataFrame({"id": ids, "h": h})


def reference(frame: pl.DataFrame, radius: int) -> pl.DataFrame:
    return hamming_pairs_bruteforce(frame["h"].to_numpy(), radius, ids=frame["id"].to_numpy())


@pytest.mark.parametrize("radius", [0, 4, 6, 8])
@pytest.mark.parametrize("strategy", ["auto", "bands"])
def test_matches_bruteforce_with_planted_pairs(con, radius: int, strategy: str) -> None:
    frame = planted_hashes(radius, seed=radius)
    got = hamming_pairs(con, frame, radius, strategy=strategy, max_bucket=None)
    want = reference(frame, radius).sort("a", "b")
    assert got.equals(want)
    # every distance 0..radius is represented, and nothing beyond the radius leaks in
    assert set(got["distance"].unique()) == set(range(radius + 1))
    assert (got["a"] < got["b"]).all()


@pytest.mark.parametrize(
    "plan",
    [
        # symmetric flips (sub-radius 2 and 3 put flips on both sides), unequal widths
        [Band(0, 24, 2), Band(24, 20, 1), Band(44, 20, 1)],
        [Band(0, 30, 3), Band(30, 34, 2)],
        [Band(0, 16, 0), Band(16, 16, 0), Band(32, 16, 1), Band(48, 16, 2)],
    ],
)
def test_explicit_plans_and_partitioned_passes(con, monkeypatch, plan: list[Band]) -> None:
    monkeypatch.setattr(hamming, "_BUILD_ROWS_PER_PASS", 2000)  # force several join passes
    frame = planted_hashes(6, seed=11, n=800)
    got = hamming_pairs(con, frame, 6, plan=plan, max_bucket=None)
    assert got.equals(reference(frame, 6).sort("a", "b"))


@st.composite
def clustered_hashes(draw: st.DrawFn) -> np.ndarray:
    """Hashes near a few random centres, so that pairs at small distances are common."""
    centres = draw(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=4))
    items = draw(
        st.lists(
            st.tuples(st.integers(0, len(centres) - 1), st.sets(st.integers(0, 63), max_size=9)),
            min_size=0,
            max_size=40,
        )
    )
    out = []
    for centre, bits in items:
        u = centre & (2**64 - 1)
        for bit in bits:
            u ^= 1 << bit
        out.append(u - 2**64 if u >= 2**63 else u)
    return np.array(out, dtype=np.int64)


@settings(max_examples=30, deadline=None)
@given(h=clustered_hashes(), radius=st.integers(0, 10), kind=st.sampled_from(["auto", "big"]))
def test_property_equals_bruteforce(con, h: np.ndarray, radius: int, kind: str) -> None:
    # "big" runs the plan chosen for a million hashes (flips on both join sides) on few rows
    plan = list(choose_plan(radius, 1_000_000)) if kind == "big" else None
    frame = pl.DataFrame({"id": np.arange(len(h), dtype=np.int64), "h": h})
    got = hamming_pairs(con, frame, radius, max_bucket=None, plan=plan)
    assert got.equals(reference(frame, radius).sort("a", "b"))


def test_heavy_bucket_becomes_a_star_with_the_same_groups(con) -> None:
    rng = np.random.default_rng(5)
    near_zero = flip(np.zeros(3, dtype=np.int64), 2, rng)  # three hashes 2 bits from 0
    h = np.concatenate([np.zeros(50, dtype=np.int64), near_zero, rng.integers(1, 2**40, 20)])
    frame = pl.DataFrame({"id": np.arange(100, 100 + len(h), dtype=np.int64), "h": h})
    full = hamming_pairs(con, frame, 4, max_bucket=None)
    capped = hamming_pairs(con, frame, 4, max_bucket=10)
    zero_pairs = capped.filter(pl.col("distance") == 0)
    assert zero_pairs.height == 49 and (zero_pairs["a"] == 100).all()  # star on smallest id
    assert capped.height < full.height  # the 1225-pair clique is gone
    assert group_frame(capped).equals(group_frame(full))


def test_light_buckets_are_full_cliques(con) -> None:
    frame = pl.DataFrame({"id": [1, 2, 3, 4], "h": [7, 7, 7, 8]})
    got = hamming_pairs(con, frame, 0, max_bucket=3)
    assert got.rows() == [(1, 2, 0), (1, 3, 0), (2, 3, 0)]


def test_null_hashes_are_ignored_and_tiny_inputs_are_empty(con) -> None:
    frame = pl.DataFrame(
        {"id": [1, 2, 3], "h": [5, None, 5]}, schema={"id": pl.Int64, "h": pl.Int64}
    )
    assert hamming_pairs(con, frame, 2).rows() == [(1, 3, 0)]
    empty = hamming_pairs(con, frame.head(1), 4)
    assert empty.height == 0 and empty.columns == ["a", "b", "distance"]


def test_leaves_no_tables_or_views_behind(con) -> None:
    def count(sql: str) -> int:
        return con.execute(sql).fetchone()[0]

    before = count("SELECT count(*) FROM duckdb_tables()")
    hamming_pairs(con, planted_hashes(4, n=200), 4)
    assert count("SELECT count(*) FROM duckdb_tables()") == before
    assert count("SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '_da_%'") == 0
    hamming_pairs(con, planted_hashes(4, n=200), 4)  # a second call on the same connection


@pytest.mark.parametrize(
    ("kwargs", "frame"),
    [
        ({"radius": -1}, pl.DataFrame({"id": [1], "h": [1]})),
        ({"radius": 17}, pl.DataFrame({"id": [1], "h": [1]})),
        ({"radius": 2}, pl.DataFrame({"id": [1, 1], "h": [1, 2]})),
        ({"radius": 2}, pl.DataFrame({"id": [1, 2]})),
        ({"radius": 2, "max_bucket": 0}, pl.DataFrame({"id": [1], "h": [1]})),
        (
            {"radius": 6, "plan": [Band(0, 32, 0), Band(32, 32, 0)]},
            pl.DataFrame({"id": [1], "h": [1]}),
        ),
    ],
)
def test_misuse_raises_project_error(con, kwargs: dict, frame: pl.DataFrame) -> None:
    with pytest.raises(DataAuditError):
        hamming_pairs(con, frame, **kwargs)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 5, 6, 8, 10, 16])
def test_plans_tile_the_hash_and_satisfy_pigeonhole(radius: int) -> None:
    for bands in (choose_plan(radius, 1_000_000), choose_plan(radius, 500), plain_plan(radius)):
        assert [b.lo for b in bands] == list(np.cumsum([0] + [b.width for b in bands[:-1]]))
        assert sum(b.width for b in bands) == 64
        assert sum(b.sub_radius + 1 for b in bands) > radius


def test_auto_plan_is_estimated_far_cheaper_than_plain_bands_at_scale() -> None:
    n = 1_000_000
    for radius in (4, 6, 8):
        assert hamming.plan_cost(choose_plan(radius, n), n) * 5 < hamming.plan_cost(
            plain_plan(radius), n
        )


def test_radius_is_lowered_only_past_the_cost_budget() -> None:
    # the default budget keeps radius 6 at a million hashes and lowers it at ten million
    assert hamming.radius_within(6, 1_000_000, 1e9) == 6
    lowered = hamming.radius_within(6, 10_000_000, 1e9)
    assert 0 < lowered < 6
    assert hamming.plan_cost(choose_plan(lowered, 10_000_000), 10_000_000) <= 1e9
    assert hamming.plan_cost(choose_plan(lowered + 1, 10_000_000), 10_000_000) > 1e9
    assert hamming.radius_within(6, 10_000_000, 0.0) == 0


def test_bruteforce_reference_on_a_hand_checked_example() -> None:
    h = np.array([0b0000, 0b0111, 0b0001, -1], dtype=np.int64)
    got = hamming_pairs_bruteforce(h, 2, chunk=1)
    assert got.rows() == [(0, 2, 1), (1, 2, 2)]
    assert hamming_pairs_bruteforce(h, 64).height == 6


def test_one_bit_bands_including_the_sign_bit(con) -> None:
    """A plan whose last band is bit 63 alone (its mask is INT64_MIN as a literal)."""
    plan = [Band(0, 31, 1), Band(31, 32, 1), Band(63, 1, 0)]
    frame = planted_hashes(4, seed=3, n=400)
    got = hamming_pairs(con, frame, 4, plan=plan, max_bucket=None)
    assert got.equals(reference(frame, 4).sort("a", "b"))


def test_works_on_a_read_only_index_file(tmp_path: Path) -> None:
    """The app opens the index read-only; the search needs only temp state."""
    path = tmp_path / "ro.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE images (file_id BIGINT)").close()
    ro = duckdb.connect(str(path), read_only=True)
    try:
        frame = pl.DataFrame({"id": [1, 2, 3], "h": [0, 1, 3]})
        assert hamming_pairs(ro, frame, 1).rows() == [(1, 2, 1), (2, 3, 1)]
    finally:
        ro.close()
