"""dataaudit: index an image dataset into DuckDB and find what is wrong before training.

The public API (see README.md, "Python API")::

    import dataaudit as da
    idx = da.scan("data")                 # or da.open_index("data") for an existing index
    idx.images(da.Filters(labels=["cat"], sort="sharpness"))
    da.detect(idx, da.load_config(overrides=["quality.z=3"]), write=False)

Names are imported on first use, so ``import dataaudit`` stays light (scan workers import
the package too, and torch is loaded only by embedding and training code).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "scan": "dataaudit.api",
    "open_index": "dataaudit.api",
    "detect": "dataaudit.api",
    "load_config": "dataaudit.api",
    "embed_stage": "dataaudit.api",
    "Index": "dataaudit.index",
    "Embeddings": "dataaudit.index",
    "Filters": "dataaudit.queries.filters",
    "DetectConfig": "dataaudit.detectors.config",
    "DetectResult": "dataaudit.detectors.runner",
    "Decisions": "dataaudit.store.decisions",
    "export": "dataaudit.export",
    "ExportRules": "dataaudit.export",
    "DataAuditError": "dataaudit.errors",
    "IndexBusyError": "dataaudit.errors",
}
__all__ = [
    "DataAuditError", "Decisions", "DetectConfig", "DetectResult", "Embeddings", "ExportRules",
    "Filters", "Index", "IndexBusyError", "__version__", "detect", "embed_stage", "export",
    "load_config", "open_index", "scan",
]  # fmt: skip

if TYPE_CHECKING:
    from dataaudit.api import detect, embed_stage, load_config, open_index, scan
    from dataaudit.detectors.config import DetectConfig
    from dataaudit.detectors.runner import DetectResult
    from dataaudit.errors import DataAuditError, IndexBusyError
    from dataaudit.export import ExportRules, export
    from dataaudit.index import Embeddings, Index
    from dataaudit.queries.filters import Filters
    from dataaudit.store.decisions import Decisions


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dataaudit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
