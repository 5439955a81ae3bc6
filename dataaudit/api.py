"""The Python API: scan a folder, open its index, run the detectors.

The CLI, the app, training and export are thin layers over these functions::

    import dataaudit as da
    idx = da.scan("sample_data", embed=False)   # index the folder, run the detectors
    idx.issue_counts()                          # {'corrupt': 3, 'near_duplicate': 6, ...}
    da.detect(idx, da.load_config(overrides=["quality.z=3"]), write=False)  # try thresholds
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataaudit.detectors.config import DetectConfig
from dataaudit.detectors.config import load_config as _load_config
from dataaudit.detectors.runner import DetectResult
from dataaudit.discover import load_labels, resolve_root
from dataaudit.errors import DataAuditError, IndexBusyError
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
    db_path = store.find_index(p)  # never creates one; warns when two exist
    store.check_index(db_path)  # another program's DuckDB file, or an empty one: refused
    return Index(db_path, root=p if p.is_dir() else None)


def load_config(
    root: str | Path | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    from_data: bool = False,
) -> DetectConfig:
    """Detector thresholds: defaults, then config files, then ``section.key=value`` overrides.

    Config files inside ``root`` (``dataaudit.toml``, ``[tool.dataaudit]``) apply only with
    ``from_data=True``; otherwise a warning says they were ignored.
    """
    cfg, _sources = _load_config(
        Path(root) if root else None,
        Path(config_file) if config_file else None,
        overrides,
        from_data=from_data,
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
    engine: str = "local",
    address: str | None = None,
    work_dir: str | None = None,
) -> Index:
    """Index ``path`` (incrementally), embed it, run the detectors, return its :class:`Index`.

    ``embed`` may be a ready embedding stage (from :func:`embed_stage`). The summary of the
    scan is on ``index.last_scan``; the detection result on ``index.last_detect``.
    ``engine="ray"`` measures on Ray Data (``address``: a cluster; ``work_dir``: its run
    folders); only it reads object-store URLs (``s3://``, ``gs://``, with ``db`` given).
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
    remote = "://" in str(path)
    if engine not in ("local", "ray"):
        raise DataAuditError(f"unknown engine {engine!r}", "use --engine local or --engine ray")
    if engine == "local" and (remote or address or work_dir):
        raise DataAuditError(
            "object-store URLs, --address and --work-dir need --engine ray",
            'pip install "dataaudit[ray]" and add --engine ray',
        )
    if remote and db is None:
        raise DataAuditError(
            f"an index for {path} needs a local file", "pass --db PATH/index.duckdb"
        )
    root = None if remote else resolve_root(path)  # before anything is written next to it
    if labels:
        load_labels(labels)  # a bad labels file fails before anything is written
    db_path = Path(db).expanduser().resolve() if db else store.default_index_path(root)
    if db_path.is_file():  # another program's DuckDB file is refused before it is copied
        with contextlib.suppress(IndexBusyError):  # held: the writer's own wait and message
            store.check_index(db_path, may_be_empty=True)
    last_write = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last_write[0] >= 1.0 or done == total:
            last_write[0] = now
            access.write_progress(db_path, stage="scan", done=done, total=total)
        if progress:
            progress(done, total)

    if engine == "ray":
        from dataaudit.scan import ray_engine

        run_scan = functools.partial(ray_engine.scan, address=address, work_dir=work_dir)
    with access.writing(db_path, "scan"):
        summary = run_scan(path if remote else root, db_path, options, progress=report,
                           on_start=on_start)  # fmt: skip
    if summary.unreadable:  # not fatal (rows kept), but never silent
        warnings.warn(
            f"{len(summary.unreadable)} folder(s) or file(s) could not be listed, their earlier "
            f"rows are kept: {summary.unreadable[:3]} (see index.last_scan.unreadable)",
            stacklevel=2,
        )
    idx = Index(summary.index_path, root=None if remote else summary.root)
    idx.last_scan = summary
    if detect:
        idx.last_detect = _run_detect(idx, config)
    return idx


_run_detect = detect  # scan()'s ``detect`` flag shadows the function inside it
