"""Evaluation of a search's candidates through :class:`~facenas.search.evaluator.Evaluator` s.

Per candidate, objectives run in the config's order (cheap constraints first) and stop at a violated
constraint. The store is the cache: what any search measured under the same key is never evaluated
again. A result is queued for the store the moment it arrives and written by the search's
:class:`~facenas.search.writer.ResultWriter`, in order, while the candidate goes on (the searcher's store
waits out outages, and a worker keeps a finished job for the searcher to collect again, so a result is
never thrown away); :meth:`EvaluationCoordinator.flush` waits until everything queued is durable.
Failures are handled by :mod:`facenas.search.retry`, the one retry policy: an outage of a service waits
(``waiting for <service>`` in the search's status, events and metrics) for up to
``evaluation.outage_patience_s``; a lost worker or an error is retried elsewhere; an unstable figure
is measured again later; only the architecture's own faults fail a candidate, and that failure is a
store record (with its reason) the search resumes with.

The targets each objective is measured on are a store record too, fixed when the search first connects:
a resumed search whose replicas now measure another target stops with the reason instead of mixing.

While evaluations run, :meth:`EvaluationCoordinator.live` reports each one's progress (step/total, loss,
ETA, replica) for ``search watch``. A value taken from the store instead of measured is a cache hit: an
``evaluation_cached`` event, counted in :attr:`EvaluationCoordinator.cache_hits`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from facenas.domain import OBJECTIVES, EvalKey, Evaluation, Failure, budget_key
from facenas.errors import Cancelled, ConfigError, InvalidInput, Unavailable
from facenas.search import metrics, retry
from facenas.search.config import SearchConfig
from facenas.search.evaluator import (
    EvalProgress,
    EvalResult,
    EvalTask,
    EvaluationFailed,
    Evaluator,
    WorkerLost,
)
from facenas.search.history import SearchHistory
from facenas.search.outages import OutagePolicy, Outages
from facenas.search.recorder import EventLog
from facenas.search.writer import ResultWriter
from facenas.store.base import Store, StoreConflict

log = logging.getLogger(__name__)


class _GaveUpError(Exception):
    """The candidate fails for good on this objective (internal); ``kind`` names the cause."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


class EvaluationCoordinator:
    """Measures candidates of one search; results go to the store and the history."""

    def __init__(
        self,
        search_id: str,
        config: SearchConfig,
        store: Store,
        evaluators: Mapping[str, Evaluator],
        history: SearchHistory,
        events: EventLog,
        stop: threading.Event,
        outages: Outages | None = None,
    ) -> None:
        self.search_id = search_id
        self.config = config
        self.store = store
        self.evaluators = evaluators
        self.history = history
        self.events = events
        self.stop = stop
        self.outages = outages or Outages()
        self.patience = OutagePolicy(patience_s=config.outage_patience_s)
        self.targets: dict[str, str] = {}
        self._running: dict[EvalKey, EvalProgress] = {}
        self._lock = threading.Lock()
        self._cache_hits = 0
        self.writer = ResultWriter(search_id[:8])

    @property
    def cache_hits(self) -> int:
        """Evaluations this search took from the store instead of running them (over every run of it)."""
        with self._lock:
            return self._cache_hits

    def resume_cache_hits(self, count: int) -> None:
        """Start counting from the hits earlier runs of this search had."""
        with self._lock:
            self._cache_hits = count

    # --- set-up --------------------------------------------------------------------------------------

    def evaluator(self, objective: str) -> Evaluator:
        service = OBJECTIVES[objective].service
        found = self.evaluators.get(service)
        if found is None:
            raise InvalidInput(
                f"objective {objective!r} needs the {service} service, which this searcher lacks"
            )
        return found

    def used(self) -> list[Evaluator]:
        """The evaluators this search's objectives use (each once)."""
        services = dict.fromkeys(OBJECTIVES[o.name].service for o in self.config.objectives)
        return [self.evaluators[s] for s in services if s in self.evaluators]

    def connect(self) -> None:
        """Learn each objective's target from its replicas (they must agree) and record it; a search
        that recorded other targets before stops with the reason (results on two targets never mix)."""
        described = {o.name: self._describe(o.name) for o in self.config.objectives}
        try:
            stored = self.store.put_targets(self.search_id, described)
        except StoreConflict:
            before = self.store.get_targets(self.search_id)
            changed = [f"{o}: {before[o]!r} -> {t!r}" for o, t in described.items() if before.get(o) != t]
            raise ConfigError(
                [
                    "this search measured on other targets than its replicas measure now "
                    f"({'; '.join(changed)}); results on two targets must not mix: resume it with replicas "
                    "of its targets, or start a new search"
                ]
            ) from None
        self.targets = {o: stored[o] for o in described}
        self.events("targets", {"targets": self.targets})

    def _describe(self, objective: str) -> str:
        """The target key of ``objective``, waiting out an outage of its service."""
        evaluator = self.evaluator(objective)
        key: str = self._patiently(
            evaluator.service, lambda: evaluator.describe(objective, self.config.eval_space).key
        )
        return key

    def _patiently(self, service: str, call: Any) -> Any:
        """``call()``, waiting out an outage of ``service`` (Unavailable) for up to the patience."""
        since: float | None = None
        attempt = 0
        try:
            while True:
                try:
                    result = call()
                except Unavailable as err:
                    since = self._waiting(service, str(err), since)
                    if self.stop.wait(self.patience.backoff(attempt)):
                        raise Cancelled("search stopped") from None
                    attempt += 1
                    continue
                if since is not None:
                    self._waited(service, since, recovered=True)
                    since = None
                return result
        finally:
            if since is not None:
                self._waited(service, since, recovered=False)

    def _waiting(self, service: str, reason: str, since: float | None) -> float:
        """Note that ``service`` is out (the first time: outage, event); Unavailable past the patience."""
        now = time.monotonic()
        if since is None:
            self.outages.begin(service, reason)
            self.events("waiting", {"for": service, "reason": reason})
            return now
        if now - since > self.patience.patience_s:
            raise Unavailable(
                f"{service}: no replica reachable for {now - since:.0f} s "
                f"(evaluation.outage_patience_s {self.patience.patience_s:g}); last: {reason}"
            )
        return since

    def _waited(self, service: str, since: float, recovered: bool) -> None:
        self.outages.end(service, recovered)
        if recovered:
            self.events("waited", {"for": service, "seconds": round(time.monotonic() - since, 3)})

    def key(self, archid: str, objective: str) -> EvalKey:
        budget = budget_key(objective, self.config.budget, self.config.img_size)
        return EvalKey(archid, objective, budget, self.targets[objective], self.history.model_of[archid])

    def load_values(self) -> None:
        """Every stored value and failure of the history's candidates, then their constraints."""
        wanted = {
            self.key(a, o.name): (a, o.name) for a in self.history.archs for o in self.config.objectives
        }
        for key, evaluation in self.store.get_evaluations(list(wanted)).items():
            archid, objective = wanted[key]
            self.history.set_value(archid, objective, evaluation.value)
        for failure in self.store.list_failures(self.search_id):
            if failure.archid in self.history.archs:
                self.history.fail(failure.archid, f"{failure.objective}: {failure.reason}")
        for archid in list(self.history.archs):
            self.history.check_constraints(archid)
        # outcomes an earlier run settled but could not record (or a store from before schema 4)
        self.store.put_all_outcomes(self.search_id, self.history.outcomes())

    # --- evaluation ----------------------------------------------------------------------------------

    def evaluate_candidate(self, archid: str) -> None:
        """Objectives in order; stop at a violated constraint or a failure. How it settled is a store
        record (what the search's progress counts)."""
        self._measure_all(archid)
        outcome = self.history.outcomes([archid]).get(archid)
        if outcome is not None:
            self.writer.submit(lambda: self.store.put_outcomes(self.search_id, {archid: outcome}))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every result and outcome queued so far is in the store (False on ``timeout``);
        raises the error of a write that failed."""
        return self.writer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for up to ``timeout``), then stop the writer."""
        self.writer.close(timeout)

    def _measure_all(self, archid: str) -> None:
        self._prefetch(archid)
        for objective in self.config.objectives:
            if self.stop.is_set():
                raise Cancelled("search stopped")
            if objective.name not in self.history.measured(archid):
                try:
                    value = self.measure(archid, objective.name)
                except _GaveUpError as err:
                    failure = Failure(self.search_id, archid, objective.name, str(err), err.kind)
                    stored = self.store.put_failure(failure)
                    self.history.fail(archid, f"{objective.name}: {stored.reason}")
                    self.events(
                        "evaluation_failed",
                        {"archid": archid, "objective": objective.name, "error": str(err), "kind": err.kind},
                    )
                    return
                self.history.set_value(archid, objective.name, value)
            if self.history.check_constraints(archid):
                return

    def _prefetch(self, archid: str) -> None:
        """Whatever any search already measured for this candidate (the store is the cache)."""
        measured = self.history.measured(archid)
        missing = {self.key(archid, o.name): o.name for o in self.config.objectives if o.name not in measured}
        if not missing:
            return
        for key, evaluation in self.store.get_evaluations(list(missing)).items():
            self.history.set_value(archid, missing[key], evaluation.value)
            self._count(missing[key], "cached")
            with self._lock:
                self._cache_hits += 1
                hits = self._cache_hits
            self.events(
                "evaluation_cached",
                {
                    "archid": archid,
                    "objective": key.objective,
                    "value": evaluation.value,
                    "unit": evaluation.unit,
                    "worker": evaluation.worker,
                    "cache_hits": hits,
                },
            )

    def measure(self, archid: str, objective: str) -> float:
        """Run one evaluation to a stored value, acting on failures by :mod:`facenas.search.retry`;
        _GaveUpError when the candidate fails, Unavailable when the service stayed out too long."""
        key = self.key(archid, objective)
        arch = self.history.archs[archid]
        task = EvalTask(key, arch.compact_json(), self.config.eval_space, self.config.budget, self.search_id)
        evaluator = self.evaluator(objective)
        service = OBJECTIVES[objective].service
        avoid: set[str] = set()
        attempts = unstable = outage = 0
        out_since: float | None = None
        began = time.monotonic()
        try:
            while True:
                if self.stop.is_set():
                    raise Cancelled("search stopped")
                try:
                    result = evaluator.evaluate(
                        task, self._tracker(key), self.stop, frozenset(avoid), self.config.timeout_s
                    )
                except (WorkerLost, EvaluationFailed) as err:
                    rule = retry.classify(err)
                    replica = err.replica
                    if rule.action == retry.Action.WAIT:
                        out_since = self._waiting(service, str(err), out_since)
                        avoid.add(replica)
                        if self.stop.wait(self.patience.backoff(outage)):
                            raise Cancelled("search stopped") from None
                        outage += 1
                        continue
                    if out_since is not None:  # it reached a replica: the outage is over
                        self._waited(service, out_since, recovered=True)
                        out_since = None
                    if rule.action == retry.Action.FAIL:
                        self._count(objective, "failed")
                        raise _GaveUpError(str(err), rule.cause) from None
                    if rule.action == retry.Action.REMEASURE:
                        unstable += 1
                        self._wait_unstable(key, err, unstable)
                        continue
                    attempts += 1
                    limit = min(self.config.max_attempts, rule.attempts or self.config.max_attempts)
                    self._retry_or_fail(key, replica, f"{rule.cause}: {err}", attempts, limit, avoid)
                    continue
                finally:
                    with self._lock:
                        self._running.pop(key, None)
                if out_since is not None:
                    self._waited(service, out_since, recovered=True)
                    out_since = None
                return self._store(key, result, attempts + 1, time.monotonic() - began)
        finally:
            if out_since is not None:
                self._waited(service, out_since, recovered=False)

    def _retry_or_fail(
        self, key: EvalKey, replica: str, error: str, attempt: int, limit: int, avoid: set[str]
    ) -> None:
        if self.stop.is_set():
            raise Cancelled("search stopped")
        if attempt >= limit:
            self._count(key.objective, "failed")
            raise _GaveUpError(f"gave up after {attempt} attempt(s); last: {error}", "attempts")
        avoid.add(replica)
        metrics.RETRIES.labels(OBJECTIVES[key.objective].service).inc()
        log.warning(
            "evaluation retried", extra={"archid": key.archid, "objective": key.objective, "error": error}
        )
        where = {"archid": key.archid, "objective": key.objective, "replica": replica}
        self.events("evaluation_retry", {**where, "attempt": attempt, "error": error})

    def _wait_unstable(self, key: EvalKey, err: WorkerLost | EvaluationFailed, count: int) -> None:
        if count > self.config.max_unstable:
            self._count(key.objective, "failed")
            raise _GaveUpError(f"would not settle after {count} measurement(s): {err}", "unstable")
        delay = self.config.unstable_delay_s * 2 ** (count - 1)
        where = {"archid": key.archid, "objective": key.objective, "replica": err.replica}
        self.events("evaluation_unstable", {**where, "count": count, "error": str(err), "retry_in_s": delay})
        if self.stop.wait(delay):
            raise Cancelled("search stopped")

    def _tracker(self, key: EvalKey) -> Any:
        """The progress sink of one evaluation: the live table, and an event when it starts somewhere."""

        def on_progress(progress: EvalProgress) -> None:
            with self._lock:
                previous = self._running.get(key)
                self._running[key] = progress
            if previous is None or previous.replica != progress.replica:
                self.events(
                    "evaluation_started",
                    {
                        "archid": key.archid,
                        "objective": key.objective,
                        "replica": progress.replica,
                        "attached": progress.attached,
                    },
                )

        return on_progress

    def _store(self, key: EvalKey, result: EvalResult, attempts: int, seconds: float) -> float:
        """Queue the result for the store and return its value: the write runs in the writer's thread,
        and the ``evaluation`` event follows it (the result is durable when its event is logged)."""
        queued = time.perf_counter()
        evaluation = Evaluation(key, result.value, result.unit, result.details, result.worker, result.seconds)
        metrics.EVALUATION_SECONDS.labels(key.objective).observe(seconds)
        self._count(key.objective, "ok")
        metrics.LAST_PROGRESS.labels(self.search_id).set(time.time())
        on_path: Future[float] = Future()  # seconds this call took, known once the write is queued

        def write() -> None:
            began = time.perf_counter()
            stored = self.store.put_evaluation(evaluation)
            done = time.perf_counter()
            self.events(
                "evaluation",
                {
                    "archid": key.archid,
                    "objective": key.objective,
                    "value": stored.value,
                    "unit": stored.unit,
                    "worker": stored.worker,
                    "replica": result.replica,
                    "seconds": stored.seconds,
                    # orchestration overhead on the evaluation's path: submission to result minus the
                    # job's time on its worker, plus queueing the result for the store
                    "overhead_s": result.overhead_s + on_path.result(),
                    "store_s": done - began,  # the store write, off that path
                    "stored_after_s": done - queued,  # from the result to its durable record
                    "attempts": attempts,
                    "attached": result.attached,
                },
            )

        self.writer.submit(write)
        on_path.set_result(time.perf_counter() - queued)
        return result.value

    def _count(self, objective: str, outcome: str) -> None:
        metrics.EVALUATIONS.labels(self.search_id, objective, outcome).inc()

    # --- live state and cancellation -------------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        """Progress of every evaluation running now."""
        with self._lock:
            running = sorted(self._running.values(), key=lambda p: (p.key.archid, p.key.objective))
        return [p.to_dict() for p in running]

    def cancel_jobs(self) -> None:
        """Cancel this search's jobs on every replica (jobs other searches share keep running)."""
        for evaluator in self.used():
            evaluator.cancel(self.search_id)
