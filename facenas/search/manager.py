"""The searcher's core: runs several searches at once, each in its own thread, all state in the store."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from facenas.domain import OBJECTIVES, EvalKey, Event, SearchRecord, SearchStatus
from facenas.errors import Cancelled, ConfigError, FacenasError, InvalidInput, NotFound
from facenas.search import metrics
from facenas.search.config import SearchConfig, parse_search_config
from facenas.search.dispatch import ReplicaPool
from facenas.search.engine import SearchRun, Services, SingleFlight
from facenas.search.snapshot import CandidateState, IterationState, SearchSnapshot
from facenas.store.base import Store

log = logging.getLogger(__name__)

_SEARCH_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class SearchSummaryData:
    record: SearchRecord
    iterations_done: int
    evaluations_done: int
    candidates: int
    hypervolume: float


class _Running:
    def __init__(self, thread: threading.Thread, stop: threading.Event) -> None:
        self.thread = thread
        self.stop = stop
        self.user_cancelled = False


class SearchManager:
    """Starts, cancels, resumes and reports searches; the store is the source of truth."""

    def __init__(self, store: Store, pools: Mapping[str, ReplicaPool]) -> None:
        self.store = store
        self.services = Services(store, pools, SingleFlight())
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # --- commands ----------------------------------------------------------------------------------

    def validate(self, config_text: str) -> SearchConfig:
        """Parse a config and check this searcher has a service for every objective."""
        config = parse_search_config(config_text)
        missing = sorted({OBJECTIVES[o.name].service for o in config.objectives} - set(self.services.pools))
        if missing:
            raise ConfigError(
                [
                    f"search.target.name: {config.target!r} needs the {', '.join(missing)} service(s), "
                    "which this searcher is not configured with"
                ]
            )
        return config

    def start(self, config_text: str, name: str = "", search_id: str = "") -> SearchRecord:
        config = self.validate(config_text)
        search_id = search_id or uuid.uuid4().hex[:16]
        if not (1 <= len(search_id) <= 64 and set(search_id) <= _SEARCH_ID_CHARS):
            raise InvalidInput(f"search_id: {search_id!r} must be 1-64 characters of a-z, 0-9, '-' and '_'")
        record = self.store.create_search(search_id, name or search_id, config_text)
        if record.status == SearchStatus.PENDING:
            self._launch(search_id, config)
        return self.store.get_search(search_id)

    def cancel(self, search_id: str) -> SearchRecord:
        record = self.store.get_search(search_id)
        with self._lock:
            running = self._running.get(search_id)
        if running is not None and running.thread.is_alive():
            running.user_cancelled = True
            running.stop.set()
            running.thread.join(timeout=30)
        record = self.store.get_search(search_id)
        if not record.status.finished:
            record = self.store.set_search_status(search_id, SearchStatus.CANCELLED)
            self._event(search_id, "cancelled", {})
        return record

    def resume(self, search_id: str) -> SearchRecord:
        """Continue a search from the store (after a crash, a restart or a cancel)."""
        record = self.store.get_search(search_id)
        with self._lock:
            running = self._running.get(search_id)
            if running is not None and running.thread.is_alive():
                return record
        if record.status == SearchStatus.COMPLETED:
            return record
        self._launch(search_id, self.validate(record.config), resumed=True)
        return self.store.get_search(search_id)

    def resume_interrupted(self) -> list[str]:
        """Resume every search the store says is running (used at start-up with --auto-resume)."""
        resumed = []
        for record in self.store.list_searches():
            if record.status in (SearchStatus.RUNNING, SearchStatus.PENDING):
                self.resume(record.search_id)
                resumed.append(record.search_id)
        return resumed

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every run; they stay RUNNING in the store so that ``resume`` picks them up."""
        with self._lock:
            runs = list(self._running.values())
        for running in runs:
            running.stop.set()
        for running in runs:
            running.thread.join(timeout=timeout)

    def _launch(self, search_id: str, config: SearchConfig, resumed: bool = False) -> None:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(search_id, config, stop, resumed), name=f"search-{search_id}", daemon=True
        )
        running = _Running(thread, stop)
        with self._lock:
            self._running[search_id] = running
        self.store.set_search_status(search_id, SearchStatus.RUNNING)
        thread.start()

    def _run(self, search_id: str, config: SearchConfig, stop: threading.Event, resumed: bool) -> None:
        self._event(search_id, "resumed" if resumed else "started", {"algorithm": config.algorithm})
        metrics.LAST_PROGRESS.labels(search_id).set(time.time())
        metrics.RUNNING.inc()
        try:
            SearchRun(search_id, config, self.services, stop).run()
        except Cancelled:
            with self._lock:
                user = self._running[search_id].user_cancelled
            if user:
                self.store.set_search_status(search_id, SearchStatus.CANCELLED)
                self._event(search_id, "cancelled", {})
            else:
                self._event(search_id, "interrupted", {"reason": "searcher shutting down"})
            return
        except FacenasError as err:
            log.warning("search failed", extra={"search_id": search_id, "error": str(err)})
            self.store.set_search_status(search_id, SearchStatus.FAILED, str(err))
            self._event(search_id, "failed", {"error": str(err)})
            return
        except Exception as err:
            log.exception("search crashed", extra={"search_id": search_id})
            self.store.set_search_status(search_id, SearchStatus.FAILED, f"{type(err).__name__}: {err}")
            self._event(search_id, "failed", {"error": f"{type(err).__name__}: {err}"})
            return
        finally:
            metrics.RUNNING.dec()
            with contextlib.suppress(KeyError):
                metrics.LAST_PROGRESS.remove(search_id)
        self.store.set_search_status(search_id, SearchStatus.COMPLETED)
        self._event(search_id, "completed", {})

    def _event(self, search_id: str, kind: str, payload: dict[str, object]) -> None:
        try:
            self.store.append_event(search_id, kind, payload)
        except FacenasError as err:
            log.warning("event not recorded", extra={"kind": kind, "error": str(err)})

    # --- queries -----------------------------------------------------------------------------------

    def summary(self, search_id: str) -> SearchSummaryData:
        record = self.store.get_search(search_id)
        iterations = self.store.list_iterations(search_id)
        snapshot = self.snapshot(search_id)
        evaluated = sum(1 for c in snapshot.candidates if c.complete(snapshot.objectives))
        hv = iterations[-1].hypervolume if iterations else 0.0
        return SearchSummaryData(record, len(iterations), evaluated, len(snapshot.candidates), hv)

    def list(self) -> list[SearchSummaryData]:
        return [self.summary(r.search_id) for r in self.store.list_searches()]

    def watch(self, search_id: str, after_seq: int, alive: threading.Event | None = None) -> Iterator[Event]:
        """Events after ``after_seq`` until the search has finished and its log is drained."""
        self.store.get_search(search_id)
        seq = after_seq
        while alive is None or not alive.is_set():
            events = self.store.list_events(search_id, seq, 500)
            yield from events
            if events:
                seq = events[-1].seq
                continue
            finished = self.store.get_search(search_id).status.finished and not self._is_running(search_id)
            if finished and not self.store.list_events(search_id, seq, 1):
                return
            threading.Event().wait(0.25)

    def _is_running(self, search_id: str) -> bool:
        with self._lock:
            running = self._running.get(search_id)
        return running is not None and running.thread.is_alive()

    def snapshot(self, search_id: str) -> SearchSnapshot:
        """The search as the store holds it: candidates with their values, iterations."""
        record = self.store.get_search(search_id)
        config = parse_search_config(record.config)
        events = self.store.list_events(search_id, 0, 100_000)
        targets: dict[str, str] = {}
        failed: dict[str, str] = {}
        for event in events:
            if event.kind == "targets":
                targets = dict(event.payload.get("targets", {}))
            elif event.kind == "evaluation_failed":
                failed[str(event.payload.get("archid"))] = str(event.payload.get("error"))
        candidates = self.store.list_candidates(search_id)
        run = SearchRun(search_id, config, self.services, threading.Event())
        run.targets = targets
        keys: dict[EvalKey, tuple[str, str]] = {}
        if targets:
            for c in candidates:
                for o in config.objectives:
                    if o.name in targets:
                        keys[run.key(c.archid, o.name)] = (c.archid, o.name)
        values: dict[str, dict[str, float]] = {c.archid: {} for c in candidates}
        for key, evaluation in self.store.get_evaluations(list(keys)).items():
            archid, objective = keys[key]
            values[archid][objective] = evaluation.value
        states = []
        for c in candidates:
            arch = self.store.get_arch(c.archid)
            run.values[c.archid] = values[c.archid]
            feasible = not run.check_constraints(c.archid)
            states.append(
                CandidateState(
                    c.archid,
                    c.iteration,
                    c.parents,
                    arch.params,
                    arch.document,
                    values[c.archid],
                    feasible,
                    failed.get(c.archid, ""),
                )
            )
        iterations = tuple(
            IterationState(i.iteration, i.pareto, i.hypervolume, i.walltime_s)
            for i in self.store.list_iterations(search_id)
        )
        return SearchSnapshot(search_id, record.name, config.objectives, tuple(states), iterations)

    def get_candidate(self, search_id: str, archid: str) -> CandidateState:
        for candidate in self.snapshot(search_id).candidates:
            if candidate.archid == archid:
                return candidate
        raise NotFound(f"architecture {archid} is not part of search {search_id}")
