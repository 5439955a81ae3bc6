"""The scan engine: discovery, never-raising decode and measure, the pool and the writer.

``dataaudit.scan`` is also the public function that scans a folder. Importing this package
makes Python bind the package to that same name on ``dataaudit``, so the package is made
callable and forwards to :func:`dataaudit.api.scan`: ``da.scan(path)`` works either way.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _ScanPackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dataaudit.api import scan

        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = _ScanPackage
