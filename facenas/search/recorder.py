"""A search's event log and its iteration records (Pareto front, hypervolume, algorithm state)."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from facenas.domain import IterationRecord, NewEvent
from facenas.errors import Cancelled, FacenasError
from facenas.limits import MAX_REQUEST_KEYS
from facenas.search import metrics
from facenas.search.history import SearchHistory
from facenas.search.pareto import IncrementalFront, hypervolume, pareto_front, reference_point
from facenas.search.snapshot import EVALUATED, ObjectiveInfo, evaluated_in
from facenas.store.base import Store

log = logging.getLogger(__name__)


class EventSignal:
    """Wakes the watchers of a search when this process has logged events of it (watchers still poll the
    store, for events logged elsewhere, but need not spin while a search logs many)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._logged: dict[str, int] = {}

    def notify(self, search_id: str) -> None:
        with self._cond:
            self._logged[search_id] = self._logged.get(search_id, 0) + 1
            self._cond.notify_all()

    def version(self, search_id: str) -> int:
        with self._cond:
            return self._logged.get(search_id, 0)

    def wait(self, search_id: str, version: int, timeout: float) -> bool:
        """Until events of ``search_id`` were logged after ``version`` was read, or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._logged.get(search_id, 0) != version, timeout)


class EventLog:
    """Appends to a search's event log, for watching only: nothing is rebuilt from it (the search's state
    is in store records). Each event carries a fresh token, so the store's retries log it once; an event
    that cannot be written is logged here and dropped (a stopping searcher's Cancelled propagates)."""

    def __init__(self, store: Store, search_id: str, signal: EventSignal | None = None) -> None:
        self.store = store
        self.search_id = search_id
        self.signal = signal

    def __call__(self, kind: str, payload: Mapping[str, object]) -> None:
        try:
            self.store.append_event(self.search_id, kind, dict(payload), token=uuid.uuid4().hex)
        except Cancelled:
            raise
        except FacenasError as err:
            log.warning("event not recorded", extra={"kind": kind, "error": str(err)})
            return
        if self.signal is not None:
            self.signal.notify(self.search_id)

    def count(self, kind: str) -> int:
        """How many events of ``kind`` the log holds (reads the whole log)."""
        total = seq = 0
        while events := self.store.list_events(self.search_id, seq, 1000):
            total += sum(1 for e in events if e.kind == kind)
            seq = events[-1].seq
        return total


class QueuedEventLog(EventLog):
    """An :class:`EventLog` whose events a background thread writes, in order, so that a search's
    evaluations never wait on the store for them: at most one store call every ``interval_s``, with every
    event queued meanwhile (at most ``MAX_REQUEST_KEYS`` a call). :meth:`close` writes what is queued
    first (a run's last events land before its end status does, which is when watchers stop). At most
    ``limit`` events wait (a long store outage): beyond that new ones are dropped, and logged here."""

    def __init__(
        self,
        store: Store,
        search_id: str,
        signal: EventSignal | None = None,
        limit: int = 100_000,
        interval_s: float = 0.1,
    ) -> None:
        super().__init__(store, search_id, signal)
        self.limit = limit
        self.interval_s = interval_s  # between store calls: events gather into batches meanwhile
        self._flushing = 0
        self._queue: collections.deque[tuple[str, dict[str, object], str]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._drain, name=f"events-{search_id[:8]}", daemon=True)
        self._thread.start()

    def __call__(self, kind: str, payload: Mapping[str, object]) -> None:
        with self._cond:
            if not self._closed:
                if len(self._queue) >= self.limit:
                    self._dropped += 1
                    if self._dropped == 1 or self._dropped % 1000 == 0:
                        log.warning("event queue full: events dropped", extra={"dropped": self._dropped})
                    return
                self._queue.append((kind, dict(payload), uuid.uuid4().hex))
                self._cond.notify_all()
                return
        super().__call__(kind, payload)  # closed: written now

    def _drain(self) -> None:
        """Write what is queued, up to ``MAX_REQUEST_KEYS`` events per store call (one transaction)."""
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = list(itertools.islice(self._queue, MAX_REQUEST_KEYS))
            try:
                self.store.append_events(self.search_id, [NewEvent(k, p, t) for k, p, t in batch])
            except FacenasError as err:  # Cancelled too (the searcher stopping while the store is out)
                log.warning("events not recorded", extra={"events": len(batch), "error": str(err)})
            else:
                if self.signal is not None:
                    self.signal.notify(self.search_id)
            with self._cond:
                for _ in range(min(len(batch), len(self._queue))):
                    self._queue.popleft()
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._closed or self._flushing > 0, self.interval_s)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is written (or dropped); False on ``timeout``."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for up to ``timeout``: a store that stays out loses the rest, logged
        here), then write later events at once, as the plain EventLog does."""
        written = self.flush(timeout)
        with self._cond:
            if not written:
                log.warning(
                    "events not recorded: the store did not take them", extra={"events": len(self._queue)}
                )
                self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


class IterationRecorder:
    """Computes fronts and hypervolume over the history and writes one record per finished iteration.

    The hypervolume's reference point is fixed at the first front (from the objectives' constraints or the
    points seen then) and kept in the records, so hypervolumes of one search compare across iterations.
    Each record also names the candidates that finished since the previous one (``state["evaluated"]``,
    read at the same instant as the front's points), so its outputs show exactly the rows its front was
    computed over, even when other candidates finish while it is written.
    """

    def __init__(
        self,
        search_id: str,
        store: Store,
        history: SearchHistory,
        objectives: Sequence[ObjectiveInfo],
        events: EventLog,
        on_record: Callable[[IterationRecord], None] | None = None,
    ) -> None:
        self.search_id = search_id
        self.on_record = on_record  # told of each record written
        self.store = store
        self.history = history
        self.objectives = tuple(objectives)
        self.events = events
        self.reference: list[float] | None = None
        self.walltime_offset = 0.0
        self.began = time.monotonic()
        self.counted: set[str] = set()  # candidates an earlier record counted
        self._live = IncrementalFront([o.direction for o in self.objectives])  # what front() gives
        self._cursor = 0  # of the history's completed candidates, those in _live
        self._revoked = 0  # the history's count of completed candidates that left the front since
        self._live_lock = threading.Lock()

    def resume_from(self, records: Sequence[IterationRecord]) -> None:
        """Continue after ``records`` (the search's, oldest first; the history holds its candidates)."""
        last = records[-1]
        self.reference = list(last.state.get("reference") or []) or None
        self.walltime_offset = last.walltime_s
        counted = evaluated_in(dict(self.history.iteration_of), records)
        self.counted = {a for a, k in counted.items() if k <= last.iteration}

    def walltime(self) -> float:
        return self.walltime_offset + (time.monotonic() - self.began)

    def front(self) -> tuple[list[str], float]:
        """The front of the complete candidates now and its hypervolume, kept up to date one completed
        candidate at a time (:meth:`record` computes its own over the candidates settled then)."""
        with self._live_lock:
            batch, self._cursor, revoked = self.history.completed_since(self._cursor)
            if revoked != self._revoked:  # a candidate on it may have left: build it again
                self._live = IncrementalFront([o.direction for o in self.objectives])
                batch, self._cursor, self._revoked = self.history.completed_since(0)
            for archid, point, position in batch:
                self._live.add(archid, point, position)
            front = self._live.ids()
            if not front:
                return [], 0.0
            if self.reference is None:  # the first points: every complete candidate so far is in batch
                self.reference = reference_point(self.objectives, [p for _, p, _ in batch])
            directions = [o.direction for o in self.objectives]
            return front, hypervolume(self._live.points(), directions, self.reference)

    def _front(self, points: Mapping[str, Sequence[float]]) -> tuple[list[str], float]:
        directions = [o.direction for o in self.objectives]
        front = pareto_front(points, directions)
        if not front:
            return [], 0.0
        if self.reference is None:
            self.reference = reference_point(self.objectives, list(points.values()))
        return front, hypervolume([points[a] for a in front], directions, self.reference)

    def record(
        self,
        iteration: int,
        rng_state: list[Any],
        extra: Mapping[str, Any] | None = None,
        cache_hits: int = 0,
    ) -> IterationRecord:
        """Write iteration ``iteration``'s record; ``cache_hits`` (the search's so far) goes into its
        state and event."""
        finished, points = self.history.settled()
        front, hv = self._front(points)
        evaluated = [a for a in finished if a not in self.counted]
        self.counted.update(evaluated)
        state = {
            "rng": rng_state,
            "reference": self.reference,
            "cache_hits": cache_hits,
            **(extra or {}),
            EVALUATED: evaluated,
        }
        record = self.store.put_iteration(
            IterationRecord(self.search_id, iteration, tuple(front), hv, state, self.walltime())
        )
        if self.on_record is not None:
            self.on_record(record)
        metrics.ITERATION.labels(self.search_id).set(iteration)
        metrics.HYPERVOLUME.labels(self.search_id).set(hv)
        metrics.PARETO_SIZE.labels(self.search_id).set(len(front))
        metrics.LAST_PROGRESS.labels(self.search_id).set(time.time())
        summary = {"iteration": iteration, "pareto": front, "hypervolume": hv}
        self.events(
            "iteration",
            {**summary, "evaluated": len(points), "cache_hits": cache_hits, "walltime_s": record.walltime_s},
        )
        return record
