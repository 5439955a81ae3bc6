"""Quality: ``dark``, ``light``, ``blurry``, ``low_information``, ``grayscale``.

Two kinds of finding, kept apart on purpose:

* *unusable by any standard*: nearly all black (mean grey < ``dark_always_mean``), nearly all
  white (> ``light_always_mean``), both with a grey std below ``low_info_max_contrast`` (a
  thin stroke on black is not "all black"), or blank (grey std < ``flat_contrast``). These absolute
  limits sit far enough out that no whole domain (digits on black, X-rays, night photos,
  sketches) crosses them.
* *unusual for this dataset*: a robust z-score (median / MAD) on a log scale beyond ``z``:
  log mean grey for ``dark``, log headroom (255 - mean) for ``light`` (both also need a
  grey std half as unusual and an ordinary std per unit of headroom: exposure scales both,
  little ink on black lowers the mean only), log grey std for
  ``low_information``, log fine/coarse detail ratio or log steepness of the strongest edges
  for ``blurry`` (beyond ``blurry_z``: blur has a short natural tail, 3 finds blurred 28 px
  digits that 4 misses, with no false alarm on the benches; see ``_blur_rule``). The log
  makes "5x darker
  than usual" mean the same in a dataset of bright studio shots and one of digits on black.
  Caps keep a dark dataset from making an ordinary image odd: dark only below
  ``dark_max_mean``, light only above ``light_min_mean``, low_information only below
  ``low_info_max_contrast``, blurry only below ``blurry_max_sharpness`` (detail ratio) or
  ``blurry_max_edge`` (edge steepness: 0.4 is about a 1.1 px Gaussian blur on the 128 px
  statistics image, a softness visible at any size).

If an unusual-type would flag more than ``dataset.max_issue_share`` of the images it is the
dataset's nature, reported once as a dataset-level finding (see ``base.too_common``).
``grayscale`` (R = G = B) is flagged only when grayscale images are a minority.
"""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl

from dataaudit.detectors.base import (
    DetectContext,
    Robust,
    empty_issues,
    issue_rows,
    sql_float,
    too_common,
)
from dataaudit.detectors.config import QualityParams


def is_flat(q: QualityParams) -> pl.Expr:
    """Blank images: too little variation for any content (the one flat-image test)."""
    return pl.col("contrast") < q.flat_contrast


_OK = "decode_status = 'ok' AND brightness_mean IS NOT NULL"


def _ln(x: str) -> str:
    """SQL natural log, NULL where undefined (polars gives -inf/NaN, which Robust drops)."""
    return f"CASE WHEN ({x}) > 0 THEN ln({x}) END"


def detect_quality(ctx: DetectContext) -> pl.DataFrame:
    """The dataset statistics are computed in DuckDB; the rules then run over the image
    table in blocks, keeping only the rows they flag (bounded memory at 10M images)."""
    q = ctx.config.quality
    n, gray_share = ctx.con.execute(
        f"SELECT count(*), avg(CAST(is_grayscale AS DOUBLE)) FROM {ctx.table} WHERE {_OK}"
    ).fetchall()[0]  # type: ignore[misc]
    if n == 0:
        return empty_issues()
    lb, lh, lc = _ln("brightness_mean + 1.0"), _ln("256.0 - brightness_mean"), _ln("contrast + 1.0")
    bright = Robust.of_sql(ctx, lb, _OK, min_sigma=0.05)
    head = Robust.of_sql(ctx, lh, _OK, min_sigma=0.05)
    contrast = Robust.of_sql(ctx, lc, _OK, min_sigma=0.05)
    cv_dark = Robust.of_sql(ctx, f"({lc}) - ({lb})", _OK, min_sigma=0.05)
    cv_light = Robust.of_sql(ctx, f"({lc}) - ({lh})", _OK, min_sigma=0.05)
    blurry, blurry_rows, typical_blur = _blur_rule(ctx)
    ctx.stats["brightness"] = {
        "median": float(np.exp(bright.median) - 1),
        "log_sigma": bright.sigma,
    }
    median_grey = round(float(np.exp(bright.median) - 1), 1)
    typical_std = round(float(np.exp(contrast.median) - 1), 1)
    gray_share = float(gray_share or 0.0)
    ctx.stats["grayscale_share"] = gray_share

    mean = pl.col("brightness_mean")
    z_b, z_h, z_c = bright.z(pl.col("_lb")), head.z(pl.col("_lh")), contrast.z(pl.col("_lc"))
    grey_text = pl.format("mean grey {} (dataset median {})", mean.round(1), pl.lit(median_grey))
    # Under- or over-exposure scales the contrast down with the headroom, so contrast per
    # unit of headroom stays as usual; little ink on black (a thin digit) is darker on
    # average too, but its contrast per unit of mean is far above the usual.
    washed = z_c <= -q.z / 2
    # (JPEG noise keeps some contrast in a nearly black or white image: past twice the
    # threshold the exposure alone decides)
    scaled_dark = (cv_dark.z(pl.col("_lc") - pl.col("_lb")) < q.exposure_cv_z) | (z_b <= -2 * q.z)
    scaled_light = (cv_light.z(pl.col("_lc") - pl.col("_lh")) < q.exposure_cv_z) | (z_h <= -2 * q.z)
    plain = pl.col("contrast") < q.low_info_max_contrast
    # name -> (always, adaptive, score, details); blurry has no absolute limit
    rules = {
        "dark": ((mean < q.dark_always_mean) & plain,
                 (mean <= q.dark_max_mean) & (z_b <= -q.z) & washed & scaled_dark,
                 _severity(z_b, q.z), grey_text),
        "light": ((mean > q.light_always_mean) & plain,
                  (mean >= q.light_min_mean) & (z_h <= -q.z) & washed & scaled_light,
                  _severity(z_h, q.z), grey_text),
        "low_information": (
            is_flat(q), (pl.col("contrast") < q.low_info_max_contrast) & (z_c <= -q.z),
            _severity(z_c, q.z),
            pl.format("grey std {} (dataset median {}), entropy {} bits",
                      pl.col("contrast").round(1), pl.lit(typical_std),
                      pl.col("entropy").round(2))),
    }  # fmt: skip
    gray_rule = gray_share < q.grayscale_max_share
    gray_text = f"R = G = B in a colour dataset ({gray_share:.1%} of images are grayscale)"

    found: dict[str, list[pl.DataFrame]] = {name: [] for name in (*rules, "blurry", "grayscale")}
    adaptive_only = dict.fromkeys(rules, 0)
    n_blurry = 0
    for chunk in ctx.chunks(
        f"""SELECT file_id, brightness_mean, contrast, sharpness, edge_sharpness, entropy,
                   is_grayscale FROM {{images}} WHERE {_OK} ORDER BY file_id"""
    ):
        chunk = chunk.with_columns(
            (mean + 1.0).log().alias("_lb"),
            (256.0 - mean).log().alias("_lh"),
            (pl.col("contrast") + 1.0).log().alias("_lc"),
        )
        for name, (always, adaptive, score, details) in rules.items():
            hit = chunk.filter(always | adaptive).with_columns(
                always.fill_null(False).alias("_always")
            )
            adaptive_only[name] += hit.filter(adaptive & ~always).height
            rows = issue_rows(hit, name, pl.max_horizontal(score, always.cast(pl.Float64)), details)
            found[name].append(rows.with_columns(hit["_always"]))
        hit = chunk.filter(blurry)
        n_blurry += hit.height
        found["blurry"].append(issue_rows(hit, "blurry", *blurry_rows))
        if gray_rule:
            gray = chunk.filter(pl.col("is_grayscale") & ~is_flat(q))
            found["grayscale"].append(
                issue_rows(gray, "grayscale", pl.lit(1.0 - gray_share), pl.lit(gray_text))
            )

    out = []
    whats = {"dark": f"the typical mean grey level is {median_grey}",
             "light": f"the typical mean grey level is {median_grey}",
             "low_information": f"the typical grey std is {typical_std}"}  # fmt: skip
    for name in rules:
        rows = pl.concat(found[name]) if found[name] else empty_issues()
        if "_always" in rows.columns:
            if too_common(ctx, name, adaptive_only[name], n, whats[name]):
                rows = rows.filter(pl.col("_always"))
            rows = rows.drop("_always")
        out.append(rows)
    blurry_found = pl.concat(found["blurry"]) if found["blurry"] else empty_issues()
    if too_common(ctx, "blurry", n_blurry, n, typical_blur):
        blurry_found = empty_issues()
    out.append(blurry_found)
    out.extend(found["grayscale"])
    return pl.concat([o.cast(empty_issues().schema) for o in out])


def _blur_rule(ctx: DetectContext) -> tuple[pl.Expr, tuple[pl.Expr, pl.Expr], str]:
    """(flag, (score, details), typical values) for ``blurry``.

    Two cues, each unusual for the dataset *and* past an absolute softness cap: the
    fine/coarse detail ratio (``sharpness``: blur removes the finest detail first) or the
    steepness of the strongest edges (``edge_sharpness``: blur widens every edge, whatever
    the scene's texture). The detail ratio varies with the texture (a soft rug backdrop
    against a striped one) more than blur moves it; the edges do not (backdrop bench:
    blurry F1 0.40 -> 1.00).

    The detail ratio is judged on images with content (a blank image has no detail to
    lose); the edge steepness exists only where there are edges (steps of 8 grey levels), so
    a faint blurred scene with a grey std below ``flat_contrast`` is still judged by it.
    Only images of an ordinary size are judged: the measures are in pixels of the statistics
    image, and an image flagged ``odd_size`` (a thumbnail upscaled 4x is soft at its own
    pixel grid) is that finding.
    """
    q = ctx.config.quality
    odd = np.fromiter(ctx.flagged.get("odd_size", set()), dtype=np.int64)
    name = f"_da_odd_{uuid.uuid4().hex[:12]}"
    ctx.con.register(name, pl.DataFrame({"file_id": odd}, schema={"file_id": pl.Int64}).to_arrow())
    try:
        ordinary = f"{_OK} AND file_id NOT IN (SELECT file_id FROM {name})"
        flat = f"contrast < {sql_float(q.flat_contrast)}"
        sharp = Robust.of_sql(ctx, _ln("greatest(sharpness, 1e-6)"),
                              f"{ordinary} AND sharpness IS NOT NULL AND NOT ({flat})",
                              min_sigma=0.05)  # fmt: skip
        edge = Robust.of_sql(ctx, _ln("greatest(edge_sharpness, 1e-6)"),
                             f"{ordinary} AND edge_sharpness IS NOT NULL", min_sigma=0.05)  # fmt: skip
    finally:
        ctx.con.unregister(name)
    typical_sharp = round(float(np.exp(sharp.median)), 3)
    typical_edge = None if np.isnan(edge.median) else round(float(np.exp(edge.median)), 3)
    ctx.stats["sharpness"] = {"median": typical_sharp, "log_sigma": sharp.sigma}
    ctx.stats["edge_sharpness"] = {"median": typical_edge, "log_sigma": edge.sigma}
    z_s = sharp.z(pl.col("sharpness").clip(1e-6).log())
    z_e = edge.z(pl.col("edge_sharpness").clip(1e-6).log())
    by_ratio = (pl.col("sharpness").is_not_null() & ~is_flat(q)
                & (pl.col("sharpness") <= q.blurry_max_sharpness) & (z_s <= -q.blurry_z))  # fmt: skip
    by_edges = (pl.col("edge_sharpness") <= q.blurry_max_edge) & (z_e <= -q.blurry_z)
    flag = ~pl.col("file_id").is_in(odd.tolist()) & (
        by_ratio.fill_null(False) | by_edges.fill_null(False)
    )
    severity = pl.max_horizontal(
        _severity(z_s.fill_null(0.0).fill_nan(0.0), q.blurry_z),
        _severity(z_e.fill_null(0.0).fill_nan(0.0), q.blurry_z),
    )
    rows = (
        pl.max_horizontal(severity, pl.lit(0.5)),
        pl.format(
            "sharpness {} (dataset median {}), edge steepness {} (median {}); lower is blurrier",
            pl.col("sharpness").round(3).cast(pl.String).fill_null("n/a"),
            pl.lit(typical_sharp),
            pl.col("edge_sharpness").round(3).cast(pl.String).fill_null("n/a"),
            pl.lit(str(typical_edge)),
        ),
    )
    typical = (f"the typical fine/coarse detail ratio is {typical_sharp}, "
               f"the typical edge steepness {typical_edge}")  # fmt: skip
    return flag, rows, typical


def _severity(z: pl.Expr, threshold: float) -> pl.Expr:
    """0.5 at the threshold, 1.0 at twice it (z below the median)."""
    return ((-z) / (2.0 * threshold)).clip(0.0, 1.0)
