"""The searcher's core: runs several searches at once, each in its own thread, all state in the store."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from facenas import limits
from facenas.domain import (
    OBJECTIVES,
    Candidate,
    EvalKey,
    Event,
    IterationRecord,
    Outcome,
    SearchProgress,
    SearchRecord,
    SearchStatus,
    budget_key,
)
from facenas.errors import Cancelled, ConfigError, FacenasError, InvalidInput, NotFound
from facenas.limits import (
    MAX_ID_BYTES,
    MAX_NAME_BYTES,
    MAX_PAGE_SIZE,
    MAX_REQUEST_KEYS,
    Page,
    all_pages,
    check_text,
)
from facenas.search import metrics
from facenas.search.config import SearchConfig, parse_search_config
from facenas.search.engine import SearchRun
from facenas.search.evaluator import Evaluator
from facenas.search.history import violation
from facenas.search.outages import OutagePolicy, Outages
from facenas.search.patient_store import PatientStore
from facenas.search.recorder import EventLog, EventSignal, QueuedEventLog
from facenas.search.snapshot import (
    CandidateState,
    IterationState,
    ObjectiveInfo,
    SearchSnapshot,
    evaluated_in,
    latency_quality,
)
from facenas.search.strategies import STRATEGIES
from facenas.store.base import Store

log = logging.getLogger(__name__)

#: The progress of a search's running evaluations, one dict each (see EvalProgress.to_dict).
LiveProgress = list[dict[str, object]]

_END_EVENT = {
    SearchStatus.COMPLETED: "completed",
    SearchStatus.CANCELLED: "cancelled",
    SearchStatus.FAILED: "failed",
}

#: the kinds of a run's last event
_ENDS = frozenset({*_END_EVENT.values(), "interrupted"})

_SEARCH_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
#: the candidates an ambiguous archid prefix's error names
MAX_AMBIGUOUS_SHOWN = 10

#: events a watch reads from the store at once, and how often it looks for events logged elsewhere
WATCH_PAGE = 500
WATCH_POLL_S = 0.25
#: searches whose iteration records a searcher keeps (see SearchManager._records)
_RECORD_CACHE = 64
#: iteration-record state a resumed run reads from the store, and no read of this searcher needs
RESUME_ONLY = ("rng",)
#: parsed configs a searcher keeps (one per search it was asked about)
_CONFIG_CACHE = 1024

#: why a run stopped, as its ``cancelled`` / ``interrupted`` event says
USER_CANCEL = "cancelled by a user request"
SHUTDOWN = "searcher shutting down; the search's jobs keep running on the workers"


@dataclass(frozen=True)
class SearchSummaryData:
    record: SearchRecord
    iterations_done: int
    evaluations_done: int
    candidates: int
    hypervolume: float
    waiting: str = ""  # e.g. "waiting for latency_cpu (35 s: ...)" while an outage pauses the search
    cache_hits: int = 0  # evaluations taken from the store's cache instead of run (see cache_hits())


@dataclass(frozen=True)
class ParetoData:
    """The front of a search's last iteration record (``iteration`` -1 before the first)."""

    search_id: str
    objectives: tuple[ObjectiveInfo, ...]
    iteration: int
    hypervolume: float
    points: tuple[CandidateState, ...]


@dataclass(frozen=True)
class ExportPage:
    """A page of a search's export from candidate ``offset``; ``cap``: the last iteration it counts by."""

    snapshot: SearchSnapshot
    offset: int
    cap: int
    more: bool

    def token_after(self, taken: int) -> str:
        """The token of the page after the first ``taken`` candidates of this one ("" at the end)."""
        if taken >= len(self.snapshot.candidates) and not self.more:
            return ""
        return f"{self.offset + taken}-{self.cap}"


def _export_position(token: str) -> tuple[int, int | None]:
    """(candidate offset, last iteration counted) of an export page token; InvalidInput if foreign."""
    if not token:
        return 0, None
    offset, _, cap = token.partition("-")
    if not (offset.isdigit() and len(offset) < 18 and cap.lstrip("-").isdigit() and len(cap) < 12):
        raise InvalidInput(f"page_token: {limits.brief(token, 40)} is not a page token this service issued")
    return int(offset), int(cap)


class _Running:
    def __init__(self, thread: threading.Thread, stop: threading.Event) -> None:
        self.thread = thread
        self.stop = stop
        self.cancelled: dict[str, object] | None = None  # a user cancelled it: the event's payload
        self.run: SearchRun | None = None
        self.outcome: tuple[SearchStatus, str] | None = None  # reached; written to the store when settled
        self.settled = False  # the outcome landed (or there is none: a stopping searcher left it running)


def _for_reads(record: IterationRecord) -> IterationRecord:
    """``record`` as the reads use it: without the state that only resuming needs (:data:`RESUME_ONLY`)."""
    if not any(key in record.state for key in RESUME_ONLY):
        return record
    state = {k: v for k, v in record.state.items() if k not in RESUME_ONLY}
    return replace(record, state=state)


class SearchManager:
    """Starts, cancels, resumes and reports searches; the store is the source of truth.

    Runs write through a :class:`PatientStore`: an outage of the store pauses them (``waiting for
    store``) for up to ``patience.patience_s`` instead of failing them. A supervisor thread watches the
    runs: the final status of a run that could not write it (the store was out) is written when the store
    is back, and a run thread that died without one is failed with the reason -- a search never stays
    "running" without a live run. Queries (summary, snapshot, watch) read the store directly and fail
    fast while it is out.

    ``watch`` interleaves the stored events with unstored ``progress`` events (``seq`` 0): every
    ``progress_interval_s`` while an evaluation's progress changes, and at least every ``heartbeat_s``.
    """

    def __init__(
        self,
        store: Store,
        evaluators: Mapping[str, Evaluator],
        progress_interval_s: float = 1.0,
        heartbeat_s: float = 10.0,
        patience: OutagePolicy | None = None,
        supervise_s: float = 2.0,
    ) -> None:
        self.store = store
        self.evaluators = evaluators
        self.progress_interval_s = progress_interval_s
        self.heartbeat_s = heartbeat_s
        self.outages = Outages()
        self._closing = threading.Event()
        self.durable = PatientStore(store, patience, self.outages, self._closing)
        self.supervise_s = supervise_s
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._configs: dict[str, tuple[str, SearchConfig]] = {}  # search_id -> (config text, parsed)
        self._signal = EventSignal()  # wakes watchers when this searcher logs events
        self._records_known: dict[str, tuple[IterationRecord, ...]] = {}  # see _records

    # --- commands ----------------------------------------------------------------------------------

    def validate(self, config_text: str) -> SearchConfig:
        """Parse a config and check this searcher has a service for every objective."""
        config = parse_search_config(config_text)
        missing = sorted({OBJECTIVES[o.name].service for o in config.objectives} - set(self.evaluators))
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
        check_text(name, "name", MAX_NAME_BYTES)
        search_id = search_id or uuid.uuid4().hex[:16]
        if not (1 <= len(search_id) <= 64 and set(search_id) <= _SEARCH_ID_CHARS):
            raise InvalidInput(f"search_id: {search_id!r} must be 1-64 characters of a-z, 0-9, '-' and '_'")
        record = self.store.create_search(search_id, name or search_id, config_text)
        if not record.status.finished and not self._is_running(search_id):
            # new, or a repeated start whose first try was cut off after the search began
            self._launch(search_id, config, resumed=record.status == SearchStatus.RUNNING)
        return self.store.get_search(search_id)

    def cancel(self, search_id: str, requested_by: str = "") -> SearchRecord:
        """Stop the search and cancel its jobs on every worker -- also jobs a crashed searcher left.

        Its ``cancelled`` event says it was a user's request, and whose (``requested_by``: the caller's
        address, when the API knows it)."""
        record = self.store.get_search(search_id)
        payload: dict[str, object] = {"reason": USER_CANCEL}
        if requested_by:
            payload["requested_by"] = requested_by
        with self._lock:
            running = self._running.get(search_id)
        alive = running is not None and running.thread.is_alive()
        if running is not None and alive:
            running.cancelled = payload
            running.stop.set()
        if not record.status.finished:
            for evaluator in self.evaluators.values():
                evaluator.cancel(search_id)
        if running is not None and alive:
            running.thread.join(timeout=30)
        record = self.store.get_search(search_id)
        if not record.status.finished:
            record = self.store.set_search_status(search_id, SearchStatus.CANCELLED)
            self._event(search_id, "cancelled", payload)
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
        """Resume every search the store says is running (used at start-up with --auto-resume); waits out
        a store outage like a run does."""
        resumed = []
        for record in self.durable.list_searches():
            if record.status in (SearchStatus.RUNNING, SearchStatus.PENDING):
                try:
                    self.resume(record.search_id)
                except InvalidInput as err:  # e.g. a config stored before a limit it now breaks
                    log.warning(
                        "search not resumed", extra={"search_id": record.search_id, "error": str(err)}
                    )
                    self.store.set_search_status(
                        record.search_id, SearchStatus.FAILED, f"cannot resume: {err}"
                    )
                    continue
                resumed.append(record.search_id)
        return resumed

    def resume_interrupted_in_background(self) -> threading.Thread:
        """:meth:`resume_interrupted` without holding up the server's start (the store may be out)."""

        def resume() -> None:
            try:
                found = self.resume_interrupted()
                log.info("searches resumed", extra={"searches": found})
            except Cancelled:
                return
            except FacenasError as err:
                log.error("auto-resume failed", extra={"error": str(err)})

        thread = threading.Thread(target=resume, name="auto-resume", daemon=True)
        thread.start()
        return thread

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every run; they stay RUNNING in the store so that ``resume`` picks them up, and their
        jobs keep running on the workers so that the resumed runs join them."""
        self._closing.set()
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
        self.store.set_search_status(search_id, SearchStatus.RUNNING)  # raises: nothing was started
        with self._lock:
            self._running[search_id] = running
            thread.start()
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="search-supervisor", daemon=True
                )
                self._supervisor.start()

    def _run(self, search_id: str, config: SearchConfig, stop: threading.Event, resumed: bool) -> None:
        with self._lock:
            running = self._running[search_id]
        try:
            running.outcome = self._execute(search_id, config, stop, resumed, running)
        except BaseException as err:
            log.exception("search run died", extra={"search_id": search_id})
            running.outcome = (SearchStatus.FAILED, f"the search's run died: {type(err).__name__}: {err}")
        self._settle(search_id, running)

    def _execute(
        self, search_id: str, config: SearchConfig, stop: threading.Event, resumed: bool, running: _Running
    ) -> tuple[SearchStatus, str] | None:
        """Run the search; the status it ended in (None: interrupted, it stays running to be resumed)."""
        events = QueuedEventLog(self.durable, search_id, self._signal)
        metrics.LAST_PROGRESS.labels(search_id).set(time.time())
        metrics.RUNNING.inc()
        try:
            events("resumed" if resumed else "started", {"algorithm": config.algorithm})
            run = SearchRun(
                search_id, config, self.durable, self.evaluators, stop, self.outages, events, self._recorded
            )
            running.run = run
            run.run()
        except Cancelled as err:
            if running.cancelled is not None:
                return SearchStatus.CANCELLED, ""
            if self._closing.is_set():
                return None
            # neither a user nor the shutdown stopped it (a dependency cancelled a call): no run is left
            log.warning("search stopped unasked", extra={"search_id": search_id, "error": str(err)})
            return SearchStatus.FAILED, f"the search's run was stopped unasked: {err}"
        except FacenasError as err:
            log.warning("search failed", extra={"search_id": search_id, "error": str(err)})
            return SearchStatus.FAILED, str(err)
        except Exception as err:
            log.exception("search crashed", extra={"search_id": search_id})
            return SearchStatus.FAILED, f"{type(err).__name__}: {err}"
        finally:
            running.run = None  # its history (every candidate) is the store's now, not this searcher's
            events.close()  # the run's events land before its end status
            metrics.RUNNING.dec()
            with contextlib.suppress(KeyError):
                metrics.LAST_PROGRESS.remove(search_id)
        return SearchStatus.COMPLETED, ""

    def _settle(self, search_id: str, running: _Running) -> None:
        """Write the run's outcome (waiting out a store outage); the supervisor retries what did not land."""
        outcome = running.outcome
        if outcome is None:
            self._event(search_id, "interrupted", {"reason": SHUTDOWN})
            running.settled = True
            return
        status, error = outcome
        try:
            self.durable.set_search_status(search_id, status, error)
        except FacenasError as err:  # Cancelled (shutting down) or the store stayed out: retried later
            log.warning("search status not written yet", extra={"search_id": search_id, "error": str(err)})
            return
        payload: dict[str, object] = {"error": error} if error else {}
        if status == SearchStatus.CANCELLED:
            payload.update(running.cancelled or {})
        with contextlib.suppress(Cancelled):  # the searcher is stopping: the status has landed
            EventLog(self.durable, search_id, self._signal)(_END_EVENT[status], payload)
        running.settled = True

    def _supervise(self) -> None:
        """Every ``supervise_s``: settle runs whose thread ended without writing their outcome."""
        while not self._closing.wait(self.supervise_s):
            with self._lock:
                ended = [
                    (sid, r) for sid, r in self._running.items() if not r.settled and not r.thread.is_alive()
                ]
            for search_id, running in ended:
                if running.outcome is None and not running.stop.is_set():
                    running.outcome = (
                        SearchStatus.FAILED,
                        "the search's run thread ended without an outcome",
                    )
                try:
                    self.store.get_search(search_id)  # cheap probe: settle only once the store answers
                except FacenasError:
                    continue
                self._settle(search_id, running)

    def _event(self, search_id: str, kind: str, payload: dict[str, object]) -> None:
        """Log an event now, through the plain store (the searcher's commands do not wait out outages)."""
        EventLog(self.store, search_id, self._signal)(kind, payload)

    # --- queries -----------------------------------------------------------------------------------
    # Each is a few indexed store queries whatever the search's size: counts come from the store's
    # outcome rows (see Store.search_progress), fronts from the last iteration record and its members.

    def summary(self, search_id: str) -> SearchSummaryData:
        record = self.store.get_search(search_id)
        progress = self.store.search_progress([search_id]).get(search_id) or SearchProgress(search_id)
        return self._summary(record, self._backfilled(record, progress))

    def _summary(self, record: SearchRecord, progress: SearchProgress) -> SearchSummaryData:
        last = progress.last_iteration
        running = self._is_running(record.search_id)
        return SearchSummaryData(
            record,
            last.iteration + 1 if last is not None else 0,
            progress.complete,
            progress.candidates,
            last.hypervolume if last is not None else 0.0,
            self.waiting(record.search_id) if running else "",
            self.cache_hits(record.search_id, last),
        )

    def _backfilled(self, record: SearchRecord, progress: SearchProgress) -> SearchProgress:
        """``progress``, after recording the outcomes of a search no run of this version has settled (one
        stored before schema 4 and not resumed since): read whole once, then counted like any other."""
        if progress.settled or not progress.candidates or self._is_running(record.search_id):
            return progress
        try:
            config = self._config(record)
        except InvalidInput:
            return progress
        states = self._states(record.search_id, config, self.store.list_candidates(record.search_id), ())
        found: dict[str, Outcome] = {}
        for state in states:
            if state.failed:
                found[state.archid] = Outcome.FAILED
            elif all(o.name in state.values for o in config.objectives) or not state.feasible:
                found[state.archid] = Outcome.COMPLETE if state.feasible else Outcome.INFEASIBLE
        if not found:
            return progress
        self.store.put_all_outcomes(record.search_id, found)
        log.info("search outcomes recorded", extra={"search_id": record.search_id, "settled": len(found)})
        return self.store.search_progress([record.search_id]).get(record.search_id, progress)

    def _config(self, record: SearchRecord) -> SearchConfig:
        """The record's parsed config (parsed once per searcher: configs are immutable)."""
        with self._lock:
            cached = self._configs.get(record.search_id)
        if cached is not None and cached[0] == record.config:
            return cached[1]
        config = parse_search_config(record.config)
        with self._lock:
            if len(self._configs) >= _CONFIG_CACHE:
                self._configs.pop(next(iter(self._configs)))
            self._configs[record.search_id] = (record.config, config)
        return config

    def cache_hits(self, search_id: str, last: IterationRecord | None) -> int:
        """Evaluations the search took from the store's cache: its run's count while it runs here, else
        the count in its last iteration record (``last``; hits after it are not counted until a resumed
        run counts them again from the event log)."""
        recorded = int(last.state.get("cache_hits") or 0) if last is not None else 0
        with self._lock:
            running = self._running.get(search_id)
        run = running.run if running is not None and running.thread.is_alive() else None
        return max(recorded, run.cache_hits if run is not None else 0)

    def waiting(self, search_id: str) -> str:
        """What a running search waits for now (``""`` when nothing): the store, or one of its services."""
        with self._lock:
            running = self._running.get(search_id)
        run = running.run if running is not None else None
        used = {"store"} | ({OBJECTIVES[o.name].service for o in run.config.objectives} if run else set())
        return "; ".join(o.describe() for o in self.outages.current() if o.dependency in used)

    def list(self) -> list[SearchSummaryData]:
        return all_pages(lambda token: self.list_page(0, token))

    def list_page(self, page_size: int = 0, page_token: str = "") -> Page[SearchSummaryData]:
        """A page of searches, oldest first (pages as the store's), with one progress query per hundred."""
        page = self.store.list_searches_page(page_size, page_token)
        progress: dict[str, SearchProgress] = {}
        ids = [r.search_id for r in page.items]
        for start in range(0, len(ids), MAX_REQUEST_KEYS):
            progress.update(self.store.search_progress(ids[start : start + MAX_REQUEST_KEYS]))
        summaries = [
            self._listed(r, progress.get(r.search_id) or SearchProgress(r.search_id)) for r in page.items
        ]
        return Page(summaries, page.next_page_token)

    def _listed(self, record: SearchRecord, progress: SearchProgress) -> SearchSummaryData:
        return self._summary(record, self._backfilled(record, progress))

    def pareto(self, search_id: str) -> ParetoData:
        """The front of the search's last iteration record with its members' values."""
        record = self.store.get_search(search_id)
        config = self._config(record)
        progress = self.store.search_progress([search_id]).get(search_id) or SearchProgress(search_id)
        last = progress.last_iteration
        if last is None:
            return ParetoData(search_id, config.objectives, -1, 0.0, ())
        members = list(self.store.get_all_candidates(search_id, last.pareto).values())
        records = self._records(search_id, None) if self._asynchronous(config) else ()
        states = self._states(search_id, config, members, records)
        return ParetoData(search_id, config.objectives, last.iteration, last.hypervolume, states)

    @staticmethod
    def _asynchronous(config: SearchConfig) -> bool:
        """Whether a candidate may count in a later iteration than the one that proposed it."""
        return STRATEGIES[config.algorithm].asynchronous

    def export_page(
        self, search_id: str, page_size: int = 0, page_token: str = "", all_documents: bool = False
    ) -> ExportPage:
        """A page of the search's export: the first page also holds its objectives and iterations, and
        fixes the iteration records every later page counts candidates by (its token carries the last
        one's number). Documents come with the candidates on some iteration's front (what outputs
        write), or with every candidate when ``all_documents``."""
        offset, cap = _export_position(page_token)
        record = self.store.get_search(search_id)
        config = self._config(record)
        records = self._records(search_id, cap)
        cap = records[-1].iteration if records else -1
        page = self.store.list_candidates_page(
            search_id, page_size, limits.page_token(offset), documents=all_documents
        )
        members = page.items
        if not all_documents:  # the documents of the candidates on some front only
            fronts = {a for r in records for a in r.pareto}
            wanted = [c.archid for c in members if c.archid in fronts]
            found = self.store.get_all_candidates(search_id, wanted)
            members = [found.get(c.archid, c) for c in members]
        states = self._states(search_id, config, members, records)
        iterations = tuple(
            IterationState(i.iteration, i.pareto, i.hypervolume, i.walltime_s) for i in records
        )
        snapshot = SearchSnapshot(
            search_id, record.name, config.objectives, states, iterations if offset == 0 else ()
        )
        return ExportPage(snapshot, offset, cap, bool(page.next_page_token))

    def _records(self, search_id: str, cap: int | None) -> tuple[IterationRecord, ...]:
        """The search's iteration records up to ``cap`` (all when None). Records are immutable and
        numbered from 0: this searcher keeps those it has read or its runs wrote, and reads only the
        newer ones from the store."""
        with self._lock:
            known = self._records_known.get(search_id, ())
        if cap is None or not known or known[-1].iteration < cap:
            token = limits.page_token(len(known))
            newer: list[IterationRecord] = []
            while True:
                page = self.store.list_iterations_page(search_id, MAX_PAGE_SIZE, token)
                newer.extend(page.items)
                if not page.next_page_token:
                    break
                token = page.next_page_token
            known = self._remember_records(search_id, known, newer)
        return tuple(r for r in known if cap is None or r.iteration <= cap)

    def _remember_records(
        self, search_id: str, known: tuple[IterationRecord, ...], newer: Sequence[IterationRecord]
    ) -> tuple[IterationRecord, ...]:
        """``known`` + ``newer`` when they are the records 0, 1, 2... in order (kept for next time, without
        the algorithm state only a resumed run reads, from the store: an RNG state is about 25 KB)."""
        merged = (*known, *(_for_reads(r) for r in newer))
        if [r.iteration for r in merged] != list(range(len(merged))):  # not numbered from 0: not kept
            return merged
        with self._lock:
            if len(self._records_known.get(search_id, ())) <= len(merged):
                self._records_known.pop(search_id, None)
                while len(self._records_known) >= _RECORD_CACHE:
                    self._records_known.pop(next(iter(self._records_known)))
                self._records_known[search_id] = merged
        return merged

    def _recorded(self, record: IterationRecord) -> None:
        """A run of this searcher wrote ``record``: kept when it follows the records known."""
        with self._lock:
            known = self._records_known.get(record.search_id, ())
        if len(known) == record.iteration:
            self._remember_records(record.search_id, known, [record])

    def snapshot(self, search_id: str) -> SearchSnapshot:
        """The whole search as the store holds it (every page of :meth:`export_page`, all documents)."""
        first = self.export_page(search_id, MAX_PAGE_SIZE, "", all_documents=True)
        candidates = list(first.snapshot.candidates)
        page = first
        while page.more:
            page = self.export_page(
                search_id, MAX_PAGE_SIZE, page.token_after(len(page.snapshot.candidates)), True
            )
            candidates.extend(page.snapshot.candidates)
        return replace(first.snapshot, candidates=tuple(candidates))

    def watch(self, search_id: str, after_seq: int, alive: threading.Event | None = None) -> Iterator[Event]:
        """Events after ``after_seq`` until the search has finished and its log is drained, with the
        unstored ``progress`` events of its running evaluations."""
        self.store.get_search(search_id)
        seq = after_seq
        last_live: LiveProgress | None = None
        last_sent = 0.0
        while alive is None or not alive.is_set():
            version = self._signal.version(search_id)
            events = self.store.list_events(search_id, seq, WATCH_PAGE)
            yield from events
            if events:
                seq = events[-1].seq
            if len(events) == WATCH_PAGE:  # a backlog (a replay): the next page at once
                continue
            if not events:
                finished = self.store.get_search(search_id).status.finished and not self._is_running(
                    search_id
                )
                if finished and not self.store.list_events(search_id, seq, 1):
                    return
            if events and events[-1].kind in _ENDS:  # the run's last event: no progress after it
                continue
            live = self.live(search_id)
            wait = self.progress_interval_s if live != last_live else self.heartbeat_s
            if time.monotonic() - last_sent >= wait:
                yield Event(search_id, 0, "progress", {"running": live})
                last_live, last_sent = live, time.monotonic()
            self._signal.wait(search_id, version, WATCH_POLL_S)  # new events of this searcher wake it

    def live(self, search_id: str) -> LiveProgress:
        """Progress of the search's evaluations in flight in this searcher (empty when none)."""
        with self._lock:
            running = self._running.get(search_id)
        if running is None or running.run is None or not running.thread.is_alive():
            return []
        return list(running.run.live())

    def _is_running(self, search_id: str) -> bool:
        with self._lock:
            running = self._running.get(search_id)
        return running is not None and running.thread.is_alive()

    def _states(
        self,
        search_id: str,
        config: SearchConfig,
        candidates: Sequence[Candidate],
        records: Sequence[IterationRecord],
    ) -> tuple[CandidateState, ...]:
        """``candidates`` of the search with their stored values, feasibility and failures, each in the
        first iteration whose front counted it (``records``)."""
        targets = self.store.get_targets(search_id)
        archids = [c.archid for c in candidates]
        failed: dict[str, str] = {}
        for start in range(0, len(archids), MAX_REQUEST_KEYS):
            chunk = archids[start : start + MAX_REQUEST_KEYS]
            failed.update((f.archid, f.reason) for f in self.store.list_failures(search_id, chunk))
        keys: dict[EvalKey, tuple[str, str]] = {}
        for c in candidates:
            for o in config.objectives:
                if o.name in targets:
                    budget = budget_key(o.name, config.budget, config.img_size)
                    keys[EvalKey(c.archid, o.name, budget, targets[o.name], c.model)] = (c.archid, o.name)
        values: dict[str, dict[str, float]] = {c.archid: {} for c in candidates}
        cvs: dict[str, dict[str, float]] = {c.archid: {} for c in candidates}
        stables: dict[str, dict[str, bool]] = {c.archid: {} for c in candidates}
        for key, evaluation in self.store.get_evaluations(list(keys)).items():
            archid, objective = keys[key]
            values[archid][objective] = evaluation.value
            cv, stable = latency_quality(evaluation.details)
            if cv is not None:
                cvs[archid][objective] = cv
            if stable is not None:
                stables[archid][objective] = stable
        iteration = evaluated_in({c.archid: c.iteration for c in candidates}, records)
        return tuple(
            CandidateState(
                c.archid,
                iteration[c.archid],
                c.parents,
                c.params,
                c.document,
                values[c.archid],
                not violation(values[c.archid], config.objectives),
                failed.get(c.archid, ""),
                cvs[c.archid],
                stables[c.archid],
            )
            for c in candidates
        )

    def get_candidate(self, search_id: str, archid: str) -> CandidateState:
        """One candidate of a search by its archid or a unique prefix of it (as git takes a short hash):
        NotFound when no candidate's archid starts with it, InvalidInput naming the candidates when
        several do. The store looks the prefix up; the search is not loaded whole."""
        check_text(archid, "archid", MAX_ID_BYTES)
        if not archid:
            raise InvalidInput("archid: give an architecture id, or the first characters of one")
        record = self.store.get_search(search_id)
        found = self.store.list_candidates_page(search_id, MAX_AMBIGUOUS_SHOWN + 1, "", archid).items
        exact = [c for c in found if c.archid == archid]
        if not found:
            raise NotFound(f"no architecture of search {search_id} has an archid starting with {archid!r}")
        if len(found) > 1 and not exact:
            shown = ", ".join(c.archid for c in found[:MAX_AMBIGUOUS_SHOWN])
            more = " and more" if len(found) > MAX_AMBIGUOUS_SHOWN else ""
            raise InvalidInput(
                f"archid prefix {archid!r} is ambiguous in search {search_id}: it starts {shown}{more}; "
                "give more characters"
            )
        config = self._config(record)
        records = self._records(search_id, None) if self._asynchronous(config) else ()
        (state,) = self._states(search_id, config, (exact or found)[:1], records)
        return state
