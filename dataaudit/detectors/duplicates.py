"""Duplicates and leakage: ``exact_duplicate``, ``near_duplicate``, ``leakage``.

Pairs are found in layers, each recorded with the pair:

* ``bytes``: the same content hash (identical files);
* ``pixels``: the same decoded pixels under a different encoding or metadata;
* ``phash``: pHash within ``phash_radius`` bits, found without an O(n^2) scan by a banded
  join in DuckDB (:mod:`dataaudit.detectors.hamming`), then verified by dHash distance and
  the correlation of the stored 16x16 grey signatures (perceptual hashes alone confuse
  look-alike photos of the same scene with copies);
* ``embedding``: cosine similarity of embeddings (when the index has them);
* ``aligned``: each image's nearest embedding neighbour, kept when their thumbnails line up
  after rescaling and sliding one over the other (crops, zooms; :mod:`.align`).

Groups are connected components over all layers; the representative (the copy to keep) is
chosen by ``groups.rank_members``, export's rule: most pixels, fewest issues so far, the
training side, the larger file, the first path. A group whose members sit
in more than one split is ``leakage``, counted per split pair.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataaudit.detectors.base import (
    DetectContext,
    Finding,
    dataset_findings,
    has_table,
    issue_rows,
    sql_float,
)
from dataaudit.detectors.groups import PAIR_SCHEMA, empty_pairs, group_frame, rank_members
from dataaudit.detectors.hamming import hamming_pairs, radius_within

EXACT_LAYERS = ("bytes", "pixels")


def detect_duplicates(ctx: DetectContext) -> pl.DataFrame:
    pairs = find_pairs(ctx)
    ctx.stats["pairs_by_layer"] = dict(pairs.group_by("layer").len().iter_rows())
    members = _groups(ctx, pairs)
    ctx.groups = members
    ctx.pairs = pairs
    if members.height == 0:
        return issue_rows(members, "exact_duplicate", pl.lit(0.0), pl.lit(""))
    return pl.concat([_exact_rows(ctx, pairs, members), _near_rows(ctx, pairs, members),
                      _leakage_rows(ctx, pairs, members)])  # fmt: skip


def find_pairs(ctx: DetectContext) -> pl.DataFrame:
    """All duplicate pairs (a < b) with the layer that linked them and its distance."""
    p = ctx.config.duplicates
    layers = [_same_value_pairs(ctx, "content_hash", "bytes")]
    if p.use_pixel_hash:
        layers.append(_same_value_pairs(ctx, "pixel_hash", "pixels"))
    perceptual = pl.concat([_phash_pairs(ctx), semantic_duplicate_pairs(ctx)])
    found = pl.concat(
        [lf.select(PAIR_SCHEMA.keys()).cast(PAIR_SCHEMA) for lf in [*layers, perceptual]]
    )
    aligned = _aligned_pairs(ctx, found)
    # The hash and embedding matches must also line up as well as a copy does in this
    # dataset, content included (distinct look-alike digits, objects on one backdrop).
    if "aligned_min_correlation" in ctx.stats and perceptual.height:
        perceptual = _aligned_check(ctx, perceptual, ctx.stats["aligned_min_correlation"])
    layers += [perceptual, aligned]
    pairs = pl.concat([lf.select(PAIR_SCHEMA.keys()).cast(PAIR_SCHEMA) for lf in layers])
    # Keep each pair once, under its strongest layer (the order above).
    order = {"bytes": 0, "pixels": 1, "phash": 2, "embedding": 3, "aligned": 4}
    return (
        pairs.with_columns(pl.col("layer").replace_strict(order, return_dtype=pl.Int8).alias("_o"))
        .sort("a", "b", "_o")
        .unique(subset=["a", "b"], keep="first", maintain_order=True)
        .drop("_o")
    )


def _same_value_pairs(ctx: DetectContext, column: str, layer: str) -> pl.DataFrame:
    """Star edges from each member of a same-value group to the group's smallest id; the
    groups are found in SQL, so only duplicated files come back."""
    return ctx.rows(
        f"""WITH dup AS (
                SELECT {column} AS v, min(file_id) AS first FROM {{images}}
                WHERE bytes > 0 AND {column} IS NOT NULL GROUP BY v HAVING count(*) > 1)
            SELECT least(dup.first, i.file_id) AS a, greatest(dup.first, i.file_id) AS b,
                   '{layer}' AS layer, 0.0 AS distance
            FROM {{images}} i JOIN dup ON i.{column} = dup.v
            WHERE i.bytes > 0 AND i.file_id <> dup.first ORDER BY a, b"""
    )


def phash_radius(ctx: DetectContext, n_distinct: int) -> int:
    """The configured pHash radius, lowered where searching it over ``n_distinct`` hashes
    would cost more than ``phash_max_cost``; a lowered radius is one dataset finding."""
    p = ctx.config.duplicates
    radius = p.phash_radius
    if p.phash_max_cost > 0:
        radius = radius_within(p.phash_radius, n_distinct, p.phash_max_cost * 1e9)
    ctx.stats["phash_radius"] = radius
    if radius < p.phash_radius:
        dataset_findings(ctx).append(
            Finding(
                "phash_radius_lowered",
                "info",
                f"near-duplicate pHash search at radius {radius}, not {p.phash_radius}: at "
                f"{n_distinct:,} distinct hashes radius {p.phash_radius} would take far longer "
                "(embedding neighbours still find near copies); raise "
                "duplicates.phash_max_cost to keep it",
                {"configured": p.phash_radius, "used": radius, "distinct_hashes": n_distinct},
            )
        )
    return radius


def _phash_pairs(ctx: DetectContext) -> pl.DataFrame:
    p = ctx.config.duplicates
    # A nearly flat image's perceptual hash is noise: flat images would all "match".
    hashes = ctx.rows(
        f"SELECT file_id AS id, phash AS h FROM {{images}} WHERE {_informative_sql(ctx)} "
        "AND phash IS NOT NULL ORDER BY file_id"
    )
    cand = hamming_pairs(ctx.con, hashes, phash_radius(ctx, hashes["h"].n_unique()))
    del hashes
    if cand.height == 0:
        return empty_pairs()
    d = ctx.of_ids(np.concatenate([cand["a"].to_numpy(), cand["b"].to_numpy()]), "file_id, dhash")
    cand = cand.join(d.rename({"file_id": "a", "dhash": "da"}), on="a").join(
        d.rename({"file_id": "b", "dhash": "db"}), on="b"
    )
    dh = np.bitwise_count(
        cand["da"].to_numpy().view(np.uint64) ^ cand["db"].to_numpy().view(np.uint64)
    )
    corr = _signature_correlation(ctx, cand["a"].to_numpy(), cand["b"].to_numpy())
    cand = cand.with_columns(pl.Series("dd", dh.astype(np.int64)), pl.Series("corr", corr))
    verified = cand.filter((pl.col("dd") <= p.dhash_radius) & (pl.col("corr") >= p.min_correlation))
    verified = _content_check(ctx, verified)
    return verified.select("a", "b", pl.lit("phash").alias("layer"),
                           pl.col("distance").cast(pl.Float64))  # fmt: skip


def _signature_correlation(ctx: DetectContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the 16x16 grey signatures of each pair (NaN-free)."""
    ids = np.unique(np.concatenate([a, b]))
    ctx.con.register("_sig_ids", pl.DataFrame({"file_id": ids}).to_arrow())
    try:
        sig = ctx.rows("SELECT file_id, signature FROM {images} JOIN _sig_ids USING (file_id)")
    finally:
        ctx.con.unregister("_sig_ids")
    pos = {fid: i for i, fid in enumerate(sig["file_id"].to_list())}
    mat = np.zeros((len(pos), 256), dtype=np.float32)
    for i, blob in enumerate(sig["signature"].to_list()):
        if blob is not None and len(blob) == 256:
            mat[i] = np.frombuffer(blob, dtype=np.uint8)
    mat -= mat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(mat, axis=1, keepdims=True)
    flat = norm[:, 0] < 1e-6
    mat = np.divide(mat, norm, out=np.zeros_like(mat), where=norm > 0)
    ia = np.array([pos[x] for x in a])
    ib = np.array([pos[x] for x in b])
    corr = (mat[ia] * mat[ib]).sum(axis=1)
    # Two flat images (no variation to correlate) match when their hashes already do.
    corr[flat[ia] & flat[ib]] = 1.0
    return corr


def _informative_sql(ctx: DetectContext) -> str:
    """SQL condition: decodable images with enough structure for a perceptual match to mean
    anything (a blank image's hash is noise: blank images would all "match"; the same test
    as ``quality.is_flat``)."""
    return (
        f"decode_status = 'ok' AND NOT (contrast < {sql_float(ctx.config.quality.flat_contrast)})"
    )


def semantic_duplicate_pairs(ctx: DetectContext) -> pl.DataFrame:
    """Pairs whose embeddings are at least ``embed_min_similarity`` alike (a < b); blank
    images all embed alike, so a match between them says nothing."""
    if not has_table(ctx, "knn"):
        return empty_pairs()
    return ctx.rows(
        f"""
        WITH ok AS (SELECT file_id FROM {{images}} WHERE {_informative_sql(ctx)})
        SELECT least(file_id, neighbor_id) AS a, greatest(file_id, neighbor_id) AS b,
               'embedding' AS layer, 1.0 - max(similarity) AS distance
        FROM knn WHERE scope = 'all' AND similarity >= ? AND file_id <> neighbor_id
          AND file_id IN (SELECT file_id FROM ok) AND neighbor_id IN (SELECT file_id FROM ok)
        GROUP BY ALL ORDER BY a, b
        """,
        [ctx.config.duplicates.embed_min_similarity],
    ).cast(PAIR_SCHEMA)


def _aligned_pairs(ctx: DetectContext, found: pl.DataFrame) -> pl.DataFrame:
    """Crops and resized copies: each image's nearest embedding neighbours (up to
    ``align_ranks``), verified by aligning their thumbnails (:mod:`dataaudit.detectors.align`).

    On tiny look-alike images (28 px digits) a shifted or rescaled copy is often only the
    2nd-4th nearest neighbour in embedding space, behind distinct digits of the same class.
    """
    p = ctx.config.duplicates
    if not has_table(ctx, "knn") or not has_table(ctx, "thumbnails"):
        return empty_pairs()
    # Only pairs with both thumbnails can be aligned (a scan stores one for every decodable
    # image); joined in SQL, so a 10M-image graph never comes back whole.
    ctx.con.register("_found_pairs", found.select("a", "b").to_arrow())
    try:
        cand = ctx.rows(
            f"""
            WITH ok AS (SELECT file_id FROM {{images}} WHERE {_informative_sql(ctx)}
                        AND file_id IN (SELECT file_id FROM thumbnails))
            SELECT a, b, rank FROM (
                SELECT least(file_id, neighbor_id) AS a, greatest(file_id, neighbor_id) AS b,
                       min(rank) AS rank
                FROM knn WHERE scope = 'all' AND rank <= ? AND similarity >= ?
                  AND file_id <> neighbor_id
                  AND file_id IN (SELECT file_id FROM ok)
                  AND neighbor_id IN (SELECT file_id FROM ok)
                GROUP BY ALL)
            ANTI JOIN _found_pairs USING (a, b) ORDER BY a, b
            """,
            [p.align_ranks, p.align_min_similarity],
        )
    finally:
        ctx.con.unregister("_found_pairs")
    if cand.height == 0:
        return empty_pairs()
    cand = _within_pair_budget(ctx, cand)
    cand = cand.with_columns(pl.Series("corr", _pair_correlations(ctx, cand), dtype=pl.Float64))
    ctx.stats["aligned_candidates"] = cand.height
    # How alike distinct images are in this dataset: each image and its nearest neighbour.
    nearest = cand.filter(pl.col("rank") == 1)["corr"].to_numpy()
    cut = _rare_correlation(nearest, p.align_min_correlation, p.align_z)
    ctx.stats["aligned_min_correlation"] = cut
    verified = cand.filter(pl.col("corr") >= cut)
    # Two signals must agree: the whole frames line up (above), and so does what differs
    # from the pair's common background (different objects on one backdrop do not).
    verified = _content_agrees(ctx, verified)
    return verified.select("a", "b", pl.lit("aligned").alias("layer"),
                           (1.0 - pl.col("corr")).alias("distance"))  # fmt: skip


def _within_pair_budget(ctx: DetectContext, cand: pl.DataFrame) -> pl.DataFrame:
    """At most ``align_max_pairs`` candidates, the nearest ranks first: aligning costs ~10 ms
    a pair, so past a few hundred thousand images the check would take hours. A cut is
    said once as a dataset finding."""
    limit = ctx.config.duplicates.align_max_pairs
    if cand.height <= limit:
        return cand
    kept = cand.sort(["rank", "a", "b"]).head(limit).sort("a", "b")
    dataset_findings(ctx).append(
        Finding(
            "aligned_check_limited",
            "info",
            f"crop/resize copies checked for {limit:,} of {cand.height:,} neighbour pairs "
            f"(nearest first, up to rank {int(kept['rank'].max())}); raise "
            "duplicates.align_max_pairs to check them all (about 10 ms a pair)",
            {"checked": limit, "candidates": cand.height},
        )
    )
    return kept


def _pair_correlations(ctx: DetectContext, pairs: pl.DataFrame, chunk: int = 20_000) -> np.ndarray:
    """``align.aligned_correlation`` of each pair's stored thumbnails (-1 where one has none),
    reading the thumbnails chunk by chunk so memory stays bounded on large datasets."""
    from dataaudit.detectors.align import aligned_correlation

    a_all, b_all = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    out = np.full(len(a_all), -1.0)
    for start in range(0, len(a_all), chunk):
        a, b = a_all[start : start + chunk], b_all[start : start + chunk]
        gray = _thumbs(ctx, np.unique(np.concatenate([a, b])), size=None)
        for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
            if x in gray and y in gray:
                out[start + i] = aligned_correlation(gray[x], gray[y])
    return out


def _aligned_check(ctx: DetectContext, pairs: pl.DataFrame, cut: float) -> pl.DataFrame:
    """Keep the pairs whose thumbnails, aligned, correlate at least ``cut`` and whose
    content beyond the common background matches too (a pair without thumbnails keeps
    the layer's own verdict)."""
    corr = _pair_correlations(ctx, pairs)
    pairs = pairs.filter(pl.Series((corr >= cut) | (corr == -1.0), dtype=pl.Boolean))
    return _content_agrees(ctx, pairs)


def _content_agrees(ctx: DetectContext, pairs: pl.DataFrame) -> pl.DataFrame:
    """The second signal: at the aligned placement, what differs from the pair's common
    background matches as well (different objects on one backdrop do not)."""
    p = ctx.config.duplicates
    if pairs.height == 0 or p.align_min_content_correlation <= -1:
        return pairs
    content = _content_correlations(ctx, pairs, aligned=True)
    ctx.stats.setdefault("aligned_content_rejected", 0)
    ctx.stats["aligned_content_rejected"] += int((content < p.align_min_content_correlation).sum())
    return pairs.filter(pl.Series(content >= p.align_min_content_correlation))


def _rare_correlation(corr: np.ndarray, floor: float, z: float) -> float:
    """The correlation a copy must reach in this dataset: at least ``floor``, and rare among
    the nearest neighbours' correlations (robust z-score of log(1 - corr) below ``-z``).

    Every image's nearest neighbour is a candidate, so the candidates show how alike
    distinct images of this dataset are: look-alike digits or objects on one backdrop reach
    0.95-0.98 whole-frame correlation, copies 0.99+. With few candidates the floor holds.
    """
    from dataaudit.detectors.base import Robust

    if len(corr) < 30:
        return floor
    dist = np.log(np.clip(1.0 - corr, 1e-4, None))
    r = Robust.of(dist, min_sigma=0.1)
    return float(max(floor, 1.0 - np.exp(r.median - z * r.sigma)))


def _thumbs(ctx: DetectContext, ids: np.ndarray, size: int | None = 48) -> dict[int, np.ndarray]:
    """Stored thumbnails of ``ids`` as grey arrays fitting ``size`` px, or as stored when
    ``size`` is None (see ``align.small_gray``)."""
    from dataaudit.detectors.align import small_gray

    ctx.con.register(
        "_thumb_ids", pl.DataFrame({"file_id": ids}, schema={"file_id": pl.Int64}).to_arrow()
    )
    try:
        rows = ctx.con.execute(
            "SELECT file_id, jpeg FROM thumbnails JOIN _thumb_ids USING (file_id)"
        ).fetchall()
    finally:
        ctx.con.unregister("_thumb_ids")
    return {fid: small_gray(jpeg, size) for fid, jpeg in rows if jpeg}


def _content_check(ctx: DetectContext, cand: pl.DataFrame) -> pl.DataFrame:
    """Keep pHash candidate pairs whose content, not only their shared background, matches
    (see ``align.residual_correlation``)."""
    p = ctx.config.duplicates
    if cand.height == 0 or p.min_residual_correlation <= -1:
        return cand
    corr = _content_correlations(ctx, cand, aligned=False)
    ctx.stats.setdefault("content_checked_pairs", 0)
    ctx.stats["content_checked_pairs"] += len(corr)
    return cand.filter(pl.Series(corr) >= p.min_residual_correlation)


def _content_correlations(ctx: DetectContext, cand: pl.DataFrame, aligned: bool) -> np.ndarray:
    """Per pair, the correlation of what differs from the pair's common background: the
    median thumbnail of their nearest embedding neighbours (without embeddings: of a fixed
    sample of the dataset). ``aligned``: at the best crop/scale placement on the stored
    thumbnails (``align.aligned_content_correlation``), else on 48 px thumbnails shifted by
    up to 6% (``align.residual_correlation``). 1.0 where a thumbnail is missing (nothing
    to check against: the earlier layer's verdict stands)."""
    from dataaudit.detectors.align import (
        aligned_content_correlation,
        background_of,
        residual_correlation,
    )

    a_ids, b_ids = cand["a"].to_numpy(), cand["b"].to_numpy()
    neighbours: dict[int, list[int]] = {}
    if has_table(ctx, "knn"):
        ids = pl.DataFrame({"file_id": np.unique(np.concatenate([a_ids, b_ids]))})
        ctx.con.register("_pair_ids", ids.to_arrow())
        try:
            rows = ctx.con.execute(
                "SELECT file_id, list(neighbor_id ORDER BY rank) FROM knn JOIN _pair_ids "
                "USING (file_id) WHERE scope = 'all' GROUP BY file_id"
            ).fetchall()
        finally:
            ctx.con.unregister("_pair_ids")
        neighbours = {f: list(nb) for f, nb in rows}
    sample = _even_sample(ctx, 64)
    needed = set(a_ids) | set(b_ids) | {x for nb in neighbours.values() for x in nb} | set(sample)
    gray = _thumbs(ctx, np.array(sorted(needed), dtype=np.int64), size=None if aligned else 48)
    fallback = [gray[x] for x in sample if x in gray]
    corr = []
    for a, b in zip(a_ids.tolist(), b_ids.tolist(), strict=True):
        if a not in gray or b not in gray:
            corr.append(1.0)
            continue
        others = [gray[x] for x in neighbours.get(a, []) + neighbours.get(b, [])
                  if x not in (a, b) and x in gray] or fallback  # fmt: skip
        if aligned:  # the background in the frame of the larger image, where it is placed
            big = gray[a] if gray[a].size >= gray[b].size else gray[b]
            background = background_of(_framed_like(big, others), big.shape)
            corr.append(aligned_content_correlation(gray[a], gray[b], background))
        else:
            background = background_of(others, gray[a].shape)
            corr.append(residual_correlation(gray[a], gray[b], background))
    return np.asarray(corr, dtype=np.float64)


def _framed_like(image: np.ndarray, others: list[np.ndarray]) -> list[np.ndarray]:
    """The ``others`` of about the same aspect ratio as ``image`` (within 15%), if there
    are at least three: a strip cut from a frame has the strip's background, not the
    frame's squeezed into it."""
    ratio = image.shape[1] / image.shape[0]
    alike = [o for o in others if abs(np.log(o.shape[1] / o.shape[0] / ratio)) < 0.15]
    return alike if len(alike) >= 3 else others


def _even_sample(ctx: DetectContext, size: int) -> np.ndarray:
    """``size`` decodable file ids evenly spaced in file_id order (picked in SQL)."""
    n = ctx.count("decode_status = 'ok'")
    step = max(1, n // size)
    return ctx.rows(
        """SELECT file_id FROM (
               SELECT file_id, row_number() OVER (ORDER BY file_id) - 1 AS i
               FROM {images} WHERE decode_status = 'ok')
           WHERE i % ? = 0 ORDER BY file_id LIMIT ?""",
        [step, size],
    )["file_id"].to_numpy()


def _groups(ctx: DetectContext, pairs: pl.DataFrame) -> pl.DataFrame:
    """Connected components with their representative: file_id, group_id, is_representative."""
    if pairs.height == 0:
        return pl.DataFrame(schema={"file_id": pl.Int64, "group_id": pl.Int64,
                                    "is_representative": pl.Boolean})  # fmt: skip
    members = group_frame(pairs).select(pl.col("id").alias("file_id"),
                                        pl.col("group_id").alias("component"))  # fmt: skip
    # The files' issues found so far (integrity) count against keeping them, as in export.
    flagged = [(f, issue) for issue, ids in ctx.flagged.items() for f in ids]
    n_issues = pl.DataFrame(flagged, schema={"file_id": pl.Int64, "issue": pl.String},
                            orient="row").group_by("file_id").agg(pl.len().alias("n_issues"))  # fmt: skip
    ranked = rank_members(
        members.join(
            ctx.of_ids(members["file_id"], "file_id, path, split, width, height, bytes"),
            on="file_id",
        )
        .join(n_issues, on="file_id", how="left")
        .rename({"component": "group_id"})
    )
    rep = ranked.filter("is_representative").select("group_id", pl.col("file_id").alias("rep"))
    return ranked.join(rep, on="group_id").select(
        "file_id", pl.col("rep").alias("group_id"), (pl.col("file_id") == pl.col("rep"))
        .alias("is_representative"),
    )  # fmt: skip


def _path_of(ctx: DetectContext, pairs: pl.DataFrame) -> pl.DataFrame:
    """Path and split of the files in ``pairs`` (fetched for them only)."""
    key = ("paths", id(pairs))
    if key not in ctx.cache:
        ids = np.concatenate([pairs["a"].to_numpy(), pairs["b"].to_numpy()])
        ctx.cache[key] = ctx.of_ids(ids, "file_id, path, split")
    return ctx.cache[key]


def _exact_rows(ctx: DetectContext, pairs: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    exact = pairs.filter(pl.col("layer").is_in(EXACT_LAYERS))
    if exact.height == 0:
        return issue_rows(members.head(0), "exact_duplicate", pl.lit(0.0), pl.lit(""))
    frame = group_frame(exact).select(pl.col("id").alias("file_id"),
                                      pl.col("group_id").alias("exact_component"))  # fmt: skip
    frame = frame.join(members, on="file_id").join(_path_of(ctx, pairs), on="file_id")
    frame = frame.with_columns(
        pl.len().over("exact_component").alias("n"),
        pl.col("path").min().over("exact_component").alias("first_path"),
    )
    via = exact.select(pl.concat_list("a", "b").alias("ids"), "layer").explode("ids")
    layer = via.group_by(pl.col("ids").alias("file_id")).agg(pl.col("layer").min().alias("via"))
    frame = frame.join(layer, on="file_id", how="left")
    details = pl.format(
        "{} copies with the same {} (e.g. {})",
        pl.col("n"),
        pl.col("via").replace_strict(
            {"bytes": "bytes", "pixels": "decoded pixels"}, default="bytes"
        ),
        pl.col("first_path"),
    )
    return issue_rows(frame, "exact_duplicate", pl.lit(1.0), details, group_id=pl.col("group_id"))


def _near_rows(ctx: DetectContext, pairs: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    near = pairs.filter(~pl.col("layer").is_in(EXACT_LAYERS))
    if near.height == 0:
        return issue_rows(members.head(0), "near_duplicate", pl.lit(0.0), pl.lit(""))
    paths = _path_of(ctx, pairs)
    both = pl.concat([
        near.select(pl.col("a").alias("file_id"), pl.col("b").alias("other"), "layer", "distance"),
        near.select(pl.col("b").alias("file_id"), pl.col("a").alias("other"), "layer", "distance"),
    ])  # fmt: skip
    best = (
        both.join(
            paths.select(pl.col("file_id").alias("other"), pl.col("path").alias("other_path")),
            on="other",
        )  # fmt: skip
        .sort("file_id", "distance")
        .group_by("file_id", maintain_order=True)
        .agg(pl.first("other_path"), pl.first("layer"), pl.first("distance"), pl.len().alias("n"))
        .join(members, on="file_id")
    )
    radius = ctx.stats.get("phash_radius", ctx.config.duplicates.phash_radius) + 1
    score = (
        pl.when(pl.col("layer") == "phash")
        .then(1.0 - 0.5 * pl.col("distance") / radius)
        .otherwise(1.0 - 0.5 * pl.col("distance"))
    )
    how = (
        pl.when(pl.col("layer") == "phash")
        .then(pl.format("pHash {} bits apart", pl.col("distance").cast(pl.Int64)))
        .when(pl.col("layer") == "aligned")
        .then(pl.format("crop/resize aligned, correlation {}", (1.0 - pl.col("distance")).round(3)))
        .otherwise(pl.format("embedding similarity {}", (1.0 - pl.col("distance")).round(3)))
    )
    details = pl.format(
        "near copy of {} ({}; {} near match(es))", pl.col("other_path"), how, pl.col("n")
    )
    return issue_rows(best, "near_duplicate", score, details, group_id=pl.col("group_id"))


def _leakage_rows(ctx: DetectContext, pairs: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Files with a duplicate partner in another split, counted per split pair."""
    split = _path_of(ctx, pairs).select("file_id", "split", "path")
    cross = (
        pairs.join(split.rename({"file_id": "a", "split": "sa", "path": "pa"}), on="a")
        .join(split.rename({"file_id": "b", "split": "sb", "path": "pb"}), on="b")
        .filter(
            pl.col("sa").is_not_null() & pl.col("sb").is_not_null() & (pl.col("sa") != pl.col("sb"))
        )
        .with_columns(
            pl.concat_str(
                pl.min_horizontal("sa", "sb"), pl.lit("<->"), pl.max_horizontal("sa", "sb")
            ).alias("split_pair")
        )  # fmt: skip
    )
    ctx.stats["leakage_pairs_by_split_pair"] = dict(
        cross.group_by("split_pair").len().sort("split_pair").iter_rows()
    )
    ends = pl.concat([
        cross.select(pl.col("a").alias("file_id"), pl.col("pb").alias("other"), "sb", "layer"),
        cross.select(pl.col("b").alias("file_id"), pl.col("pa").alias("other"), "sa", "layer")
        .rename({"sa": "sb"}),
    ]).group_by("file_id", maintain_order=True).agg(
        pl.first("other"), pl.col("sb").unique().sort().str.join(", ").alias("other_splits"),
        pl.first("layer"), pl.len().alias("n"),
    ).join(members, on="file_id").join(split, on="file_id")  # fmt: skip
    return issue_rows(
        ends,
        "leakage",
        pl.lit(1.0),
        pl.format("{} copy in {}: {} (linked by {}; {} cross-split partner(s))", pl.col("split"),
                  pl.col("other_splits"), pl.col("other"), pl.col("layer"), pl.col("n")),
        group_id=pl.col("group_id"),
    )  # fmt: skip
