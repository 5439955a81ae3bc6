"""Grouped, label-stratified re-splitting.

    fractions = parse_fractions("train=0.8,val=0.1,test=0.1")
    split = grouped_split(file_ids, labels, units, fractions, seed=0)   # one split name per file

Files that must stay together (a duplicate group, a patient, a video) form one *unit*; a unit
goes to exactly one split, so nothing leaks across sides. Units are placed largest first
(ties in a seeded random order), each into the split that still lacks the most files of the
unit's labels (ties: the split that lacks the most files overall).
With mostly small units this lands within one file per class of the requested fractions;
very large units can make exact fractions impossible, and the achieved ones are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from dataaudit.detectors.groups import connected_components
from dataaudit.errors import DataAuditError


def parse_fractions(spec: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> {"train": 0.8, ...}; must be positive and sum to 1."""
    out: dict[str, float] = {}
    hint = "write it like train=0.8,val=0.1,test=0.1"
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DataAuditError(f"cannot read split fraction {part.strip()!r}", hint)
        if name in out or "/" in name or name in (".", ".."):
            raise DataAuditError(f"bad or repeated split name {name!r}", hint)
        try:
            out[name] = float(value)
        except ValueError:
            raise DataAuditError(
                f"not a number: {value.strip()!r} for split {name}", hint
            ) from None
        if not out[name] > 0:
            raise DataAuditError(f"split {name} needs a positive fraction", hint)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise DataAuditError(f"split fractions sum to {sum(out.values()):g}, not 1", hint)
    return out


def units_from(file_ids: Sequence[int], links: Sequence[pl.DataFrame]) -> dict[int, int]:
    """Map each file to its unit: connected components over shared keys.

    Each frame in ``links`` has columns file_id and key (a duplicate group id, a patient id,
    ...); files sharing a key in any frame end up in one unit. Files in no link are their own
    unit (keyed by their own id).
    """
    edges: list[tuple[int, int]] = []
    offset = 1 << 64  # key nodes live above the int64 file ids, one range per frame
    for frame in links:
        f = frame.drop_nulls("key")
        if f.height == 0:
            continue
        codes = f["key"].cast(pl.String).rank("dense").to_list()
        edges.extend(zip(f["file_id"].to_list(), (offset + c for c in codes), strict=True))
        offset += 1 << 64
    comp = connected_components([], edges)
    return {int(fid): comp.get(int(fid), int(fid)) for fid in file_ids}


def grouped_split(
    file_ids: Sequence[int],
    labels: Sequence[str | None],
    units: dict[int, int],
    fractions: dict[str, float],
    seed: int = 0,
) -> list[str]:
    """Assign every file a split name; files of one unit always share it."""
    names = list(fractions)
    target = np.array([fractions[n] for n in names])
    label_strs = np.array([("" if x is None else str(x)) for x in labels], dtype=object)
    label_codes = np.unique(label_strs, return_inverse=True)[1].astype(np.int64).reshape(-1)
    n_labels = int(label_codes.max()) + 1 if len(label_codes) else 0
    per_label = np.bincount(label_codes, minlength=n_labels).astype(float)
    quota = target[:, None] * per_label[None, :]  # wanted files per (split, label)
    have = np.zeros_like(quota)

    order: dict[int, list[int]] = {}
    for i, fid in enumerate(file_ids):
        order.setdefault(units.get(int(fid), int(fid)), []).append(i)
    members = list(order.values())
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(len(members))
    sizes = np.array([len(members[i]) for i in shuffle])
    placed = shuffle[np.argsort(-sizes, kind="stable")]  # largest first, ties random

    assigned = np.empty(len(file_ids), dtype=np.int64)
    total_quota = target * len(file_ids)
    total_have = np.zeros_like(target)
    for ui in placed:
        rows = members[ui]
        counts = np.bincount(label_codes[rows], minlength=n_labels)
        used = np.nonzero(counts)[0]
        # the split that still lacks the most of these labels (in files), ties broken by the
        # split that lacks the most overall, so per-class rounding does not pile up in one
        need = ((quota[:, used] - have[:, used]) * counts[used]).sum(axis=1) / counts[used].sum()
        best = int(np.argmax(need + 1e-6 * (total_quota - total_have)))
        have[best, used] += counts[used]
        total_have[best] += len(rows)
        assigned[rows] = best
    return [names[i] for i in assigned]


def split_report(splits: Sequence[str], labels: Sequence[str | None], fractions: dict[str, float]):
    """Achieved fraction per split and per-class counts: (fractions frame, counts frame)."""
    f = pl.DataFrame(
        {"split": list(splits), "label": list(labels)},
        schema={"split": pl.String, "label": pl.String},
    )
    total = max(f.height, 1)
    achieved = (
        pl.DataFrame({"split": list(fractions), "requested": list(fractions.values())})
        .join(f.group_by("split").len("files"), on="split", how="left")
        .with_columns(pl.col("files").fill_null(0))
        .with_columns((pl.col("files") / total).alias("achieved"))
    )
    per_class = (
        f.group_by("label", "split")
        .len("files")
        .pivot("split", index="label", values="files")
        .fill_null(0)
    )
    per_class = per_class.select(
        "label", *[pl.col(n) if n in per_class.columns else pl.lit(0).alias(n) for n in fractions]
    ).sort("label", nulls_last=True)
    return achieved, per_class
