"""Geometry: ``odd_size`` and ``odd_aspect_ratio`` against the dataset's typical shape.

* odd_size: a side below ``tiny_side``, or an area at least ``size_factor`` times larger or
  smaller than the median area with a robust z-score (on log area) beyond ``z``.
* odd_aspect_ratio: width/height at least ``aspect_factor`` times off the median aspect
  ratio, with a robust log z-score beyond ``z``. A dataset of panoramas is its own normal.
"""

from __future__ import annotations

import math

import polars as pl

from dataaudit.detectors.base import DetectContext, Robust, issue_rows, z_score


def detect_geometry(ctx: DetectContext) -> pl.DataFrame:
    g = ctx.config.geometry
    sized = ctx.images.filter(
        pl.col("width").is_not_null() & (pl.col("width") > 0) & (pl.col("height") > 0)
    ).with_columns(
        (pl.col("width").cast(pl.Float64) * pl.col("height")).log().alias("log_area"),
        (pl.col("width").cast(pl.Float64) / pl.col("height")).log().alias("log_aspect"),
    )
    if sized.height == 0:
        return issue_rows(sized, "odd_size", pl.lit(0.0), pl.lit(""))
    area = Robust.of(sized["log_area"].to_numpy(), min_sigma=0.1)
    aspect = Robust.of(sized["log_aspect"].to_numpy(), min_sigma=0.05)
    typical_w = math.sqrt(math.exp(area.median) * math.exp(aspect.median))
    typical_h = math.exp(area.median) / typical_w
    ctx.stats["typical_size"] = f"{typical_w:.0f}x{typical_h:.0f}"
    z_area, z_aspect = area.z(pl.col("log_area")), aspect.z(pl.col("log_aspect"))
    far_area = (pl.col("log_area") - area.median).abs() >= math.log(g.size_factor)
    tiny = pl.min_horizontal("width", "height") < g.tiny_side
    odd_size = sized.filter(tiny | (far_area & (z_area.abs() >= g.z)))
    factor = (pl.col("log_area") - area.median).exp()
    size_rows = issue_rows(
        odd_size,
        "odd_size",
        pl.max_horizontal(z_score(z_area, g.z), tiny.cast(pl.Float64)),
        pl.format(
            "{}x{} px, {}x the typical area ({})",
            pl.col("width"), pl.col("height"), factor.round(2), pl.lit(ctx.stats["typical_size"]),
        ),
    )  # fmt: skip
    far_aspect = (pl.col("log_aspect") - aspect.median).abs() >= math.log(g.aspect_factor)
    odd_aspect = sized.filter(far_aspect & (z_aspect.abs() >= g.z))
    aspect_rows = issue_rows(
        odd_aspect,
        "odd_aspect_ratio",
        z_score(z_aspect, g.z),
        pl.format(
            "{}x{} px, aspect ratio {} (typical {})",
            pl.col("width"), pl.col("height"), pl.col("log_aspect").exp().round(2),
            pl.lit(round(math.exp(aspect.median), 2)),
        ),
    )  # fmt: skip
    return pl.concat([size_rows, aspect_rows])
