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
  ``low_information``, log fine/coarse detail ratio for ``blurry`` (beyond ``blurry_z``:
  blur has a short natural tail, 3 finds blurred 28 px digits that 4 misses, with no false
  alarm on the benches). The log makes "5x darker
  than usual" mean the same in a dataset of bright studio shots and one of digits on black.
  Caps keep a dark dataset from making an ordinary image odd: dark only below
  ``dark_max_mean``, light only above ``light_min_mean``, low_information only below
  ``low_info_max_contrast``, blurry only below ``blurry_max_sharpness``.

If an unusual-type would flag more than ``dataset.max_issue_share`` of the images it is the
dataset's nature, reported once as a dataset-level finding (see ``base.too_common``).
``grayscale`` (R = G = B) is flagged only when grayscale images are a minority.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataaudit.detectors.base import DetectContext, Robust, empty_issues, issue_rows, too_common
from dataaudit.detectors.config import QualityParams


def is_flat(q: QualityParams) -> pl.Expr:
    """Blank images: too little variation for any content (the one flat-image test)."""
    return pl.col("contrast") < q.flat_contrast


def detect_quality(ctx: DetectContext) -> pl.DataFrame:
    q = ctx.config.quality
    ok = ctx.decodable.filter(pl.col("brightness_mean").is_not_null())
    if ok.height == 0:
        return empty_issues()
    mean = pl.col("brightness_mean")
    log_b = (mean + 1.0).log()
    log_head = (256.0 - mean).log()
    log_c = (pl.col("contrast") + 1.0).log()
    ok = ok.with_columns(log_b.alias("_lb"), log_head.alias("_lh"), log_c.alias("_lc"))
    bright = Robust.of(ok["_lb"].to_numpy(), min_sigma=0.05)
    head = Robust.of(ok["_lh"].to_numpy(), min_sigma=0.05)
    contrast = Robust.of(ok["_lc"].to_numpy(), min_sigma=0.05)
    ctx.stats["brightness"] = {
        "median": float(np.exp(bright.median) - 1),
        "log_sigma": bright.sigma,
    }
    n = ok.height
    out = []
    median_grey = round(float(np.exp(bright.median) - 1), 1)

    def unusual(name: str, always: pl.Expr, adaptive: pl.Expr, score: pl.Expr, details: pl.Expr,
                what: str) -> None:  # fmt: skip
        n_adaptive = ok.filter(adaptive & ~always).height
        if too_common(ctx, name, n_adaptive, n, what):
            adaptive = pl.lit(False)
        rows = ok.filter(always | adaptive)
        out.append(
            issue_rows(rows, name, pl.max_horizontal(score, always.cast(pl.Float64)), details)
        )

    z_b, z_h, z_c = bright.z(pl.col("_lb")), head.z(pl.col("_lh")), contrast.z(pl.col("_lc"))
    grey_text = pl.format("mean grey {} (dataset median {})", mean.round(1), pl.lit(median_grey))
    # Under- or over-exposure scales the contrast down with the headroom, so contrast per
    # unit of headroom stays as usual; little ink on black (a thin digit) is darker on
    # average too, but its contrast per unit of mean is far above the usual.
    washed = z_c <= -q.z / 2
    cv_dark = Robust.of((ok["_lc"] - ok["_lb"]).to_numpy(), min_sigma=0.05)
    cv_light = Robust.of((ok["_lc"] - ok["_lh"]).to_numpy(), min_sigma=0.05)
    # (JPEG noise keeps some contrast in a nearly black or white image: past twice the
    # threshold the exposure alone decides)
    scaled_dark = (cv_dark.z(pl.col("_lc") - pl.col("_lb")) < q.exposure_cv_z) | (z_b <= -2 * q.z)
    scaled_light = (cv_light.z(pl.col("_lc") - pl.col("_lh")) < q.exposure_cv_z) | (z_h <= -2 * q.z)
    plain = pl.col("contrast") < q.low_info_max_contrast
    unusual("dark", (mean < q.dark_always_mean) & plain,
            (mean <= q.dark_max_mean) & (z_b <= -q.z) & washed & scaled_dark,
            _severity(z_b, q.z), grey_text, f"the typical mean grey level is {median_grey}")  # fmt: skip
    unusual("light", (mean > q.light_always_mean) & plain,
            (mean >= q.light_min_mean) & (z_h <= -q.z) & washed & scaled_light,
            _severity(z_h, q.z), grey_text, f"the typical mean grey level is {median_grey}")  # fmt: skip
    typical_std = round(float(np.exp(contrast.median) - 1), 1)
    unusual("low_information", is_flat(q),
            (pl.col("contrast") < q.low_info_max_contrast) & (z_c <= -q.z), _severity(z_c, q.z),
            pl.format("grey std {} (dataset median {}), entropy {} bits", pl.col("contrast").round(1),
                      pl.lit(typical_std), pl.col("entropy").round(2)),
            f"the typical grey std is {typical_std}")  # fmt: skip

    # Blur is judged on images with content: a blank image has no detail to lose.
    judged = ok.filter(pl.col("sharpness").is_not_null() & ~is_flat(q))
    sharp = Robust.of(np.log(np.clip(judged["sharpness"].to_numpy(), 1e-6, None)), min_sigma=0.05)
    typical_sharp = round(float(np.exp(sharp.median)), 3)
    ctx.stats["sharpness"] = {"median": typical_sharp, "log_sigma": sharp.sigma}
    z_s = sharp.z(pl.col("sharpness").clip(1e-6).log())
    blurry = (pl.col("sharpness") <= q.blurry_max_sharpness) & (z_s <= -q.blurry_z)
    if too_common(ctx, "blurry", judged.filter(blurry).height, n,
                  f"the typical fine/coarse detail ratio is {typical_sharp}"):  # fmt: skip
        blurry = pl.lit(False)
    out.append(
        issue_rows(
            judged.filter(blurry),
            "blurry",
            pl.max_horizontal(_severity(z_s, q.blurry_z), pl.lit(0.5)),
            pl.format(
                "sharpness {} (dataset median {}; lower is blurrier)",
                pl.col("sharpness").round(3),
                pl.lit(typical_sharp),
            ),
        )  # fmt: skip
    )

    gray_share = float(ok["is_grayscale"].mean() or 0.0)
    ctx.stats["grayscale_share"] = gray_share
    if gray_share < q.grayscale_max_share:
        gray = ok.filter(pl.col("is_grayscale") & ~is_flat(q))
        out.append(
            issue_rows(
                gray,
                "grayscale",
                pl.lit(1.0 - gray_share),
                pl.lit(f"R = G = B in a colour dataset ({gray_share:.1%} of images are grayscale)"),
            )
        )
    return pl.concat(out)


def _severity(z: pl.Expr, threshold: float) -> pl.Expr:
    """0.5 at the threshold, 1.0 at twice it (z below the median)."""
    return ((-z) / (2.0 * threshold)).clip(0.0, 1.0)
