"""Duplicate groups: connected components, checked by hand and by properties."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataaudit.detectors import groups
from dataaudit.detectors.groups import group_frame
from dataaudit.detectors.hamming import hamming_pairs
from dataaudit.errors import DataAuditError

edges = st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), max_size=40)


def components_by_search(pairs: list[tuple[int, int]]) -> set[frozenset[int]]:
    """Reference: components by repeated graph search."""
    adj: dict[int, set[int]] = {}
    for a, b in pairs:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    out = set()
    for start in adj:
        if start in seen:
            continue
        stack, comp = [start], set()
        while stack:
            x = stack.pop()
            if x not in comp:
                comp.add(x)
                stack.extend(adj[x] - comp)
        seen |= comp
        out.add(frozenset(comp))
    return out


def connected_components(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Each id in a pair -> its group's id, by group_frame (the function under test)."""
    frame = pl.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs]},
                         schema={"a": pl.Int64, "b": pl.Int64})  # fmt: skip
    return dict(group_frame(frame).select("id", "group_id").rows())


def test_python_int_components_beyond_int64() -> None:
    pairs = [(5, 3), (3, 9), (10, 11), (12, 12), (2**64 + 1, 10)]
    got = groups.connected_components([], pairs)
    assert got == {3: 3, 5: 3, 9: 3, 10: 10, 11: 10, 12: 12, 2**64 + 1: 10}


@given(pairs=edges)
def test_python_int_components_agree_with_group_frame(pairs) -> None:
    assert groups.connected_components([], pairs) == connected_components(pairs)


def as_sets(mapping: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for x, g in mapping.items():
        groups.setdefault(g, set()).add(x)
    return {frozenset(v) for v in groups.values()}


def test_hand_checked_example() -> None:
    got = connected_components([(5, 3), (3, 9), (10, 11), (12, 12)])
    assert got == {3: 3, 5: 3, 9: 3, 10: 10, 11: 10, 12: 12}


def test_long_chain_in_reverse_order_resolves_to_the_minimum() -> None:
    n = 20_000  # deep enough that a recursive find would blow the stack
    pairs = [(i, i + 1) for i in range(n, 0, -1)]
    got = connected_components(pairs)
    assert set(got.values()) == {1} and len(got) == n + 1


def test_group_frame_columns_sizes_and_order() -> None:
    pairs = pl.DataFrame({"a": [7, 2, 2, 40], "b": [9, 3, 7, 41], "distance": [1, 0, 2, 3]})
    got = group_frame(pairs)
    assert got.columns == ["id", "group_id", "group_size"]
    assert got.rows() == [(2, 2, 4), (3, 2, 4), (7, 2, 4), (9, 2, 4), (40, 40, 2), (41, 40, 2)]


def test_group_frame_empty_and_misuse() -> None:
    empty = group_frame(pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64}))
    assert empty.height == 0 and empty.columns == ["id", "group_id", "group_size"]
    with pytest.raises(DataAuditError):
        group_frame(pl.DataFrame({"x": [1]}))


@given(pairs=edges)
def test_matches_graph_search_and_names_groups_by_their_minimum(pairs) -> None:
    got = connected_components(pairs)
    assert as_sets(got) == components_by_search(pairs)
    for x, g in got.items():
        assert g == min(y for y in got if got[y] == g) and g <= x


@given(pairs=edges)
def test_group_frame_sizes_and_order(pairs) -> None:
    frame = pl.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs]},
                         schema={"a": pl.Int64, "b": pl.Int64})  # fmt: skip
    got = group_frame(frame)
    comp = components_by_search(pairs)
    comp = {x: min(c) for c in comp for x in c}
    assert dict(got.select("id", "group_id").rows()) == comp
    sizes = {g: list(comp.values()).count(g) for g in comp.values()}
    assert all(size == sizes[g] for _, g, size in got.rows())
    assert got.rows() == sorted(got.rows(), key=lambda r: (r[1], r[0]))


@given(pairs=edges, data=st.data())
def test_symmetric_order_free(pairs, data) -> None:
    """Swapping a/b inside pairs and shuffling the pair list changes nothing."""
    flipped = [(b, a) for a, b in data.draw(st.permutations(pairs))]
    assert connected_components(flipped) == connected_components(pairs)


@given(pairs=edges)
def test_transitive(pairs) -> None:
    got = connected_components(pairs)
    for a, b in pairs:
        assert got[a] == got[b]
    for (a, b), (c, d) in zip(pairs, pairs[1:], strict=False):
        if b == c:  # a~b and b~d
            assert got[a] == got[d]


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    yield c
    c.close()


@st.composite
def near_hashes(draw: st.DrawFn) -> np.ndarray:
    """A few random centres and copies with a handful of bits flipped."""
    centres = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3))
    items = draw(
        st.lists(
            st.tuples(st.sampled_from(centres), st.sets(st.integers(0, 63), max_size=8)),
            max_size=30,
        )
    )
    vals = []
    for centre, bits in items:
        for bit in bits:
            centre ^= 1 << bit
        vals.append(centre)
    return np.array(vals, dtype=np.uint64).view(np.int64)


@settings(max_examples=20, deadline=None)
@given(h=near_hashes(), radius=st.integers(0, 9))
def test_stricter_radius_refines_groups(con, h: np.ndarray, radius: int) -> None:
    """Pairs at radius r are a subset of pairs at r + 1, and every group at r lies inside
    one group at r + 1 (a stricter radius never merges more)."""
    frame = pl.DataFrame({"id": np.arange(len(h), dtype=np.int64), "h": h})
    tight = hamming_pairs(con, frame, radius, max_bucket=None)
    loose = hamming_pairs(con, frame, radius + 1, max_bucket=None)
    assert set(tight.select("a", "b").rows()) <= set(loose.select("a", "b").rows())
    g_tight = dict(group_frame(tight).select("id", "group_id").rows())
    g_loose = dict(group_frame(loose).select("id", "group_id").rows())
    for x, g in g_tight.items():
        assert g_loose[x] == g_loose[g]  # x and its tight representative share a loose group
