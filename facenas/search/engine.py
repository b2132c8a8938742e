"""One search run: Archai's Pareto evolution (barrier per iteration) and our asynchronous variant.

Everything durable goes through the store as it happens -- candidates before they are evaluated,
evaluations as they finish, an iteration record (Pareto front, hypervolume, RNG state) at the end of
each iteration -- so a run killed at any point resumes from the store without redoing finished work.
The store is also the cache: an (archid, objective, budget, target) that is already there is never
evaluated again, by this search or any other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from typing import Any

from facenas.domain import OBJECTIVES, ArchRecord, Candidate, EvalKey, Evaluation, IterationRecord, budget_key
from facenas.errors import ArchSpecError, Cancelled, FacenasError, InvalidInput, Unavailable
from facenas.search import metrics
from facenas.search.config import SearchConfig
from facenas.search.dispatch import ReplicaPool
from facenas.search.pareto import hypervolume, pareto_front, reference_point
from facenas.search.snapshot import ObjectiveInfo
from facenas.space.hgnet import Arch, HgnetSearchSpace, ParamRange
from facenas.store.base import Store
from facenas.v1 import common_pb2

log = logging.getLogger(__name__)

MAX_PROPOSAL_TRIES = 20


class SingleFlight:
    """At most one evaluation per key in flight in this process; others wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[EvalKey, futures.Future[Evaluation]] = {}

    def run(self, key: EvalKey, work: Callable[[], Evaluation]) -> Evaluation:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = futures.Future()
                self._flights[key] = flight
        if not leader:
            return flight.result()
        try:
            result = work()
            flight.set_result(result)
            return result
        except BaseException as err:
            flight.set_exception(err)
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)


@dataclass
class Services:
    """What a search run talks to: the store and one replica pool per objective service."""

    store: Store
    pools: Mapping[str, ReplicaPool]
    flights: SingleFlight


class SearchRun:
    """Runs (or resumes) one search until it completes, fails or ``cancel`` is set."""

    def __init__(
        self, search_id: str, config: SearchConfig, services: Services, cancel: threading.Event
    ) -> None:
        self.search_id = search_id
        self.config = config
        self.services = services
        self.store = services.store
        self.cancel = cancel
        self.space = HgnetSearchSpace(config.space, seed=config.params.seed)
        self.objectives: tuple[ObjectiveInfo, ...] = config.objectives
        self.size_range = ParamRange(config.min_parameters, config.max_parameters)
        self.targets: dict[str, str] = {}
        self.archs: dict[str, Arch] = {}
        self.iteration_of: dict[str, int] = {}
        self.values: dict[str, dict[str, float]] = defaultdict(dict)
        self.infeasible: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.reference: list[float] | None = None
        self.walltime_offset = 0.0
        self.began = time.monotonic()
        self._lock = threading.Lock()
        self._prefetch_seconds: dict[str, float] = {}

    # --- set-up and history -------------------------------------------------------------------------

    def _space_msg(self) -> common_pb2.SearchSpace:
        w, h = self.config.img_size
        return common_pb2.SearchSpace(
            num_classes=self.config.space.num_classes,
            in_channels=self.config.space.in_channels,
            img_width=w,
            img_height=h,
        )

    def _pool(self, objective: str) -> ReplicaPool:
        service = OBJECTIVES[objective].service
        pool = self.services.pools.get(service)
        if pool is None:
            raise InvalidInput(
                f"objective {objective!r} needs the {service} service, which this searcher lacks"
            )
        return pool

    def connect(self) -> None:
        """Learn each objective's target from its replicas (they must agree)."""
        for objective in self.objectives:
            target = self._pool(objective.name).describe(objective.name, self._space_msg())
            self.targets[objective.name] = target.key
        self.event("targets", {"targets": self.targets})

    def budget_key(self, objective: str) -> str:
        return budget_key(objective, self.config.budget, self.config.img_size)

    def key(self, archid: str, objective: str) -> EvalKey:
        return EvalKey(archid, objective, self.budget_key(objective), self.targets[objective])

    def load_history(self) -> list[IterationRecord]:
        """Candidates and their stored evaluations; the iteration records."""
        candidates = self.store.list_candidates(self.search_id)
        for candidate in candidates:
            arch = self.space.from_json(self.store.get_arch(candidate.archid).document)
            self.archs[arch.archid] = arch
            self.iteration_of[arch.archid] = candidate.iteration
        wanted = {self.key(a, o.name): (a, o.name) for a in self.archs for o in self.objectives}
        for key, evaluation in self.store.get_evaluations(list(wanted)).items():
            archid, objective = wanted[key]
            self.values[archid][objective] = evaluation.value
        for archid in self.archs:
            self.check_constraints(archid)
        iterations = self.store.list_iterations(self.search_id)
        if iterations:
            last = iterations[-1]
            self.reference = list(last.state.get("reference") or []) or None
            self.walltime_offset = last.walltime_s
        return iterations

    def restore_rng(self, record: IterationRecord) -> None:
        version, internal, gauss = record.state["rng"]
        self.space.rng.setstate((version, tuple(internal), gauss))

    # --- proposals ---------------------------------------------------------------------------------

    def propose(self, arch: Arch, iteration: int, parents: tuple[str, ...] = ()) -> None:
        if self.iteration_of.get(arch.archid) == iteration:
            return  # already proposed (a resumed run regenerating its initial population)
        params = self.space.num_parameters(arch)
        self.store.put_arch(ArchRecord(arch.archid, arch.to_json(), params))
        self.store.add_candidate(Candidate(self.search_id, arch.archid, iteration, parents))
        with self._lock:
            self.archs[arch.archid] = arch
            self.iteration_of[arch.archid] = iteration
        metrics.CANDIDATES.labels(self.search_id).inc()
        self.event(
            "candidate",
            {"archid": arch.archid, "iteration": iteration, "parents": list(parents), "params": params},
        )

    def _fits(self, arch: Arch) -> bool:
        return arch.archid not in self.archs and self.space.num_parameters(arch) in self.size_range

    def random_valid(self) -> Arch | None:
        for _ in range(MAX_PROPOSAL_TRIES * 5):
            arch = _or_none(self.space.random_sample)
            if arch is not None and self._fits(arch):
                return arch
        return None

    def initial_population(self) -> list[Arch]:
        """Archai's random initial population; deterministic from the seed, so a search resumed before
        its first iteration record proposes exactly the same architectures again (idempotently)."""
        out: dict[str, Arch] = {}
        for _ in range(self.config.params.init_num_models):
            for _ in range(MAX_PROPOSAL_TRIES * 5):
                arch = _or_none(self.space.random_sample)
                if (
                    arch is not None
                    and arch.archid not in out
                    and self.space.num_parameters(arch) in self.size_range
                ):
                    out[arch.archid] = arch
                    break
        return list(out.values())

    def next_population(self, front: list[str]) -> list[tuple[Arch, tuple[str, ...]]]:
        """The next iteration's unseen candidates, by algorithm:

        * ``evolution_pareto`` (Archai's recipe): mutants of each front member, crossovers of the front,
          random samples; shuffled and cut to ``max_unseen_population``;
        * ``local_search``: mutants of each front member only;
        * ``random_search``: random samples only;
        * ``regularized_evolution``: for each child, the Pareto front of a random sample of the
          ``history_size`` most recent evaluated candidates gives the parent to mutate.
        """
        p = self.config.params
        algorithm = self.config.algorithm
        chosen: dict[str, tuple[Arch, tuple[str, ...]]] = {}

        def take(arch: Arch | None, origin: tuple[str, ...]) -> bool:
            if arch is not None and self._fits(arch) and arch.archid not in chosen:
                chosen[arch.archid] = (arch, origin)
                return True
            return False

        if algorithm == "regularized_evolution":
            self._aging_children(take, chosen)
            return list(chosen.values())
        parents = [] if algorithm == "random_search" else [self.archs[a] for a in front]
        for parent in parents:
            made = 0
            for _ in range(MAX_PROPOSAL_TRIES):
                if made >= p.mutations_per_parent:
                    break
                made += take(_or_none(partial(self.space.mutate, parent)), (parent.archid,))
        if algorithm == "evolution_pareto" and parents:
            for _ in range(p.num_crossovers):
                take(_or_none(partial(self.space.crossover, parents)), ())
        random_mix = {"evolution_pareto": p.num_random_mix, "random_search": p.max_unseen_population}
        for _ in range(random_mix.get(algorithm, 0)):
            take(self.random_valid(), ())
        population = list(chosen.values())
        self.space.rng.shuffle(population)
        return population[: p.max_unseen_population]

    def _aging_children(
        self, take: Callable[[Arch | None, tuple[str, ...]], bool], chosen: Mapping[str, object]
    ) -> None:
        """Regularized (aging) evolution with Pareto tournament selection."""
        p = self.config.params
        points = self.complete()
        history = [a for a in self.archs if a in points][-p.history_size :]
        if not history:
            return
        directions = [o.direction for o in self.objectives]
        rng = self.space.rng
        for _ in range(p.max_unseen_population * MAX_PROPOSAL_TRIES):
            if len(chosen) >= p.max_unseen_population:
                break
            sample = rng.sample(history, min(p.pareto_sample_size, len(history)))
            parent = self.archs[rng.choice(pareto_front({a: points[a] for a in sample}, directions))]
            take(_or_none(partial(self.space.mutate, parent)), (parent.archid,))

    # --- evaluation --------------------------------------------------------------------------------

    def evaluate_candidate(self, archid: str) -> None:
        """Objectives in order (cheap constraints first); stop at a violated constraint.

        One store read first fetches whatever any search already measured for this candidate (the store is
        the cache); only the missing objectives are dispatched.
        """
        began = time.perf_counter()
        self._prefetch(archid)
        self._prefetch_seconds[archid] = time.perf_counter() - began
        for objective in self.objectives:
            if self.cancel.is_set():
                raise Cancelled("search cancelled")
            if archid in self.failed or archid in self.infeasible:
                return
            if objective.name not in self.values[archid]:
                try:
                    value = self.measure(archid, objective.name)
                except (InvalidInput, Unavailable) as err:
                    self.failed[archid] = f"{objective.name}: {err}"
                    self.event(
                        "evaluation_failed",
                        {"archid": archid, "objective": objective.name, "error": str(err)},
                    )
                    return
                with self._lock:
                    self.values[archid][objective.name] = value
            if self.check_constraints(archid):
                return

    def _prefetch(self, archid: str) -> None:
        missing = {
            self.key(archid, o.name): o.name for o in self.objectives if o.name not in self.values[archid]
        }
        if not missing:
            return
        found = self.store.get_evaluations(list(missing))
        with self._lock:
            for key, evaluation in found.items():
                self.values[archid][missing[key]] = evaluation.value
                metrics.EVALUATIONS.labels(self.search_id, missing[key], "cached").inc()

    def check_constraints(self, archid: str) -> bool:
        """Mark and report ``archid`` infeasible when a measured value breaks a constraint."""
        for objective in self.objectives:
            value = self.values[archid].get(objective.name)
            if objective.constraint is None or value is None:
                continue
            lo, hi = objective.constraint
            if not lo <= value <= hi:
                if archid not in self.infeasible:
                    self.infeasible[archid] = f"{objective.name} = {value:.4g} outside [{lo:g}, {hi:g}]"
                return True
        return False

    def measure(self, archid: str, objective: str) -> float:
        key = self.key(archid, objective)
        began = time.monotonic()
        try:
            evaluation = self.services.flights.run(key, lambda: self._dispatch(key))
        except (InvalidInput, Unavailable):
            metrics.EVALUATIONS.labels(self.search_id, objective, "failed").inc()
            raise
        metrics.EVALUATION_SECONDS.labels(objective).observe(time.monotonic() - began)
        metrics.EVALUATIONS.labels(self.search_id, objective, "ok").inc()
        metrics.LAST_PROGRESS.labels(self.search_id).set(time.time())
        return evaluation.value

    def _dispatch(self, key: EvalKey) -> Evaluation:
        # the candidate's store read is shared by its objectives; another searcher finishing the same key
        # meanwhile is harmless: the store keeps the first write and returns it
        store_seconds = self._prefetch_seconds.get(key.archid, 0.0) / len(self.objectives)
        arch = self.archs[key.archid]
        b = self.config.budget
        budget = common_pb2.TrainingBudget(
            batch_size=b.batch_size,
            learning_rate=b.learning_rate,
            seed=b.seed,
            max_eval_batches=b.max_eval_batches,
        )
        if b.steps:
            budget.steps = b.steps
        else:
            budget.epochs = b.epochs
        request = common_pb2.EvaluateRequest(
            architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
            objective=key.objective,
            space=self._space_msg(),
            budget=budget,
        )

        def on_retry(replica: str, error: str, attempt: int) -> None:
            where = {"archid": key.archid, "objective": key.objective, "replica": replica}
            self.event("evaluation_retry", {**where, "attempt": attempt, "error": error})

        outcome = self._pool(key.objective).evaluate(
            request, self.config.timeout_s, self.config.max_attempts, self.cancel.is_set, on_retry
        )
        response = outcome.response
        if response.target.key != key.target or response.budget != key.budget:
            got = f"{response.target.key!r} / {response.budget!r}"
            raise Unavailable(
                f"{outcome.replica} answered for {got}, expected {key.target!r} / {key.budget!r}"
            )
        evaluation = Evaluation(
            key,
            response.value,
            response.unit,
            json.loads(response.details_json or "{}"),
            response.worker,
            response.seconds,
        )
        put_began = time.perf_counter()
        stored = self.store.put_evaluation(evaluation)
        store_seconds += time.perf_counter() - put_began
        # orchestration overhead: gRPC, (de)serialisation and request handling around the worker's own
        # time, plus the store round trips this evaluation needed
        overhead = max(0.0, outcome.rpc_seconds - response.seconds) + store_seconds
        payload = {
            "archid": key.archid,
            "objective": key.objective,
            "value": stored.value,
            "unit": stored.unit,
        }
        timing = {
            "seconds": stored.seconds,
            "overhead_s": overhead,
            "store_s": store_seconds,
            "attempts": outcome.attempts,
        }
        self.event("evaluation", {**payload, "worker": stored.worker, **timing})
        return stored

    def evaluate_all(self, archids: list[str], pool: futures.ThreadPoolExecutor) -> None:
        pending = [pool.submit(self.evaluate_candidate, a) for a in archids]
        errors: list[BaseException] = []
        for future in futures.as_completed(pending):
            err = future.exception()
            if err is not None:
                errors.append(err)
        if self.cancel.is_set():
            raise Cancelled("search cancelled")
        if errors:
            raise errors[0]

    # --- fronts and iteration records ------------------------------------------------------------------

    def complete(self) -> dict[str, list[float]]:
        with self._lock:
            names = [o.name for o in self.objectives]
            return {
                a: [v[n] for n in names]
                for a, v in self.values.items()
                if a in self.archs
                and a not in self.infeasible
                and a not in self.failed
                and all(n in v for n in names)
            }

    def front(self) -> tuple[list[str], float]:
        points = self.complete()
        directions = [o.direction for o in self.objectives]
        front = pareto_front(points, directions)
        if not front:
            return [], 0.0
        if self.reference is None:
            self.reference = reference_point(self.objectives, list(points.values()))
        return front, hypervolume([points[a] for a in front], directions, self.reference)

    def walltime(self) -> float:
        return self.walltime_offset + (time.monotonic() - self.began)

    def record_iteration(self, iteration: int, extra: dict[str, Any] | None = None) -> IterationRecord:
        front, hv = self.front()
        version, internal, gauss = self.space.rng.getstate()
        state = {"rng": [version, list(internal), gauss], "reference": self.reference, **(extra or {})}
        record = self.store.put_iteration(
            IterationRecord(self.search_id, iteration, tuple(front), hv, state, self.walltime())
        )
        metrics.ITERATION.labels(self.search_id).set(iteration)
        metrics.HYPERVOLUME.labels(self.search_id).set(hv)
        metrics.PARETO_SIZE.labels(self.search_id).set(len(front))
        metrics.LAST_PROGRESS.labels(self.search_id).set(time.time())
        summary = {"iteration": iteration, "pareto": front, "hypervolume": hv}
        self.event(
            "iteration", {**summary, "evaluated": len(self.complete()), "walltime_s": record.walltime_s}
        )
        return record

    def event(self, kind: str, payload: dict[str, object]) -> None:
        try:
            self.store.append_event(self.search_id, kind, payload)
        except FacenasError as err:  # the log is best effort; state writes are not
            log.warning("event not recorded", extra={"kind": kind, "error": str(err)})

    # --- algorithms --------------------------------------------------------------------------------

    def run(self) -> None:
        self.connect()
        if self.config.algorithm == "async_evolution_pareto":
            self.run_async()
        else:
            self.run_barrier()

    def run_barrier(self) -> None:
        """Archai's EvolutionParetoSearch: every iteration waits for its whole population."""
        iterations = self.load_history()
        start = 0
        if iterations:
            self.restore_rng(iterations[-1])
            start = iterations[-1].iteration + 1
        workers = max(4, sum(pool.capacity for pool in self.services.pools.values()) * 2)
        with futures.ThreadPoolExecutor(workers, thread_name_prefix=f"search-{self.search_id[:8]}") as pool:
            for k in range(start, self.config.params.num_iters):
                if k == 0 and not iterations:
                    for arch in self.initial_population():
                        self.propose(arch, 0)
                population = [a for a, it in self.iteration_of.items() if it == k]
                self.event("iteration_start", {"iteration": k, "population": len(population)})
                self.evaluate_all(population, pool)
                front, _hv = self.front()
                if k + 1 < self.config.params.num_iters:
                    for arch, parents in self.next_population(front):
                        self.propose(arch, k + 1, parents)
                self.record_iteration(k)

    def run_async(self) -> None:
        """No barrier: a new candidate is proposed the moment an evaluation slot frees."""
        p = self.config.params
        iterations = self.load_history()
        total = p.init_num_models + (p.num_iters - 1) * p.max_unseen_population
        k = 0
        if iterations:
            self.restore_rng(iterations[-1])
            k = iterations[-1].iteration + 1
        done = {a for a in self.archs if a in self.complete() or a in self.infeasible or a in self.failed}
        queue = [a for a in self.archs if a not in done]
        boundary = p.init_num_models + k * p.max_unseen_population
        # one candidate in flight per evaluation slot of the services this search uses
        used = {OBJECTIVES[o.name].service for o in self.objectives}
        limit = sum(self.services.pools[service].capacity for service in used)
        finished = len(done)
        inflight: dict[futures.Future[None], str] = {}
        with futures.ThreadPoolExecutor(limit + 2, thread_name_prefix=f"search-{self.search_id[:8]}") as pool:
            while True:
                while len(inflight) < limit and (queue or len(self.archs) < total):
                    archid = queue.pop(0) if queue else self._propose_async(k)
                    if archid is None:
                        total = len(self.archs)  # the space is exhausted for this constraint
                        break
                    inflight[pool.submit(self.evaluate_candidate, archid)] = archid
                if not inflight:
                    break
                ready, _ = futures.wait(list(inflight), timeout=0.5, return_when=futures.FIRST_COMPLETED)
                if self.cancel.is_set():
                    raise Cancelled("search cancelled")
                for future in ready:
                    inflight.pop(future)
                    err = future.exception()
                    if err is not None:
                        raise err
                    finished += 1
                while finished >= boundary and k < p.num_iters:
                    self.record_iteration(k, {"finished": finished})
                    k += 1
                    boundary += p.max_unseen_population
        if k < p.num_iters:
            self.record_iteration(k, {"finished": finished})

    def _propose_async(self, iteration: int) -> str | None:
        p = self.config.params
        arch: Arch | None = None
        parents: tuple[str, ...] = ()
        if len(self.archs) < p.init_num_models:
            arch = self.random_valid()
        else:
            front, _ = self.front()
            arch, parents = self._variation([self.archs[a] for a in front])
        if arch is None:
            return None
        self.propose(arch, iteration, parents)
        return arch.archid

    def _variation(self, front: list[Arch]) -> tuple[Arch | None, tuple[str, ...]]:
        """One child, by the barrier recipe's proportions of mutation, crossover and random mix."""
        p = self.config.params
        rng = self.space.rng
        weights = [p.mutations_per_parent * len(front), p.num_crossovers if front else 0, p.num_random_mix]
        if sum(weights) == 0:
            weights = [0, 0, 1]
        for _ in range(MAX_PROPOSAL_TRIES):
            op = rng.choices(("mutate", "crossover", "random"), weights=weights)[0]
            parents: tuple[str, ...] = ()
            child: Arch | None
            if op == "mutate":
                parent = rng.choice(front)
                child, parents = _or_none(partial(self.space.mutate, parent)), (parent.archid,)
            elif op == "crossover":
                child = _or_none(partial(self.space.crossover, front))
            else:
                child = self.random_valid()
            if child is not None and self._fits(child):
                return child, parents
        return self.random_valid(), ()


def _or_none(make: Callable[[], Arch]) -> Arch | None:
    """A proposal, or None when it is unbuildable (e.g. a random draw beyond the size limit)."""
    try:
        return make()
    except ArchSpecError:
        return None
