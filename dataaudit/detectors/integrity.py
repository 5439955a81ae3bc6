"""Integrity: files a loader cannot use, and properties a loader may trip on.

``corrupt``: unreadable, truncated, empty, not an image, or failing a checksum.
``wrong_extension``: the bytes are one format and the name says another.
Informational (not errors): ``decompression_bomb`` (too many pixels to decode safely),
``unsupported_format`` (needs a codec Pillow lacks here, or a format outside the
allow-list in ``scan.decode``, e.g. EPS, which would hand PostScript to Ghostscript), ``unusual_mode`` (CMYK, 16-bit,
palette or alpha in a dataset that is mostly something else), ``exif_rotated`` (the pixels
a loader sees are rotated unless it applies EXIF orientation), ``animated`` (more than
one frame), ``trailing_data`` (bytes after the JPEG end marker).
"""

from __future__ import annotations

import polars as pl

from dataaudit.detectors.base import DetectContext, issue_rows

_STATUS_TEXT = {
    "empty": "empty file",
    "not_image": "not an image",
    "truncated": "truncated",
    "unreadable": "cannot be decoded",
    "corrupt": "checksum error",
}


def detect_integrity(ctx: DetectContext) -> pl.DataFrame:
    img = ctx.images
    out = []
    corrupt = img.filter(pl.col("is_corrupt"))
    reason = pl.col("decode_status").replace_strict(_STATUS_TEXT, default="unreadable")
    out.append(
        issue_rows(
            corrupt,
            "corrupt",
            pl.lit(1.0),
            pl.format("{}: {}", reason, pl.col("error_message").fill_null("")),
        )
    )
    wrong = img.filter(pl.col("format_matches_ext") == False)  # noqa: E712 - null means unknown
    out.append(
        issue_rows(
            wrong,
            "wrong_extension",
            pl.lit(1.0),
            pl.format("content is {} but the name ends in {}", pl.col("format"), pl.col("ext")),
        )
    )
    bomb = img.filter(pl.col("decode_status") == "bomb")
    out.append(issue_rows(bomb, "decompression_bomb", pl.lit(1.0), pl.col("error_message")))
    unsupported = img.filter(pl.col("decode_status") == "unsupported")
    out.append(
        issue_rows(
            unsupported,
            "unsupported_format",
            pl.lit(1.0),
            pl.format("{} is not decoded here: {}", pl.col("format"), pl.col("error_message")),
        )  # fmt: skip
    )
    out.append(_unusual_mode(ctx))
    rotated = img.filter(
        pl.col("exif_orientation").is_not_null() & (pl.col("exif_orientation") > 1)
    )
    out.append(
        issue_rows(
            rotated,
            "exif_rotated",
            pl.lit(0.5),
            pl.format(
                "EXIF orientation {}: loaders that ignore EXIF see the image rotated or flipped",
                pl.col("exif_orientation"),
            ),
        )
    )
    animated = img.filter(pl.col("n_frames") > 1)
    out.append(
        issue_rows(
            animated,
            "animated",
            pl.lit(0.5),
            pl.format("{} frames; loaders usually read only the first", pl.col("n_frames")),
        )
    )
    trailing = img.filter(pl.col("trailing_bytes") & ~pl.col("is_corrupt"))
    out.append(
        issue_rows(trailing, "trailing_data", pl.lit(0.3),
                   pl.lit("bytes follow the JPEG end marker (often a sign of a bad download)"))
    )  # fmt: skip
    return pl.concat(out)


def _unusual_mode(ctx: DetectContext) -> pl.DataFrame:
    """Modes (with alpha as part of the mode) used by few images of the dataset."""
    ok = ctx.decodable.with_columns(
        pl.when(pl.col("has_alpha") & ~pl.col("mode").is_in(["RGBA", "LA", "PA"]))
        .then(pl.col("mode") + pl.lit("+transparency"))
        .otherwise(pl.col("mode"))
        .alias("mode_key")
    )
    if ok.height == 0:
        return issue_rows(ok, "unusual_mode", pl.lit(0.0), pl.lit(""))
    share = ok.group_by("mode_key").agg((pl.len() / ok.height).alias("share"))
    common = share.sort("share", descending=True)["mode_key"][0]
    limit = ctx.config.integrity.unusual_mode_max_share
    rare = ok.join(share, on="mode_key").filter(pl.col("share") < limit)
    return issue_rows(
        rare,
        "unusual_mode",
        (1.0 - pl.col("share") / limit).clip(0.3, 1.0),
        pl.format(
            "mode {} ({}% of images) in a mostly {} dataset",
            pl.col("mode_key"),
            (pl.col("share") * 100).round(1),
            pl.lit(common),
        ),
    )
