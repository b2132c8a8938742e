"""Resume is exact: a search killed at any point and resumed ends with the candidates, fronts and values
of the uninterrupted search with the same seed -- for every algorithm -- and nothing is evaluated twice.

A kill is simulated at the store: after its n-th write every call of the dying run raises ``Killed`` (a
BaseException, as nothing in the engine may catch it), so no later write of that run lands, exactly as
after ``kill -9``. The workers (job managers) outlive it, as real ones do, and the resumed run joins
their jobs. The asynchronous algorithm runs one evaluation at a time here (with more, its proposals
depend on which evaluation finishes first, in any run).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facenas.domain import Candidate, IterationRecord
from facenas.jobs import JobManager
from facenas.search.config import parse_search_config
from facenas.search.engine import SearchRun
from facenas.search.evaluator import Evaluator
from facenas.search.local import LocalEvaluator
from facenas.store import SqlStore
from facenas.store.base import Store
from tests.integration.conftest import tiny_search
from tests.unit.eval_fakes import FakeLatency, StepTrainer

ALGORITHMS = [
    "evolution_pareto",
    "async_evolution_pareto",
    "local_search",
    "regularized_evolution",
    "random_search",
]
KILL_POINTS = 5  # kills spread over the run's writes


def config(algorithm: str) -> str:
    """The tiny CI search, with a parameter range most random draws fit (fake backends: size is free)."""
    text = tiny_search(algorithm=algorithm, iters=3, steps=2)
    return text.replace("max_parameters: 8.0e5", "max_parameters: 3.0e7")


WRITES = ("put_arch", "add_candidate", "put_evaluation", "put_iteration", "put_failure", "put_targets")


class Killed(BaseException):
    """The searcher process is gone (simulated)."""


class DyingStore:
    """Delegates to a store until its ``after``-th write, then raises Killed on every call."""

    def __init__(self, inner: Store, after: int | None = None) -> None:
        self.inner = inner
        self.after = after
        self.writes = 0
        self.dead = False
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                if self.dead:
                    raise Killed(name)
                if name in WRITES:
                    self.writes += 1
                    if self.after is not None and self.writes > self.after:
                        self.dead = True
                        raise Killed(name)
            return method(*args, **kwargs)

        return call


class Workers:
    def __init__(self) -> None:
        self.trainer = StepTrainer(steps=2)
        self.latency = FakeLatency(invalid=set())
        self.managers = {
            "trainer": JobManager(self.trainer, "trainer", ["cpu"]),
            "cpu": JobManager(self.latency, "latency_cpu", ["cpu"]),
        }

    def evaluators(self) -> dict[str, Evaluator]:
        return {
            "trainer": LocalEvaluator("trainer", {"trainer": self.managers["trainer"]}),
            "latency_cpu": LocalEvaluator("latency_cpu", {"cpu": self.managers["cpu"]}),
        }

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()


Outcome = tuple[list[tuple[str, int, tuple[str, ...]]], list[tuple[int, tuple[str, ...], float]], int]


def _run(store: Any, workers: Workers, text: str) -> None:
    run = SearchRun("s", parse_search_config(text), store, workers.evaluators(), threading.Event())
    run._workers = lambda: 1  # type: ignore[method-assign]  # one evaluation at a time: deterministic
    run.run()


def _outcome(store: SqlStore) -> Outcome:
    candidates: list[Candidate] = store.list_candidates("s")
    iterations: list[IterationRecord] = store.list_iterations("s")
    return (
        [(c.archid, c.iteration, c.parents) for c in candidates],
        [(i.iteration, i.pareto, round(i.hypervolume, 12)) for i in iterations],
        len(store.list_failures("s")),
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[], SqlStore]]:
    opened: list[SqlStore] = []

    def make() -> SqlStore:
        store = SqlStore.from_url(f"sqlite:///{tmp_path / f'store-{len(opened)}.db'}")
        store.create_search("s", "s", "")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.slow
def test_a_search_killed_anywhere_resumes_to_the_uninterrupted_result(
    algorithm: str, stores: Callable[[], SqlStore]
) -> None:
    text = config(algorithm)
    workers = Workers()
    try:
        reference_store = stores()
        counting = DyingStore(reference_store)
        _run(counting, workers, text)
        reference = _outcome(reference_store)
    finally:
        workers.close()
    total = counting.writes
    assert len(reference[1]) == 3 and len(reference[0]) >= 7, reference

    for point in range(1, KILL_POINTS + 1):
        kill_after = total * point // (KILL_POINTS + 1)
        store, workers = stores(), Workers()
        try:
            with pytest.raises(Killed):
                _run(DyingStore(store, kill_after), workers, text)
            _run(store, workers, text)  # the searcher starts again and resumes
            assert _outcome(store) == reference, f"killed after write {kill_after} of {total}"
            started = {**workers.trainer.started}
            assert all(n == 1 for n in started.values()), started  # nothing trained twice
            assert all(n == 1 for n in workers.latency.calls.values()), workers.latency.calls
        finally:
            workers.close()


@pytest.mark.slow
def test_killed_twice_then_resumed(stores: Callable[[], SqlStore]) -> None:
    text = config("evolution_pareto")
    workers = Workers()
    try:
        reference_store = stores()
        counting = DyingStore(reference_store)
        _run(counting, workers, text)
        reference = _outcome(reference_store)
    finally:
        workers.close()
    store, workers = stores(), Workers()
    try:
        for after in (counting.writes // 4, counting.writes // 4):  # each restart dies again
            with pytest.raises(Killed):
                _run(DyingStore(store, after), workers, text)
        _run(store, workers, text)
        assert _outcome(store) == reference
    finally:
        workers.close()
