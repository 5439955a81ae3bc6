"""Export a cleaned dataset: rules and reviewer decisions -> grouped re-split -> atomic write.

    import dataaudit as da
    result = da.export(da.open_index("data"), "clean", resplit="train=0.8,val=0.1,test=0.1")
    result.summary["dropped_by_rule"]     # {"corrupt": 60, "duplicate": 118, ...}

The CLI (``dataaudit export PATH --out DEST``) calls the same function. DEST receives an
ImageFolder tree ``{split}/{label}/file``, ``manifest.csv``/``.parquet``, a Hugging Face
``imagefolder`` ``metadata.csv`` per split, ``changes.csv`` (every file dropped, relabelled or
renamed, with rule and reason) and ``summary.json``. The source is only read.
"""

from __future__ import annotations

import io
import json
import sys
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from dataaudit.errors import DataAuditError
from dataaudit.export.naming import assign_destinations
from dataaudit.export.plan import CHANGE_SCHEMA, ExportRules, Plan, build_plan
from dataaudit.export.resplit import grouped_split, parse_fractions, split_report, units_from
from dataaudit.export.write import MODES, Progress, check_destination, write_tree

__all__ = ["ExportResult", "ExportRules", "describe", "export", "plan_export"]

IMAGE_COLUMNS = ["file_id", "path", "split", "label", "width", "height", "bytes", "content_hash",
                 "is_corrupt", "decode_status", "error_message"]  # fmt: skip
AUDIT_FILES = ("manifest.csv", "manifest.parquet", "changes.csv", "summary.json")


@dataclass
class ExportResult:
    """What an export did (or, with dry_run, would do)."""

    out: Path
    plan: Plan
    summary: dict[str, Any]
    split_fractions: pl.DataFrame | None = None  # split, requested, files, achieved
    per_class: pl.DataFrame | None = None  # label x split counts after a re-split
    written: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def export(
    index: Any,  # an Index, or a dataset folder / index file to open
    out: str | Path,
    rules: ExportRules | None = None,
    resplit: str | dict[str, float] | None = None,
    group_by: str | None = None,
    labels_file: str | Path | None = None,
    seed: int = 0,
    mode: str = "copy",
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export the index's dataset to ``out`` under ``rules``; see the module docstring.

    resplit: ``"train=0.8,val=0.1,test=0.1"`` re-splits, stratified by label and grouped so
    that no duplicate group and no ``group_by`` key (a column of the labels file) spans
    sides. Without it the original splits are kept.
    """
    started = time.perf_counter()
    if isinstance(index, str | Path):
        from dataaudit.api import open_index

        index = open_index(index)
    if mode not in MODES:
        raise DataAuditError(f"unknown mode {mode!r}", f"use {', '.join(MODES)}")
    root = _root_of(index)
    out = Path(out).expanduser().absolute()
    problem = None
    try:
        check_destination(out, root, force)
    except DataAuditError as exc:
        if not dry_run:
            raise
        problem = f"the export itself would stop here: {exc}"
    result = plan_export(index, rules, resplit, group_by, labels_file, seed)
    if problem:
        result.notes.append(problem)
    result.out = out
    result.summary["parameters"].update(
        mode=mode, out=str(out), force=force, source=str(root), index=str(index.db_path)
    )
    if dry_run:
        return result
    files = result.plan.files
    audit = _audit_files(result)
    write_tree(files, root, out, audit, mode=mode, force=force, progress=progress)
    result.written = True
    result.seconds = time.perf_counter() - started
    return result


def plan_export(
    index: Any,
    rules: ExportRules | None = None,
    resplit: str | dict[str, float] | None = None,
    group_by: str | None = None,
    labels_file: str | Path | None = None,
    seed: int = 0,
) -> ExportResult:
    """The plan alone (no DEST needed): what would be written, dropped and relabelled."""
    rules = rules or ExportRules()
    if isinstance(resplit, dict):  # checked like the CLI's text form
        resplit = ",".join(f"{name}={value}" for name, value in resplit.items())
    fractions = parse_fractions(resplit) if resplit else None
    if group_by and not fractions:
        raise DataAuditError("--group-by needs --resplit", "add e.g. --resplit train=0.8,test=0.2")
    notes = []
    if fractions and rules.leakage != "ignore":
        # the old splits are discarded and every duplicate group lands on one side anyway
        rules = replace(rules, leakage="ignore")
        notes.append("leakage rule not needed with --resplit: each group stays on one side")
    images, issues, groups, decisions = _load(index, rules)
    plan = build_plan(images, issues, groups, decisions, rules)
    result = ExportResult(Path(), plan, {}, notes=notes + plan.notes)
    leak_before = _leaking_groups(images, groups)
    if fractions:
        links = [groups.select("file_id", pl.col("group_id").alias("key"))]
        if group_by:
            links.append(_group_keys(index, group_by, labels_file))
        ids = plan.files["file_id"].to_list()
        units = units_from(ids, links)
        splits = grouped_split(ids, plan.files["label"].to_list(), units, fractions, seed)
        plan.files = plan.files.with_columns(pl.Series("split", splits, dtype=pl.String))
        result.split_fractions, result.per_class = split_report(
            splits, plan.files["label"].to_list(), fractions
        )
    plan.files, renames = assign_destinations(plan.files)
    plan.changes = _with_renames(plan, renames)
    result.summary = _summary(result, rules, fractions, group_by, seed, leak_before, groups)
    return result


# ---------------------------------------------------------------- reading the index


def _root_of(index: Any) -> Path:
    root = getattr(index, "root", None)
    if root is None or not Path(root).is_dir():
        raise DataAuditError(
            f"the dataset folder of this index is not available ({root})",
            "export needs the images: open the index from the dataset folder",
        )
    return Path(root)


def _load(index: Any, rules: ExportRules):
    """images, flagged issues, duplicate groups and current decisions, as polars frames."""
    images = index.images(columns=IMAGE_COLUMNS).select(IMAGE_COLUMNS)
    issues = index.issues(flagged_only=True)
    issues = issues.select("file_id", "issue", "score", "details", *(
        ["suggested"] if "suggested" in issues.columns else []))  # fmt: skip
    groups = index.duplicate_groups()
    groups = groups.select(pl.col("file_id").cast(pl.Int64), pl.col("group_id").cast(pl.Int64))
    decisions = index.decisions() if rules.use_decisions else None
    return images, issues, groups, decisions


def _group_keys(index: Any, column: str, labels_file: str | Path | None) -> pl.DataFrame:
    """file_id, key: the ``column`` of the labels file (given, or the one the scan used)."""
    from dataaudit.discover import load_labels

    if labels_file is None:
        runs = index.runs()
        scans = runs.filter(pl.col("kind") == "scan").sort("run_id", descending=True)
        for params in scans["params"].to_list():
            p = json.loads(params) if isinstance(params, str) else (params or {})
            if p.get("labels_file"):
                labels_file = p["labels_file"]
                break
    if labels_file is None:
        raise DataAuditError(
            f"--group-by {column}: no labels file to read it from",
            "pass --labels FILE (a CSV or Parquet with path and that column)",
        )
    p = Path(labels_file)
    raw = pl.read_parquet(p) if p.suffix.lower() == ".parquet" else None
    if raw is None:
        try:
            raw = pl.read_csv(p, infer_schema_length=0)
        except Exception as exc:  # polars raises many types for bad files
            raise DataAuditError(
                f"cannot read labels file {p}: {exc}", "use CSV or Parquet"
            ) from exc
    if column not in raw.columns:
        raise DataAuditError(
            f"--group-by {column}: no such column in {p}", f"it has {', '.join(raw.columns)}"
        )
    load_labels(p)  # same checks (path, label) the scan made
    keys = raw.select(
        pl.col("path").cast(pl.String).str.replace_all("\\\\", "/").str.strip_prefix("./"),
        pl.col(column).cast(pl.String).alias("key"),
    ).unique("path", keep="last")
    paths = index.images(columns=["file_id", "path"]).select("file_id", "path")
    return paths.join(keys, on="path").select("file_id", "key")


# ---------------------------------------------------------------- audit trail


def _leaking_groups(files: pl.DataFrame, groups: pl.DataFrame) -> int:
    """Duplicate groups whose members sit in more than one split."""
    m = groups.join(files.select("file_id", "split"), on="file_id").drop_nulls("split")
    return (
        m.group_by("group_id")
        .agg(pl.col("split").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .height
    )


def _with_renames(plan: Plan, renames: pl.DataFrame) -> pl.DataFrame:
    dest = plan.files.select("file_id", pl.col("dest").alias("_dest"))
    changes = (
        plan.changes.join(dest, on="file_id", how="left")
        .with_columns(pl.coalesce("_dest", "dest").alias("dest"))
        .drop("_dest")
    )
    if renames.height == 0:
        return changes
    extra = renames.join(
        plan.files.select("file_id", "orig_split", "orig_label", "label"), on="file_id"
    ).select(
        "file_id", "path", pl.lit("rename").alias("action"), pl.lit("name_collision").alias("rule"),
        "reason", pl.col("orig_split").alias("split"), pl.col("orig_label").alias("label"),
        pl.col("label").alias("new_label"), "dest",
    )  # fmt: skip
    return pl.concat([changes, extra.cast(CHANGE_SCHEMA)])


def _manifest(files: pl.DataFrame) -> pl.DataFrame:
    return files.select(
        pl.col("dest").alias("path"), "split", "label", pl.col("path").alias("source_path"),
        "content_hash", "file_id", pl.col("orig_split").alias("original_split"),
        pl.col("orig_label").alias("original_label"),
    ).sort("path")  # fmt: skip


def _audit_files(result: ExportResult) -> dict[str, bytes]:
    """manifest.csv/.parquet, changes.csv, per-split metadata.csv, summary.json."""
    files = result.plan.files
    manifest = _manifest(files)
    buf = io.BytesIO()
    manifest.write_parquet(buf)
    out = {
        "manifest.csv": manifest.write_csv().encode(),
        "manifest.parquet": buf.getvalue(),
        "changes.csv": result.plan.changes.sort("action", "rule", "path").write_csv().encode(),
        "summary.json": _json(result.summary).encode(),
    }
    # Hugging Face imagefolder: a metadata.csv in each split folder, file_name relative to it.
    for (split,), part in files.group_by("split", maintain_order=True):
        prefix = "" if split is None else part["dest"][0].split("/", 1)[0] + "/"
        meta = part.select(
            pl.col("dest").str.strip_prefix(prefix).alias("file_name"), "label"
        ).sort("file_name")
        out[f"{prefix}metadata.csv"] = meta.write_csv().encode()
    return out


def _summary(
    result: ExportResult,
    rules: ExportRules,
    fractions: dict[str, float] | None,
    group_by: str | None,
    seed: int,
    leak_before: int,
    groups: pl.DataFrame,
) -> dict[str, Any]:
    plan = result.plan

    def counts(frame: pl.DataFrame) -> list[dict[str, Any]]:
        return frame.to_dicts()

    changes = plan.changes
    summary: dict[str, Any] = {
        "files_before": int(plan.before["files"].sum()),
        "files_after": plan.files.height,
        "dropped_by_rule": plan.dropped_by_rule(),
        "relabelled_by_rule": dict(
            changes.filter(pl.col("action") == "relabel")
            .group_by("rule")
            .len()
            .sort("rule")
            .iter_rows()
        ),  # fmt: skip
        "renamed": changes.filter(pl.col("action") == "rename").height,
        "leaking_groups_before": leak_before,
        "leaking_groups_after": _leaking_groups(plan.files, groups),
        "counts_before": counts(plan.before),
        "counts_after": counts(plan.after()),
        "parameters": {
            "drop_corrupt": rules.drop_corrupt,
            "dedupe": rules.dedupe,
            "leakage": rules.leakage,
            "drop": list(rules.drop),
            "use_decisions": rules.use_decisions,
            "relabel_above": rules.relabel_above,
            "resplit": fractions,
            "group_by": group_by,
            "seed": seed,
        },
        "notes": result.notes,
        "versions": _versions(),
    }
    if result.split_fractions is not None:
        summary["achieved_fractions"] = {
            r["split"]: round(r["achieved"], 4) for r in result.split_fractions.to_dicts()
        }
    return summary


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("dataaudit", "polars", "xxhash", "duckdb"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


def describe(result: ExportResult, examples: int = 3, max_classes: int = 30) -> list[str]:
    """The plan as plain lines for a terminal: counts, changes per rule, split fractions."""
    s = result.summary
    lines = [f"files: {s['files_before']:,} in the index -> {s['files_after']:,} exported"]
    for rule, n in s["dropped_by_rule"].items():
        lines.append(f"  dropped  {n:>7,}  {rule}")
    for rule, n in s["relabelled_by_rule"].items():
        lines.append(f"  relabel  {n:>7,}  {rule}")
    if s["renamed"]:
        lines.append(f"  renamed  {s['renamed']:>7,}  name collisions")
    lines.append(
        f"leaking duplicate groups: {s['leaking_groups_before']:,} before -> "
        f"{s['leaking_groups_after']:,} after"
    )
    changes = result.plan.changes
    for (action, rule), part in changes.group_by("action", "rule", maintain_order=True):
        for row in part.head(examples).to_dicts():
            lines.append(f"  e.g. {action} {rule}: {row['path']!r}: {row['reason']}")
    if result.split_fractions is not None:
        fr = ", ".join(
            f"{r['split']} {r['achieved']:.3f} (asked {r['requested']:.3f}, {r['files']:,} files)"
            for r in result.split_fractions.to_dicts()
        )
        lines.append(f"re-split: {fr}")
        per_class = result.per_class
        lines.append("per class: " + "  ".join(per_class.columns))
        for row in per_class.head(max_classes).iter_rows():
            lines.append("  " + "  ".join("" if v is None else str(v) for v in row))
        if per_class.height > max_classes:
            lines.append(
                f"  ... {per_class.height - max_classes:,} more (counts_after in summary.json)"
            )
    lines.extend(f"note: {n}" for n in result.notes)
    return lines


class _CallablePackage(types.ModuleType):
    """``dataaudit.export`` names both this package and its function. Importing the package
    (``from dataaudit.export import ExportRules``) makes Python set ``dataaudit.export`` to
    the package, so the package forwards calls: ``da.export(index, out)`` works either way."""

    def __call__(self, *args: Any, **kwargs: Any) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
