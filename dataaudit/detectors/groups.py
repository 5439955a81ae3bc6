"""Duplicate pairs and groups: the pair schema, and connected components over a pair list.

    groups = group_frame(pairs)   # pairs: columns a, b -> id, group_id, group_size

A group's id is its smallest member id, so group ids are stable across runs and do not
depend on the order in which pairs arrive (a~b and b~a give the same answer). Which member
to keep is ``rank_members``: the one rule shared by the duplicate detector (the stored
``is_representative``) and export (which re-applies it among the files still present). Ids that are
in no pair are in no group and are left out. Components come from
``scipy.sparse.csgraph.connected_components`` (compiled, linear in the number of pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _components

from dataaudit.errors import DataAuditError

# A duplicate pair as the detectors keep it: a < b, the layer that linked them, its distance.
PAIR_SCHEMA = {"a": pl.Int64, "b": pl.Int64, "layer": pl.String, "distance": pl.Float64}
GROUP_SCHEMA = {"id": pl.Int64, "group_id": pl.Int64, "group_size": pl.Int64}
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}  # lower = training side; others after


def empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=PAIR_SCHEMA)


def group_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    """Groups from a pair frame with columns a, b: one row per grouped id, sorted by
    (group_id, id)."""
    missing = {"a", "b"} - set(pairs.columns)
    if missing:
        raise DataAuditError(f"pair frame lacks columns {sorted(missing)}", "pass columns a, b")
    if pairs.height == 0:
        return pl.DataFrame(schema=GROUP_SCHEMA)
    a = pairs["a"].cast(pl.Int64).to_numpy()
    b = pairs["b"].cast(pl.Int64).to_numpy()
    ids, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(ids)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (index[: len(a)], index[len(a) :])),
                       shape=(n, n))  # fmt: skip
    _, labels = _components(graph, directed=False)
    # name each component by its smallest id: ids are sorted, so the first index per label
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    group_ids = ids[first[labels]]
    sizes = np.bincount(labels)[labels]
    order = np.lexsort((ids, group_ids))
    return pl.DataFrame(
        {"id": ids[order], "group_id": group_ids[order], "group_size": sizes[order]},
        schema=GROUP_SCHEMA,
    )


def connected_components(ids: Sequence[int], pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Map each id that appears in a pair to its group's smallest id (any Python ints, also
    beyond int64). ``ids`` names the universe for the caller's benefit; ids in no pair are
    singletons and are not returned. Same components as ``group_frame``."""
    index: dict[int, int] = {}
    a, b = [], []
    for x, y in pairs:
        a.append(index.setdefault(x, len(index)))
        b.append(index.setdefault(y, len(index)))
    if not index:
        return {}
    n = len(index)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = _components(graph, directed=False)
    smallest: dict[int, int] = {}
    for node, i in index.items():
        lab = int(labels[i])
        if lab not in smallest or node < smallest[lab]:
            smallest[lab] = node
    return {node: smallest[int(labels[i])] for node, i in index.items()}


def rank_members(members: pl.DataFrame) -> pl.DataFrame:
    """Members of each group, best copy to keep first, with ``is_representative`` on it.

    ``members`` has group_id, file_id, path, split, width, height, bytes and optionally
    n_issues (other issues of the file) and reviewer_kept. Best = kept by a reviewer, then
    most pixels, then fewest other issues, then the training side of the split, then the
    larger file, then the first path (deterministic).
    """
    ranked = members.with_columns(
        (pl.col("width").fill_null(0).cast(pl.Int64) * pl.col("height").fill_null(0)).alias("px"),
        (pl.col("n_issues").fill_null(0) if "n_issues" in members.columns else pl.lit(0))
        .cast(pl.Int64)
        .alias("n_issues"),
        pl.col("split").replace_strict(SPLIT_ORDER, default=3, return_dtype=pl.Int8)
        .alias("split_rank"),
        (pl.col("reviewer_kept").fill_null(False) if "reviewer_kept" in members.columns
         else pl.lit(False)).alias("reviewer_kept"),
    ).sort(
        ["group_id", "reviewer_kept", "px", "n_issues", "split_rank", "bytes", "path"],
        descending=[False, True, True, False, False, True, False],
        nulls_last=True,
    )  # fmt: skip
    return ranked.with_columns(
        (pl.int_range(pl.len()).over("group_id") == 0).alias("is_representative")
    )
