"""The system end to end: a search through real service processes, including failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from facenas.store import open_store
from facenas.v1 import searcher_pb2, store_pb2
from tests.integration.conftest import System, metric, tiny_search
from tests.timing import scaled

pytestmark = pytest.mark.integration


def _events(system: System, search_id: str) -> list[tuple[str, dict[str, object]]]:
    store = open_store(f"sqlite:///{system.cluster.workdir / 'store.db'}")
    try:
        return [(e.kind, dict(e.payload)) for e in store.list_events(search_id, 0, 100_000)]
    finally:
        store.close()


def _watch_until_done(system: System, search_id: str, timeout: float = 300) -> list[str]:
    kinds = []
    request = searcher_pb2.WatchSearchRequest(search_id=search_id)
    for event in system.stub().WatchSearch(request, timeout=scaled(timeout)):
        kinds.append(event.kind)
    return kinds


def _assert_complete_and_unique(system: System, search_id: str) -> None:
    from facenas.search.protoconv import export_search

    export = export_search(lambda r: system.stub().ExportSearch(r, timeout=60), search_id)
    names = [o.name for o in export.objectives]
    assert export.candidates
    for candidate in export.candidates:
        assert candidate.failed == ""
        if candidate.feasible:
            assert set(candidate.values) == set(names), candidate.archid
    evaluated = [
        (p["archid"], p["objective"]) for kind, p in _events(system, search_id) if kind == "evaluation"
    ]
    assert len(evaluated) == len(set(evaluated)), "an evaluation was stored twice"


def test_async_search_completes_with_outputs(system: System, tmp_path: Path) -> None:
    from facenas.search.outputs import write_outputs
    from facenas.search.protoconv import export_search, snapshot_from_proto

    stub = system.stub()
    summary = stub.StartSearch(searcher_pb2.StartSearchRequest(config=tiny_search(), name="it"), timeout=60)
    search_id = summary.search.search_id
    kinds = _watch_until_done(system, search_id)
    assert kinds[0] == "started" and kinds[-1] == "completed"
    final = stub.GetSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=30)
    assert final.iterations_done == 3 and final.candidates == 4 + 2 * 3
    _assert_complete_and_unique(system, search_id)
    pareto = stub.GetPareto(searcher_pb2.SearchRef(search_id=search_id), timeout=30)
    assert pareto.points and pareto.hypervolume > 0
    snapshot = snapshot_from_proto(export_search(lambda r: stub.ExportSearch(r, timeout=60), search_id))
    written = {p.name for p in write_outputs(snapshot, tmp_path / "out")}
    assert {"search_state_0.csv", "search_state_2.csv", "hypervolume.png"} <= written


def test_store_is_the_cache_across_searches(system: System) -> None:
    """The barrier algorithm is deterministic given its values: a rerun is served from the store."""
    stub = system.stub()
    config = tiny_search(algorithm="evolution_pareto", iters=2)
    first = stub.StartSearch(searcher_pb2.StartSearchRequest(config=config, name="first"), timeout=60)
    _watch_until_done(system, first.search.search_id)
    workers = [*system.trainers, system.latency]
    before = sum(metric(w, "facenas_evaluations_total") for w in workers)
    assert before > 0
    again = stub.StartSearch(searcher_pb2.StartSearchRequest(config=config, name="again"), timeout=60)
    assert _watch_until_done(system, again.search.search_id)[-1] == "completed"
    assert sum(metric(w, "facenas_evaluations_total") for w in workers) == before
    cached = [p for k, p in _events(system, again.search.search_id) if k == "evaluation_cached"]
    summaries = {
        s.search.name: s for s in stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=30).searches
    }
    assert summaries["first"].cache_hits == 0 and summaries["again"].cache_hits == len(cached) > 0
    first_front = stub.GetPareto(searcher_pb2.SearchRef(search_id=first.search.search_id), timeout=30)
    again_front = stub.GetPareto(searcher_pb2.SearchRef(search_id=again.search.search_id), timeout=30)
    assert [p.archid for p in first_front.points] == [p.archid for p in again_front.points]


def test_killed_trainer_mid_evaluation_is_retried_elsewhere(system: System) -> None:
    stub = system.stub()
    config = tiny_search(iters=2, steps=60)
    search_id = stub.StartSearch(searcher_pb2.StartSearchRequest(config=config), timeout=60).search.search_id
    deadline = time.monotonic() + scaled(120)
    victim = None
    while victim is None and time.monotonic() < deadline:
        victim = next((t for t in system.trainers if metric(t, "facenas_work_in_flight") >= 1), None)
        time.sleep(0.1)
    assert victim is not None, "no trainer ever started working"
    victim.kill()
    kinds = _watch_until_done(system, search_id)
    assert kinds[-1] == "completed"
    retries = [p for k, p in _events(system, search_id) if k == "evaluation_retry"]
    assert any(p["replica"] == victim.address for p in retries)
    _assert_complete_and_unique(system, search_id)


@pytest.mark.parametrize("algorithm", ["async_evolution_pareto", "evolution_pareto"])
def test_killed_searcher_resumes_without_redoing_work(system: System, algorithm: str) -> None:
    config = tiny_search(algorithm=algorithm, iters=3, steps=20)
    search_id = (
        system.stub().StartSearch(searcher_pb2.StartSearchRequest(config=config), timeout=60).search.search_id
    )
    deadline = time.monotonic() + scaled(180)
    while time.monotonic() < deadline:
        done = [
            p for k, p in _events(system, search_id) if k == "evaluation" and "IOU" in str(p["objective"])
        ]
        if len(done) >= 3:
            break
        time.sleep(0.2)
    system.searcher.kill()
    finished_before = {
        (p["archid"], p["objective"]) for k, p in _events(system, search_id) if k == "evaluation"
    }
    assert len(finished_before) >= 3
    system.searcher = system.start_searcher()
    resumed = system.stub().ResumeSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=60)
    assert resumed.search.search_id == search_id
    kinds = _watch_until_done(system, search_id)
    assert kinds[-1] == "completed" and "resumed" in kinds
    evaluated = [(p["archid"], p["objective"]) for k, p in _events(system, search_id) if k == "evaluation"]
    assert len(evaluated) == len(set(evaluated)), "a finished evaluation was redone"
    assert finished_before <= set(evaluated)
    final = system.stub().GetSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=30)
    assert final.iterations_done == 3
    _assert_complete_and_unique(system, search_id)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call succeeded")


def test_bad_requests_get_invalid_argument_naming_the_field(system: System) -> None:
    from facenas.v1 import common_pb2, common_pb2_grpc

    stub = system.stub()

    def start(config: str) -> tuple[grpc.StatusCode, str]:
        return _code(lambda: stub.StartSearch(searcher_pb2.StartSearchRequest(config=config), timeout=30))

    assert start("search: [1, 2")[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = start(tiny_search(algorithm="simulated_annealing"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "search.algorithm.name" in details
    code, details = start(tiny_search().replace("steps: 3", "steps: -5"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "training.steps" in details
    code, details = start(tiny_search().replace("img_size: [64, 64]", "img_size: [100000, 64]"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "img_size" in details
    code, details = start(tiny_search().replace("name: cpu", "name: snp"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "latency_snp" in details
    code, _ = _code(lambda: stub.GetSearch(searcher_pb2.SearchRef(search_id="nope"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND

    evaluator = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(system.trainers[0].address))
    arch = json.loads(
        (Path(__file__).parents[1] / "fixtures/archai/snp_target").glob("*.json").__next__().read_text()
    )
    arch["base_ch"] = 10**6

    def evaluate(objective: str, document: object, width: int = 64) -> tuple[grpc.StatusCode, str]:
        request = common_pb2.EvaluateRequest(
            architecture=common_pb2.Architecture(archid="0" * 40, json=json.dumps(document)),
            objective=objective,
            space=common_pb2.SearchSpace(img_width=width, img_height=64),
        )
        submit = common_pb2.SubmitJobRequest(request=request, owner="test")
        return _code(lambda: evaluator.SubmitJob(submit, timeout=30))

    code, details = evaluate("Partial Training Val. IOU", arch)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "base_ch" in details
    code, details = evaluate("Accuracy", arch)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "objective" in details
    arch["base_ch"] = 16
    code, details = evaluate("Partial Training Val. IOU", arch, width=100_000)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "img_width" in details
    # nobody crashed
    for process in [system.store, system.latency, system.searcher, *system.trainers]:
        assert process.alive, process.name


def test_concurrent_searches_and_cancel_stops_the_workers(system: System) -> None:
    stub = system.stub()
    quick = stub.StartSearch(searcher_pb2.StartSearchRequest(config=tiny_search(iters=2, seed=5)), timeout=60)
    slow = stub.StartSearch(
        searcher_pb2.StartSearchRequest(config=tiny_search(steps=400, seed=6)), timeout=60
    )
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline:
        if sum(metric(t, "facenas_work_in_flight") for t in system.trainers) >= 1:
            break
        time.sleep(0.1)
    assert _watch_until_done(system, quick.search.search_id)[-1] == "completed"
    cancelled = stub.CancelSearch(searcher_pb2.SearchRef(search_id=slow.search.search_id), timeout=60)
    assert cancelled.search.status == 4  # SEARCH_STATUS_CANCELLED
    # the cancelled calls reach the trainers, which abandon their work instead of finishing it
    deadline = time.monotonic() + scaled(20)
    while sum(metric(t, "facenas_work_in_flight") for t in system.trainers) > 0:
        assert time.monotonic() < deadline, "trainers kept working for a cancelled search"
        time.sleep(0.2)
    resumed = stub.ResumeSearch(searcher_pb2.SearchRef(search_id=slow.search.search_id), timeout=60)
    assert resumed.search.status == 2  # SEARCH_STATUS_RUNNING again
    stub.CancelSearch(searcher_pb2.SearchRef(search_id=slow.search.search_id), timeout=60)
