"""A host-wide quiet gate: CPU latency measurements never overlap training steps on the same host.

Processes of one local run share a lock file (``FACENAS_QUIET_LOCK``). Training holds the gate shared
(:meth:`QuietGate.working`) and calls :meth:`Worker.yield_point` between steps; a measurement
(:meth:`QuietGate.measuring`) first blocks new steps, then waits until every step in progress has ended,
and holds the host quiet until it is done. Measurements are serialised among themselves.

It is a writer-preferring readers-writer lock on two ``flock`` files, each use on its own open file
description (so threads of one process are separate holders; the kernel drops a dead holder's locks):

* the *turnstile* ``<path>.turnstile``: a measurement holds it exclusive from request to end; training
  passes through it (shared, momentarily) to start or resume, so it cannot while a measurement waits;
* the *room* ``<path>``: training holds it shared during steps; a measurement takes it exclusive.

Both files are created if missing and must not be deleted while the run lasts (a new file would be a
new, unrelated lock).

A measurement that cannot get quiet within ``max_wait_s`` (a training loop that never yields, another
measurement that hangs) proceeds anyway with :attr:`QuietWindow.quiet` false, for the caller to record;
the latency contention detector then judges its figures.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter, Histogram

from facenas.errors import InvalidInput

ENV = "FACENAS_QUIET_LOCK"
DEFAULT_MAX_WAIT_S = 120.0
# A measurement polls (flock has no timeout): first pause, then doubling up to the longest, which is
# longer for the turnstile (another measurement, seconds) than for the room (a step ending).
_FIRST_POLL_S = 0.0005
_TURNSTILE_POLL_S = 0.1
_ROOM_POLL_S = 0.02

log = logging.getLogger(__name__)

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TRAINING_WAIT = Histogram(
    "facenas_quiet_gate_training_wait_seconds",
    "Seconds training waited at the quiet gate for a measurement (only waits that happened).",
    buckets=_BUCKETS,
)
MEASUREMENT_WAIT = Histogram(
    "facenas_quiet_gate_measurement_wait_seconds",
    "Seconds a latency measurement waited for a quiet host.",
    buckets=_BUCKETS,
)
NOT_QUIET = Counter(
    "facenas_quiet_gate_not_quiet",
    "Measurements that proceeded without a quiet host (max_wait_s exceeded).",
)


@dataclass(frozen=True)
class QuietWindow:
    """What :meth:`QuietGate.measuring` obtained: ``quiet`` (no gated training step runs during the
    block; always true for the no-op gate, ``gated`` false there), after ``waited_s`` seconds."""

    quiet: bool
    waited_s: float
    gated: bool

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly dict."""
        return asdict(self)


class Worker(Protocol):
    """What :meth:`QuietGate.working` gives a training run."""

    def yield_point(self) -> float:
        """Between steps: let a requested measurement run; return the seconds waited."""
        ...


class Gate(Protocol):
    """The interface of :class:`QuietGate` and :class:`NullGate`."""

    def measuring(
        self, max_wait_s: float = DEFAULT_MAX_WAIT_S
    ) -> contextlib.AbstractContextManager[QuietWindow]:
        """Hold the host quiet for a measurement."""
        ...

    def working(self) -> contextlib.AbstractContextManager[Worker]:
        """Hold the gate for a training run."""
        ...


class _Flock:
    """One open file description of a lock file; its ``flock`` lock belongs to it alone."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def take(self, mode: int) -> None:
        """Block until the lock is held in ``mode`` (fcntl.LOCK_SH or LOCK_EX)."""
        fcntl.flock(self._fd, mode)

    def try_take(self, mode: int) -> bool:
        """Take the lock in ``mode`` if that is possible now."""
        try:
            fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def take_by(self, mode: int, deadline: float, longest_pause: float) -> bool:
        """Try to take the lock until ``deadline`` (time.monotonic); whether it was taken."""
        pause = _FIRST_POLL_S
        while not self.try_take(mode):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, longest_pause)
        return True

    def drop(self) -> None:
        """Release the lock (keeping the file open)."""
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file, which releases its lock."""
        os.close(self._fd)


class _FlockWorker:
    """A training run's hold on a :class:`QuietGate`: the room shared, released at yield points when a
    measurement is requested."""

    def __init__(self, gate: QuietGate) -> None:
        self._gate = gate
        self._turnstile = _Flock(gate.turnstile_path)
        self._room = _Flock(gate.path)
        self._inside = False

    def enter(self) -> float:
        """Pass the turnstile (waiting while a measurement is requested) into the room; seconds waited."""
        waited = 0.0
        if not self._turnstile.try_take(fcntl.LOCK_SH):
            start = time.monotonic()
            self._turnstile.take(fcntl.LOCK_SH)
            waited = time.monotonic() - start
            TRAINING_WAIT.observe(waited)
        try:  # never waits: a measurement holds the room only while it holds the turnstile
            self._room.take(fcntl.LOCK_SH)
        finally:
            self._turnstile.drop()
        self._inside = True
        return waited

    def leave(self) -> None:
        """Leave the room (a measurement may start)."""
        if self._inside:
            self._room.drop()
            self._inside = False

    def yield_point(self) -> float:
        """If a measurement is requested, leave the room, wait for it to end and re-enter."""
        if self._turnstile.try_take(fcntl.LOCK_SH):
            self._turnstile.drop()
            return 0.0
        self.leave()
        waited = self.enter()
        log.debug(
            "training resumed after a measurement", extra={"lock": str(self._gate.path), "waited_s": waited}
        )
        return waited

    def close(self) -> None:
        """Release everything."""
        self._inside = False
        self._room.close()
        self._turnstile.close()


class QuietGate:
    """The quiet gate on lock file ``path`` (and ``<path>.turnstile``), both created if missing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.turnstile_path = self.path.with_name(self.path.name + ".turnstile")
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for p in (self.path, self.turnstile_path):
                _Flock(p).close()
        except OSError as exc:
            raise InvalidInput(f"quiet gate lock file {self.path}: {exc}") from exc

    def _own_workers(self) -> list[_FlockWorker]:
        """The calling thread's active training holds (a measurement in that thread pauses them)."""
        workers: list[_FlockWorker] | None = getattr(self._local, "workers", None)
        if workers is None:
            workers = self._local.workers = []
        return workers

    @contextlib.contextmanager
    def working(self) -> Iterator[Worker]:
        """Hold the gate for a training run; call ``yield_point()`` between steps."""
        worker = _FlockWorker(self)
        try:
            worker.enter()
            self._own_workers().append(worker)
            try:
                yield worker
            finally:
                self._own_workers().remove(worker)
        finally:
            worker.close()

    @contextlib.contextmanager
    def measuring(self, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Iterator[QuietWindow]:
        """Block new training steps, wait (up to ``max_wait_s``) for running ones, stay quiet in the block.

        Past ``max_wait_s`` the block runs anyway, with ``quiet`` false. Training holds of the calling
        thread itself are paused for the block (it cannot be mid-step while it measures).
        """
        if not max_wait_s >= 0:
            raise InvalidInput(f"max_wait_s must be >= 0, got {max_wait_s}")
        with contextlib.ExitStack() as stack:
            for worker in list(self._own_workers()):
                worker.leave()
                stack.callback(worker.enter)  # runs last: after the locks below are released
            turnstile = _Flock(self.turnstile_path)
            stack.callback(turnstile.close)
            room = _Flock(self.path)
            stack.callback(room.close)
            start = time.monotonic()
            deadline = start + max_wait_s
            quiet = turnstile.take_by(fcntl.LOCK_EX, deadline, _TURNSTILE_POLL_S) and room.take_by(
                fcntl.LOCK_EX, deadline, _ROOM_POLL_S
            )
            window = QuietWindow(quiet=quiet, waited_s=time.monotonic() - start, gated=True)
            self._record(window, max_wait_s)
            yield window

    def _record(self, window: QuietWindow, max_wait_s: float) -> None:
        MEASUREMENT_WAIT.observe(window.waited_s)
        extra = {"lock": str(self.path), "waited_s": round(window.waited_s, 4), "max_wait_s": max_wait_s}
        if window.quiet:
            log.debug("host quiet for a measurement", extra=extra)
        else:
            NOT_QUIET.inc()
            log.warning("measuring without a quiet host: training did not yield in time", extra=extra)


class _NullWorker:
    def yield_point(self) -> float:
        return 0.0


class NullGate:
    """The gate of a process without ``FACENAS_QUIET_LOCK``: coordinates nothing."""

    @contextlib.contextmanager
    def working(self) -> Iterator[Worker]:
        """Yield a worker whose ``yield_point()`` returns at once."""
        yield _NullWorker()

    @contextlib.contextmanager
    def measuring(self, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Iterator[QuietWindow]:
        """Yield an ungated window at once."""
        if not max_wait_s >= 0:
            raise InvalidInput(f"max_wait_s must be >= 0, got {max_wait_s}")
        yield QuietWindow(quiet=True, waited_s=0.0, gated=False)


_NULL = NullGate()
_GATES: dict[str, QuietGate] = {}
_GATES_LOCK = threading.Lock()


def quiet_gate() -> Gate:
    """Return this process's gate: on ``$FACENAS_QUIET_LOCK`` if set (one per path), else a no-op gate."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        return _NULL
    with _GATES_LOCK:
        gate = _GATES.get(path)
        if gate is None:
            gate = _GATES[path] = QuietGate(path)
        return gate
