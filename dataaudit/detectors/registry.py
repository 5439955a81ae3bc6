"""The built-in detectors, registered in one explicit table, and the issue vocabulary.

Issue names are used everywhere (index, CLI, CSV, app); keep them stable.
"""

from __future__ import annotations

from dataaudit.detectors.balance import detect_balance, detect_spurious
from dataaudit.detectors.base import DetectContext, Detector, Finding, dataset_findings
from dataaudit.detectors.duplicates import detect_duplicates
from dataaudit.detectors.geometry import detect_geometry
from dataaudit.detectors.integrity import detect_integrity
from dataaudit.detectors.label_votes import detect_label_errors
from dataaudit.detectors.quality import detect_quality
from dataaudit.detectors.semantic import EXPLAINING_ISSUES, detect_outliers

# issue type -> (severity, one-line description)
ISSUE_TYPES: dict[str, tuple[str, str]] = {
    "corrupt": ("error", "cannot be decoded: empty, truncated, not an image, or bad checksum"),
    "wrong_extension": ("error", "the bytes are a different format than the extension says"),
    "exact_duplicate": ("warning", "identical bytes or decoded pixels as another file"),
    "near_duplicate": ("warning", "a re-encoded, resized, shifted or cropped copy of another"),
    "leakage": ("error", "a duplicate group spans splits (train/val/test)"),
    "dark": ("warning", "much darker than the dataset"),
    "light": ("warning", "much brighter (over-exposed) than the dataset"),
    "blurry": ("warning", "lacks fine detail compared with the dataset"),
    "low_information": ("warning", "nearly flat: little contrast or entropy"),
    "grayscale": ("warning", "R = G = B in a colour dataset"),
    "odd_size": (
        "warning",
        "unusably small, or a size rare and far from the dataset's typical one",
    ),
    "odd_aspect_ratio": ("warning", "an aspect ratio rare and far from the dataset's typical one"),
    "outlier": (
        "warning",
        "far from every other image, or one of a foreign cluster, in embedding space",
    ),
    "label_error": ("warning", "its nearest neighbours (and a trained model) say another label"),
    "decompression_bomb": ("info", "too many pixels to decode safely"),
    "unsupported_format": ("info", "a codec Pillow lacks here, or a format never decoded"),
    "unusual_mode": ("info", "colour mode (CMYK, 16-bit, palette, alpha) rare in this dataset"),
    "exif_rotated": ("info", "EXIF orientation set: loaders may see it rotated"),
    "animated": ("info", "more than one frame"),
    "trailing_data": ("info", "bytes after the JPEG end marker"),
}


def detect_dataset(ctx: DetectContext) -> list[Finding]:
    """Dataset-level findings the other detectors recorded: types too common to flag per
    file, the typical size being small, clusters of foreign images."""
    return list(dataset_findings(ctx))


DETECTORS: tuple[Detector, ...] = (
    Detector("integrity", ("corrupt", "wrong_extension", "decompression_bomb",
                           "unsupported_format", "unusual_mode", "exif_rotated", "animated",
                           "trailing_data"), detect_integrity,
             "files a loader cannot use or may trip on"),
    Detector("duplicates", ("exact_duplicate", "near_duplicate", "leakage"), detect_duplicates,
             "same bytes, same pixels, perceptual hashes and embeddings; groups across splits"),
    Detector("geometry", ("odd_size", "odd_aspect_ratio"), detect_geometry,
             "size and aspect ratio against the dataset's typical shape"),
    Detector("quality", ("dark", "light", "blurry", "low_information", "grayscale"),
             detect_quality, "exposure, sharpness, information and colour",
             reads=("odd_size",)),
    Detector("outliers", ("outlier",), detect_outliers,
             "distance to the nearest neighbours in embedding space, global and per label; "
             "clusters far from their labels", reads=EXPLAINING_ISSUES),
    Detector("label_errors", ("label_error",), detect_label_errors,
             "neighbours' label vote, merged with confident learning after `dataaudit train`",
             reads=(*EXPLAINING_ISSUES, "outlier")),
    Detector("balance", (), detect_balance, "class counts per split, imbalance, label shift"),
    Detector("spurious", (), detect_spurious, "properties that alone predict a label"),
    Detector("dataset", (), detect_dataset,
             "dataset-level findings: common types, small images, foreign clusters",
             reads=("dark", "light", "blurry", "low_information", "odd_size", "odd_aspect_ratio",
                    "outlier")),
)  # fmt: skip


def _check_registry() -> None:
    names = [d.name for d in DETECTORS]
    if len(names) != len(set(names)):
        raise RuntimeError(f"duplicate detector names: {names}")
    emitted = [i for d in DETECTORS for i in d.issues]
    if len(emitted) != len(set(emitted)):
        raise RuntimeError("an issue type is emitted by two detectors")
    unknown = set(emitted) - set(ISSUE_TYPES)
    if unknown:
        raise RuntimeError(f"issue types without a description: {sorted(unknown)}")
    earlier: set[str] = set()
    for d in DETECTORS:
        late = set(d.reads) - earlier
        if late:
            raise RuntimeError(f"detector {d.name} reads {sorted(late)} before they are detected")
        earlier |= set(d.issues)


_check_registry()
