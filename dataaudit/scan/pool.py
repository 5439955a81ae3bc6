"""Run :func:`dataaudit.scan.task.measure_task` over a stream of tasks in worker processes.

The stream is bounded (at most ``in_flight`` tasks handed out and not yet answered), so
memory does not grow with the dataset. ``workers == 0`` measures in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from collections.abc import Iterator
from typing import Any

from dataaudit.scan.measure import MeasureConfig, Measurement
from dataaudit.scan.task import Task, measure_task

_WORKER_STATE: dict[str, Any] = {}


def _init_worker(root: str, config: MeasureConfig, embed_spec: Any) -> None:
    _WORKER_STATE.update(root=root, config=config, embed_spec=embed_spec)


def _init_pool_worker(*initargs: Any) -> None:
    """Ctrl-C reaches the whole process group: only the main process handles it (it saves
    what is done and terminates the pool), so workers do not each print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*initargs)


def _work(task: Task) -> tuple[Task, Measurement | None]:
    s = _WORKER_STATE
    return task, measure_task(task, s["root"], s["config"], s["embed_spec"])


class MeasurePool:
    """A process pool fed from a bounded iterator, or in-process work when workers == 0."""

    def __init__(
        self, workers: int, root: str, config: MeasureConfig, embed_spec: Any = None
    ) -> None:
        self.workers = workers
        self.initargs = (root, config, embed_spec)
        self.pool = None
        if workers > 0:
            ctx = mp.get_context("forkserver")
            # scipy.fftpack is imagehash.phash's lazy import (~1 s): pay it once, not per worker
            ctx.set_forkserver_preload(["dataaudit.scan.measure", "scipy.fftpack"])
            self.pool = ctx.Pool(workers, initializer=_init_pool_worker, initargs=self.initargs)

    def map(
        self, tasks: Iterator[Task], in_flight: int
    ) -> Iterator[tuple[Task, Measurement | None]]:
        if self.pool is None:
            _init_worker(*self.initargs)
            yield from map(_work, tasks)
            return
        sem = threading.BoundedSemaphore(in_flight)
        stop = threading.Event()

        def throttled() -> Iterator[Task]:
            for t in tasks:
                sem.acquire()
                if stop.is_set():
                    return
                yield t

        try:
            for result in self.pool.imap_unordered(_work, throttled(), chunksize=8):
                sem.release()
                yield result
        finally:
            stop.set()
            for _ in range(in_flight):  # unblock the feeder so the pool can shut down
                try:
                    sem.release()
                except ValueError:
                    break

    def close(self, terminate: bool = False) -> None:
        if self.pool is not None:
            (self.pool.terminate if terminate else self.pool.close)()
            self.pool.join()
            self.pool = None
