"""Fault injection for worker processes (imported by name in forkserver workers).

Worker processes import these functions by module name, so they live in a plain module
beside the tests (pytest puts ``tests/`` on ``sys.path``) rather than in a test file.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from dataaudit.scan.measure import MeasureConfig, Measurement
from dataaudit.scan.task import Task, measure_task


def die_on_poison(task: Task, root: str, config: MeasureConfig, spec: Any) -> Measurement | None:
    """Measure normally, but SIGKILL this worker on any file whose name holds 'poison',
    as the kernel's OOM killer or a segfaulting decoder would."""
    if "poison" in task.path:
        os.kill(os.getpid(), signal.SIGKILL)
    return measure_task(task, root, config, spec)


def sleep_forever(task: Task, root: str, config: MeasureConfig, spec: Any) -> Measurement | None:
    """A decoder stuck on a file: never answers."""
    while True:
        signal.pause()


def _exit_at_start(*args: Any) -> None:
    os._exit(3)
