"""bench/scale.py's budgets and reads: N evaluations become random_search populations whose candidates, at
the cpu target's objectives each, are N (rounded up to a whole candidate), split evenly between the
searches; a read that fails at the end is reported, not raised."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest

from bench.scale import OBJECTIVES, ScaleSettings, _reads, percentile, plan_searches, search_config
from facenas.errors import InvalidInput
from facenas.search.config import parse_search_config
from facenas.v1 import searcher_pb2


@pytest.mark.parametrize(
    ("evaluations", "searches", "population"),
    [(n, m, p) for n in (6, 7, 99, 500, 501, 2000, 12345) for m in (1, 3) for p in (1, 7, 50)],
)
def test_the_searches_propose_the_evaluations_asked_for_in_all(
    evaluations: int, searches: int, population: int
) -> None:
    plans = plan_searches(evaluations, searches, population)
    assert len(plans) == searches
    assert sum(p.candidates for p in plans) == math.ceil(evaluations / OBJECTIVES)
    assert max(p.candidates for p in plans) - min(p.candidates for p in plans) <= 1
    for plan in plans:
        assert 1 <= plan.init <= plan.population <= population
        assert plan.init + (plan.iters - 1) * plan.population == plan.candidates


def test_a_planned_config_is_a_valid_search_of_that_budget_with_every_objective_unconstrained() -> None:
    plan = plan_searches(2000, 1, 50)[0]
    config = parse_search_config(search_config(plan, seed=3, timeout_s=600))
    assert config.algorithm == "random_search" and config.params.seed == 3
    assert config.candidates == plan.candidates == 1000
    assert len(config.objectives) == OBJECTIVES
    assert config.min_parameters == 0 and config.max_latency_s == 3600  # no candidate stops at a constraint
    asynchronous = parse_search_config(search_config(plan, 3, 600, "async_evolution_pareto"))
    assert asynchronous.algorithm == "async_evolution_pareto" and asynchronous.candidates == 1000


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        (ScaleSettings(evaluations=3, searches=2), "--evaluations"),
        (ScaleSettings(evaluations=100, searches=0), "--searches"),
        (ScaleSettings(evaluations=100, replicas=0), "--replicas"),
        (ScaleSettings(evaluations=100, delay="soon"), "--delay"),
        (ScaleSettings(evaluations=100, timeout_s=0), "--timeout-s"),
    ],
)
def test_settings_no_run_can_start_with_are_refused_naming_the_flag(
    settings: ScaleSettings, flag: str
) -> None:
    with pytest.raises(InvalidInput, match=flag):
        settings.check()


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0 and math.isnan(percentile([], 50))


class _TooLarge(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "received message larger than max"


class _Searcher:
    """A searcher stub whose GetPareto fails as a reply over the message limit would; its searches have
    one candidate, in one export page."""

    def GetSearch(self, request: object, timeout: float) -> object:
        return object()

    def GetArchitecture(self, request: object, timeout: float) -> object:
        return object()

    def ExportSearch(self, request: object, timeout: float) -> object:
        return searcher_pb2.SearchExport(candidates=[searcher_pb2.CandidateState(archid="a1")])

    def ListSearches(self, request: object, timeout: float) -> object:
        return object()

    def GetPareto(self, request: object, timeout: float) -> object:
        raise _TooLarge()

    def WatchSearch(self, request: object, timeout: float) -> Iterator[object]:
        yield from (object(), object())


def test_a_read_that_fails_is_reported_and_the_others_still_timed() -> None:
    read = _reads(cast(Any, _Searcher()), ["a", "b"], repeats=3)
    assert read.errors == ["get_pareto: RESOURCE_EXHAUSTED: received message larger than max"] * 6
    calls = {name: t.calls for name, t in read.timings.items()}
    assert calls == {"get_search": 6, "get_architecture": 6, "list_searches": 3}
    assert read.replay_events == 4 and read.replay_ms >= 0
    assert read.export_pages == 2 and read.export_ms >= read.export_page_ms >= 0
