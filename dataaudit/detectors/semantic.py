"""Embedding-based detectors: near duplicates by cosine similarity (more to come).

They read the ``knn`` table the embedder writes (image, neighbour, rank, similarity) and
never the vectors themselves, so they run in milliseconds and without torch.
"""

from __future__ import annotations

import polars as pl

from dataaudit.detectors.base import DetectContext


def has_table(ctx: DetectContext, name: str) -> bool:
    return bool(
        ctx.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0][0]
    )


def semantic_duplicate_pairs(ctx: DetectContext) -> pl.DataFrame:
    """Pairs whose embeddings are at least ``embed_min_similarity`` alike (a < b)."""
    schema = {"a": pl.Int64, "b": pl.Int64, "layer": pl.String, "distance": pl.Float64}
    if not has_table(ctx, "knn"):
        return pl.DataFrame(schema=schema)
    threshold = ctx.config.duplicates.embed_min_similarity
    return (
        ctx.con.execute(
            """
        SELECT DISTINCT least(file_id, neighbor_id) AS a, greatest(file_id, neighbor_id) AS b,
               'embedding' AS layer, 1.0 - similarity AS distance
        FROM knn WHERE similarity >= ? AND file_id <> neighbor_id
        """,
            [threshold],
        )
        .pl()
        .cast(schema)
    )
