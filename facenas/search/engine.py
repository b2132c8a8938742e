"""One search run: a proposal strategy, an evaluation coordinator and an iteration recorder on a loop.

Everything durable goes through the store as it happens -- candidates before they are evaluated,
evaluations as they finish (written in order by the coordinator's writer, off the evaluations' path,
and all before the iteration record that covers them), an iteration record (Pareto front, hypervolume,
RNG state) at the end of each iteration -- so a run stopped at any point resumes from the store without
redoing finished work (a result not yet written is collected again from its worker).
Evaluations in flight are jobs on the workers: a resumed run submits the same keys again and joins the
jobs still running there instead of starting them over. Two loops:

* barrier (Archai's ``evolution_pareto`` and the other barrier strategies): an iteration waits for its
  whole population before the next is proposed;
* asynchronous (``async_evolution_pareto``): a new candidate the moment an evaluation slot frees.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

from facenas.domain import OBJECTIVES, Candidate, IterationRecord
from facenas.errors import Cancelled
from facenas.search import metrics
from facenas.search.config import SearchConfig
from facenas.search.coordinator import EvaluationCoordinator
from facenas.search.evaluator import Evaluator
from facenas.search.history import SearchHistory
from facenas.search.outages import Outages
from facenas.search.recorder import EventLog, IterationRecorder
from facenas.search.strategies import STRATEGIES, ProposalStrategy
from facenas.space.hgnet import Arch, HgnetSearchSpace, ParamRange
from facenas.store.base import Store


class SearchRun:
    """Runs (or resumes) one search until it completes, fails or ``stop`` is set."""

    def __init__(
        self,
        search_id: str,
        config: SearchConfig,
        store: Store,
        evaluators: Mapping[str, Evaluator],
        stop: threading.Event,
        outages: Outages | None = None,
        events: EventLog | None = None,
        on_record: Callable[[IterationRecord], None] | None = None,
    ) -> None:
        self.search_id = search_id
        self.config = config
        self.store = store
        self.stop = stop
        self.space = HgnetSearchSpace(config.space, seed=config.params.seed)
        self.history = SearchHistory(config.objectives)
        self.events = events or EventLog(store, search_id)
        self.coordinator = EvaluationCoordinator(
            search_id, config, store, evaluators, self.history, self.events, stop, outages
        )
        self.recorder = IterationRecorder(
            search_id, store, self.history, config.objectives, self.events, on_record
        )
        size_range = ParamRange(config.min_parameters, config.max_parameters)
        directions = [o.direction for o in config.objectives]
        self.strategy: ProposalStrategy = STRATEGIES[config.algorithm](
            self.space, config.params, size_range, self.history, directions
        )
        self._exhaustion_reported = False

    def run(self) -> None:
        """Returns once every result is in the store; whatever way it ends, results already in hand are
        written (for up to 30 s; the rest stay with their workers for a resumed run to collect)."""
        try:
            self.coordinator.connect()
            iterations = self.load()
            if self.strategy.asynchronous:
                self._run_async(iterations)
            else:
                self._run_barrier(iterations)
            self.coordinator.flush()
        finally:
            self.coordinator.close()

    def live(self) -> list[dict[str, Any]]:
        """Progress of this run's evaluations in flight."""
        return self.coordinator.live()

    @property
    def cache_hits(self) -> int:
        """Evaluations the search took from the store's cache (every run of it so far)."""
        return self.coordinator.cache_hits

    # --- history -------------------------------------------------------------------------------------

    def load(self) -> list[IterationRecord]:
        """Candidates, their stored values and failures, and the iteration records.

        A barrier strategy proposes iteration k + 1 before it records iteration k, and the record keeps
        the RNG state after that proposal: candidates of an iteration whose predecessor's record never
        landed are left out here, and proposed again -- identically, from the restored RNG. The
        asynchronous strategy draws each candidate from its own RNG (see :meth:`_propose_one`)."""
        iterations = self.store.list_iterations(self.search_id)
        last = iterations[-1].iteration if iterations else -1
        for candidate in self.store.list_candidates(self.search_id):
            if not self.strategy.asynchronous and candidate.iteration > last + 1:
                continue
            arch = self.space.from_json(candidate.document)
            # a candidate stored before evaluation keys named the model keeps its keys ("")
            self.history.add(arch, candidate.iteration, candidate.model)
        self.coordinator.load_values()
        self.coordinator.resume_cache_hits(self.events.count("evaluation_cached"))
        if iterations:
            self.recorder.resume_from(iterations)
            version, internal, gauss = iterations[-1].state["rng"]
            self.space.rng.setstate((version, tuple(internal), gauss))
        return iterations

    def propose(self, arch: Arch, iteration: int, parents: tuple[str, ...] = ()) -> None:
        """Record a candidate in the store, then in the history (idempotent on resume). It carries its
        own document, parameter count and model fingerprint under this search's space: another search
        may build another model under the same archid (other classes, input channels or constants)."""
        params = self.space.num_parameters(arch)
        model = self.space.fingerprint(arch)
        candidate = Candidate(
            self.search_id, arch.archid, iteration, parents, 0.0, arch.compact_json(), params, model
        )
        self.store.add_candidate(candidate)
        if not self.history.add(arch, iteration, model):
            return
        metrics.CANDIDATES.labels(self.search_id).inc()
        self.events(
            "candidate",
            {"archid": arch.archid, "iteration": iteration, "parents": list(parents), "params": params},
        )

    def _rng_state(self) -> list[Any]:
        version, internal, gauss = self.space.rng.getstate()
        return [version, list(internal), gauss]

    def _record(self, iteration: int, extra: dict[str, Any] | None = None) -> None:
        self.coordinator.flush()  # the record names candidates whose results must be durable first
        self._exhausted()
        if self.strategy.exhausted:
            extra = {**(extra or {}), "exhausted": self.strategy.exhausted}
        self.recorder.record(iteration, self._rng_state(), extra, cache_hits=self.coordinator.cache_hits)

    # --- loops -----------------------------------------------------------------------------------------

    def _workers(self) -> int:
        """Candidates in flight: one per evaluation slot of the services this search uses."""
        used = {OBJECTIVES[o.name].service for o in self.config.objectives}
        return max(1, sum(e.capacity for s, e in self.coordinator.evaluators.items() if s in used))

    def _run_barrier(self, iterations: list[IterationRecord]) -> None:
        """Every iteration waits for its whole population."""
        start = iterations[-1].iteration + 1 if iterations else 0
        num_iters = self.config.params.num_iters
        threads = max(4, 2 * self._workers())  # candidates wait for replica slots, not for threads
        with futures.ThreadPoolExecutor(threads, thread_name_prefix=f"search-{self.search_id[:8]}") as pool:
            for k in range(start, num_iters):
                if k == 0:
                    for arch in self.strategy.initial_population():
                        self.propose(arch, 0)
                population = self.history.population(k)
                self.events("iteration_start", {"iteration": k, "population": len(population)})
                self._evaluate_all(population, pool)
                front, _hv = self.recorder.front()
                if k + 1 < num_iters:
                    for arch, parents in self.strategy.next_population(front):
                        self.propose(arch, k + 1, parents)
                self._record(k)

    def _evaluate_all(self, archids: list[str], pool: futures.ThreadPoolExecutor) -> None:
        pending = [pool.submit(self.coordinator.evaluate_candidate, a) for a in archids]
        errors = [err for f in futures.as_completed(pending) if (err := f.exception()) is not None]
        if self.stop.is_set():
            raise Cancelled("search stopped")
        if errors:
            raise errors[0]

    def _run_async(self, iterations: list[IterationRecord]) -> None:
        """No barrier: a new candidate is proposed the moment an evaluation slot frees. Iteration k is
        recorded when ``init_num_models + k * max_unseen_population`` candidates have finished."""
        p = self.config.params
        total = self.strategy.total
        k = iterations[-1].iteration + 1 if iterations else 0
        queue = [a for a in self.history.archs if not self.history.finished(a)]
        finished = len(self.history.archs) - len(queue)
        boundary = p.init_num_models + k * p.max_unseen_population
        limit = self._workers()
        inflight: dict[futures.Future[None], str] = {}
        with futures.ThreadPoolExecutor(limit + 2, thread_name_prefix=f"search-{self.search_id[:8]}") as pool:
            while True:
                while finished >= boundary and k < p.num_iters:  # first: a resumed run may be at one
                    self._record(k, {"finished": finished})
                    k += 1
                    boundary += p.max_unseen_population
                while len(inflight) < limit and (queue or len(self.history.archs) < total):
                    archid = queue.pop(0) if queue else self._propose_one(k)
                    if archid is None:
                        total = len(self.history.archs)  # the space is exhausted
                        break
                    inflight[pool.submit(self.coordinator.evaluate_candidate, archid)] = archid
                if not inflight:
                    break
                ready, _ = futures.wait(list(inflight), timeout=0.5, return_when=futures.FIRST_COMPLETED)
                if self.stop.is_set():
                    raise Cancelled("search stopped")
                for future in ready:
                    inflight.pop(future)
                    err = future.exception()
                    if err is not None:
                        raise err
                    finished += 1
        if k < p.num_iters:
            self._record(k, {"finished": finished})

    def _propose_one(self, iteration: int) -> str | None:
        """One candidate, drawn from the RNG of its place in the search (the seed and how many were
        proposed before it): a resumed run draws what the uninterrupted one would have, with no RNG state
        to save per candidate."""
        front, _ = self.recorder.front()
        self.space.rng = random.Random(f"{self.config.params.seed}/candidate/{len(self.history.archs)}")
        proposal = self.strategy.next_candidate(front)
        if proposal is None:
            self._exhausted()
            return None
        arch, parents = proposal
        self.propose(arch, iteration, parents)
        return arch.archid

    def _exhausted(self) -> None:
        """Report, once, that the space has no unseen architecture left within the constraints."""
        if self.strategy.exhausted and not self._exhaustion_reported:
            self._exhaustion_reported = True
            self.events("space_exhausted", {"reason": self.strategy.exhausted})
