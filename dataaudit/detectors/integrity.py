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


# Only rows that raise one of these flags come back from the index.
_FLAG_SQL = """SELECT file_id, is_corrupt, decode_status, error_message, format,
       format_matches_ext, ext, exif_orientation, n_frames, trailing_bytes
FROM {images}
WHERE is_corrupt OR format_matches_ext = false OR decode_status IN ('bomb', 'unsupported')
   OR exif_orientation > 1 OR n_frames > 1 OR (trailing_bytes AND NOT is_corrupt)
ORDER BY file_id"""


def detect_integrity(ctx: DetectContext) -> pl.DataFrame:
    img = ctx.rows(_FLAG_SQL)
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
    """Modes (with alpha as part of the mode) used by few images of the dataset; the shares
    are counted in SQL, only the rare modes' rows come back."""
    key = """CASE WHEN has_alpha AND mode NOT IN ('RGBA', 'LA', 'PA')
                  THEN mode || '+transparency' ELSE mode END"""
    share = ctx.rows(
        f"""SELECT {key} AS mode_key, count(*) / sum(count(*)) OVER () AS share
            FROM {{images}} WHERE decode_status = 'ok' GROUP BY ALL
            ORDER BY share DESC, mode_key NULLS LAST"""
    )
    limit = ctx.config.integrity.unusual_mode_max_share
    empty = pl.DataFrame(schema={"file_id": pl.Int64, "mode_key": pl.String, "share": pl.Float64})
    if share.height == 0:
        return issue_rows(empty, "unusual_mode", pl.lit(0.0), pl.lit(""))
    common = share["mode_key"][0]
    rare_keys = share.filter(pl.col("share") < limit)
    rare = empty
    if rare_keys.height:
        rare = ctx.rows(
            f"""SELECT file_id, {key} AS mode_key FROM {{images}}
                WHERE decode_status = 'ok' AND {key} IN (SELECT unnest(?::VARCHAR[]))
                ORDER BY file_id""",
            [rare_keys["mode_key"].drop_nulls().to_list()],
        ).join(rare_keys, on="mode_key", maintain_order="left")
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
