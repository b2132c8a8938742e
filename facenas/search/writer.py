"""``ResultWriter``: a search's results go to the store in order, off its evaluations' path.

An evaluation's result is known to the search the moment its job's last message arrives; the store
write that makes it durable (a round trip to the store service, and its commit) runs in this writer's
thread, while the candidate goes on to its next objective and the search to its next proposal. The
first write of a batch waits ``delay_s`` (50 ms) first, and whatever is queued meanwhile follows it: the
moment a result arrives is when its candidate submits its next evaluation, and a write then would
compete with that submission for the searcher's and the host's CPUs (:meth:`ResultWriter.flush` does not
wait it out). Writes run in the order they were queued, so a candidate's outcome lands after its
evaluations; whoever needs them durable first -- an iteration record naming the candidates it covers,
the search's end status -- calls :meth:`ResultWriter.flush`.

A result still queued when the searcher dies is not lost: its worker keeps the finished job (for
``retention_s``, a day by default), and the resumed search, which finds no stored value, submits the
same key again and collects it without measuring again. At most ``limit`` writes wait (a store outage:
the searcher's store waits it out): beyond that, :meth:`ResultWriter.submit` waits for room, so a search
whose store is out stops running ahead of it. The first write that fails (a conflict with a stored
value, a rejected record, the searcher shutting down during an outage) is raised by every later
:meth:`~ResultWriter.submit` and :meth:`~ResultWriter.flush`, and nothing after it is written.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Write = Callable[[], object]


class ResultWriter:
    """One thread running queued writes in order (see the module docstring)."""

    def __init__(self, name: str, limit: int = 1000, delay_s: float = 0.05) -> None:
        self.limit = limit
        self.delay_s = delay_s  # a write waits this long before it runs (see the module docstring)
        self._flushing = 0
        self._queue: collections.deque[Write] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False  # a batch of writes is running (one taken off the queue, or more to follow)
        self._closed = False
        self._error: BaseException | None = None
        self._name = f"writer-{name}"
        self._thread: threading.Thread | None = None  # started by the first write

    def submit(self, write: Write) -> None:
        """Queue ``write``; waits while ``limit`` writes wait already. Raises the first failed write's
        error, and RuntimeError once closed."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._queue) < self.limit or self._error or self._closed)
            self._raise_if_failed()
            if self._closed:
                raise RuntimeError("result writer is closed")
            self._queue.append(write)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=self._name, daemon=True)
                self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has run; False on ``timeout``. Raises the first failed write's
        error."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                done = self._cond.wait_for(self._drained, timeout)
            finally:
                self._flushing -= 1
            self._raise_if_failed()
            return bool(done)

    def close(self, timeout: float = 30.0) -> None:
        """Run what is queued (for up to ``timeout``), then stop the thread. Errors are not raised here
        (call :meth:`flush` first to see them); writes left when the time is up are dropped, and logged."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            self._cond.wait_for(self._drained, timeout)
            if self._queue:
                log.warning("results not written to the store", extra={"writes": len(self._queue)})
                self._queue.clear()
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def pending(self) -> int:
        """Writes queued or running."""
        with self._cond:
            return len(self._queue) + int(self._busy)

    def _drained(self) -> bool:
        """Every queued write has run, or one failed (condition held)."""
        return self._error is not None or not (self._queue or self._busy)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                if not self._busy:  # the first of a batch: let the evaluation that queued it go on
                    self._cond.wait_for(lambda: self._flushing or self._closed, self.delay_s)
                write = self._queue.popleft()
                self._busy = True
            try:
                write()
            except BaseException as err:  # handed to the search's thread, raised there
                log.warning("result write failed", extra={"error": f"{type(err).__name__}: {err}"})
                with self._cond:
                    self._error = err
                    self._busy = False
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = bool(self._queue)  # writes queued meanwhile follow at once
                self._cond.notify_all()
