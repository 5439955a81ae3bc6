"""``from dataaudit import sanity``: the training sanity checks (they live in ``dataaudit.train``).

Names resolve on first use, so importing this module does not import torch; calling
``sanity.check`` does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["CHECKS", "CheckResult", "SanityReport", "check"]

if TYPE_CHECKING:
    from dataaudit.train.sanity import CHECKS, CheckResult, SanityReport, check


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'dataaudit.sanity' has no attribute {name!r}")
    value = getattr(import_module("dataaudit.train.sanity"), name)
    globals()[name] = value
    return value
