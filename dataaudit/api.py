"""The Python API: scan a folder, open its index, run the detectors.

The CLI, the app, training and export are thin layers over these functions::

    import dataaudit as da
    idx = da.scan("sample_data", embed=False)   # index the folder, run the detectors
    idx.issue_counts()                          # {'corrupt': 3, 'near_duplicate': 6, ...}
    da.detect(idx, da.load_config(overrides=["quality.z=3"]), write=False)  # try thresholds
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataaudit.detectors.config import DetectConfig
from dataaudit.detectors.config import load_config as _load_config
from dataaudit.detectors.runner import DetectResult
from dataaudit.errors import DataAuditError
from dataaudit.index import Index
from dataaudit.store import access
from dataaudit.store import db as store

DEFAULT_EMBED_MODEL = "efficientnet_lite0"


def open_index(path_or_db: str | Path, read_only: bool = True) -> Index:
    """The index of a scanned folder (or an index file given directly).

    ``read_only`` is accepted for symmetry; an :class:`Index` only ever reads, and writes
    go through :func:`scan`, :func:`detect` and the training module.
    """
    p = Path(path_or_db).expanduser()
    db_path = store.find_index(p)
    return Index(db_path, root=p if p.is_dir() else None)


def load_config(
    root: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> DetectConfig:
    """Detector thresholds: defaults, then config files, then ``section.key=value`` overrides."""
    cfg, _sources = _load_config(
        Path(root) if root else None, Path(config_file) if config_file else None, overrides
    )
    return cfg


def detect(
    index: Index | str | Path,
    config: DetectConfig | None = None,
    write: bool = True,
    sources: list[str] | None = None,
) -> DetectResult:
    """Run the detectors. ``write=False`` computes in memory from a read-only connection
    (the app's threshold sliders); ``write=True`` replaces the stored issues and records
    the run, as ``dataaudit detect`` does."""
    from dataaudit.detectors.runner import compute, run_detectors

    idx = index if isinstance(index, Index) else open_index(index)
    config = config or DetectConfig()
    if not write:
        with idx.connect() as con:
            return compute(con, config)
    with access.writing(idx.db_path, "detect"), idx.writer() as con:
        return run_detectors(con, config, sources)


def embed_stage(
    model: str = DEFAULT_EMBED_MODEL,
    weights: str | None = None,
    size: int | None = None,
    device: str | None = None,
) -> Any:
    """Build the embedding stage and load its model now, so bad weights fail before a scan."""
    try:
        from dataaudit.embed.spec import PACKAGE_WEIGHTS, EmbedSpec
        from dataaudit.embed.stage import EmbedStage
    except ImportError as exc:  # torch missing
        raise DataAuditError(
            f"embeddings need torch ({exc})",
            "pip install dataaudit with its dependencies, or pass embed=False / --no-embed",
        ) from exc
    if weights == "package":
        weights = PACKAGE_WEIGHTS
    stage = EmbedStage(EmbedSpec.for_backbone(model, weights, size), device=device)
    stage.load()
    return stage


def scan(
    path: str | Path,
    db: str | Path | None = None,
    *,
    workers: int | None = None,
    labels: str | Path | None = None,
    thumb_size: int = 128,
    embed: bool | Any = True,
    embed_model: str = DEFAULT_EMBED_MODEL,
    embed_weights: str | None = None,
    embed_size: int | None = None,
    device: str | None = None,
    detect: bool = True,
    config: DetectConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> Index:
    """Index ``path`` (incrementally), embed it, run the detectors, return its :class:`Index`.

    ``embed`` may be a ready embedding stage (from :func:`embed_stage`). The summary of the
    scan is on ``index.last_scan``; the detection result on ``index.last_detect``.
    """
    from dataaudit.scan.measure import MeasureConfig
    from dataaudit.scan.pipeline import ScanOptions
    from dataaudit.scan.pipeline import scan as run_scan

    stage = None
    if embed is True:
        stage = embed_stage(embed_model, embed_weights, embed_size, device)
    elif embed not in (False, None):
        stage = embed
    options = ScanOptions(
        workers=workers,
        labels_file=str(labels) if labels else None,
        measure=MeasureConfig(thumb_size=thumb_size),
        embed=stage,
    )
    root = Path(path).expanduser()
    db_path = Path(db).expanduser().resolve() if db else store.default_index_path(root.resolve())
    last_write = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last_write[0] >= 1.0 or done == total:
            last_write[0] = now
            access.write_progress(db_path, stage="scan", done=done, total=total)
        if progress:
            progress(done, total)

    with access.writing(db_path, "scan"):
        summary = run_scan(root, db_path, options, progress=report, on_start=on_start)
    idx = Index(summary.index_path, root=summary.root)
    idx.last_scan = summary
    if detect:
        idx.last_detect = _run_detect(idx, config)
    return idx


_run_detect = detect  # scan()'s ``detect`` flag shadows the function inside it
