"""Quality: ``dark``, ``light``, ``blurry``, ``low_information``, ``grayscale``.

Each threshold adapts to the dataset (a robust z-score against the median and MAD of the
decodable images), bounded by absolute limits where adapting would be wrong: a dataset of
night photos does not make every night photo fine to flag, and a dataset of studio shots
does not make a 60-grey image "dark". Scores are 0.5 at the adaptive threshold and 1.0 at
twice it (or 1.0 for images past the "always" limit).

* dark: mean grey <= ``dark_always_mean``, or (mean <= ``dark_max_mean`` and z <= -z).
* light: mean grey >= ``light_always_mean``, or (mean >= ``light_min_mean`` and z >= z).
* blurry: the fine/coarse detail ratio ``sharpness`` (see ``scan.measure.sharpness_ratio``)
  <= ``blurry_always_sharpness``, or (<= ``blurry_max_sharpness`` and log-z <= -z); images
  with too little contrast to judge are left to ``low_information``.
* low_information: grey std < ``low_info_max_contrast`` or entropy < ``low_info_max_entropy``.
* grayscale: R = G = B, flagged only when grayscale images are a minority of the dataset
  (an all-grayscale dataset such as MNIST flags nothing).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataaudit.detectors.base import DetectContext, Robust, issue_rows, z_score


def detect_quality(ctx: DetectContext) -> pl.DataFrame:
    q = ctx.config.quality
    ok = ctx.decodable
    if ok.height == 0:
        return issue_rows(ok, "dark", pl.lit(0.0), pl.lit(""))
    bright = Robust.of(ok["brightness_mean"].to_numpy(), min_sigma=2.0)
    z_b = bright.z(pl.col("brightness_mean"))
    ctx.stats["brightness"] = {"median": bright.median, "sigma": bright.sigma}
    out = []

    mean = pl.col("brightness_mean")
    out.append(
        _exposure(
            ok,
            "dark",
            mean <= q.dark_always_mean,
            (mean <= q.dark_max_mean) & (z_b <= -q.z),
            z_score(z_b, q.z),
            bright,
        )
    )
    out.append(
        _exposure(
            ok,
            "light",
            mean >= q.light_always_mean,
            (mean >= q.light_min_mean) & (z_b >= q.z),
            z_score(z_b, q.z),
            bright,
        )
    )

    low_info_expr = (pl.col("contrast") < q.low_info_max_contrast) | (
        pl.col("entropy") < q.low_info_max_entropy
    )
    low = ok.filter(low_info_expr)
    out.append(
        issue_rows(
            low,
            "low_information",
            1.0
            - 0.5
            * pl.min_horizontal(
                pl.col("contrast") / q.low_info_max_contrast,
                pl.col("entropy") / q.low_info_max_entropy,
            ),
            pl.format(
                "grey std {}, entropy {} bits",
                pl.col("contrast").round(1),
                pl.col("entropy").round(2),
            ),
        )  # fmt: skip
    )

    judged = ok.filter(pl.col("sharpness").is_not_null() & ~low_info_expr)
    log_sharp = np.log(np.clip(judged["sharpness"].to_numpy(), 1e-6, None))
    sharp = Robust.of(log_sharp, min_sigma=0.05)
    z_s = sharp.z(pl.col("sharpness").clip(1e-6).log())
    ctx.stats["sharpness"] = {"median": float(np.exp(sharp.median)), "log_sigma": sharp.sigma}
    blurry = judged.filter(
        (pl.col("sharpness") <= q.blurry_always_sharpness)
        | ((pl.col("sharpness") <= q.blurry_max_sharpness) & (z_s <= -q.z))
    )
    out.append(
        issue_rows(
            blurry,
            "blurry",
            pl.max_horizontal(z_score(z_s, q.z), pl.lit(0.5)),
            pl.format(
                "sharpness {} (dataset median {}; lower is blurrier)",
                pl.col("sharpness").round(3),
                pl.lit(round(float(np.exp(sharp.median)), 3)),
            ),
        )  # fmt: skip
    )

    gray_share = float(ok["is_grayscale"].mean() or 0.0)
    ctx.stats["grayscale_share"] = gray_share
    if gray_share < q.grayscale_max_share:
        gray = ok.filter(pl.col("is_grayscale") & ~low_info_expr)
        out.append(
            issue_rows(
                gray,
                "grayscale",
                pl.lit(1.0 - gray_share),
                pl.lit(f"R = G = B in a colour dataset ({gray_share:.1%} of images are grayscale)"),
            )
        )
    return pl.concat(out)


def _exposure(
    ok: pl.DataFrame, issue: str, always: pl.Expr, adaptive: pl.Expr, score: pl.Expr, bright: Robust
) -> pl.DataFrame:
    """Rows for dark or light images: past the absolute limit, or unusual and past the bound."""
    return issue_rows(
        ok.filter(always | adaptive),
        issue,
        pl.max_horizontal(score, always.cast(pl.Float64)),
        pl.format("mean grey {} (dataset median {})", pl.col("brightness_mean").round(1),
                  pl.lit(round(bright.median, 1))),
    )  # fmt: skip
