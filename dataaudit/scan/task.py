"""One unit of scan work and the pure function that measures it.

Both engines (the local process pool and a distributed one) ship :class:`Task` values to
workers and call :func:`measure_task` there; only the main process writes the index.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from dataaudit.scan.decode import sniff_format
from dataaudit.scan.measure import MeasureConfig, Measurement, measure_file, vanished


class Task(NamedTuple):
    """A file to read, with what discovery and planning know about it."""

    file_id: int
    path: str  # relative name on disk (may hold surrogate escapes); stored as storable(path)
    split: str | None
    label: str | None
    bytes: int
    mtime_ns: int
    has_image_ext: bool
    was_indexed: bool  # an older row exists (changed file, or re-read only to embed)


TASK_COLUMNS = Task._fields


def measure_task(
    task: Task, root: str, config: MeasureConfig, embed_spec: Any = None
) -> Measurement | None:
    """Measure one file; a file without an image extension is first sniffed (None = skip).

    A file deleted since the listing comes back as :func:`~dataaudit.scan.measure.vanished`.
    """
    abs_path = os.path.join(root, task.path)
    if not task.has_image_ext:
        try:
            with open(abs_path, "rb") as f:
                head = f.read(64)
        except FileNotFoundError:
            return vanished()
        except OSError:
            return None
        if sniff_format(head) is None:
            return None
    ext = os.path.splitext(task.path)[1].lower()
    return measure_file(abs_path, ext, config, embed_spec)
