"""What a training run reads: the labelled images of an index, their splits, their pixels.

Everything comes through the Python API (``Index.images``/``issues``/``embeddings``); pixels
are decoded from the dataset folder once per size and kept as uint8 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageOps

from dataaudit.errors import DataAuditError
from dataaudit.index import Index

EVAL_SPLITS = ("val", "valid", "validation", "test")


@dataclass
class TrainData:
    """Labelled, usable images: ``frame`` has file_id, path, split, label, y, role."""

    frame: pl.DataFrame  # role: "train" or "eval"
    classes: list[str]
    eval_name: str  # which split evaluates: val, test, or "holdout" (carved from train)
    excluded: dict[str, int]

    @property
    def train(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("role") == "train")

    @property
    def eval(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("role") == "eval")


def load(idx: Index, exclude: tuple[str, ...] = (), seed: int = 0) -> TrainData:
    """The images a baseline trains and evaluates on, with the reasons others were left out."""
    frame = idx.images(columns=["file_id", "path", "split", "label", "is_corrupt"])
    excluded = {"corrupt": int(frame["is_corrupt"].sum()), "unlabelled": 0}
    frame = frame.filter(~pl.col("is_corrupt"))
    excluded["unlabelled"] = int(frame["label"].is_null().sum())
    frame = frame.filter(pl.col("label").is_not_null())
    for issue in exclude:
        flagged = idx.issues(issue)["file_id"]
        before = frame.height
        frame = frame.filter(~pl.col("file_id").is_in(flagged.implode()))
        excluded[issue] = before - frame.height
    classes = sorted(frame["label"].unique().to_list())
    if len(classes) < 2:
        raise DataAuditError(
            f"training needs at least two labels; this index has {len(classes)}",
            "label images by folder (root/label/x.jpg) or with --labels at scan time",
        )
    splits = set(frame["split"].drop_nulls().to_list())
    eval_name = next((s for s in EVAL_SPLITS if s in splits), None)
    if eval_name is not None:
        role = (
            pl.when(pl.col("split") == eval_name)
            .then(pl.lit("eval"))
            .when(pl.col("split").is_null() | (pl.col("split") == "train"))
            .then(pl.lit("train"))
            .otherwise(None)  # another held-out split (test beside val) is never trained on
        )
        frame = frame.with_columns(role.alias("role"))
    else:
        eval_name = "holdout"
        frame = frame.with_columns(_holdout(frame, seed).alias("role"))
    frame = frame.filter(pl.col("role").is_not_null()).sort("file_id")
    y = frame["label"].replace_strict(classes, list(range(len(classes))), return_dtype=pl.Int64)
    frame = frame.with_columns(y.alias("y")).drop("is_corrupt")
    if frame.filter(pl.col("role") == "eval").height == 0:
        raise DataAuditError("no images to evaluate on", f"the {eval_name} split is empty")
    return TrainData(frame, classes, eval_name, excluded)


def _holdout(frame: pl.DataFrame, seed: int) -> pl.Series:
    """A seeded, stratified 20 % of each label for evaluation when no val/test split exists."""
    rng = np.random.default_rng(seed)
    role = np.full(frame.height, "train", dtype=object)
    labels = frame["label"].to_numpy()
    for lab in np.unique(labels):
        where = np.nonzero(labels == lab)[0]
        take = rng.permutation(where)[: max(1, len(where) // 5)] if len(where) > 1 else []
        role[take] = "eval"
    return pl.Series("role", role.tolist(), dtype=pl.String)


def read_pixels(root: Path, paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, size, size) uint8 pixels, upright, squashed to a square; and a mask of the
    files that decoded (a file can change or vanish after the scan)."""
    out = np.zeros((len(paths), 3, size, size), np.uint8)
    ok = np.ones(len(paths), bool)
    for i, rel in enumerate(paths):
        try:
            with Image.open(root / rel) as im:
                im.draft("RGB", (size, size))
                im = ImageOps.exif_transpose(im).convert("RGB")
                im = im.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im).transpose(2, 0, 1)
        except Exception:  # a file that no longer decodes is left out, not fatal
            ok[i] = False
    return out, ok


def read_second_labels(path: Path) -> pl.DataFrame:
    """A second annotation: CSV with path,label (paths relative to the dataset root)."""
    if not path.is_file():
        raise DataAuditError(f"no such file: {path}", "--second-labels takes a CSV path,label")
    try:
        frame = pl.read_csv(path, columns=["path", "label"], schema_overrides={"label": pl.String})
    except Exception as exc:
        raise DataAuditError(
            f"cannot read {path}: {str(exc).splitlines()[0]}", "expected columns path,label"
        ) from exc
    return frame.rename({"label": "second_label"})
