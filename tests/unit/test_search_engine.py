"""Proposal rules of the search algorithms, without services (values are set by hand)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from facenas.search.config import ALGORITHMS, parse_search_config
from facenas.search.engine import SearchRun
from facenas.search.strategies import STRATEGIES
from facenas.store import SqlStore
from tests.integration.conftest import tiny_search


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore.from_url(f"sqlite:///{tmp_path / 's.db'}")
    yield opened
    opened.close()


def _run(store: SqlStore, algorithm: str, search_id: str = "s") -> SearchRun:
    config = parse_search_config(
        tiny_search(algorithm=algorithm).replace("max_unseen_population: 3", "max_unseen_population: 5")
    )
    store.create_search(search_id, search_id, config.text)
    run = SearchRun(search_id, config, store, {}, threading.Event())
    run.coordinator.targets = {o.name: "target" for o in config.objectives}
    for index, arch in enumerate(run.strategy.initial_population()):
        run.propose(arch, 0)
        latency, iou = 0.001 * (index + 1), 0.1 * (index + 1) ** 0.5  # a real trade-off
        run.history.set_value(arch.archid, "CPU ONNX Latency (s)", latency)
        run.history.set_value(arch.archid, "Partial Training Val. IOU", iou)
    return run


@pytest.mark.parametrize(
    "algorithm", ["evolution_pareto", "local_search", "random_search", "regularized_evolution"]
)
@pytest.mark.slow
def test_next_population_rules(store: SqlStore, algorithm: str) -> None:
    run = _run(store, algorithm)
    front, hv = run.recorder.front()
    assert len(front) == 4 and hv > 0  # every initial model trades latency for IOU
    children = run.strategy.next_population(front)
    assert 0 < len(children) <= 5
    for arch, parents in children:
        assert arch.archid not in run.history.archs
        assert run.space.num_parameters(arch) in run.strategy.size_range
        run.space.check_in_space(arch)
        if algorithm == "random_search":
            assert parents == ()
        if algorithm in ("local_search", "regularized_evolution"):
            assert len(parents) == 1 and parents[0] in front


@pytest.mark.slow
def test_proposals_are_deterministic_per_seed(tmp_path: Path) -> None:
    ids = []
    for name in ("a", "b"):
        store = SqlStore.from_url(f"sqlite:///{tmp_path / name}.db")
        run = _run(store, "evolution_pareto", name)
        ids.append([arch.archid for arch, _ in run.strategy.next_population(run.recorder.front()[0])])
        store.close()
    assert ids[0] == ids[1]


def test_initial_population_is_reproducible_for_resume(store: SqlStore) -> None:
    run = _run(store, "evolution_pareto")
    first = run.history.population(0)
    again = SearchRun("s", run.config, store, {}, threading.Event())
    assert [a.archid for a in again.strategy.initial_population()] == first


def test_constraints_mark_candidates_infeasible(store: SqlStore) -> None:
    run = _run(store, "evolution_pareto")
    archid = next(iter(run.history.archs))
    run.history.set_value(archid, "CPU ONNX Latency (s)", 5.0)  # over the 0.3 s cap
    assert run.history.check_constraints(archid)
    assert archid not in run.history.complete()
    assert "outside [0, 0.3]" in run.history.infeasible[archid]


def test_every_configurable_algorithm_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(ALGORITHMS)
    assert [name for name, s in STRATEGIES.items() if s.asynchronous] == ["async_evolution_pareto"]


@pytest.mark.slow
def test_async_strategy_proposes_one_child_at_a_time_from_the_front(store: SqlStore) -> None:
    run = _run(store, "async_evolution_pareto")
    front, _ = run.recorder.front()
    for _ in range(5):
        proposal = run.strategy.next_candidate(front)
        assert proposal is not None
        arch, parents = proposal
        assert arch.archid not in run.history.archs and set(parents) <= set(front)
        run.propose(arch, 1, parents)
