"""Run :func:`dataaudit.scan.task.measure_task` over a stream of tasks in worker processes.

Each worker has its own pipe and answers task by task, so this process always knows which
files a worker holds. A worker that dies (an OOM kill, a decoder crash) is noticed through
its process sentinel: the file it was reading is recorded ``unreadable`` ("the decoder
process died"), the files queued behind it go to the other workers, and a fresh worker
takes its place. This process never blocks without a timeout, so Ctrl-C works at every
moment. The stream is bounded (a few chunks per worker), so memory does not grow with the
dataset. ``workers == 0`` measures in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from dataaudit.errors import DataAuditError
from dataaudit.scan.measure import MeasureConfig, Measurement, empty_record
from dataaudit.scan.task import Task, measure_task

WorkFn = Callable[[Task, str, MeasureConfig, Any], "Measurement | None"]
Result = tuple[Task, "Measurement | None"]

CHUNK = 8  # tasks per message: amortises pipe round trips like Pool's chunksize
WAIT_S = 0.5  # longest single wait, so a signal is handled promptly
MAX_START_FAILURES = 3  # workers dying before they are ready: broken, not unlucky
READY = "ready"
DIED_CLASS = "DecoderProcessDied"


@contextlib.contextmanager
def _callers_script_hidden() -> Iterator[None]:
    """Start workers without re-running the caller's ``__main__`` script in them.

    multiprocessing re-executes the main script by path in every new worker. Workers need
    only dataaudit code, and when the caller is a Streamlit page (the app, or its tests)
    re-running that script in a worker crashes it at start-up.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if main is None or path is None or spec is not None:  # `python -m`: re-imported by name
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _worker_main(conn: Connection, root: str, config: MeasureConfig, spec: Any, work: WorkFn):
    """Answer each task of each chunk as soon as it is measured, until told to stop."""
    # Ctrl-C reaches the whole process group: only the main process handles it (it saves
    # what is done and stops the workers), so workers do not each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(READY)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for task in chunk:
            conn.send((task, work(task, root, config, spec)))


def died_measurement(exitcode: int | None) -> Measurement:
    """The record of a file whose worker died while reading it."""
    how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit {exitcode}"
    rec = empty_record()
    rec.update(
        decode_status="unreadable",
        is_corrupt=True,
        error_class=DIED_CLASS,
        error_message=f"the decoder process died while reading this file ({how}); "
        "often out of memory or a decoder crash",
    )
    return Measurement(rec)


@dataclass
class _Worker:
    proc: Any  # multiprocessing.Process
    conn: Connection
    held: deque[Task] = field(default_factory=deque)  # sent, not yet answered, in order
    ready: bool = False  # started and said so: from then on a death is the file's doing


class MeasurePool:
    """Worker processes fed from a bounded iterator, or in-process work when workers == 0."""

    def __init__(
        self,
        workers: int,
        root: str,
        config: MeasureConfig,
        embed_spec: Any = None,
        work: WorkFn = measure_task,
    ) -> None:
        self.workers = workers
        self.args = (root, config, embed_spec, work)
        self.deaths = 0
        self._start_failures = 0
        self._live: list[_Worker] = []
        if workers > 0:
            self._ctx = mp.get_context("forkserver")
            # scipy.fftpack is imagehash.phash's lazy import (~1 s): pay it once, not per worker
            self._ctx.set_forkserver_preload(["dataaudit.scan.measure", "scipy.fftpack"])
            self._live = [self._spawn() for _ in range(workers)]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._live]

    def _spawn(self) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(theirs, *self.args), daemon=True)
        with _callers_script_hidden():
            proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def map(self, tasks: Iterator[Task], in_flight: int = 0) -> Iterator[Result]:
        """Yield (task, measurement) in completion order; every task is answered once."""
        if not self._live:
            root, config, spec, work = self.args
            for task in tasks:
                yield task, work(task, root, config, spec)
            return
        per_worker = max(2 * CHUNK, in_flight // max(1, self.workers))
        retry: deque[Task] = deque()  # tasks a dead worker held but had not started
        exhausted = False

        def next_chunk() -> list[Task]:
            nonlocal exhausted
            chunk: list[Task] = []
            while retry and len(chunk) < CHUNK:
                chunk.append(retry.popleft())
            while not exhausted and len(chunk) < CHUNK:
                t = next(tasks, None)
                if t is None:
                    exhausted = True
                else:
                    chunk.append(t)
            return chunk

        while True:
            for w in self._live:  # keep every worker a chunk ahead, within the bound
                while len(w.held) + CHUNK <= per_worker:
                    chunk = next_chunk()
                    if not chunk:
                        break
                    try:
                        w.conn.send(chunk)
                    except OSError:  # it died: its sentinel says so below
                        retry.extendleft(reversed(chunk))
                        break
                    w.held.extend(chunk)
            if exhausted and not retry and not any(w.held for w in self._live):
                return
            ready = set(wait([w.conn for w in self._live] + [w.proc.sentinel for w in self._live],
                             timeout=WAIT_S))  # fmt: skip
            for i, w in enumerate(list(self._live)):
                if w.conn in ready:
                    try:
                        while w.conn.poll():
                            yield from self._answer(w, w.conn.recv())
                    except (EOFError, OSError):
                        pass  # died mid-message: handled as a death below
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    yield from self._replace(i, w, retry)

    def _replace(self, i: int, w: _Worker, retry: deque[Task]) -> Iterator[Result]:
        """Drain what a dead worker answered, blame the file it was reading, respawn."""
        try:
            while w.conn.poll():
                yield from self._answer(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        w.proc.join()
        w.conn.close()
        self.deaths += 1
        if not w.ready:  # died starting up: no file is to blame
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                raise DataAuditError(
                    f"decoder worker processes die as they start (exit {w.proc.exitcode})",
                    "check memory limits (ulimit -v, container limits), or scan with --workers 0",
                )
            retry.extendleft(reversed(w.held))
            w.held.clear()
        self._live[i] = self._spawn()
        if w.held:
            culprit = w.held.popleft()
            retry.extendleft(reversed(w.held))
            w.held.clear()
            yield culprit, died_measurement(w.proc.exitcode)

    @staticmethod
    def _answer(w: _Worker, message: Any) -> Iterator[Result]:
        if message == READY:
            w.ready = True
            return
        w.held.popleft()
        yield message

    def close(self, terminate: bool = False) -> None:
        """Stop the workers: politely (they finish their chunk) or at once."""
        live, self._live = self._live, []
        for w in live:
            if terminate:
                w.proc.kill()
            else:
                with contextlib.suppress(OSError):  # already dead
                    w.conn.send(None)
        for w in live:
            w.proc.join(timeout=None if terminate else 30)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
