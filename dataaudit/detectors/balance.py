"""Dataset-level findings: class balance across splits, and spurious property-label signals.

Balance: class counts per split, the imbalance ratio, classes missing from a split or
present in only one, singleton classes, and label-distribution shift between splits
(total variation distance).

Spurious signal: a property that is not the content (size, aspect ratio, brightness,
format, file size, grayscale) but alone separates one class from the rest. For each
property and class we compute the ROC AUC of the property as a score for "is this class"
(for categorical properties, of each value's indicator). An AUC of 0.5 is chance; at
``min_auc`` or above (or its mirror below 1 - min_auc) the finding names the property, the
class and the direction, because a network will happily learn the shortcut.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dataaudit.detectors.base import DetectContext, Finding

NUMERIC_PROPERTIES = {
    "area (px)": pl.col("width").cast(pl.Float64) * pl.col("height"),
    "aspect ratio": pl.col("width").cast(pl.Float64) / pl.col("height"),
    "brightness": pl.col("brightness_mean"),
    "file size": pl.col("bytes").cast(pl.Float64),
}
CATEGORICAL_PROPERTIES = ("format", "mode", "is_grayscale", "ext")


def detect_balance(ctx: DetectContext) -> list[Finding]:
    p = ctx.config.balance
    # counts per (label, split), counted in SQL: a few thousand rows at any dataset size
    labelled = ctx.rows(
        """SELECT label, split, count(*) AS len FROM {images}
           WHERE label IS NOT NULL AND NOT is_corrupt GROUP BY ALL ORDER BY ALL"""
    )
    if labelled.height == 0:
        return [Finding("unlabelled", "info", "no labels found: balance checks skipped")]
    findings: list[Finding] = []
    counts = labelled.group_by("label").agg(pl.col("len").sum()).sort("len", descending=True)
    biggest, smallest = counts.row(0), counts.row(-1)
    ratio = biggest[1] / max(smallest[1], 1)
    n_labelled = int(labelled["len"].sum())
    table = (
        labelled.with_columns(pl.col("split").fill_null("(none)"))
        .group_by("label", "split", maintain_order=True).agg(pl.col("len").sum())
        .pivot(on="split", index="label", values="len").fill_null(0).sort("label")
    )  # fmt: skip
    findings.append(
        Finding(
            "class_counts",
            "info",
            f"{counts.height} classes, {n_labelled:,} labelled images; "
            f"largest {biggest[0]!r} ({biggest[1]:,}), smallest {smallest[0]!r} ({smallest[1]:,})",
            {"table": table.to_dicts(), "imbalance_ratio": round(ratio, 2)},
        )
    )
    if counts.height > 1 and ratio >= p.imbalance_ratio:
        findings.append(
            Finding(
                "class_imbalance",
                "warning",
                f"class imbalance {ratio:.1f}:1 ({biggest[0]!r} vs {smallest[0]!r})",
                {"ratio": ratio},
            )  # fmt: skip
        )
    singletons = counts.filter(pl.col("len") < p.min_class_count)["label"].to_list()
    if singletons:
        findings.append(
            Finding(
                "singleton_class",
                "warning",
                f"{len(singletons)} class(es) with fewer than {p.min_class_count} images: "
                f"{_names(singletons)}",
                {"classes": singletons},
            )  # fmt: skip
        )
    findings.extend(_split_findings(labelled, p.shift_tvd))
    return findings


def _split_findings(labelled: pl.DataFrame, shift_tvd: float) -> list[Finding]:
    """``labelled``: counts ``len`` per (label, split)."""
    split_rows = labelled.filter(pl.col("split").is_not_null())
    splits = sorted(split_rows["split"].unique().to_list())
    if len(splits) < 2:
        return []
    out: list[Finding] = []
    all_labels = set(labelled["label"].unique().to_list())
    by_split = {
        s: dict(
            split_rows.filter(pl.col("split") == s)
            .group_by("label")
            .agg(pl.col("len").sum())
            .iter_rows()
        )  # fmt: skip
        for s in splits
    }
    for s in splits:
        missing = sorted(all_labels - set(by_split[s]))
        if missing:
            out.append(
                Finding(
                    "missing_class",
                    "warning",
                    f"{len(missing)} class(es) absent from {s}: {_names(missing)}",
                    {"split": s, "classes": missing},
                )  # fmt: skip
            )
    only_one = sorted(lab for lab in all_labels if sum(lab in by_split[s] for s in splits) == 1)
    if only_one:
        out.append(
            Finding(
                "class_in_one_split",
                "warning",
                f"{len(only_one)} class(es) appear in only one split: {_names(only_one)}",
                {"classes": only_one},
            )  # fmt: skip
        )
    for i, s1 in enumerate(splits):
        for s2 in splits[i + 1 :]:
            tvd = _tvd(by_split[s1], by_split[s2])
            if tvd >= shift_tvd:
                out.append(
                    Finding(
                        "label_shift",
                        "warning",
                        f"label distribution differs between {s1} and {s2} "
                        f"(total variation distance {tvd:.2f})",
                        {"splits": [s1, s2], "tvd": tvd},
                    )  # fmt: skip
                )
    return out


def _tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    labels = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in labels)


def _names(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def detect_spurious(ctx: DetectContext) -> list[Finding]:
    p = ctx.config.spurious
    where = "decode_status = 'ok' AND label IS NOT NULL"
    columns_sql = "file_id, label, width, height, brightness_mean, bytes, " + ", ".join(
        CATEGORICAL_PROPERTIES
    )
    # Above max_rows the AUCs are estimated on a fixed sample (the same rows every run)
    sample = "" if ctx.count(where) <= p.max_rows else f"ORDER BY hash(file_id) LIMIT {p.max_rows}"
    data = ctx.rows(f"SELECT {columns_sql} FROM {{images}} WHERE {where} {sample}")
    if data.height == 0 or data["label"].n_unique() < 2:
        return []
    data = data.with_columns(**{name: expr for name, expr in NUMERIC_PROPERTIES.items()})
    labels = data["label"].to_numpy()
    classes, class_counts = np.unique(labels, return_counts=True)
    findings: list[Finding] = []
    columns: dict[str, np.ndarray] = {
        n: data[n].to_numpy().astype(float) for n in NUMERIC_PROPERTIES
    }
    for cat in CATEGORICAL_PROPERTIES:
        values = data[cat].cast(pl.String).fill_null("(none)").to_numpy()
        uniq = np.unique(values)
        if len(uniq) < 2:
            continue
        for v in uniq:
            columns[f"{cat} = {v}"] = (values == v).astype(float)
    class_of = np.searchsorted(classes, labels)
    for name, x in columns.items():
        if np.nanstd(x) == 0:
            continue
        aucs = _aucs(x, class_of, len(classes))
        for c, (cls, n_cls) in enumerate(zip(classes, class_counts, strict=True)):
            if n_cls < p.min_class_count or n_cls == len(labels):
                continue
            auc = aucs[c]
            if auc >= p.min_auc or auc <= 1 - p.min_auc:
                higher = auc >= 0.5
                strength = auc if higher else 1 - auc
                findings.append(
                    Finding(
                        "spurious_signal",
                        "warning",
                        f"{name} alone separates class {cls!r} from the rest "
                        f"(AUC {strength:.2f}; {'higher' if higher else 'lower'} for {cls!r})",
                        {
                            "property": name,
                            "class": str(cls),
                            "auc": round(strength, 4),
                            "direction": "higher" if higher else "lower",
                        },
                    )  # fmt: skip
                )
    findings.sort(key=lambda f: -f.details["auc"])
    return findings


def _aucs(score: np.ndarray, class_of: np.ndarray, n_classes: int) -> np.ndarray:
    """ROC AUC of ``score`` for "is class c", for every class at once: the ranks (ties
    averaged) are computed once and summed per class (one sort, not one per class)."""
    ok = np.isfinite(score)
    score, class_of = score[ok], class_of[ok]
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=float)
    _, first, counts = np.unique(score[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    n_pos = np.bincount(class_of, minlength=n_classes).astype(float)
    rank_sum = np.bincount(class_of, weights=ranks, minlength=n_classes)
    n_neg = len(score) - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos == 0) | (n_neg == 0), 0.5, auc)
