"""Every detector threshold in one place, with the defaults, their ranges and their sources.

Precedence (later wins): built-in defaults, then, only when the user opts in
(``--config-from-data``), ``[tool.dataaudit]`` in ``ROOT/pyproject.toml`` and
``ROOT/dataaudit.toml``, then an explicit ``--config FILE``, then ``--set section.key=value``.
Files inside the audited folder are data, not instructions: whoever ships the dataset could
otherwise switch a check off (``min_correlation = 2.0`` hides all leakage). Every value is
type- and range-checked (``z = nan`` is refused). Example ``dataaudit.toml``::

    [quality]
    z = 3.5
    [duplicates]
    phash_radius = 8
"""

from __future__ import annotations

import math
import tomllib
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dataaudit.errors import DataAuditError, DataAuditWarning


@dataclass
class IntegrityParams:
    unusual_mode_max_share: float = 0.05  # a mode used by less than this share is "unusual"


@dataclass
class DuplicateParams:
    phash_radius: int = 6  # near-duplicate candidates: pHash Hamming distance <= this
    phash_max_cost: float = 1.0  # ... lowered (and said so) where the search's estimated cost
    # (hamming.plan_cost, in 1e9 units; 1M hashes at radius 6 = 0.25) would pass this; 0 = off
    dhash_radius: int = 10  # ... verified by dHash distance <= this
    min_correlation: float = 0.97  # ... and by 16x16 grey correlation >= this
    use_pixel_hash: bool = True  # same decoded pixels under another encoding = exact
    embed_min_similarity: float = 0.97  # embedding cosine similarity that makes a near copy
    align_min_similarity: float = 0.8  # nearest neighbours this alike are checked for crops
    align_ranks: int = 4  # ... up to this rank (either way; tiny copies hide behind look-alikes)
    align_max_pairs: int = 250_000  # ... at most this many pairs, nearest first (~10 ms each)
    align_min_correlation: float = 0.975  # ... and linked if their aligned thumbnails match
    align_min_content_correlation: float = 0.85  # ... and so does what differs from the
    # background (the neighbours' median) at that placement; -1 = off
    min_residual_correlation: float = 0.93  # pHash pairs: content beyond the shared
    # background (thumbnail minus the neighbours' median) must correlate this well; -1 = off
    align_z: float = 3.5  # ... and be this rare among the nearest neighbours' correlations


@dataclass
class DatasetParams:
    max_issue_share: float = 0.05  # an "unusual" type flagging more is one dataset finding
    min_common_count: int = 10  # ... if that is at least this many images
    min_typical_side: int = 32  # typical images smaller than this get a dataset finding


@dataclass
class QualityParams:
    z: float = 4.0  # robust z-score (median / MAD, log scale) beyond which a value is unusual
    dark_max_mean: float = 60.0  # never call an image brighter than this dark
    dark_always_mean: float = 5.0  # unusable: nearly all black (mean grey level below this)
    light_min_mean: float = 215.0  # never call an image darker than this light
    light_always_mean: float = 250.0  # unusable: nearly all white
    exposure_cv_z: float = 2.0  # dark/light: grey std per unit of headroom at most this z
    blurry_max_sharpness: float = 0.3  # never blurry above this fine/coarse detail ratio
    blurry_z: float = 3.0  # blur: robust z (log detail ratio) below which an image is blurry
    blurry_max_edge: float = 0.4  # ... or below it in edge steepness, and at most this (~1 px blur)
    low_info_max_contrast: float = 12.0  # never low_information above this grey std
    flat_contrast: float = 5.0  # unusable: grey std below this is a blank, flat image
    grayscale_max_share: float = 0.5  # flag grayscale only if fewer than this share are


@dataclass
class GeometryParams:
    unusable_side: int = 6  # unusable: a side below this many pixels
    size_factor: float = 4.0  # area at least this many times off the median is odd_size
    aspect_factor: float = 2.0  # aspect ratio this many times off the median is odd
    z: float = 4.0  # and the robust z-score must exceed this
    mode_share: float = 0.02  # ... and fewer than this share of images have a similar shape
    mode_min_count: int = 5  # ... or than this many (small datasets)


@dataclass
class SemanticParams:
    outlier_z: float = 6.0  # robust z-score of the mean kNN distance that makes an outlier
    cluster_z: float = 3.0  # within-label kNN distance z-score of a clustered outlier
    cluster_min_size: int = 3  # fewer alike far-from-their-label images are not a cluster
    label_max_own_share: float = 0.05  # neighbours' vote share for the own label, at most
    ranked_rows: int = 100_000  # unflagged rows kept for ranking (the highest scores)
    label_probe: bool = True  # a linear probe on the embeddings must doubt the label too
    label_probe_dims: int = 128  # PCA dimensions the probe is fitted on (<= images / 10)
    label_probe_c: float = 0.1  # inverse L2 strength of the probe's logistic regression
    label_probe_max_fit: int = 20_000  # images fitted (a seeded sample beyond that)


@dataclass
class BalanceParams:
    imbalance_ratio: float = 10.0  # largest / smallest class count worth a warning
    shift_tvd: float = 0.1  # total variation distance between split label distributions
    min_class_count: int = 2  # classes with fewer images are singletons


@dataclass
class SpuriousParams:
    min_auc: float = 0.9  # property separates a class from the rest at least this well
    min_class_count: int = 10  # ignore classes smaller than this
    max_rows: int = 500_000  # above this, AUCs are measured on a fixed sample of this size


@dataclass
class DetectConfig:
    integrity: IntegrityParams = field(default_factory=IntegrityParams)
    duplicates: DuplicateParams = field(default_factory=DuplicateParams)
    quality: QualityParams = field(default_factory=QualityParams)
    geometry: GeometryParams = field(default_factory=GeometryParams)
    semantic: SemanticParams = field(default_factory=SemanticParams)
    dataset: DatasetParams = field(default_factory=DatasetParams)
    balance: BalanceParams = field(default_factory=BalanceParams)
    spurious: SpuriousParams = field(default_factory=SpuriousParams)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, values: dict[str, Any], source: str) -> None:
        """Apply ``{section: {key: value}}``; unknown names and out-of-range values are errors."""
        sections = {f.name for f in fields(self)}
        for section, items in values.items():
            if section not in sections or not isinstance(items, dict):
                raise DataAuditError(
                    f"unknown config section [{section}] in {source}",
                    f"known sections: {', '.join(sorted(sections))}",
                )
            params = getattr(self, section)
            known = {f.name: f for f in fields(params)}
            for key, value in items.items():
                if key not in known:
                    raise DataAuditError(
                        f"unknown setting {section}.{key} in {source}",
                        f"known: {', '.join(known)}",
                    )
                name = f"{section}.{key}"
                kind = type(getattr(params, key))
                setattr(params, key, _check_range(_coerce(value, kind, name, source), name, source))

    def check(self) -> None:
        """Settings that only make sense together (an "always" bound inside its "never")."""
        q = self.quality
        for low, high in (
            ("dark_always_mean", "dark_max_mean"),
            ("light_min_mean", "light_always_mean"),
        ):
            if getattr(q, low) > getattr(q, high):
                raise DataAuditError(
                    f"quality.{low} ({getattr(q, low)}) must not exceed quality.{high} "
                    f"({getattr(q, high)})",
                    "fix the config or the --set value",
                )


# Allowed closed range of every numeric setting (a test requires one per setting). As a
# safety net, a setting missing here must still be finite and >= 0.
RANGES: dict[str, tuple[float, float]] = {
    "integrity.unusual_mode_max_share": (0.0, 1.0),
    "duplicates.phash_radius": (0, 64),  # bits of a 64-bit hash
    "duplicates.phash_max_cost": (0.0, 1e6),
    "duplicates.align_max_pairs": (0, 10**9),
    "duplicates.dhash_radius": (0, 64),
    "duplicates.min_correlation": (-1.0, 1.0),
    "duplicates.embed_min_similarity": (-1.0, 1.0),
    "duplicates.align_min_similarity": (-1.0, 1.0),
    "duplicates.align_ranks": (1, 1000),
    "duplicates.align_min_correlation": (-1.0, 1.0),
    "duplicates.align_min_content_correlation": (-1.0, 1.0),  # -1 turns the check off
    "quality.z": (0.1, 1000.0),
    "quality.dark_max_mean": (0.0, 255.0),
    "quality.dark_always_mean": (0.0, 255.0),
    "quality.light_min_mean": (0.0, 255.0),
    "quality.light_always_mean": (0.0, 255.0),
    "quality.blurry_max_sharpness": (0.0, 100.0),
    "quality.low_info_max_contrast": (0.0, 128.0),  # grey std of 8-bit values
    "quality.grayscale_max_share": (0.0, 1.0),
    "geometry.size_factor": (1.0, 1e6),
    "geometry.aspect_factor": (1.0, 1e6),
    "geometry.z": (0.1, 1000.0),
    "semantic.outlier_z": (0.1, 1000.0),
    "semantic.label_max_own_share": (0.0, 1.0),
    "balance.imbalance_ratio": (1.0, 1e9),
    "balance.shift_tvd": (0.0, 1.0),
    "balance.min_class_count": (0, 1_000_000_000),
    "spurious.min_auc": (0.5, 1.0),
    "spurious.min_class_count": (1, 1_000_000_000),
    "duplicates.min_residual_correlation": (-1.0, 1.0),  # -1 turns the check off
    "duplicates.align_z": (0.1, 1000.0),
    "dataset.max_issue_share": (0.0, 1.0),
    "dataset.min_common_count": (0, 1_000_000_000),
    "dataset.min_typical_side": (0, 1_000_000),
    "quality.blurry_z": (0.1, 1000.0),
    "quality.blurry_max_edge": (0.0, 1.0),
    "quality.exposure_cv_z": (-1000.0, 1000.0),  # a z-score bound: negative is stricter
    "quality.flat_contrast": (0.0, 128.0),
    "geometry.unusable_side": (0, 1_000_000),
    "geometry.mode_share": (0.0, 1.0),
    "geometry.mode_min_count": (0, 1_000_000_000),
    "semantic.cluster_z": (0.1, 1000.0),
    "semantic.cluster_min_size": (1, 1_000_000_000),
    "semantic.ranked_rows": (0, 1_000_000_000),
    "semantic.label_probe_dims": (1, 4096),
    "semantic.label_probe_c": (1e-6, 1e6),
    "semantic.label_probe_max_fit": (10, 10_000_000),
    "spurious.max_rows": (1_000, 1_000_000_000),
}


def _coerce(value: Any, kind: type, name: str, source: str) -> Any:
    """Convert without silent loss: ``true`` is not a number, ``2.7`` is not an integer."""
    bad = DataAuditError(f"{name} must be {kind.__name__}, got {value!r} in {source}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad
    try:
        number = float(value)
    except ValueError as exc:
        raise bad from exc
    if not math.isfinite(number):
        raise DataAuditError(f"{name} must be a finite number, got {value!r} in {source}")
    if kind is int:
        if number != int(number):
            raise bad
        return int(number)
    return number


def _check_range(value: Any, name: str, source: str) -> Any:
    if isinstance(value, bool):
        return value
    low, high = RANGES.get(name, (0.0, math.inf))
    if not low <= value <= high:
        shown = f"[{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise DataAuditError(f"{name} = {value} is out of range in {source}", f"allowed: {shown}")
    return value


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    """Turn ``["quality.z=3", ...]`` into ``{"quality": {"z": "3"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise DataAuditError(f"bad --set {item!r}", "use --set section.key=value")
        out.setdefault(section, {})[name] = value.strip()
    return out


DATA_CONFIG_MARK = " (inside the audited data)"  # how such a source is named in the run record


def data_config_files(root: Path | None) -> list[Path]:
    """Config files shipped inside the audited folder (applied only on request)."""
    if root is None:
        return []
    found = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:  # someone else's broken pyproject.toml is not our concern unless it names us
            if _read_toml(pyproject).get("tool", {}).get("dataaudit"):
                found.append(pyproject)
        except DataAuditError:
            pass
    local = root / "dataaudit.toml"
    if local.is_file():
        found.append(local)
    return found


def load_config(
    root: Path | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    from_data: bool = False,
) -> tuple[DetectConfig, list[str]]:
    """Build the config from defaults, (opted-in) files inside the data, a file, overrides.

    Returns the config and the list of sources that were applied, for the run record.
    Files inside ``root`` are read only with ``from_data``; see :func:`data_config_files`.
    """
    cfg = DetectConfig()
    sources: list[str] = []
    in_data = data_config_files(root)
    if in_data:
        names = ", ".join(str(p) for p in in_data)
        warnings.warn(
            f"applying detector settings from inside the audited data: {names}"
            if from_data
            else f"not applying config file(s) inside the audited data: {names} "
            "(pass --config-from-data / from_data=True to apply them, or --config FILE)",
            DataAuditWarning,
            stacklevel=2,
        )
    if from_data:
        for path in in_data:
            values = _read_toml(path)
            if path.name == "pyproject.toml":
                values = values["tool"]["dataaudit"]
            cfg.update(values, str(path))
            sources.append(f"{path}{DATA_CONFIG_MARK}")
    if config_file is not None:
        if not Path(config_file).is_file():
            raise DataAuditError(f"config file not found: {config_file}")
        cfg.update(_read_toml(Path(config_file)), str(config_file))
        sources.append(str(config_file))
    if overrides:
        cfg.update(parse_set(overrides), "--set")
        sources.append("--set " + " ".join(overrides))
    cfg.check()
    return cfg, sources


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataAuditError(
            f"cannot read {path}: not UTF-8 text (byte {exc.start})", "save it as UTF-8 TOML"
        ) from exc
    except OSError as exc:
        raise DataAuditError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataAuditError(f"cannot read {path}: {exc}", "fix the TOML syntax") from exc
