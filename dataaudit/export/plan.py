"""The export plan: which files go out, under which split and label, and why others do not.

Pure functions over polars frames, so every rule can be tested without touching a disk:

    plan = build_plan(images, issues, groups, decisions, ExportRules())
    plan.files     # file_id, path, split, label, orig_split, orig_label, content_hash, bytes, ...
    plan.changes   # path, action (drop / relabel), rule, reason, split, label, new_label

Rules run in a fixed order, and a file dropped by one rule is not seen by the next:

1. ``corrupt``: the file cannot be decoded.
2. ``reviewer``: a reviewer's drop (unless decisions are ignored).
3. quality issues chosen with ``drop`` (``dark``, ``blurry``...).
4. ``leakage``: a duplicate group that spans splits keeps one side (train by default).
5. ``duplicate``: one file per exact/near-duplicate group, the representative by highest
   resolution, then fewest issues, then training split first (then larger file, then path).
6. relabels: a reviewer's relabel, else a suggested label scored at least ``relabel_above``.

A reviewer's "keep" exempts the file from rules 3-6 (a person looked at it; a flagged
duplicate they keep is most often a false match) and makes it its group's representative.
Only ``corrupt`` still applies: an undecodable file cannot be trained on.

The index's stored ``is_representative`` follows the same rule (``groups.rank_members``) but
knows neither reviewer decisions nor the issues found after the duplicate detector ran, and it
may have been dropped by an earlier rule, so the representative is chosen again among the
survivors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from dataaudit.detectors.groups import SPLIT_ORDER, rank_members
from dataaudit.errors import DataAuditError

LEAKAGE_CHOICES = ("drop-eval", "keep-eval", "ignore")
# Issue types that are handled by their own rule, not by ``drop``.
STRUCTURAL = ("corrupt", "exact_duplicate", "near_duplicate", "leakage")

CHANGE_SCHEMA = {
    "file_id": pl.Int64,
    "path": pl.String,
    "action": pl.String,  # drop, relabel, rename
    "rule": pl.String,
    "reason": pl.String,
    "split": pl.String,
    "label": pl.String,
    "new_label": pl.String,
    "dest": pl.String,
}

_SUGGESTED = re.compile(r"^labelled (.*) but its neighbours say (.*) \(\d+% of neighbours agree")


@dataclass(frozen=True)
class ExportRules:
    """What the export removes and changes; every default can be overridden."""

    drop_corrupt: bool = True
    dedupe: bool = True  # keep one file per duplicate group
    leakage: str = "drop-eval"  # drop-eval | keep-eval | ignore
    drop: tuple[str, ...] = ()  # issue types to drop (dark, blurry, ...)
    use_decisions: bool = True
    relabel_above: float | None = None  # apply suggested labels scored >= this

    def __post_init__(self) -> None:
        if self.leakage not in LEAKAGE_CHOICES:
            raise DataAuditError(
                f"unknown leakage rule {self.leakage!r}", f"use {', '.join(LEAKAGE_CHOICES)}"
            )
        bad = [t for t in self.drop if t in STRUCTURAL]
        if bad:
            raise DataAuditError(
                f"--drop {', '.join(bad)}: handled by its own rule",
                "corrupt, duplicates and leakage are dropped by default",
            )
        if self.relabel_above is not None and not 0.0 <= self.relabel_above <= 1.0:
            raise DataAuditError(
                f"--relabel-above {self.relabel_above} is outside 0..1",
                "label_error scores are 0..1",
            )


@dataclass
class Plan:
    """Files to write (with their final split and label) and every change, with its reason."""

    files: pl.DataFrame
    changes: pl.DataFrame
    before: pl.DataFrame  # split, label, files: counts in the index
    notes: list[str] = field(default_factory=list)

    def after(self) -> pl.DataFrame:
        return _counts(self.files)

    def dropped_by_rule(self) -> dict[str, int]:
        drops = self.changes.filter(pl.col("action") == "drop")
        return dict(drops.group_by("rule").len().sort("rule").iter_rows())


def build_plan(
    images: pl.DataFrame,
    issues: pl.DataFrame,
    groups: pl.DataFrame,
    decisions: pl.DataFrame | None,
    rules: ExportRules,
) -> Plan:
    """Apply the rules in order; return the files that stay and the changes made.

    images: file_id, path, split, label, width, height, bytes, content_hash, is_corrupt,
    decode_status, error_message. issues: flagged rows with file_id, issue, score, details.
    groups: file_id, group_id (duplicate groups). decisions: file_id, action, new_label, reason.
    """
    notes: list[str] = []
    files = images.with_columns(
        pl.col("split").alias("orig_split"), pl.col("label").alias("orig_label")
    )
    changes: list[pl.DataFrame] = []
    dec = _active_decisions(decisions) if rules.use_decisions else _active_decisions(None)
    kept = dec.filter(pl.col("action") == "keep").select("file_id")

    def drop(ids: pl.DataFrame, rule: str) -> None:
        """Remove files (frame with file_id, reason) and record why."""
        nonlocal files
        ids = ids.unique("file_id", keep="first", maintain_order=True)
        if rule != "corrupt":
            ids = ids.join(kept, on="file_id", how="anti")
        gone = files.join(ids, on="file_id", how="inner")
        if gone.height:
            changes.append(_change_rows(gone, "drop", rule, pl.col("reason"), pl.lit(None)))
            files = files.join(ids.select("file_id"), on="file_id", how="anti")

    if rules.drop_corrupt:
        bad = files.filter(pl.col("is_corrupt"))
        drop(bad.select("file_id", _corrupt_reason().alias("reason")), "corrupt")

    drop(
        dec.filter(pl.col("action") == "drop").select(
            "file_id", ("reviewer: " + pl.col("reason").fill_null("dropped")).alias("reason")
        ),
        "reviewer",
    )

    for issue in rules.drop:
        hit = issues.filter(pl.col("issue") == issue)
        drop(hit.select("file_id", pl.col("details").fill_null(issue).alias("reason")), issue)

    members = groups.select("file_id", "group_id").join(files.select("file_id"), on="file_id")
    if rules.leakage != "ignore":
        drop(_leakage_losers(files, members, rules.leakage), "leakage")
        members = members.join(files.select("file_id"), on="file_id")
    if rules.dedupe:
        drop(_duplicate_losers(files, members, issues, kept), "duplicate")

    files, relabels = _relabel(files, issues, dec, rules, notes)
    if relabels.height:
        changes.append(relabels)

    change_frame = (
        pl.concat(changes).cast(CHANGE_SCHEMA) if changes else pl.DataFrame(schema=CHANGE_SCHEMA)
    )
    return Plan(files.sort("path"), change_frame, _counts(images), notes)


def _corrupt_reason() -> pl.Expr:
    status = pl.col("decode_status").fill_null("corrupt")
    msg = pl.col("error_message").fill_null("")
    return pl.when(msg == "").then(status).otherwise(status + ": " + msg)


def _active_decisions(decisions: pl.DataFrame | None) -> pl.DataFrame:
    schema = {"file_id": pl.Int64, "action": pl.String, "new_label": pl.String, "reason": pl.String}
    if decisions is None or decisions.height == 0:
        return pl.DataFrame(schema=schema)
    d = decisions
    for col in schema:
        if col not in d.columns:
            d = d.with_columns(pl.lit(None, dtype=schema[col]).alias(col))
    return d.select(list(schema)).cast(schema).unique("file_id", keep="last", maintain_order=True)


def _change_rows(
    frame: pl.DataFrame, action: str, rule: str, reason: pl.Expr, new_label: pl.Expr
) -> pl.DataFrame:
    return frame.select(
        "file_id",
        "path",
        pl.lit(action).alias("action"),
        pl.lit(rule).alias("rule"),
        reason.cast(pl.String).alias("reason"),
        pl.col("orig_split").alias("split"),
        pl.col("orig_label").alias("label"),
        new_label.cast(pl.String).alias("new_label"),
        pl.lit(None, dtype=pl.String).alias("dest"),
    )


def _split_rank() -> pl.Expr:
    return pl.col("split").replace_strict(SPLIT_ORDER, default=3, return_dtype=pl.Int8)


def _leakage_losers(files: pl.DataFrame, members: pl.DataFrame, mode: str) -> pl.DataFrame:
    """Members of a cross-split group that are not on the side kept (file_id, reason)."""
    m = members.join(files.select("file_id", "path", "split"), on="file_id").filter(
        pl.col("split").is_not_null()
    )
    m = m.with_columns(_split_rank().alias("rank"))
    keep_rank = pl.col("rank").min() if mode == "drop-eval" else pl.col("rank").max()
    m = m.with_columns(
        keep_rank.over("group_id").alias("keep_rank"), pl.col("split").n_unique().over("group_id")
        .alias("n_splits"),
    )  # fmt: skip
    kept_side = (
        m.filter(pl.col("rank") == pl.col("keep_rank"))
        .group_by("group_id")
        .agg(pl.col("split").first().alias("kept_split"), pl.col("path").min().alias("kept_path"))
    )
    losers = m.filter((pl.col("n_splits") > 1) & (pl.col("rank") != pl.col("keep_rank")))
    return losers.join(kept_side, on="group_id").select(
        "file_id",
        pl.format(
            "{} copy of {} file {} (leakage: kept the {} side)",
            pl.col("split"),
            pl.col("kept_split"),
            pl.col("kept_path"),
            pl.col("kept_split"),
        ).alias("reason"),
    )


def _duplicate_losers(
    files: pl.DataFrame, members: pl.DataFrame, issues: pl.DataFrame, kept: pl.DataFrame
) -> pl.DataFrame:
    """All but the representative of each duplicate group among the survivors."""
    ranked = representatives(files, members, issues, kept)
    rep = ranked.filter(pl.col("is_representative")).select(
        "group_id", pl.col("path").alias("rep_path")
    )
    return (
        ranked.filter(~pl.col("is_representative"))
        .join(rep, on="group_id")
        .select("file_id", pl.format("duplicate of {} (kept)", pl.col("rep_path")).alias("reason"))
    )


def representatives(
    files: pl.DataFrame,
    members: pl.DataFrame,
    issues: pl.DataFrame,
    kept: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Group members ranked best first, with is_representative on each group's best.

    Best = kept by a reviewer, then most pixels, then fewest other flagged issues, then
    training split first, then the larger file, then the first path (deterministic).
    """
    kept_ids = [] if kept is None else kept["file_id"].to_list()
    other = issues.filter(~pl.col("issue").is_in(STRUCTURAL))
    n_issues = other.group_by("file_id").agg(pl.col("issue").n_unique().alias("n_issues"))
    return rank_members(
        members.join(files, on="file_id")
        .join(n_issues, on="file_id", how="left")
        .with_columns(pl.col("file_id").is_in(kept_ids).alias("reviewer_kept"))
    )


def suggested_labels(issues: pl.DataFrame) -> pl.DataFrame:
    """file_id, score, suggested: the label the label_error detector proposes.

    Read from the ``suggested`` column when the index has one, else parsed from the details
    line ("labelled A but its neighbours say B (..."); rows that do not parse are left out.
    """
    rows = issues.filter(pl.col("issue") == "label_error")
    if "suggested" in rows.columns:
        sugg = pl.col("suggested").cast(pl.String)
    else:
        sugg = pl.col("details").str.extract(_SUGGESTED.pattern, 2)
    return rows.select("file_id", "score", sugg.alias("suggested")).filter(
        pl.col("suggested").is_not_null()
    )


def _relabel(
    files: pl.DataFrame,
    issues: pl.DataFrame,
    dec: pl.DataFrame,
    rules: ExportRules,
    notes: list[str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply reviewer relabels, then suggested labels above the threshold (reviewer wins)."""
    by_reviewer = dec.filter(
        (pl.col("action") == "relabel") & pl.col("new_label").is_not_null()
    ).select(
        "file_id",
        pl.col("new_label").alias("_new"),
        pl.lit("reviewer").alias("_rule"),
        ("reviewer: " + pl.col("reason").fill_null("relabelled")).alias("_reason"),
    )
    proposals = [by_reviewer]
    if rules.relabel_above is not None:
        known = set(files["label"].drop_nulls().unique().to_list())
        sugg = suggested_labels(issues)
        if sugg.height == 0:
            notes.append(
                "--relabel-above: the index has no label_error rows (they need embeddings)"
            )
        sugg = sugg.filter(pl.col("score") >= rules.relabel_above)
        unknown = sugg.filter(~pl.col("suggested").is_in(list(known)))
        if unknown.height:
            notes.append(
                f"{unknown.height} suggested label(s) name no class left in the export; not applied"
            )
        # A reviewer's keep (or any reviewer decision) on a file overrides the suggestion.
        sugg = sugg.filter(pl.col("suggested").is_in(list(known))).join(
            dec.select("file_id"), on="file_id", how="anti"
        )
        proposals.append(
            sugg.select(
                "file_id",
                pl.col("suggested").alias("_new"),
                pl.lit("suggested_label").alias("_rule"),
                pl.format(
                    "label_error score {} >= {}",
                    pl.col("score").round(3),
                    pl.lit(rules.relabel_above),
                ).alias("_reason"),
            )  # fmt: skip
        )
    prop = pl.concat(proposals).unique("file_id", keep="first", maintain_order=True)
    hit = files.join(prop, on="file_id").filter(
        pl.col("_new") != pl.col("label").fill_null("\0none")
    )
    changes = [
        _change_rows(g, "relabel", rule, pl.col("_reason"), pl.col("_new"))
        for (rule,), g in hit.group_by("_rule", maintain_order=True)
    ]
    files = (
        files.join(hit.select("file_id", "_new"), on="file_id", how="left")
        .with_columns(pl.coalesce("_new", "label").alias("label"))
        .drop("_new")
    )
    return files, (pl.concat(changes) if changes else pl.DataFrame(schema=CHANGE_SCHEMA))


def _counts(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.group_by("split", "label")
        .len("files")
        .sort("split", "label", nulls_last=False)
        .cast({"files": pl.Int64})
    )
