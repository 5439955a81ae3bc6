"""Duplicate groups: connected components of a pair list, named by their smallest id.

    groups = group_frame(hamming_pairs(con, hashes, radius=4))   # id, group_id, group_size

A group's id is its smallest member id, so group ids are stable across runs and do not
depend on the order in which pairs arrive (a~b and b~a give the same answer). Ids that are
in no pair are in no group and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from dataaudit.errors import DataAuditError

GROUP_SCHEMA = {"id": pl.Int64, "group_id": pl.Int64, "group_size": pl.Int64}


def connected_components(ids: Sequence[int], pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Map each id that appears in a pair to its group's smallest id (union-find).

    `ids` names the universe for the caller's benefit; ids in no pair are singletons and are
    not returned, so an empty list is fine when only the pairs are at hand.
    """
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression: point the whole walk at the root
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller root wins, so every root is its component's minimum
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def group_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    """Groups from a pair frame with columns a, b: one row per grouped id, sorted.

    Same answer as `connected_components`, computed with numpy (hooking roots and pointer
    jumping over the edge arrays): about 3x faster than the Python loop on a million pairs.
    """
    missing = {"a", "b"} - set(pairs.columns)
    if missing:
        raise DataAuditError(f"pair frame lacks columns {sorted(missing)}", "pass columns a, b")
    if pairs.height == 0:
        return pl.DataFrame(schema=GROUP_SCHEMA)
    a = pairs["a"].cast(pl.Int64).to_numpy()
    b = pairs["b"].cast(pl.Int64).to_numpy()
    ids, roots = _components(a, b)
    sizes = np.bincount(roots, minlength=len(ids))[roots]
    order = np.argsort(roots, kind="stable")  # by group; ids are already ascending
    return pl.DataFrame(
        {"id": ids[order], "group_id": ids[roots[order]], "group_size": sizes[order]},
        schema=GROUP_SCHEMA,
    )


def _components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and, per id, the index of its component's smallest id."""
    # distinct ids and each endpoint's index among them, by one sort (np.unique and
    # searchsorted took seconds on 2M values with numpy 2.4 here)
    both = np.concatenate([a, b])
    order = np.argsort(both)
    ordered = both[order]
    first = np.empty(len(both), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    ids = ordered[first]
    index = np.empty(len(both), dtype=np.int64)
    index[order] = np.cumsum(first) - 1
    ia, ib = index[: len(a)], index[len(a) :]
    parent = np.arange(len(ids))
    while True:
        # parent is fully compressed here: parent[x] is a root and parent[root] == root
        ra, rb = parent[ia], parent[ib]
        if np.array_equal(ra, rb):
            return ids, parent
        # hook the larger root under the smaller one (parent[x] <= x always, so no cycles)
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping until every id points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
