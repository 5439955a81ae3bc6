"""Geometry: ``odd_size`` and ``odd_aspect_ratio`` against the dataset's own shapes.

* odd_size: unusable (a side below ``unusable_side`` px), or unusual: an area at least
  ``size_factor`` times larger or smaller than the median, with a robust z-score (log area)
  beyond ``z``, *and rare*: fewer than ``mode_share`` of the images (and fewer than
  ``mode_min_count``) have an area within a factor of 2 of it.
* odd_aspect_ratio: width/height at least ``aspect_factor`` times off the median, robust
  log z-score beyond ``z``, and rare: fewer than ``mode_share`` of the images have an aspect
  ratio within 25% of it. A 5% share of landscape shots among portraits is a second mode of
  the data, not an oddity; a dataset of panoramas is its own normal.

A dataset whose typical image is smaller than ``dataset.min_typical_side`` gets one
dataset-level finding instead of a flag on every file.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from dataaudit.detectors.base import (
    DetectContext,
    Finding,
    Robust,
    dataset_findings,
    empty_issues,
    issue_rows,
    too_common,
    z_score,
)


def _share_within(values: np.ndarray, counts: np.ndarray, radius: float) -> np.ndarray:
    """For each distinct value, the share of all images (``counts`` per value) within
    +-radius of it (sorted search over the distinct values)."""
    order = np.argsort(values, kind="stable")
    s = values[order]
    total = np.concatenate([[0], np.cumsum(counts[order])])
    lo = np.searchsorted(s, values - radius, side="left")
    hi = np.searchsorted(s, values + radius, side="right")
    return (total[hi] - total[lo]) / max(1, int(total[-1]))


def detect_geometry(ctx: DetectContext) -> pl.DataFrame:
    """Every rule depends on (width, height) only: the rules run over the distinct sizes
    with their counts (a few thousand rows at any dataset size); only the flagged images'
    ids come back from the index."""
    g = ctx.config.geometry
    sized = ctx.rows(
        """SELECT width, height, count(*) AS n FROM {images}
           WHERE width IS NOT NULL AND width > 0 AND height > 0 GROUP BY ALL
           ORDER BY width, height"""
    ).with_columns(
        (pl.col("width").cast(pl.Float64) * pl.col("height")).log().alias("log_area"),
        (pl.col("width").cast(pl.Float64) / pl.col("height")).log().alias("log_aspect"),
    )
    if sized.height == 0:
        return empty_issues()
    counts = sized["n"].to_numpy()
    n = int(counts.sum())
    # a mode is at least mode_share of the images, and never fewer than mode_min_count
    rare = max(g.mode_share, g.mode_min_count / n)
    sized = sized.with_columns(
        pl.Series("area_share",
                  _share_within(sized["log_area"].to_numpy(), counts, math.log(2.0))),
        pl.Series("aspect_share",
                  _share_within(sized["log_aspect"].to_numpy(), counts, math.log(1.25))),
    )  # fmt: skip
    area = Robust.of_counts(sized["log_area"].to_numpy(), counts, min_sigma=0.1)
    aspect = Robust.of_counts(sized["log_aspect"].to_numpy(), counts, min_sigma=0.05)
    typical_w = math.sqrt(math.exp(area.median) * math.exp(aspect.median))
    typical_h = math.exp(area.median) / typical_w
    typical = f"{typical_w:.0f}x{typical_h:.0f}"
    ctx.stats["typical_size"] = typical
    if min(typical_w, typical_h) < ctx.config.dataset.min_typical_side:
        dataset_findings(ctx).append(
            Finding(
                "small_images",
                "info",
                f"the typical image is {typical} px, below the {ctx.config.dataset.min_typical_side} px "
                "that ImageNet-style models usually expect: plan the input size (or upsampling) "
                "for this dataset",
                {"typical_size": typical},
            )  # fmt: skip
        )

    z_area, z_aspect = area.z(pl.col("log_area")), aspect.z(pl.col("log_aspect"))
    unusable = pl.min_horizontal("width", "height") < g.unusable_side
    odd_area = (
        ((pl.col("log_area") - area.median).abs() >= math.log(g.size_factor))
        & (z_area.abs() >= g.z)
        & (pl.col("area_share") < rare)
    )
    if too_common(ctx, "odd_size", _images(sized.filter(odd_area & ~unusable)), n,
                  f"sizes vary widely (typical {typical})"):  # fmt: skip
        odd_area = pl.lit(False)
    factor = (pl.col("log_area") - area.median).exp()
    size_rows = issue_rows(
        _files(ctx, sized.filter(unusable | odd_area)),
        "odd_size",
        pl.max_horizontal(z_score(z_area, g.z), unusable.cast(pl.Float64)),
        pl.format(
            "{}x{} px, {}x the typical area ({}); {}% of images have a similar size",
            pl.col("width"), pl.col("height"), factor.round(2), pl.lit(typical),
            (pl.col("area_share") * 100).round(1),
        ),
    )  # fmt: skip
    odd_aspect = (
        ((pl.col("log_aspect") - aspect.median).abs() >= math.log(g.aspect_factor))
        & (z_aspect.abs() >= g.z)
        & (pl.col("aspect_share") < rare)
    )
    typical_ratio = round(math.exp(aspect.median), 2)
    if too_common(ctx, "odd_aspect_ratio", _images(sized.filter(odd_aspect)), n,
                  f"aspect ratios vary widely (typical {typical_ratio})"):  # fmt: skip
        odd_aspect = pl.lit(False)
    aspect_rows = issue_rows(
        _files(ctx, sized.filter(odd_aspect)),
        "odd_aspect_ratio",
        z_score(z_aspect, g.z),
        pl.format(
            "{}x{} px, aspect ratio {} (typical {}); {}% of images have a similar ratio",
            pl.col("width"), pl.col("height"), pl.col("log_aspect").exp().round(2),
            pl.lit(typical_ratio), (pl.col("aspect_share") * 100).round(1),
        ),
    )  # fmt: skip
    return pl.concat([size_rows, aspect_rows])


def _images(sizes: pl.DataFrame) -> int:
    return int(sizes["n"].sum())


def _files(ctx: DetectContext, sizes: pl.DataFrame) -> pl.DataFrame:
    """The images of the given sizes, each with its size's columns, in file_id order."""
    if sizes.height == 0:
        return sizes.with_columns(pl.lit(0, dtype=pl.Int64).alias("file_id"))
    name = f"_da_sizes_{id(sizes)}"
    ctx.con.register(name, sizes.select("width", "height").to_arrow())
    try:
        ids = ctx.rows(
            f"SELECT file_id, width, height FROM {{images}} JOIN {name} USING (width, height) "
            "ORDER BY file_id"
        )
    finally:
        ctx.con.unregister(name)
    keys = sizes.with_columns(pl.col("width", "height").cast(ids.schema["width"]))
    return ids.join(keys, on=["width", "height"], maintain_order="left")
